"""The PEFT family (chapter 14): bottleneck adapters, BitFit, prompt tuning, prefix tuning / P-tuning v2.
"""
from __future__ import annotations

from .adapters import BottleneckAdapter, adapter_param_count, add_adapters  # noqa: F401
from .bitfit import apply_bitfit  # noqa: F401
from .common import load_trainable, trainable_state_dict  # noqa: F401
from .prefix import PrefixTuning, p_tuning_v2  # noqa: F401
from .prompt import PromptTuning, run_from_embeddings  # noqa: F401

__all__ = ["BottleneckAdapter", "adapter_param_count", "add_adapters", "apply_bitfit", "PromptTuning", "run_from_embeddings", "PrefixTuning", "p_tuning_v2", "trainable_state_dict", "load_trainable"]
