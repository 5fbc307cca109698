"""The PEFT family (chapter 14): bottleneck adapters, BitFit, prompt tuning, prefix tuning / P-tuning v2.
"""
from __future__ import annotations

from .prompt import (  # noqa: F401
    METHODS,
    BottleneckAdapter,
    PrefixTuning,
    PromptTuning,
    adapter_param_count,
    add_adapters,
    apply_bitfit,
    finetune_method,
    load_trainable,
    p_tuning_v2,
    prepare_method,
    run_from_embeddings,
    task_loss,
    trainable_state_dict,
)

__all__ = ['BottleneckAdapter', 'add_adapters', 'adapter_param_count', 'apply_bitfit', 'PromptTuning', 'PrefixTuning', 'p_tuning_v2', 'run_from_embeddings', 'METHODS', 'prepare_method', 'finetune_method', 'task_loss', 'trainable_state_dict', 'load_trainable']
