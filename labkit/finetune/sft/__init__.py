"""Supervised fine-tuning (chapter 12): chat formats, loss masks, packing, the SFT loop and its metrics.
"""
from __future__ import annotations

from .trainer import (  # noqa: F401
    END_TOKEN,
    IGNORE_INDEX,
    ROLE_TOKENS,
    Packed,
    answer_metrics,
    apply_chat_template,
    assign_bins,
    build_labels,
    document_causal_mask,
    encode_example,
    evaluate_task,
    generate_answers,
    pack,
    packed_forward,
    padding_stats,
    render_chat,
    sft_loss,
    train_sft,
    training_memory,
)

__all__ = ['IGNORE_INDEX', 'ROLE_TOKENS', 'END_TOKEN', 'render_chat', 'apply_chat_template', 'build_labels', 'encode_example', 'Packed', 'assign_bins', 'pack', 'document_causal_mask', 'padding_stats', 'sft_loss', 'packed_forward', 'train_sft', 'generate_answers', 'evaluate_task', 'training_memory', 'answer_metrics']
