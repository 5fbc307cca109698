"""Supervised fine-tuning (chapter 12): chat formats, loss masks, packing, the SFT loop and its metrics.
"""
from __future__ import annotations

from labkit.blocks.masks import document_causal_mask  # noqa: F401  (the packing mask, re-exported)

from .chat import END_TOKEN, IGNORE_INDEX, ROLE_TOKENS, apply_chat_template, build_labels, encode_example, render_chat  # noqa: F401
from .packing import Packed, assign_bins, pack, packed_forward, padding_stats  # noqa: F401
from .trainer import answer_metrics, evaluate_task, generate_answers, sft_loss, train_sft, training_memory  # noqa: F401

__all__ = ["IGNORE_INDEX", "ROLE_TOKENS", "END_TOKEN", "render_chat", "apply_chat_template", "build_labels", "encode_example", "Packed", "assign_bins", "pack", "padding_stats", "packed_forward", "document_causal_mask", "sft_loss", "train_sft", "generate_answers", "evaluate_task", "training_memory", "answer_metrics"]
