"""Layer 8, retrieval (chapters 18-20): tokenizing, chunking, BM25, dense retrieval, fusion, reranking,
metrics, readers, and GraphRAG (``labkit.retrieval.graphrag``).
"""
from __future__ import annotations

from .rag import (  # noqa: F401
    BM25,
    PROMPT_TEMPLATE,
    DenseIndex,
    ExtractiveReader,
    OpenAICompatibleGenerator,
    Retriever,
    SentenceReranker,
    build_prompt,
    chunk_text,
    encode,
    exact_match,
    f1_score,
    hit_at_k,
    load_encoder,
    mrr,
    ndcg_at_k,
    normalize_answer,
    precision_at_k,
    rag_answer,
    recall_at_k,
    reciprocal_rank_fusion,
    sentences_with_titles,
    split_sentences,
    tokenize,
)

__all__ = ['tokenize', 'chunk_text', 'BM25', 'reciprocal_rank_fusion', 'hit_at_k', 'recall_at_k', 'precision_at_k', 'mrr', 'ndcg_at_k', 'load_encoder', 'encode', 'DenseIndex', 'SentenceReranker', 'Retriever', 'ExtractiveReader', 'OpenAICompatibleGenerator', 'PROMPT_TEMPLATE', 'build_prompt', 'rag_answer', 'normalize_answer', 'exact_match', 'f1_score', 'split_sentences', 'sentences_with_titles']
