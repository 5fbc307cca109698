"""The GraphRAG knowledge graph (chapter 20): a networkx ``DiGraph`` built from triples (years become
node attributes), its Louvain communities, and one templated report per community.
"""
from __future__ import annotations

from typing import Any, Iterable, Sequence

import networkx as nx

from labkit.retrieval.graphrag.extract import LITERAL, SCHEMA, SYMMETRIC

__all__ = ["build_graph", "detect_communities", "community_reports"]


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
