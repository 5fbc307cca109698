r"""Query-side techniques of chapter 19: template rewriting and multi-query generation, RAG-Fusion (the
queries' rankings fused by RRF), HyDE (query and hypothetical-document embeddings averaged) and the
confidence tests of FLARE and a Self-RAG-style critic.

The course's reader is a 0.92 M-parameter model: it cannot write paraphrases or hypothetical documents the way
the papers' 11–175 B models do. Rewrites here are **templates** (stated as such), and the hypothetical
document is a template sentence completed with the reader's own closed-book guess.

HyDE (Gao et al., 2022), with :math:`f` the encoder, :math:`q` the query and :math:`\hat d_1 … \hat d_N` the
hypothetical documents:

.. math:: \hat v_q = \frac{1}{N+1}\Big[f(q) + \sum_{k=1}^{N} f(\hat d_k)\Big]
"""
from __future__ import annotations

import re
from typing import Hashable, Sequence

import numpy as np

from labkit.retrieval.fusion import reciprocal_rank_fusion
from labkit.retrieval.text import STOPWORDS

__all__ = ["keyword_query", "statement_stub", "multi_queries", "rag_fusion", "fused_dense_ranking", "hyde_vector", "flare_trigger",
           "mask_uncertain", "selfrag_score"]

#: question pattern → statement stub ("Where was X born?" → "X was born in"): the template rewrites.
_STATEMENTS: tuple[tuple[str, str], ...] = (
    (r"^(?:Where|In which city) was (.+) born\?$", r"\1 was born in"),
    (r"^(?:In what year|When) was (.+) born\?$", r"\1 was born in the year"),
    (r"^Which company does (.+) work for\?$", r"\1 works for"),
    (r"^Who employs (.+)\?$", r"\1 works for"),
    (r"^Who founded (.+)\?$", r"\1 was founded by"),
    (r"^(?:In what year|When) was (.+) founded\?$", r"\1 was founded in the year"),
    (r"^(?:In what year was|When did) the (.+?) (?:launched|go on sale)\?$", r"The \1 was launched in"),
    (r"^Who designed the (.+)\?$", r"The \1 was designed by"),
    (r"^(?:Where is (.+) headquartered|In which city is (.+) based)\?$", r"\1\2 is headquartered in"),
    (r"^Which company makes the (.+)\?$", r"The \1 is made by"),
)


def keyword_query(question: str) -> str:
    """The question without question words, stopwords and punctuation: ``"Who founded Ulaway Optics?"`` →
    ``"founded Ulaway Optics"`` (a rewrite for lexical and dense search)."""
    if not isinstance(question, str):
        raise TypeError(f"question must be a str, got {type(question).__name__}")
    words = re.findall(r"[\w'-]+", question)
    return " ".join(w for w in words if w.lower() not in STOPWORDS | {"which", "company", "year", "city"})


def statement_stub(question: str) -> str | None:
    """The declarative stub of a question the templates know (``"Who founded X?"`` → ``"X was founded by"``),
    else ``None``. A hypothetical document is this stub plus a guessed answer."""
    if not isinstance(question, str):
        raise TypeError(f"question must be a str, got {type(question).__name__}")
    for pat, rep in _STATEMENTS:
        if re.match(pat, question.strip()):
            return re.sub(pat, rep, question.strip())
    return None


def multi_queries(question: str) -> list[str]:
    """Multi-query generation by templates: ``[question, keyword rewrite, statement stub]`` (the stub only when
    a template matches; duplicates dropped). The original query stays first, as RAG-Fusion advises."""
    out = [question, keyword_query(question)]
    stub = statement_stub(question)
    if stub:
        out.append(stub)
    return list(dict.fromkeys(q for q in out if q))


def rag_fusion(rankings: Sequence[Sequence[Hashable]], k: float = 60, top: int | None = None) -> list[Hashable]:
    """RAG-Fusion's second step: the documents of several queries' rankings fused by reciprocal rank,
    :math:`\\mathrm{RRF}(d) = \\sum_r 1/(k + \\mathrm{rank}_r(d))`, best first (``top`` of them)."""
    fused = [d for d, _ in reciprocal_rank_fusion(rankings, k)]
    return fused if top is None else fused[:top]


def fused_dense_ranking(query_embs: np.ndarray, passage_emb: np.ndarray, *, depth: int = 20, k: float = 60,
                        top: int | None = None) -> list[int]:
    """RAG-Fusion end to end over embeddings: rank the passages (N, d) by cosine for each query variant
    (Q, d) (ties by index), keep each ranking's first ``depth``, fuse by RRF; passage indices best first."""
    q, p = np.atleast_2d(np.asarray(query_embs, dtype=np.float64)), np.asarray(passage_emb, dtype=np.float64)
    if p.ndim != 2 or q.shape[1] != p.shape[1]:
        raise ValueError(f"query_embs (Q, d) and passage_emb (N, d) must share d; got {q.shape} and {p.shape}")
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth must be a positive int, got {depth!r}")
    s = q @ p.T
    lists = [[int(j) for j in np.lexsort((np.arange(p.shape[0]), -row))[:depth]] for row in s]
    return [int(d) for d in rag_fusion(lists, k=k, top=top)]


def hyde_vector(query_emb: np.ndarray, doc_embs: np.ndarray, *, normalize: bool = True) -> np.ndarray:
    r"""HyDE's query vector: the mean of the query embedding (d,) and the N hypothetical documents'
    embeddings (N, d), :math:`\hat v_q = (f(q) + \sum_k f(\hat d_k)) / (N+1)`; L2-normalised when
    ``normalize`` (cosine search ranks by direction only, so the 1/(N+1) then cancels). N = 0 gives f(q)."""
    q = np.asarray(query_emb, dtype=np.float64)
    d = np.asarray(doc_embs, dtype=np.float64)
    if q.ndim != 1:
        raise ValueError(f"query_emb must be one vector (d,), got shape {q.shape}")
    if d.ndim != 2 or d.shape[1] != q.shape[0]:
        raise ValueError(f"doc_embs must be (N, {q.shape[0]}), got shape {d.shape}; stack the hypothetical "
                         "documents' embeddings as rows")
    v = (q + d.sum(0)) / (d.shape[0] + 1)
    if normalize:
        n = np.linalg.norm(v)
        if n == 0:
            raise ValueError("the mean embedding is zero; cannot normalise it")
        v = v / n
    return v


def flare_trigger(probs: Sequence[float], theta: float) -> bool:
    """FLARE-direct's test: retrieve when any generated token's probability is below ``theta``."""
    if not 0 <= theta <= 1:
        raise ValueError(f"theta ({theta!r}) must be a probability in [0, 1]")
    return any(p < theta for p in probs)


def mask_uncertain(tokens: Sequence[str], probs: Sequence[float], theta: float) -> list[str]:
    """FLARE's masked query: the tokens whose probability is at least ``theta`` (the uncertain ones, which
    may be wrong, are dropped before the draft is used as a search query)."""
    if len(tokens) != len(probs):
        raise ValueError(f"{len(tokens)} tokens but {len(probs)} probabilities; pass one probability per token")
    return [t for t, p in zip(tokens, probs) if p >= theta]


def selfrag_score(logprob: float, relevance: float, support: float, *, w_rel: float = 1.0,
                  w_sup: float = 1.0) -> float:
    r"""A Self-RAG-style critic score of one candidate answer (one retrieved passage each):
    :math:`S = \log p(y) + w_{rel}\,\mathrm{ISREL} + w_{sup}\,\mathrm{ISSUP}`, critic terms in [0, 1].

    Self-RAG reads ISREL/ISSUP from reflection tokens its model was trained to emit; this course's reader has
    none, so the caller passes stand-ins (cosine relevance of the passage, 1 if the answer is in it)."""
    for name, v in (("relevance", relevance), ("support", support)):
        if not 0 <= v <= 1:
            raise ValueError(f"{name} ({v!r}) must be in [0, 1]; normalise the critic score first")
    return float(logprob + w_rel * relevance + w_sup * support)
