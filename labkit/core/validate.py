"""Argument checks shared across labkit: each raises a TypeError/ValueError that names the argument
and says what to pass instead.
"""
from __future__ import annotations

import torch

__all__ = ["require_tensor", "require_same_shape", "require_positive", "require_token_ids"]


def require_tensor(x: object, arg: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"`{arg}` must be a torch.Tensor, got {type(x).__name__}")
    return x


def require_same_shape(a: torch.Tensor, b: torch.Tensor, arg_a: str, arg_b: str) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"`{arg_a}` {tuple(a.shape)} and `{arg_b}` {tuple(b.shape)} must have the same shape "
            "(one value per token or per sequence on both sides)"
        )


def require_positive(x: float, arg: str, hint: str) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise TypeError(f"`{arg}` must be a number, got {type(x).__name__}")
    if not x > 0:
        raise ValueError(f"`{arg}` must be > 0, got {x}; {hint}")
    return float(x)


def require_token_ids(input_ids: object, batch: int | None = None) -> torch.Tensor:
    """``input_ids`` must be an integer tensor (B, T); with ``batch``, its B must equal it."""
    if not isinstance(input_ids, torch.Tensor) or input_ids.dtype not in (torch.int64, torch.int32):
        raise TypeError("input_ids must be an integer (long) tensor of shape (B, T)")
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must have shape (B, T), got {tuple(input_ids.shape)}; "
                         "add a batch dimension with input_ids[None]")
    if batch is not None and input_ids.shape[0] != batch:
        raise ValueError(f"input_ids has batch {input_ids.shape[0]} but logits have batch {batch}")
    return input_ids
