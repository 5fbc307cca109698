"""Evaluating language models (chapter 17): perplexity and bits per byte, BLEU, ROUGE, EM/F1, pass@k, pairwise
ratings, judges, contamination.

Layer: above align, below retrieval (chapter 19's RAG evaluation imports the answer metrics from here).
"""
from __future__ import annotations

from .bleu import (  # noqa: F401
    SMOOTH_METHODS,
    BLEUResult,
    bleu_from_statistics,
    bleu_statistics,
    closest_ref_length,
    corpus_bleu,
    corpus_bleu_score,
    ngram_counts,
    sentence_bleu,
    tokenize_13a,
)
from .contamination import NGramIndex, contamination_report, word_ngrams, words  # noqa: F401
from .judge import (  # noqa: F401
    first_slot_win_rate,
    pairwise_logprob_margin,
    position_consistency,
    swap_average,
)
from .pairwise import (  # noqa: F401
    ELO_SCALE,
    bootstrap_ratings,
    bradley_terry_fit,
    elo_expected,
    elo_ratings,
    simulate_battles,
    to_elo_points,
)
from .passk import pass_at_k, pass_at_k_binomial, pass_at_k_naive  # noqa: F401
from .perplexity import NGramLM, TextScore, bits_per_byte, causal_lm_nll, perplexity  # noqa: F401
from .qa import answer_tokens, exact_match, normalize_answer, token_f1  # noqa: F401
from .rouge import RougeScore, lcs_length, rouge_l, rouge_n, rouge_scores, rouge_tokenize  # noqa: F401

__all__ = ["SMOOTH_METHODS", "BLEUResult", "tokenize_13a", "ngram_counts", "bleu_statistics", "closest_ref_length",
           "bleu_from_statistics", "corpus_bleu", "corpus_bleu_score", "sentence_bleu", "RougeScore", "rouge_tokenize",
           "rouge_n",
           "lcs_length", "rouge_l", "rouge_scores", "normalize_answer", "answer_tokens", "exact_match", "token_f1",
           "pass_at_k", "pass_at_k_naive", "pass_at_k_binomial", "ELO_SCALE", "elo_expected", "elo_ratings",
           "bradley_terry_fit", "to_elo_points", "bootstrap_ratings", "simulate_battles", "TextScore", "perplexity",
           "bits_per_byte", "causal_lm_nll", "NGramLM", "pairwise_logprob_margin", "swap_average",
           "position_consistency", "first_slot_win_rate", "words", "word_ngrams", "NGramIndex",
           "contamination_report"]
