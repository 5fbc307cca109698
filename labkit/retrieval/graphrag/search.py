"""GraphRAG (图检索增强生成), small: the pipeline of Edge et al. 2024 ("From Local to Global", Microsoft)
on a corpus that fits in a notebook.

    passages ─extract_triples─▶ (subject, relation, object) ─resolve─▶ build_graph (networkx)
        ─detect_communities (Louvain)─▶ community_reports
    question ─local_search─▶ linked entities → k-hop subgraph → relation path → answer
    question ─global_search─▶ map over community reports → reduce to the top points

Two extractors share one interface: a rule/pattern extractor that works offline (the default) and an
LLM-prompt extractor (:class:`LLMExtractor`) for any ``llm(prompt) -> str`` callable (tested with a fake).
Everything is deterministic; no model is needed.
"""
from __future__ import annotations

import json
import re
from collections import defaultdict, deque
from typing import Any, Callable, Iterable, Sequence

import networkx as nx

from labkit.retrieval.rag import STOPWORDS, sentences_with_titles

__all__ = [
    "SCHEMA", "LITERAL", "SYMMETRIC", "EntityResolver", "extract_triples", "rule_extract", "LLMExtractor",
    "EXTRACTION_PROMPT", "extraction_scores", "normalize_triples", "build_graph", "detect_communities", "community_reports",
    "local_search", "global_search", "score_global_answer", "GraphRAG",
]

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


# ----------------------------------------------------------------------------- entity resolution
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


# ------------------------------------------------------------------------------ LLM extractor
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


# ------------------------------------------------------------------------------------- the graph
def build_graph(triples: Iterable[Sequence[str]]) -> nx.DiGraph:
    """A directed knowledge graph: one node per entity, one edge per entity–entity triple (attribute
    ``relation``; a second relation between the same pair is kept in ``relations``). Literal triples
    (years) become node attributes, so years do not glue unrelated entities together."""
    G = nx.DiGraph()
    n = 0
    for s, r, o in triples:
        n += 1
        if r not in SCHEMA:
            raise ValueError(f"unknown relation {r!r}; allowed: {', '.join(SCHEMA)}")
        if r in LITERAL:
            G.add_node(s)
            G.nodes[s][r] = int(o)
            continue
        if G.has_edge(s, o):
            rels = G.edges[s, o].setdefault("relations", [G.edges[s, o]["relation"]])
            if r not in rels:
                rels.append(r)
        else:
            G.add_edge(s, o, relation=r)
    if n == 0:
        raise ValueError("triples is empty: extract some triples first")
    return G


def _edge_rels(G: nx.DiGraph, u: str, v: str) -> list[str]:
    d = G.edges[u, v]
    return d.get("relations", [d["relation"]])


def detect_communities(G: nx.Graph, *, resolution: float = 1.0, seed: int = 0) -> list[set[str]]:
    """Louvain communities (modularity maximisation) of the undirected graph; bigger ``resolution`` → more,
    smaller communities. Deterministic for a fixed ``seed``; sorted by size, then by smallest name."""
    if G.number_of_nodes() == 0:
        raise ValueError("graph is empty: build it from extracted triples first (build_graph)")
    if resolution <= 0:
        raise ValueError(f"resolution ({resolution}) must be > 0 (1.0 is standard modularity)")
    comms = nx.community.louvain_communities(G.to_undirected(), resolution=resolution, seed=seed)
    return sorted((set(c) for c in comms), key=lambda c: (-len(c), min(c)))


_REL_TEXT = {"born_in": "was born in", "works_for": "works for", "founded_by": "was founded by",
             "headquartered_in": "is headquartered in", "member_of": "is a member of", "located_in": "is located in",
             "made_by": "is made by", "designed_by": "was designed by", "allied_with": "is allied with",
             "rival_of": "is a rival of", "held_in": "was held in", "participant": "had as participant"}


def _fact(u: str, rel: str, v: str) -> str:
    return f"{u} {_REL_TEXT.get(rel, rel.replace('_', ' '))} {v}."


def community_reports(G: nx.DiGraph, communities: Sequence[set[str]], *, max_facts: int = 12) -> list[dict[str, Any]]:
    """One report per community (a templated stand-in for the paper's LLM-written summaries).

    Each report has the community's most connected entities (its *title*), the groups it contains (nodes
    that others are ``member_of``), its internal facts ranked by the degree of their endpoints, and every
    relation that crosses to another community. ``rank`` = number of internal edges (importance).
    """
    where = {n: i for i, c in enumerate(communities) for n in c}
    reports = []
    for i, c in enumerate(communities):
        deg = {n: G.degree(n) for n in c}
        top = sorted(c, key=lambda n: (-deg[n], n))[:3]
        groups = sorted(n for n in c if any("member_of" in _edge_rels(G, u, n) for u in G.predecessors(n)))
        internal, external = [], []
        for u, v in G.edges():
            if u in c or v in c:
                for rel in _edge_rels(G, u, v):
                    if u in c and v in c:
                        internal.append((deg.get(u, 0) + deg.get(v, 0), _fact(u, rel, v)))
                    elif u in c and rel in SYMMETRIC or (v in c and rel in SYMMETRIC and where.get(u) != i):
                        external.append(_fact(u, rel, v))
        internal.sort(key=lambda t: (-t[0], t[1]))
        facts = [f for _, f in internal[:max_facts]]
        lines = [f"Community {i}: {len(c)} entities around {', '.join(top)}."]
        if groups:
            lines.append(f"Alliances (groups with members) in this community: {', '.join(groups)}.")
            for g in groups:
                mem = sorted(u for u in G.predecessors(g) if "member_of" in _edge_rels(G, u, g))
                lines.append(f"Members of the {g}: {', '.join(mem)}.")
        lines += facts + sorted(set(external))
        reports.append({"id": i, "title": top[0] if top else f"community {i}", "entities": sorted(c),
                        "groups": groups, "rank": len(internal), "text": "\n".join(lines)})
    return reports


# --------------------------------------------------------------------------------------- search
#: question words → relations they ask about (the query side of the schema)
CUES = {
    "born": "born_in", "birth": "born_in", "出生": "born_in", "employs": "works_for", "employer": "works_for",
    "work": "works_for", "works": "works_for", "employed": "works_for", "founder": "founded_by",
    "founded": "founded_by", "创立": "founded_by", "headquartered": "headquartered_in",
    "headquarters": "headquartered_in", "based": "headquartered_in", "alliance": "member_of",
    "faction": "member_of", "belong": "member_of", "region": "located_in", "maker": "made_by",
    "makes": "made_by", "made": "made_by", "designer": "designed_by", "designed": "designed_by",
    "launched": "launched_year", "sale": "launched_year",
}
_YEAR_OF = {"born_in": "born_year", "founded_by": "founded_year", "launched_year": "launched_year"}


def _cues(question: str) -> list[str]:
    words = re.findall(r"[a-z]+|[\u4e00-\u9fff]{2}", question.lower())
    words += [question[i:i + 2] for i in range(len(question) - 1)]
    return list(dict.fromkeys(CUES[w] for w in words if w in CUES))


def _paths(G: nx.DiGraph, start: str, max_hops: int, *, both: bool) -> list[list[tuple[str, str, str]]]:
    """All simple relation paths from ``start`` up to ``max_hops`` edges (forward, or both directions)."""
    out, queue = [], deque([(start, [])])
    while queue:
        node, path = queue.popleft()
        if path:
            out.append(path)
        if len(path) == max_hops:
            continue
        seen = {start} | {v for _, _, v in path}
        nbrs = [(v, r) for v in G.successors(node) for r in _edge_rels(G, node, v)]
        if both:
            nbrs += [(u, "~" + r) for u in G.predecessors(node) for r in _edge_rels(G, u, node)]  # ~ = inverse
        for v, r in sorted(nbrs):
            if v not in seen:
                queue.append((v, path + [(node, r, v)]))
    return out


def local_search(G: nx.DiGraph, question: str, resolver: EntityResolver, *, hops: int = 3,
                 max_context: int = 12) -> dict[str, Any]:
    """Answer from the graph neighbourhood of the entities the question names.

    1. Link entities in the question (:meth:`EntityResolver.link`).
    2. Read the relations the question asks about from cue words (*founder* → ``founded_by``, *born* →
       ``born_in`` ...), find the shortest path from the entity whose relations cover them, answer its end.
       Comparison questions (two entities, *earlier / first*) compare the year attributes.
    3. Context (what an LLM reader would get): the entities' year attributes, the path, then the rest of the
       ``hops``-hop subgraph nearest first, one fact per line, at most ``max_context`` facts.

    Returns ``{"entities", "cues", "path", "answer", "context", "facts"}`` (``facts``: context triples).
    """
    if not isinstance(question, str) or not question.strip():
        raise ValueError("question is empty")
    if hops < 1:
        raise ValueError(f"hops ({hops}) must be >= 1")
    ents = [e for e in resolver.link(question) if e in G]
    cues = _cues(question)
    nodes = set()
    for e in ents:
        nodes |= set(nx.ego_graph(G, e, radius=hops, undirected=True))
    sub = G.subgraph(nodes)
    order = {e: i for i, e in enumerate(ents)}
    answer, path = "", []
    comp = re.search(r"\bor\b", question) and len(ents) >= 2 and re.search(r"earlier|first|older|later", question)
    if comp:
        rel = next((_YEAR_OF[c] for c in cues if c in _YEAR_OF), None)
        cand = [(G.nodes[e].get(rel) if rel else None) or next((G.nodes[e][k] for k in LITERAL if k in G.nodes[e]), None)
                for e in ents[:2]]
        if all(c is not None for c in cand):
            later = re.search(r"\blater\b", question)
            i = max(range(2), key=lambda j: cand[j]) if later else min(range(2), key=lambda j: cand[j])
            answer = ents[i]
    elif ents:
        want = [c for c in cues if c not in LITERAL]
        lit = [c for c in cues if c in LITERAL]
        for both in (False, True):
            best = None
            for e in ents:
                for p in _paths(G, e, hops, both=both):
                    rels = [r.lstrip("~") for _, r, _ in p]
                    if want and set(want) <= set(rels) and len(rels) == len(want):
                        key = (len(p), order[e])
                        if best is None or key < best[0]:
                            best = (key, p)
            if best:
                path = best[1]
                answer = path[-1][2]
                break
        if not want and lit:
            val = G.nodes[ents[0]].get(lit[0])
            answer = "" if val is None else str(val)
    # context, most useful first: the linked entities' own attributes, the reasoning path, then the
    # rest of the k-hop subgraph by distance from the linked entities; at most max_context facts
    facts: list[Triple] = [(e, k, str(val)) for e in ents for k, val in sorted(G.nodes[e].items()) if k in LITERAL]
    facts += [(u, r, v) if not r.startswith("~") else (v, r[1:], u) for u, r, v in path]
    dist: dict[str, int] = {}
    for e in ents:
        for n, d in nx.single_source_shortest_path_length(G.to_undirected(as_view=True), e, cutoff=hops).items():
            dist[n] = min(dist.get(n, 99), d)
    for u, v in sorted(sub.edges(), key=lambda e: (min(dist.get(e[0], 99), dist.get(e[1], 99)), e)):
        facts += [(u, r, v) for r in _edge_rels(G, u, v)]
    facts = list(dict.fromkeys(facts))[:max_context]
    context = "\n".join(_fact(s, r, o) if r not in LITERAL else f"{s} {r.replace('_', ' ')}: {o}." for s, r, o in facts)
    return {"entities": ents, "cues": cues, "path": path, "answer": answer, "context": context, "facts": facts}


_GLOBAL_SYN = {"faction": {"alliance", "alliances", "member", "members", "allied", "rival"},
               "factions": {"alliance", "alliances", "member", "members", "allied", "rival"},
               "alliances": {"alliance", "alliances", "allied", "rival"}, "related": {"allied", "rival"},
               "relations": {"allied", "rival"}, "rivals": {"rival"}, "dominate": {"members"},
               "belong": {"members", "member"}, "companies": {"members"}, "alliance": {"alliance", "alliances"}}


def global_search(reports: Sequence[dict[str, Any]], question: str, *, top_points: int = 8,
                  llm: Callable[[str], str] | None = None) -> dict[str, Any]:
    """Map-reduce over community reports (the paper's global search).

    *Map*: every report yields scored points (its lines), score = question words and their expansions found in
    the line, plus the report's rank as a tie-breaker. *Reduce*: the ``top_points`` best points across all
    reports, de-duplicated, form the answer. With ``llm`` the reduce step is a prompt over those points.
    """
    if not reports:
        raise ValueError("reports is empty: build community reports first")
    if not isinstance(question, str) or not question.strip():
        raise ValueError("question is empty")
    qw = set(re.findall(r"[a-z]+", question.lower())) - STOPWORDS
    exp = set(qw) | {w for q in qw for w in _GLOBAL_SYN.get(q, set())}
    points = []
    for rep in reports:  # map
        for line in rep["text"].splitlines()[1:]:
            lw = set(re.findall(r"[a-z]+", line.lower())) - STOPWORDS
            s = len(lw & exp)
            if s:
                points.append((s, rep["rank"], rep["id"], line))
    points.sort(key=lambda p: (-p[0], -p[1], p[2], p[3]))
    chosen = list(dict.fromkeys(p[3] for p in points))[:top_points]  # reduce
    if llm is not None:
        prompt = ("Using only these points from community reports, answer the question.\n\n" + "\n".join(chosen)
                  + f"\n\nQuestion: {question}\nAnswer:")
        return {"answer": llm(prompt).strip(), "points": chosen}
    return {"answer": "\n".join(chosen), "points": chosen}


def score_global_answer(answer: str, facts: Iterable[Sequence[str]]) -> float:
    """Fraction of the facts a global answer states, each within one line or sentence.

    The alliance relations (allied_with / rival_of) when ``facts`` has any: both names and the right relation
    word (ally/allied, rival/hostile). Otherwise the memberships (member_of): the member and its alliance.
    """
    facts = [tuple(f) for f in facts]
    rel_facts = [f for f in facts if f[1] in SYMMETRIC] or [f for f in facts if f[1] == "member_of"]
    if not rel_facts:
        raise ValueError("facts contain no allied_with / rival_of / member_of relation to score; "
                         "pass the question's 'facts'")
    units = [u for u in re.split(r"\n|(?<=\.)\s+", answer) if u.strip()]
    ok = 0
    for s, r, o in rel_facts:
        if r == "member_of":
            ok += any(s in u and o in u for u in units)
            continue
        word = r"allied|allies|ally" if r == "allied_with" else r"rival|hostile"
        ok += any(s in u and o in u and re.search(word, u) for u in units)
    return ok / len(rel_facts)


# ---------------------------------------------------------------------------------- the pipeline
class GraphRAG:
    """The whole pipeline on a list of passages (each starting with a ``# Title`` line).

    >>> g = GraphRAG(passages)                       # extract → resolve → graph → communities → reports
    >>> g.query("Where was the founder of X born?")   # local search
    >>> g.query("What are the main factions?", mode="global")
    """

    def __init__(self, passages: Sequence[str], *, method: str = "rules", llm: Callable[[str], str] | None = None,
                 resolution: float = 1.0, seed: int = 0) -> None:
        if isinstance(passages, str) or len(passages) == 0:
            raise ValueError("passages must be a non-empty list of passage strings")
        self.resolver = EntityResolver.from_documents(passages)
        self.triples = extract_triples(passages, method=method, llm=llm, resolver=self.resolver)
        self.graph = build_graph(self.triples)
        self.communities = detect_communities(self.graph, resolution=resolution, seed=seed)
        self.reports = community_reports(self.graph, self.communities)

    def query(self, question: str, *, mode: str = "local", hops: int = 3) -> dict[str, Any]:
        if mode == "local":
            return local_search(self.graph, question, self.resolver, hops=hops)
        if mode == "global":
            return global_search(self.reports, question)
        raise ValueError(f"mode must be 'local' or 'global', got {mode!r}")

    def auto(self, question: str) -> dict[str, Any]:
        """Route: local search when the question names an entity of the graph, else global search."""
        if any(e in self.graph for e in self.resolver.link(question)):
            return self.query(question, mode="local")
        return self.query(question, mode="global")
