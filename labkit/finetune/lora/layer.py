"""LoRA (低秩适配, Low-Rank Adaptation), chapter 13: the layer, from scratch, name-compatible with ``peft``.

A frozen linear layer ``W0 ∈ R^{d_out×d_in}`` gets a trainable low-rank update::

    h = W0 x + (α / r) · B A x,       A ∈ R^{r×d_in} (random),  B ∈ R^{d_out×r} (zeros)

so at initialization ``BA = 0`` and the model is exactly the base model; only ``A`` and ``B`` train:
``r·(d_in + d_out)`` parameters instead of ``d_in·d_out``. After training, ``W0 + (α/r)BA`` can be merged
into one matrix (no extra inference cost) and unmerged again.

Conventions follow ``peft`` (``LoraConfig(r, lora_alpha, target_modules, lora_dropout)``):
A is Kaiming-uniform (a = √5), B is zero, scaling = α/r, dropout is applied to the input of the LoRA path
only. QLoRA (NF4 base) is :mod:`labkit.finetune.lora.qlora`; injecting layers into a model by
``target_modules`` is :mod:`labkit.finetune.lora.inject`.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LoRALinear"]


def _check_hparams(r: Any, alpha: Any, dropout: Any) -> None:
    if isinstance(r, bool) or not isinstance(r, int) or r < 1:
        raise ValueError(f"r (the LoRA rank) must be an int >= 1, got {r!r}; typical values are 4, 8, 16")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0:
        raise ValueError(f"alpha must be a positive number (the update is scaled by alpha / r), got {alpha!r}")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be a float in [0, 1), got {dropout!r}")


class LoRALinear(nn.Module):
    """``y = base(x) + (α/r) · dropout(x) Aᵀ Bᵀ``, with ``base`` frozen.

    Args:
        base: the ``nn.Linear`` to adapt (its weight and bias are frozen, not copied).
        r: rank, ``1 <= r``; with ``r >= min(d_in, d_out)`` LoRA can represent any update.
        alpha: scale numerator; the update is multiplied by ``scaling = alpha / r``.
        dropout: dropout probability on the LoRA path's input (the base path sees ``x`` unchanged).

    Shapes: ``x (..., d_in) → y (..., d_out)``; ``lora_A (r, d_in)``, ``lora_B (d_out, r)``.
    """

    def __init__(self, base: nn.Linear, r: int, alpha: float, dropout: float = 0.0) -> None:
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"base must be an nn.Linear, got {type(base).__name__}")
        _check_hparams(r, alpha, dropout)
        self.in_features, self.out_features = base.in_features, base.out_features
        self.r, self.alpha, self.scaling = r, float(alpha), float(alpha) / r
        self._attach_base(base)
        w = self._base_weight()
        self.lora_A = nn.Parameter(torch.empty(r, self.in_features, dtype=w.dtype, device=w.device))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, r, dtype=w.dtype, device=w.device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # as peft (and nn.Linear's default)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False
        self.enabled = True

    # -- the frozen base (QLoRALinear overrides these three) --------------------------------------------
    def _attach_base(self, base: nn.Linear) -> None:
        base.requires_grad_(False)
        self.base = base

    def _base_weight(self) -> torch.Tensor:
        return self.base.weight

    def _base_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x)

    @property
    def weight(self) -> torch.Tensor:
        """The base weight (merged weight when merged), for code that reads ``layer.weight``."""
        return self._base_weight()

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base.bias

    # -- LoRA ---------------------------------------------------------------------------------------------
    def delta_weight(self) -> torch.Tensor:
        """``ΔW = (α/r) · B A``, shape ``(d_out, d_in)``."""
        return (self.lora_B @ self.lora_A) * self.scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self._base_forward(x)
        if self.enabled and not self.merged:
            y = y + F.linear(F.linear(self.dropout(x), self.lora_A), self.lora_B) * self.scaling
        return y

    @torch.no_grad()
    def merge(self) -> None:
        """``W0 ← W0 + (α/r)BA``: afterwards the layer is one plain matmul."""
        if self.merged:
            raise ValueError("this LoRA layer is already merged; merging twice would add BA twice. "
                             "Call unmerge() (or unmerge_lora(model)) first")
        self.base.weight += self.delta_weight().to(self.base.weight.dtype)
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """``W0 ← W0 − (α/r)BA`` (inverse of :meth:`merge`, exact up to float rounding)."""
        if not self.merged:
            raise ValueError("this LoRA layer is not merged; call merge() first")
        self.base.weight -= self.delta_weight().to(self.base.weight.dtype)
        self.merged = False

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, r={self.r}, "
                f"alpha={self.alpha:g}, merged={self.merged}")
