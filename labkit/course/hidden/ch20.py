"""Hidden tests of chapter 20's lab tasks: building the knowledge graph from triples, and a multi-hop query
that follows a chain of relations (forwards and backwards).

References: labkit's ``build_graph`` (nodes, edges, relations, literal years as node attributes) compared
as plain sets with networkx, on random triples with branching, two relations between one pair and years,
and on the world's 189 true triples; for the query, a walk over the triple list itself (no graph), and the
world's 34 multi-hop questions with their gold answers.
"""
from __future__ import annotations

import random
from functools import lru_cache

import networkx as nx
import torch

from labkit.core.check import exact
from labkit.course.hidden.base import Check, Forbidden, Learner, Task
from labkit.datasets import world
from labkit.retrieval.graphrag import build_graph

__all__ = ["TASKS"]

_RELS = ("works_for", "founded_by", "member_of", "located_in", "born_in", "allied_with")
_YEARS = ("born_year", "founded_year", "launched_year")


def _rng(g: torch.Generator) -> random.Random:
    return random.Random(int(torch.randint(0, 2**31 - 1, (1,), generator=g)))


def _random_triples(r: random.Random, n_ent: int, n_trip: int, years: bool) -> list[tuple[str, str, str]]:
    ents = [f"E{i}" for i in range(n_ent)]
    out = [(r.choice(ents), r.choice(_RELS), r.choice(ents)) for _ in range(n_trip)]
    out = [(s, rel, o) for s, rel, o in out if s != o]
    if years:
        out += [(r.choice(ents), r.choice(_YEARS), str(r.randint(1800, 2000))) for _ in range(n_ent // 2)]
        out.append(("Lonely", "born_year", "1901"))        # an entity known only from a year
    r.shuffle(out)
    return out


def _view(G: nx.DiGraph) -> tuple:
    """What a graph says, as plain sets: nodes with their attributes, edges with (first relation, all)."""
    assert isinstance(G, nx.DiGraph) and not G.is_multigraph(), \
        f"triples_to_graph must return an nx.DiGraph, got {type(G).__name__}"
    nodes = {n: dict(sorted(d.items())) for n, d in G.nodes(data=True)}
    edges = {(u, v): (d.get("relation"), tuple(d.get("relations", [d.get("relation")]))) for u, v, d in G.edges(data=True)}
    return nodes, edges


def _same_graph(L: Learner, triples: list, what: str) -> None:
    got_nodes, got_edges = _view(L.triples_to_graph([tuple(t) for t in triples]))
    want_nodes, want_edges = _view(build_graph(triples))
    exact(sorted(got_nodes), sorted(want_nodes), quiet=True, name=f"{what}: the nodes (no node for a year)")
    exact(sorted(got_edges), sorted(want_edges), quiet=True, name=f"{what}: the edges (subject -> object)")
    exact(got_edges, want_edges, quiet=True, name=f"{what}: each edge's relation (and relations)")
    exact(got_nodes, want_nodes, quiet=True, name=f"{what}: node attributes (years as ints)")


# ---- 20.A triples_to_graph -----------------------------------------------------------------------------
def _graph_random(L: Learner, g: torch.Generator) -> None:
    r = _rng(g)
    for _ in range(3):
        _same_graph(L, _random_triples(r, r.randint(3, 10), r.randint(3, 25), years=False),
                    "random entity-entity triples")


def _graph_years(L: Learner, g: torch.Generator) -> None:
    r = _rng(g)
    _same_graph(L, _random_triples(r, r.randint(4, 9), r.randint(4, 15), years=True), "triples with years")


def _graph_two_relations(L: Learner, g: torch.Generator) -> None:
    triples = [("A", "works_for", "B"), ("A", "founded_by", "B"), ("B", "founded_by", "A"), ("A", "works_for", "C")]
    _same_graph(L, triples, "two relations from A to B, and one from B to A")
    G = L.triples_to_graph(triples)
    exact(G.edges["A", "B"].get("relations"), ["works_for", "founded_by"], quiet=True,
          name="edge A -> B keeps both relations in order")


@lru_cache(maxsize=1)
def _world_triples() -> tuple[tuple[str, str, str], ...]:
    return tuple(tuple(t) for t in world.load_world()["triples"])


def _graph_world(L: Learner, g: torch.Generator) -> None:
    _same_graph(L, list(_world_triples()), "the world's 189 true triples")


# ---- 20.B follow_relations -----------------------------------------------------------------------------
def _walk(triples: list, start: str, relations: list[str]) -> set:
    """The reference: follow the relations over the triple list itself (``start`` is a node of the graph)."""
    frontier = {start}
    for step in relations:
        back, name = step.startswith("^"), step.lstrip("^")
        frontier = ({s for s, r, o in triples if r == name and o in frontier} if back else
                    {o for s, r, o in triples if r == name and s in frontier})
    return frontier


def _chains(r: random.Random, n: int, backwards: bool) -> list[list[str]]:
    out = []
    for _ in range(n):
        chain = [r.choice(_RELS) for _ in range(r.randint(1, 3))]
        if backwards:
            chain = [("^" + c) if r.random() < 0.5 else c for c in chain]
        out.append(chain)
    return out


def _follow_random(L: Learner, g: torch.Generator, backwards: bool) -> None:
    r = _rng(g)
    for _ in range(3):
        triples = _random_triples(r, r.randint(4, 10), r.randint(10, 30), years=True)
        G = build_graph(triples)
        for chain in _chains(r, 6, backwards):
            start = r.choice(sorted(G.nodes))
            exact(set(L.follow_relations(G, start, list(chain))), _walk(triples, start, chain), quiet=True,
                  name=f"follow_relations(G, {start!r}, {chain}) on {len(triples)} random triples")


def _follow_edges(L: Learner, g: torch.Generator) -> None:
    triples = [("A", "works_for", "B"), ("A", "founded_by", "B"), ("C", "works_for", "B"), ("B", "located_in", "D")]
    G = build_graph(triples)
    exact(set(L.follow_relations(G, "A", ["founded_by", "located_in"])), {"D"}, quiet=True,
          name="a relation stored as the second of an edge's relations is followed")
    exact(set(L.follow_relations(G, "B", ["^works_for"])), {"A", "C"}, quiet=True, name="'^works_for' from B: who works for B")
    exact(set(L.follow_relations(G, "A", ["works_for", "^works_for"])), {"A", "C"}, quiet=True,
          name="A's colleagues: forwards then backwards")
    exact(set(L.follow_relations(G, "A", [])), {"A"}, quiet=True, name="no step: the start itself")
    exact(set(L.follow_relations(G, "A", ["born_in"])), set(), quiet=True, name="a step that leads nowhere: empty set")
    exact(set(L.follow_relations(G, "Nobody", ["works_for"])), set(), quiet=True, name="a start not in G: empty set")


def _follow_world(L: Learner, g: torch.Generator) -> None:
    G = build_graph(list(_world_triples()))
    multi = [q for q in world.load_questions() if q["type"] == "multi"]
    got = [set(L.follow_relations(G, q["facts"][0][0], [f[1] for f in q["facts"]])) for q in multi]
    exact(got, [{q["answer"]} for q in multi], quiet=True,
          name=f"the world's {len(multi)} multi-hop questions, each answered by its chain of relations")


TASKS = (
    Task("20.A", "triples to a knowledge graph", ("triples_to_graph",), (
        Check("random triples: nodes, edges, relations == labkit's build_graph", 1, _graph_random),
        Check("years become int node attributes, no year nodes", 1, _graph_years),
        Check("two relations between one pair, and the reverse edge", 1, _graph_two_relations),
        Check("the world's true triples", 1, _graph_world),
    ), Forbidden()),
    Task("20.B", "a multi-hop query", ("follow_relations",), (
        Check("random graphs and chains == a walk over the triples", 1, lambda L, g: _follow_random(L, g, False)),
        Check("'^relation' steps (backwards), mixed chains", 1, lambda L, g: _follow_random(L, g, True)),
        Check("two relations on one edge, empty chains, dead ends, unknown start", 1, _follow_edges),
        Check("the world's multi-hop questions", 1, _follow_world),
    ), Forbidden()),
)
