"""LoRA and QLoRA (chapter 13): the layer, injection/merge/unload, adapter files, parameter counts.
"""
from __future__ import annotations

from .layer import (  # noqa: F401
    LLAMA_TARGETS,
    TASK_RUN,
    TASK_VARIANTS,
    LoRALinear,
    QLoRALinear,
    add_lora,
    count_trainable,
    finetune_task,
    load_lora,
    lora_disabled,
    lora_layers,
    lora_param_count,
    lora_state_dict,
    merge_lora,
    prepare_variant,
    read_lora,
    save_lora,
    set_lora_enabled,
    unload_lora,
    unmerge_lora,
    variant_name,
)

__all__ = ['LoRALinear', 'QLoRALinear', 'add_lora', 'merge_lora', 'unmerge_lora', 'unload_lora', 'lora_layers', 'lora_state_dict', 'load_lora', 'save_lora', 'read_lora', 'set_lora_enabled', 'lora_disabled', 'lora_param_count', 'count_trainable', 'LLAMA_TARGETS', 'TASK_VARIANTS', 'TASK_RUN', 'variant_name', 'prepare_variant', 'finetune_task']
