"""Layer 5, train (chapter 07): batches, AdamW, gradient clipping, the learning-rate schedule, the pretraining
loop, training checkpoints, evaluation.
"""
from __future__ import annotations

from .checkpoint import load_training_state, save_training_state  # noqa: F401
from .clip import clip_grad_norm  # noqa: F401
from .loop import corpus_tokens, evaluate, get_batch, train_lm, train_step, unigram_loss  # noqa: F401
from .optim import AdamW, param_groups  # noqa: F401
from .schedule import lr_at  # noqa: F401

__all__ = ["corpus_tokens", "get_batch", "train_step", "train_lm", "evaluate", "unigram_loss", "lr_at",
           "AdamW", "param_groups", "clip_grad_norm", "save_training_state", "load_training_state"]
