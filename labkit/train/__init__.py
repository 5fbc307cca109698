"""Layer 5, train (chapter 07): batches, the learning-rate schedule, the pretraining loop, evaluation.
"""
from __future__ import annotations

from .loop import corpus_tokens, evaluate, get_batch, train_lm, unigram_loss  # noqa: F401
from .schedule import lr_at  # noqa: F401

__all__ = ["corpus_tokens", "get_batch", "train_lm", "evaluate", "unigram_loss", "lr_at"]
