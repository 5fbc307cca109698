"""Argument checks shared across labkit: each raises a TypeError/ValueError that names the argument
and says what to pass instead.
"""
from __future__ import annotations

import torch

__all__ = ["require_tensor", "require_same_shape", "require_positive", "require_token_ids", "require_float_tensor",
           "require_int", "require_in_range", "require_finite", "require_ids_in_vocab", "working_dtype"]


def require_tensor(x: object, arg: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"`{arg}` must be a torch.Tensor, got {type(x).__name__}")
    return x


def require_same_shape(a: torch.Tensor, b: torch.Tensor, arg_a: str, arg_b: str) -> None:
    require_tensor(a, arg_a)
    require_tensor(b, arg_b)
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


def require_float_tensor(x: object, arg: str) -> torch.Tensor:
    """``x`` must be a floating-point tensor (an integer tensor would be silently rounded or rejected by torch)."""
    require_tensor(x, arg)
    if not x.is_floating_point():
        raise TypeError(f"`{arg}` must be a floating-point tensor, got dtype {x.dtype}; convert it first, "
                        f"e.g. {arg}.float()")
    return x


def require_int(x: object, arg: str, minimum: int, hint: str) -> int:
    """``x`` must be an int (not a bool) ``>= minimum``; the error ends with ``hint`` (what to pass)."""
    if isinstance(x, bool) or not isinstance(x, int):
        raise TypeError(f"`{arg}` must be an int, got {type(x).__name__}; {hint}")
    if x < minimum:
        raise ValueError(f"`{arg}` must be >= {minimum}, got {x}; {hint}")
    return x


def require_in_range(x: object, arg: str, lo: float, hi: float, hint: str) -> float:
    """``x`` must be a real number with ``lo <= x <= hi`` (NaN is rejected); returns it as a float."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise TypeError(f"`{arg}` must be a number in [{lo:g}, {hi:g}], got {type(x).__name__}")
    if not lo <= x <= hi:
        raise ValueError(f"`{arg}` must be in [{lo:g}, {hi:g}], got {x}; {hint}")
    return float(x)


def require_finite(x: torch.Tensor, arg: str, hint: str) -> torch.Tensor:
    """Every value of the tensor ``x`` must be finite; the error counts NaN/inf and ends with ``hint``."""
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        n_nan, n_inf = int(torch.isnan(x).sum()), int(torch.isinf(x).sum())
        raise ValueError(f"`{arg}` holds {n_nan} NaN and {n_inf} inf value(s); {hint}")
    return x


def require_ids_in_vocab(ids: torch.Tensor, arg: str, vocab_size: int, ignore_index: int | None = None) -> None:
    """Every id of the integer tensor ``ids`` must lie in ``[0, vocab_size)`` (``ignore_index`` is also allowed)."""
    if ids.is_floating_point() or ids.dtype == torch.bool:
        raise TypeError(f"`{arg}` must be an integer (long) tensor of token ids, got dtype {ids.dtype}")
    bad = (ids < 0) | (ids >= vocab_size)
    if ignore_index is not None:
        bad &= ids != ignore_index
    if bool(bad.any()):
        v = int(ids[bad][0])
        extra = f" (or {ignore_index} = ignore)" if ignore_index is not None else ""
        raise ValueError(f"`{arg}` holds id {v} outside [0, V={vocab_size}){extra}; ids must come from the "
                         "model's vocabulary (drop or mask padding before this call)")


def working_dtype(*dtypes: torch.dtype) -> torch.dtype:
    """The dtype to compute in: the inputs' common floating type, but at least float32.

    fp16/bf16/int → float32 (as HF upcasts half precision), float32 → float32, float64 → float64: never
    below the input's precision, so float64 references stay float64.
    """
    out = torch.float32
    for d in dtypes:
        out = torch.promote_types(out, d)
    return out
