"""Layer 6, finetune (chapters 12-14): SFT and packing, LoRA/QLoRA, the PEFT family.
"""
from __future__ import annotations

from . import (
    lora,  # noqa: F401  (chapter 13)
    peft,  # noqa: F401  (chapter 14)
    sft,  # noqa: F401  (chapter 12; lora and peft build on it)
)

__all__ = ["sft", "lora", "peft"]
