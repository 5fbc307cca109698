"""LoRA and QLoRA (chapter 13): the layer, injection/merge/unload, adapter files, parameter counts.
"""
from __future__ import annotations

from .count import count_trainable, lora_param_count  # noqa: F401
from .inject import (  # noqa: F401
    LLAMA_TARGETS,
    add_lora,
    lora_disabled,
    lora_layers,
    merge_lora,
    set_lora_enabled,
    unload_lora,
    unmerge_lora,
)
from .io import load_lora, lora_state_dict, read_lora, save_lora  # noqa: F401
from .layer import LoRALinear  # noqa: F401
from .qlora import QLoRALinear  # noqa: F401

__all__ = ["LoRALinear", "QLoRALinear", "LLAMA_TARGETS", "add_lora", "lora_layers", "merge_lora", "unmerge_lora", "unload_lora", "set_lora_enabled", "lora_disabled", "lora_state_dict", "save_lora", "read_lora", "load_lora", "lora_param_count", "count_trainable"]
