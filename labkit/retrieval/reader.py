"""The answer step without a model (chapters 18-20): a deterministic extractive reader. The SQuAD answer metrics
(normalisation, exact match, token F1 with CJK characters as tokens) are re-exported from labkit.evaluation.qa.
"""
from __future__ import annotations

import math
import re
from collections import Counter
from typing import Sequence

from labkit.evaluation.qa import exact_match, normalize_answer, token_f1
from labkit.retrieval.text import _CJK, sentences_with_titles, tokenize

__all__ = ["ExtractiveReader", "normalize_answer", "exact_match", "f1_score"]


_ENT_RE = re.compile(r"[A-Z][A-Za-z0-9-]*(?:\s+(?:of\s+)?[A-Z][A-Za-z0-9-]*)*")


_YEAR_RE = re.compile(r"(?<!\d)(1[5-9]\d\d|20\d\d)(?!\d)")
_WH = {"who", "where", "when", "which", "what", "whom", "year", "city", "company", "first", "earlier",
       "哪个", "谁", "哪"}
#: capitalised words that start sentences but are never part of an answer name
_CAP_STOP = {"The", "In", "Born", "Since", "Its", "It", "He", "She", "His", "Her", "Friends", "Notable",
             "Companies", "Relations", "A", "An", "Their", "Our", "After", "Before", "Since", "Old"}
#: a few synonyms so "work for" meets "employed by" (query expansion, 查询扩展)
_SYNONYMS = {"work": {"employ", "join", "engineer", "staff"}, "employ": {"work", "join", "engineer", "staff"},
             "born": {"native", "birth"}, "found": {"establish"}, "sale": {"launch", "sold", "releas"},
             "launch": {"sale", "sold", "releas"}, "design": {"work"}, "headquarter": {"based", "head", "office"}}


def _stem(t: str) -> str:
    """A crude suffix stripper (works → work, founded → found, employs → employ)."""
    for suf in ("ing", "ers", "ed", "er", "es", "s"):
        if t.endswith(suf) and len(t) - len(suf) >= 4:
            return t[: -len(suf)]
    return t


def _strip_cap_stop(span: str) -> str:
    words = span.split()
    while words and words[0] in _CAP_STOP:
        words = words[1:]
    return " ".join(words)


class ExtractiveReader:
    """A deterministic extractive reader: no model, just the retrieved text.

    1. Split the passages into sentences, replacing a leading pronoun by the article title.
    2. Score each sentence by the IDF-weighted question words it contains (plus the title's, half weight),
       with a small bonus for higher-ranked passages.
    3. From the best sentence take the answer span of the expected type: a year for *when / what year*,
       otherwise the first capitalised name that is not already in the question.
    4. Comparison questions (*..., A or B?*) look up a year for each option and pick the earlier one.
    5. Questions that name no entity (global questions) get the three best sentences as a summary.

    It cannot chain facts across passages: a multi-hop question gets the first hop's answer. That is the
    honest weakness the GraphRAG chapter measures.
    """

    def __call__(self, question: str, passages: Sequence[str]) -> str:
        if not isinstance(question, str) or not question.strip():
            raise ValueError("question is empty")
        sents = sentences_with_titles(passages)
        if not sents:
            return ""
        q_ents = [e for e in _ENT_RE.findall(question) if e.split()[0] not in {"Who", "Where", "When", "Which", "What", "In", "Summarize"}]
        q_ents += [e.split(" ", 1)[1] for e in _ENT_RE.findall(question)
                   if " " in e and e.split()[0] in {"Who", "Where", "When", "Which", "What", "In"}]
        qtok = sorted({_stem(t) for t in tokenize(question, stopwords=True) if t not in _WH})
        toks = [{_stem(t) for t in tokenize(s)} for _, _, s in sents]
        df = Counter(t for st in toks for t in st)
        idf = {t: math.log(1 + len(sents) / (1 + df.get(t, 0))) for t in qtok}
        syn = {t: _SYNONYMS.get(t, set()) for t in qtok}
        stoks = {s: st for (_, _, s), st in zip(sents, toks)}

        def score(r: int, title: str, s: str) -> float:
            st, tt = stoks[s], {_stem(t) for t in tokenize(title)}
            total = 0.0
            for t in qtok:
                hit = 1.0 if t in st else 0.7 if syn[t] & st else 0.5 if t in tt else 0.0
                total += idf[t] * hit
            return total - 0.05 * r

        comp = re.search(r",\s*(?:the\s+)?(.+?)\s+or\s+(?:the\s+)?(.+?)\?\s*$", question)
        if comp:
            years = {}
            for opt in comp.groups():
                cands = [(score(r, t, s), _YEAR_RE.search(s)) for r, t, s in sents
                         if (opt in s or opt == t) and _YEAR_RE.search(s)]
                if cands:
                    years[opt] = int(max(cands, key=lambda c: c[0])[1].group(0))
            if not years:
                return ""
            later = re.search(r"\b(later|last|younger|newer)\b", question)
            return (max if later else min)(years, key=lambda o: years[o])
        if not q_ents and not re.search(rf"[{_CJK}]", question):
            best = sorted(range(len(sents)), key=lambda i: -score(*sents[i]))[:3]
            return " ".join(sents[i][2] for i in sorted(best))
        want_year = bool(re.search(r"\b(when|what year|which year)\b", question, re.I) or "哪一年" in question)
        in_q = question.lower()
        for i in sorted(range(len(sents)), key=lambda i: -score(*sents[i])):
            s = sents[i][2]
            if want_year:
                m = _YEAR_RE.search(s)
                if m:
                    return m.group(0)
                continue
            for cand in _ENT_RE.findall(s):
                cand = _strip_cap_stop(cand)
                if cand and cand.lower() not in in_q and cand[0].isupper():
                    return cand
        return ""


# The answer metrics' one home is labkit.evaluation.qa (chapter 17): SQuAD normalisation, exact match, and token F1
# (named f1_score here, as chapter 18 calls it).
f1_score = token_f1
