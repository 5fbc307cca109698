"""Advanced RAG (chapter 19): a reader trained here (``reader_data``, ``lm_reader``), query-side techniques
(``query``: template rewrites, multi-query, RAG-Fusion, HyDE, FLARE and Self-RAG-style tests), hard-negative
mining with a query adapter (``negatives``) and RAG evaluation (``rag_eval``).
"""
from __future__ import annotations

from .lm_reader import LMReader, ReaderAnswer, candidate_spans  # noqa: F401
from .negatives import QueryAdapter, is_false_negative, mine_hard_negatives, mnrl_loss  # noqa: F401
from .query import (flare_trigger, fused_dense_ranking, hyde_vector, keyword_query, mask_uncertain, multi_queries, rag_fusion,  # noqa: F401
                    selfrag_score, statement_stub)
from .rag_eval import context_precision_at_k, context_recall, faithfulness, format_qa_pairs, parse_qa_pairs  # noqa: F401
from .reader_data import (QUESTION_TEMPLATES, RELATION_CUES, fact_questions, gold_sentences,  # noqa: F401
                          reader_record, rename_record, states, training_records, world_sentences)

__all__ = ["QUESTION_TEMPLATES", "RELATION_CUES", "states", "world_sentences", "fact_questions", "reader_record",
           "rename_record", "training_records",
           "gold_sentences", "ReaderAnswer", "LMReader", "candidate_spans", "keyword_query", "statement_stub", "multi_queries",
           "rag_fusion", "fused_dense_ranking", "hyde_vector", "flare_trigger", "mask_uncertain", "selfrag_score", "mnrl_loss",
           "mine_hard_negatives", "is_false_negative", "QueryAdapter", "context_precision_at_k",
           "context_recall", "faithfulness", "format_qa_pairs", "parse_qa_pairs"]
