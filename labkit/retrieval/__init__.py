"""Layer 8, retrieval (chapters 18-20): tokenizing (``text``), chunking, BM25, dense retrieval, fusion,
reranking, metrics, the extractive reader and answer metrics (``reader``), the RAG pipeline (``rag``), and
GraphRAG (the subpackage ``labkit.retrieval.graphrag``).
"""
from __future__ import annotations

from .bm25 import BM25  # noqa: F401
from .chunking import RECURSIVE_SEPARATORS, chunk_text  # noqa: F401
from .dense import DenseIndex, encode, load_encoder  # noqa: F401
from .fusion import reciprocal_rank_fusion  # noqa: F401
from .metrics import hit_at_k, mrr, ndcg_at_k, precision_at_k, recall_at_k  # noqa: F401
from .rag import PROMPT_TEMPLATE, OpenAICompatibleGenerator, Retriever, build_prompt, rag_answer  # noqa: F401
from .reader import ExtractiveReader, exact_match, f1_score, normalize_answer  # noqa: F401
from .rerank import SentenceReranker  # noqa: F401
from .text import STOPWORDS, sentences_with_titles, split_sentences, tokenize  # noqa: F401

__all__ = ["STOPWORDS", "tokenize", "split_sentences", "sentences_with_titles", "RECURSIVE_SEPARATORS", "chunk_text", "BM25", "load_encoder", "encode", "DenseIndex", "reciprocal_rank_fusion", "SentenceReranker", "hit_at_k", "recall_at_k", "precision_at_k", "mrr", "ndcg_at_k", "ExtractiveReader", "normalize_answer", "exact_match", "f1_score", "Retriever", "OpenAICompatibleGenerator", "PROMPT_TEMPLATE", "build_prompt", "rag_answer"]
