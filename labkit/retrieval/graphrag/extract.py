"""GraphRAG extraction (chapter 20): the relation schema, a rule/pattern extractor (offline, the default),
an LLM-prompt extractor for any ``llm(prompt) -> str``, entity resolution to canonical names, and the
precision/recall/F1 of extracted triples. A triple is ``(subject, relation, object)``.
"""
from __future__ import annotations

import json
import re
from collections import defaultdict
from typing import Callable, Iterable, Sequence

from labkit.retrieval.text import sentences_with_titles

__all__ = ["SCHEMA", "LITERAL", "SYMMETRIC", "rule_extract", "EntityResolver", "EXTRACTION_PROMPT", "LLMExtractor", "extract_triples", "normalize_triples", "extraction_scores"]


Triple = tuple[str, str, str]

#: the relation schema (shared with labkit.datasets.world)
SCHEMA = ("born_in", "born_year", "works_for", "founded_by", "founded_year", "headquartered_in", "member_of",
          "located_in", "made_by", "designed_by", "launched_year", "allied_with", "rival_of", "held_in",
          "event_year", "participant")
LITERAL = ("born_year", "founded_year", "launched_year", "event_year")
SYMMETRIC = ("allied_with", "rival_of")


_E = r"[A-Z][A-Za-z0-9-]*(?:\s+(?:of\s+)?[A-Z][A-Za-z0-9-]*)*"  # a capitalised name
_Y = r"1[5-9]\d\d|20\d\d"


def _p(pattern: str) -> re.Pattern:
    return re.compile(pattern.replace("ENT", _E).replace("YEAR", _Y))


# (pattern, [(relation, subject group, object group)]); group "T" means the passage title
_RULES: list[tuple[re.Pattern, list[tuple[str, str, str]]]] = [
    (_p(r"^Born in (?P<o>ENT) in (?P<y>YEAR), (?P<s>ENT)"), [("born_in", "s", "o"), ("born_year", "s", "y")]),
    (_p(r"(?P<s>ENT) was born in (?P<o>ENT) in (?P<y>YEAR)"), [("born_in", "s", "o"), ("born_year", "s", "y")]),
    (_p(r"(?P<s>ENT) \(born (?P<y>YEAR)\) is a native of (?P<o>ENT)"), [("born_in", "s", "o"), ("born_year", "s", "y")]),
    (_p(r"(?P<s>ENT) was born in (?P<y>YEAR)\."), [("born_year", "s", "y")]),
    (_p(r"(?P<s>ENT) grew up in (?P<o>ENT), where (?P=s) was born"), [("born_in", "s", "o")]),
    (_p(r"(?P<s>ENT)于(?P<y>YEAR)年出生在(?P<o>ENT)"), [("born_in", "s", "o"), ("born_year", "s", "y")]),
    (_p(r"(?P<s>ENT) works for (?P<o>ENT)"), [("works_for", "s", "o")]),
    (_p(r"(?P<s>ENT) joined (?P<o>ENT) as "), [("works_for", "s", "o")]),
    (_p(r"(?P<s>ENT) has been employed by (?P<o>ENT)"), [("works_for", "s", "o")]),
    (_p(r"(?P<s>ENT) is an? [a-z ]+ at (?P<o>ENT)"), [("works_for", "s", "o")]),
    (_p(r"(?P<s>ENT)在(?P<o>ENT)工作"), [("works_for", "s", "o")]),
    (_p(r"^Notable staff include (?P<list>.+)\."), [("works_for", "list", "T")]),
    (_p(r"In (?P<y>YEAR),? (?P<s>ENT) founded (?P<o>ENT)"), [("founded_by", "o", "s"), ("founded_year", "o", "y")]),
    (_p(r"(?P<s>ENT) founded (?P<o>ENT) in (?P<y>YEAR)"), [("founded_by", "o", "s"), ("founded_year", "o", "y")]),
    (_p(r"(?P<o>ENT)(?: \(often just \"[^\"]+\"\))? was (?:founded|established) by (?P<s>ENT) in (?P<y>YEAR)"),
     [("founded_by", "o", "s"), ("founded_year", "o", "y")]),
    (_p(r"(?P<o>ENT)(?: \(often just \"[^\"]+\"\))? was (?:founded|established) in (?P<y>YEAR) by (?P<s>ENT)"),
     [("founded_by", "o", "s"), ("founded_year", "o", "y")]),
    (_p(r"(?P<o>ENT)由(?P<s>ENT)于(?P<y>YEAR)年创立"), [("founded_by", "o", "s"), ("founded_year", "o", "y")]),
    (_p(r"(?P<s>ENT) is headquartered in (?P<o>ENT)"), [("headquartered_in", "s", "o")]),
    (_p(r"(?P<s>ENT) has its headquarters in (?P<o>ENT)"), [("headquartered_in", "s", "o")]),
    (_p(r"(?P<s>ENT)'s head office stands in (?P<o>ENT)"), [("headquartered_in", "s", "o")]),
    (_p(r"(?P<s>ENT) is based in (?P<o>ENT)"), [("headquartered_in", "s", "o")]),
    (_p(r"(?P<s>ENT)总部位于(?P<o>ENT)"), [("headquartered_in", "s", "o")]),
    (_p(r"^Companies based here include (?P<list>.+)\."), [("headquartered_in", "list", "T")]),
    (_p(r"(?P<s>ENT) is a member of (?:the )?(?P<o>ENT)"), [("member_of", "s", "o")]),
    (_p(r"(?P<s>ENT) belongs to (?:the )?(?P<o>ENT)"), [("member_of", "s", "o")]),
    (_p(r"(?P<s>ENT) joined the (?P<o>ENT) soon"), [("member_of", "s", "o")]),
    (_p(r"(?P<o>ENT)'s members include (?P<list>.+)\."), [("member_of", "list", "o")]),
    (_p(r"(?P<s>ENT)是[^（]*（(?P<o>ENT)）的成员"), [("member_of", "s", "o")]),
    (_p(r"(?P<s>ENT) is a city in (?:the )?(?P<o>ENT)"), [("located_in", "s", "o")]),
    (_p(r"(?P<s>ENT) lies in (?:the )?(?P<o>ENT)"), [("located_in", "s", "o")]),
    (_p(r"(?P<s>ENT), a port town of (?:the )?(?P<o>ENT)"), [("located_in", "s", "o")]),
    (_p(r"(?P<o>ENT)'s towns include (?P<list>.+)\."), [("located_in", "list", "o")]),
    (_p(r"(?P<s>ENT) is an? [a-z ]+ (?:made|manufactured) by (?P<o>ENT)"), [("made_by", "s", "o")]),
    (_p(r"(?P<o>ENT) released the (?P<s>ENT), an? [a-z ]+, in (?P<y>YEAR)"), [("made_by", "s", "o"), ("launched_year", "s", "y")]),
    (_p(r"(?P<o>ENT) (?:produces|manufactures) the (?P<s>ENT)"), [("made_by", "s", "o")]),
    (_p(r"(?P<s>ENT) was designed by (?P<o>ENT)"), [("designed_by", "s", "o")]),
    (_p(r"(?P<o>ENT) designed the (?P<s>ENT)"), [("designed_by", "s", "o")]),
    (_p(r"^The design is the work of (?P<o>ENT)"), [("designed_by", "T", "o")]),
    (_p(r"(?P<s>ENT) (?:was launched|went on sale|was first sold) in (?P<y>YEAR)"), [("launched_year", "s", "y")]),
    (_p(r"(?P<s>ENT) has been allied with (?:the )?(?P<o>ENT)"), [("allied_with", "s", "o")]),
    (_p(r"(?P<s>ENT) and the (?P<o>ENT) are close allies"), [("allied_with", "s", "o")]),
    (_p(r"(?P<s>ENT) is a rival of (?:the )?(?P<o>ENT)"), [("rival_of", "s", "o")]),
    (_p(r"(?P<s>ENT) and the (?P<o>ENT) are long-standing rivals"), [("rival_of", "s", "o")]),
    (_p(r"^Relations with the (?P<o>ENT) have been hostile"), [("rival_of", "T", "o")]),
    (_p(r"(?P<s>ENT) (?:took place|was held) in (?P<o>ENT) in (?P<y>YEAR)"), [("held_in", "s", "o"), ("event_year", "s", "y")]),
    (_p(r"(?P<a>ENT) and (?P<b>ENT) took part in (?P<s>ENT)"), [("participant", "s", "a"), ("participant", "s", "b")]),
]


def _clean(name: str) -> str:
    name = name.strip().strip(".,;")
    return re.sub(r"^(?:The|the)\s+", "", name)


def _split_list(s: str) -> list[str]:
    return [_clean(x) for x in re.split(r",\s*|\s+and\s+", s) if x.strip()]


def rule_extract(passage: str) -> list[Triple]:
    """Pattern extraction from one passage (a ``# Title`` line, then text). Pronouns are resolved to the
    title first (:func:`labkit.retrieval.sentences_with_titles`); names are returned as written (aliases unresolved)."""
    out: list[Triple] = []
    for _, title, sent in sentences_with_titles([passage]):
        for pat, rels in _RULES:
            for m in pat.finditer(sent):
                g = m.groupdict()
                for rel, sg, og in rels:
                    subs = [title] if sg == "T" else _split_list(g[sg]) if sg == "list" else [_clean(g[sg])]
                    obj = title if og == "T" else _clean(g[og])
                    out += [(s, rel, obj) for s in subs if s and obj and s != obj]
    return list(dict.fromkeys(out))


class EntityResolver:
    """Map every name the text uses to one canonical name (实体消解).

    Canonical names are the article titles. Aliases come from the text itself:

    * explicit aliases: ``X (often just "Y")``, ``known as "Y"``, ``called him "Y"``;
    * short forms: a single word of a canonical name (a surname, a company's first word) that belongs to
      exactly one canonical name;
    * a leading "the" is ignored. Pronouns are resolved earlier, sentence by sentence.
    """

    def __init__(self, canonical: Iterable[str], aliases: dict[str, str] | None = None) -> None:
        self.canonical = sorted(set(canonical))
        if not self.canonical:
            raise ValueError("canonical is empty: the resolver needs at least one entity name")
        owners: dict[str, set[str]] = defaultdict(set)
        for name in self.canonical:
            for w in name.split():
                if len(w) > 3 and w[0].isupper():
                    owners[w].add(name)
        self.aliases: dict[str, str] = {w: next(iter(n)) for w, n in owners.items()
                                        if len(n) == 1 and w not in self.canonical}
        self.aliases.update(aliases or {})
        self._by_len = sorted(set(self.canonical) | set(self.aliases), key=lambda s: (-len(s), s))

    @classmethod
    def from_documents(cls, passages: Sequence[str]) -> "EntityResolver":
        titles, explicit = [], {}
        for p in passages:
            m = re.search(r"^# (.+)$", p, re.M)
            if not m:
                continue
            t = m.group(1).strip()
            titles.append(t)
            for a in re.findall(r"(?:often just|known as|called (?:him|her)) \"([^\"]+)\"", p):
                explicit[a] = t
        return cls(titles, explicit)

    def resolve(self, name: str) -> str:
        """Canonical name for ``name`` (unchanged if unknown)."""
        n = _clean(name)
        if n in self.canonical:
            return n
        return self.aliases.get(n, self.aliases.get(name.strip(), n))

    def link(self, text: str) -> list[str]:
        """Canonical entities mentioned in ``text``, longest match first, in order of appearance."""
        taken = [False] * len(text)
        found: list[tuple[int, str]] = []
        for name in self._by_len:
            for m in re.finditer(r"(?<![A-Za-z])" + re.escape(name) + r"(?![A-Za-z])", text):
                if not any(taken[m.start():m.end()]):
                    taken[m.start():m.end()] = [True] * (m.end() - m.start())
                    found.append((m.start(), self.resolve(name)))
        return list(dict.fromkeys(n for _, n in sorted(found)))

    def resolve_triples(self, triples: Iterable[Triple]) -> list[Triple]:
        out = []
        for s, r, o in triples:
            s2 = self.resolve(s)
            o2 = o if r in LITERAL else self.resolve(o)
            if r in SYMMETRIC:
                s2, o2 = sorted((s2, o2))
            out.append((s2, r, o2))
        return list(dict.fromkeys(out))


EXTRACTION_PROMPT = """You extract a knowledge graph from encyclopedia text.
Allowed relations: {relations}.
Years are objects of the *_year relations. Resolve pronouns to the article title "{title}".
Return only a JSON list of [subject, relation, object] triples.

Text:
{text}
"""


class LLMExtractor:
    """Triple extraction by prompting a language model: ``llm(prompt) -> str`` returning a JSON list.

    The reply is parsed leniently (the first ``[...]`` block); triples with an unknown relation or the wrong
    shape are dropped and counted in ``self.rejected``.
    """

    def __init__(self, llm: Callable[[str], str], template: str = EXTRACTION_PROMPT) -> None:
        if not callable(llm):
            raise TypeError("llm must be a callable prompt -> str")
        self.llm, self.template, self.rejected = llm, template, 0

    def prompt(self, passage: str) -> str:
        m = re.search(r"^# (.+)$", passage, re.M)
        return self.template.format(relations=", ".join(SCHEMA), title=m.group(1) if m else "", text=passage)

    def __call__(self, passage: str) -> list[Triple]:
        reply = self.llm(self.prompt(passage))
        m = re.search(r"\[.*\]", reply, re.S)
        if not m:
            self.rejected += 1
            return []
        try:
            items = json.loads(m.group(0))
        except json.JSONDecodeError:
            self.rejected += 1
            return []
        out = []
        for it in items:
            if (isinstance(it, (list, tuple)) and len(it) == 3 and all(isinstance(x, (str, int)) for x in it)
                    and it[1] in SCHEMA):
                out.append((_clean(str(it[0])), str(it[1]), _clean(str(it[2]))))
            else:
                self.rejected += 1
        return out


def extract_triples(passages: str | Sequence[str], *, method: str = "rules", llm: Callable[[str], str] | None = None,
                    resolver: EntityResolver | None = None) -> list[Triple]:
    """Extract (subject, relation, object) triples from passages, then resolve names to canonical ones.

    ``method="rules"``: :func:`rule_extract`; ``method="llm"``: :class:`LLMExtractor` around ``llm``.
    ``resolver``: defaults to :meth:`EntityResolver.from_documents` on the same passages; pass your own
    :class:`EntityResolver` to control the aliases. Symmetric relations are stored with the two names sorted.
    """
    docs = [passages] if isinstance(passages, str) else list(passages)
    if not docs or not any(d.strip() for d in docs):
        raise ValueError("passages is empty: give at least one non-empty passage")
    if method == "rules":
        fn: Callable[[str], list[Triple]] = rule_extract
    elif method == "llm":
        if llm is None:
            raise ValueError("method='llm' needs llm=callable(prompt) -> str (e.g. an OpenAI-compatible client)")
        fn = LLMExtractor(llm)
    else:
        raise ValueError(f"method must be 'rules' or 'llm', got {method!r}")
    raw = [t for d in docs for t in fn(d)]
    res = resolver or EntityResolver.from_documents(docs)
    return res.resolve_triples(raw)


def normalize_triples(triples: Iterable[Sequence[str]]) -> set[Triple]:
    """A set of triples with symmetric relations stored with the two names sorted (for set comparison)."""
    out = set()
    for s, r, o in triples:
        if r in SYMMETRIC:
            s, o = sorted((s, o))
        out.add((s, r, str(o)))
    return out


def extraction_scores(predicted: Iterable[Sequence[str]], gold: Iterable[Sequence[str]]) -> dict[str, float]:
    """Precision, recall and F1 of a set of triples against the true ones (symmetric relations unordered)."""
    p, g = normalize_triples(predicted), normalize_triples(gold)
    if not g:
        raise ValueError("gold is empty: pass the true triples to score against (e.g. the world's triples)")
    tp = len(p & g)
    prec = tp / len(p) if p else 0.0
    rec = tp / len(g)
    f1 = 2 * prec * rec / (prec + rec) if tp else 0.0
    return {"precision": prec, "recall": rec, "f1": f1, "tp": tp, "n_pred": len(p), "n_gold": len(g)}
