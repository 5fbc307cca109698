"""Gradient accumulation (chapter 11): k micro-batches, one optimizer step, the memory of one micro-batch.

With weights ``w_i`` the accumulated gradient is ``Σ_i w_i · ∇ loss_i``; ``w_i = 1/k`` for equal micro-batches
of a mean loss gives the gradient of the one big batch.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

from torch import Tensor, nn

__all__ = ["accumulate_gradients"]

def accumulate_gradients(
    model: nn.Module, loss_fn: Callable[[nn.Module, Any], Tensor], micro_batches: Sequence[Any],
    weights: Sequence[float] | None = None,
) -> dict[str, Tensor]:
    """Zero the grads, then ``(w_i · loss_fn(model, mb_i)).backward()`` for each micro-batch; return the grads.

    ``weights`` default to ``1/k`` (equal to one big batch when ``loss_fn`` is a mean over equally
    sized micro-batches). For token-mean losses with different token counts use ``n_i / Σ n``.
    """
    k = len(micro_batches)
    if k == 0:
        raise ValueError("`micro_batches` is empty")
    w = [1.0 / k] * k if weights is None else list(weights)
    if len(w) != k:
        raise ValueError(f"`weights` has {len(w)} entries for {k} micro-batches")
    model.zero_grad(set_to_none=True)
    for mb, wi in zip(micro_batches, w):
        (loss_fn(model, mb) * wi).backward()
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
