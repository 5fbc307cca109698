"""Layer 5, train (chapter 07): batches, the learning-rate schedule, the pretraining loop, evaluation.
"""
from __future__ import annotations

from .loop import SHIPPED_CONFIG, SHIPPED_TRAINING, corpus_tokens, evaluate, get_batch, lr_at, train_lm, unigram_loss  # noqa: F401

__all__ = ['corpus_tokens', 'get_batch', 'lr_at', 'train_lm', 'evaluate', 'unigram_loss', 'SHIPPED_CONFIG', 'SHIPPED_TRAINING']
