"""GraphRAG (图检索增强生成, chapter 20), small: the pipeline of Edge et al. 2024 ("From Local to Global",
Microsoft) on a corpus that fits in a notebook. This module: local and global search over the graph, the
global-answer score, and :class:`GraphRAG` (the whole pipeline); extraction is in ``graphrag.extract``, the
graph and its communities in ``graphrag.graph``.

    passages ─extract_triples─▶ (subject, relation, object) ─resolve─▶ build_graph (networkx)
        ─detect_communities (Louvain)─▶ community_reports
    question ─local_search─▶ linked entities → k-hop subgraph → relation path → answer
    question ─global_search─▶ map over community reports → reduce to the top points

Two extractors share one interface: a rule/pattern extractor that works offline (the default) and an
LLM-prompt extractor (:class:`LLMExtractor`) for any ``llm(prompt) -> str`` callable (tested with a fake).
Everything is deterministic; no model is needed.
"""
from __future__ import annotations

import re
from collections import deque
from typing import Any, Callable, Iterable, Sequence

import networkx as nx

from labkit.retrieval.graphrag.extract import LITERAL, SYMMETRIC, EntityResolver, Triple, extract_triples
from labkit.retrieval.graphrag.graph import _edge_rels, _fact, build_graph, community_reports, detect_communities
from labkit.retrieval.text import STOPWORDS

__all__ = ["local_search", "global_search", "score_global_answer", "GraphRAG"]


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


def _compare_answer(G: nx.DiGraph, question: str, ents: list[str], cues: list[str]) -> str:
    """Comparison question: of the first two entities, the one with the earlier year attribute (the later one
    when the question says *later*); "" when either has no year."""
    rel = next((_YEAR_OF[c] for c in cues if c in _YEAR_OF), None)
    cand = [(G.nodes[e].get(rel) if rel else None) or next((G.nodes[e][k] for k in LITERAL if k in G.nodes[e]), None)
            for e in ents[:2]]
    if all(c is not None for c in cand):
        later = re.search(r"\blater\b", question)
        i = max(range(2), key=lambda j: cand[j]) if later else min(range(2), key=lambda j: cand[j])
        return ents[i]
    return ""


def _path_answer(G: nx.DiGraph, ents: list[str], cues: list[str], hops: int) -> tuple[str, list[tuple[str, str, str]]]:
    """``(answer, path)``: the shortest relation path from a linked entity whose relations are exactly the cued
    ones (forward edges first, then both directions), answered by its end; or a cued year attribute."""
    order = {e: i for i, e in enumerate(ents)}
    answer, path = "", []
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
    return answer, path


def _context_facts(G: nx.DiGraph, ents: list[str], path: list[tuple[str, str, str]], hops: int,
                   max_context: int) -> list[Triple]:
    """Context, most useful first: the linked entities' own attributes, the reasoning path, then the rest of
    the ``hops``-hop subgraph by distance from the linked entities; at most ``max_context`` facts."""
    nodes = set()
    for e in ents:
        nodes |= set(nx.ego_graph(G, e, radius=hops, undirected=True))
    sub = G.subgraph(nodes)
    facts: list[Triple] = [(e, k, str(val)) for e in ents for k, val in sorted(G.nodes[e].items()) if k in LITERAL]
    facts += [(u, r, v) if not r.startswith("~") else (v, r[1:], u) for u, r, v in path]
    dist: dict[str, int] = {}
    for e in ents:
        for n, d in nx.single_source_shortest_path_length(G.to_undirected(as_view=True), e, cutoff=hops).items():
            dist[n] = min(dist.get(n, 99), d)
    for u, v in sorted(sub.edges(), key=lambda e: (min(dist.get(e[0], 99), dist.get(e[1], 99)), e)):
        facts += [(u, r, v) for r in _edge_rels(G, u, v)]
    return list(dict.fromkeys(facts))[:max_context]


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
    answer, path = "", []
    comp = re.search(r"\bor\b", question) and len(ents) >= 2 and re.search(r"earlier|first|older|later", question)
    if comp:
        answer = _compare_answer(G, question, ents, cues)
    elif ents:
        answer, path = _path_answer(G, ents, cues, hops)
    facts = _context_facts(G, ents, path, hops, max_context)
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
