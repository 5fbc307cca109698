"""Mixed-precision training (chapter 11): a dynamic loss scaler for fp16, from scratch.

fp16 gradients below ~6e-8 underflow to 0; scaling the loss by ``S`` scales every gradient by ``S``, and the
optimizer sees ``grad / S``. ``S`` halves on an inf/NaN gradient (the step is skipped) and doubles after
``growth_interval`` clean steps, the rules of ``torch.amp.GradScaler``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import torch
from torch import Tensor

__all__ = ["DynamicLossScaler"]

@dataclass
class DynamicLossScaler:
    """Dynamic loss scaling for fp16 training, from scratch (same rules as ``torch.amp.GradScaler``).

    Multiply the loss by ``scale`` before backward so small gradients do not underflow fp16; divide the
    gradients by ``scale`` before the optimizer step. If any gradient is inf/NaN the step is **skipped**
    and ``scale *= backoff_factor``; after ``growth_interval`` consecutive clean steps
    ``scale *= growth_factor``.
    """

    init_scale: float = 2.0 ** 16
    growth_factor: float = 2.0
    backoff_factor: float = 0.5
    growth_interval: int = 2000
    scale: float = field(init=False)
    good_steps: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        if not self.init_scale > 0:
            raise ValueError(f"`init_scale` must be > 0, got {self.init_scale}")
        if not self.growth_factor > 1:
            raise ValueError(f"`growth_factor` must be > 1, got {self.growth_factor}")
        if not 0 < self.backoff_factor < 1:
            raise ValueError(f"`backoff_factor` must be in (0, 1), got {self.backoff_factor}")
        if isinstance(self.growth_interval, bool) or not isinstance(self.growth_interval, int) \
                or self.growth_interval < 1:
            raise ValueError(f"`growth_interval` must be a positive int, got {self.growth_interval!r}")
        self.scale = float(self.init_scale)

    def scale_loss(self, loss: Tensor) -> Tensor:
        """``loss · scale``: call ``.backward()`` on this instead of on the loss."""
        return loss * self.scale

    def unscale_(self, params: Iterable[Tensor]) -> bool:
        """Divide each ``p.grad`` by ``scale`` in place; return True if any gradient is inf or NaN."""
        found_inf = False
        for p in params:
            if p.grad is not None:
                p.grad.div_(self.scale)
                found_inf |= not bool(torch.isfinite(p.grad).all())
        return found_inf

    def update(self, found_inf: bool) -> None:
        """Back off on overflow, grow after ``growth_interval`` clean steps in a row."""
        if found_inf:
            self.scale *= self.backoff_factor
            self.good_steps = 0
        else:
            self.good_steps += 1
            if self.good_steps == self.growth_interval:
                self.scale *= self.growth_factor
                self.good_steps = 0

    def step(self, optimizer: torch.optim.Optimizer, params: Iterable[Tensor]) -> bool:
        """Unscale, step unless there was an overflow, update the scale. Returns whether it stepped."""
        found_inf = self.unscale_(params)
        if not found_inf:
            optimizer.step()
        self.update(found_inf)
        return not found_inf

    def run_trace(self, overflows: Iterable[bool]) -> list[tuple[float, bool]]:
        """Feed a synthetic overflow trace; return ``(scale used at that step, stepped)`` per step."""
        out = []
        for ov in overflows:
            out.append((self.scale, not ov))
            self.update(bool(ov))
        return out
