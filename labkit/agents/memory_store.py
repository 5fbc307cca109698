"""Conversation memory (对话记忆), chapter 21, part 2: the memories that *store what was said* and select by the
new message: entity memory, knowledge-graph memory and vector-retrieval memory.

**Facts (事实抽取).** Both structured memories read facts with two rules (no model): ``my <key> is <value>``
gives ``("I", key, value)`` and ``<Name> is [a|an|from] <value>`` gives ``(Name, "is"/"is from", value)``.

* :class:`EntityMemory` (实体记忆): key or name → the sentences said about it. The context for a new message
  is the sentences of every key/name the message mentions (one hop).
* :class:`KGMemory` (知识图谱记忆): the same facts as edges of a ``networkx.DiGraph``; the context also follows
  each matched edge one hop further (``my sister`` → Mira → ``is nurse``), which answers two-hop questions.
* :class:`VectorMemory` (向量检索记忆): every exchange as a TF-IDF vector (words, smoothed IDF over the stored
  exchanges, L2-normalised); the context is the ``k`` exchanges with the highest cosine to the new message.
"""
from __future__ import annotations

import math
import re
from collections import Counter

import networkx as nx
import numpy as np

from labkit.agents.memory import render_messages

__all__ = ["extract_facts", "EntityMemory", "KGMemory", "VectorMemory"]

_MY = re.compile(r"\bmy ([a-z]+(?: [a-z]+)?) is ([^.,;!?]+)", re.I)
_NAME = re.compile(r"\b([A-Z][a-z]+) is (a |an |from )?([A-Za-z][A-Za-z-]*)")
_NOT_NAMES = {"My", "It", "That", "This", "What", "Which", "Who", "There", "Here", "He", "She", "Mine", "Today"}
_WORD = re.compile(r"[a-z0-9']+")


def extract_facts(text: str) -> list[tuple[str, str, str]]:
    """Triples ``(subject, relation, object)`` the two rules find in ``text`` (order of appearance)."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    found = [(m.start(), ("I", m.group(1).lower(), m.group(2).strip())) for m in _MY.finditer(text)]
    for m in _NAME.finditer(text):
        if m.group(1) not in _NOT_NAMES:
            rel = "is from" if (m.group(2) or "").strip() == "from" else "is"
            found.append((m.start(), (m.group(1), rel, m.group(3))))
    return [t for _, t in sorted(found)]


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+", text) if s.strip()]


def _mentions(key: str, query: str) -> bool:
    return re.search(rf"\b{re.escape(key.lower())}\b", query.lower()) is not None


class EntityMemory:
    """Key (``sister``, ``favourite food``) or name (``Mira``) → the user's sentences that state it."""

    def __init__(self) -> None:
        self.entities: dict[str, list[str]] = {}

    def save(self, user: str, assistant: str) -> None:
        if not isinstance(user, str) or not isinstance(assistant, str):
            raise TypeError("user and assistant must be str")
        for sent in _sentences(user):
            for s, rel, o in extract_facts(sent):
                for key in ([rel] if s == "I" else [s]) + ([o] if o[:1].isupper() else []):
                    if sent not in self.entities.setdefault(key, []):
                        self.entities[key].append(sent)

    def context(self, query: str = "") -> str:
        hits = [k for k in self.entities if _mentions(k, query)]
        return "\n".join(f"{k}: {' '.join(self.entities[k])}" for k in hits)


class KGMemory:
    """Facts as a directed graph (subject → object, edge attribute ``relation``); two-hop context."""

    def __init__(self) -> None:
        self.graph = nx.DiGraph()

    def save(self, user: str, assistant: str) -> None:
        if not isinstance(user, str) or not isinstance(assistant, str):
            raise TypeError("user and assistant must be str")
        for s, rel, o in extract_facts(user):
            self.graph.add_edge(s, o, relation=rel)

    def triples(self) -> list[tuple[str, str, str]]:
        return [(s, d["relation"], o) for s, o, d in self.graph.edges(data=True)]

    def context(self, query: str = "") -> str:
        """Edges whose relation (for ``I``) or subject/object name the query mentions, plus the next hop."""
        first = [(s, r, o) for s, r, o in self.triples()
                 if (s == "I" and _mentions(r, query)) or (s != "I" and (_mentions(s, query) or _mentions(o, query)))]
        out = list(first)
        for _, _, o in first:
            out += [(o, d["relation"], o2) for _, o2, d in self.graph.out_edges(o, data=True)
                    if (o, d["relation"], o2) not in out]
        return "\n".join(f"my {r}: {o}" if s == "I" else f"{s} {r} {o}" for s, r, o in out)


class VectorMemory:
    """Every exchange stored; the context is the ``k`` most similar to the query (TF-IDF cosine)."""

    def __init__(self, k: int = 2) -> None:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive int (exchanges retrieved), got {k!r}")
        self.k = k
        self.docs: list[str] = []
        self._counts: list[Counter] = []

    def save(self, user: str, assistant: str) -> None:
        if not isinstance(user, str) or not isinstance(assistant, str):
            raise TypeError("user and assistant must be str")
        self.docs.append(render_messages([("user", user), ("assistant", assistant)]))
        self._counts.append(Counter(_WORD.findall(user.lower())))

    def scores(self, query: str) -> np.ndarray:
        """Cosine of the query's TF-IDF vector with each stored exchange's (user words), shape ``(n,)``."""
        n = len(self._counts)
        df = Counter(w for c in self._counts for w in c)
        idf = {w: math.log((1 + n) / (1 + d)) + 1 for w, d in df.items()}
        q = Counter(_WORD.findall(query.lower()))
        qv = {w: f * idf.get(w, 0.0) for w, f in q.items()}
        qn = math.sqrt(sum(v * v for v in qv.values())) or 1.0
        out = np.zeros(n)
        for i, c in enumerate(self._counts):
            dv = {w: f * idf[w] for w, f in c.items()}
            dn = math.sqrt(sum(v * v for v in dv.values())) or 1.0
            out[i] = sum(v * dv.get(w, 0.0) for w, v in qv.items()) / (qn * dn)
        return out

    def context(self, query: str = "") -> str:
        if not self.docs:
            return ""
        s = self.scores(query)
        top = sorted(np.lexsort((np.arange(len(s)), -s))[: self.k].tolist())
        return "\n".join(self.docs[i] for i in top)
