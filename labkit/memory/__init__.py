"""Layer 5, memory (chapter 11): memory accounting, measured activation memory, checkpointing,
gradient accumulation, loss scaling.
"""
from __future__ import annotations

from .accounting import (  # noqa: F401
    GB,
    RECIPES,
    GiB,
    MemoryBreakdown,
    finetune_bytes,
    korthikanti_activation_bytes,
    kv_cache_bytes,
    notes_activation_bytes,
    training_bytes,
)
from .accumulation import accumulate_gradients  # noqa: F401
from .checkpointing import CheckpointedBlock, checkpoint_blocks  # noqa: F401
from .measure import SavedRecord, SavedTensorLog, fit_power_law, peak_tensor_bytes, saved_activation_bytes  # noqa: F401
from .mixed_precision import DynamicLossScaler  # noqa: F401

__all__ = ["RECIPES", "MemoryBreakdown", "training_bytes", "finetune_bytes", "GB", "GiB", "notes_activation_bytes", "korthikanti_activation_bytes", "kv_cache_bytes", "accumulate_gradients", "CheckpointedBlock", "checkpoint_blocks", "peak_tensor_bytes", "SavedRecord", "SavedTensorLog", "saved_activation_bytes", "fit_power_law", "DynamicLossScaler"]
