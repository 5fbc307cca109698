"""One-line checks that notebooks print and tests assert.

``close`` is the workhorse: every "ours equals the reference" claim in the course
goes through it, so a notebook shows exactly one stable line per proof::

    >>> close(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.0]), name="identity")
    ✓ identity (max |Δ| < 1e-06)
    0.0
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

__all__ = ["close", "exact", "exercise", "MaxAbsDiff"]


class MaxAbsDiff(float):
    """The float that :func:`close` returns. Its repr states the tolerance it passed, not the exact value,
    so a notebook cell ending in ``close(...)`` shows stable text (nbval compares it) on any machine."""

    tol: str = ""

    def __repr__(self) -> str:
        return f"MaxAbsDiff({self.tol})"


def _as_tensor(x: Any, arg: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu")
    if isinstance(x, np.ndarray):
        return torch.from_numpy(x)
    if isinstance(x, (int, float, bool, list, tuple)):
        try:
            return torch.as_tensor(x)
        except (TypeError, ValueError) as e:
            raise TypeError(f"`{arg}` must be a tensor, array or (nested) list of numbers; got {x!r}") from e
    raise TypeError(f"`{arg}` must be a tensor, array or number, got {type(x).__name__}")


def _fmt(tol: float) -> str:
    return f"{tol:.0e}" if tol else "0"


def close(
    actual: Any,
    expected: Any,
    *,
    atol: float = 1e-6,
    rtol: float = 0.0,
    name: str | None = None,
    quiet: bool = False,
) -> float:
    """Check ``|actual - expected| <= atol + rtol * |expected|`` elementwise and print one line.

    Long because the learner-facing messages (shape, dtype, NaN, tolerance) are spelled out one per branch,
    in the order a learner meets them.

    Args:
        actual, expected: tensors, arrays or numbers of the same shape (no broadcasting:
            a shape mismatch is almost always a bug worth seeing).
        atol, rtol: absolute and relative tolerances, as in ``torch.allclose``.
        name: what is being compared, e.g. ``"softmax matches torch.softmax"``.
        quiet: do not print (tests use this).

    Returns:
        The max absolute difference (0.0 for empty tensors), a ``float`` subclass whose repr shows the
        tolerance instead of machine-dependent digits.

    Raises:
        ValueError: shapes differ, or a tolerance is negative.
        AssertionError: not close; the message names the max |Δ| and where it is.
    """
    if atol < 0 or rtol < 0:
        raise ValueError(f"atol and rtol must be >= 0, got atol={atol}, rtol={rtol}")
    a = _as_tensor(actual, "actual")
    e = _as_tensor(expected, "expected")
    label = name or "values match"
    if a.shape != e.shape:
        raise ValueError(
            f"{label}: shape mismatch: actual {tuple(a.shape)} vs expected {tuple(e.shape)}; "
            "reshape or index one side explicitly (close() does not broadcast)"
        )
    if a.is_complex() or e.is_complex():
        raise TypeError("close() compares real tensors; compare .real and .imag separately")
    a64 = a.to(torch.float64)
    e64 = e.to(torch.float64)
    if a.numel() == 0:
        if not quiet:
            print(f"✓ {label} (empty)")
        return _result(0.0, "empty")
    nan_a, nan_e = torch.isnan(a64), torch.isnan(e64)
    if not torch.equal(nan_a, nan_e):
        idx = tuple(int(i) for i in torch.nonzero(nan_a ^ nan_e)[0])
        raise AssertionError(f"✗ {label}: NaN in one side only, first at index {idx}")
    same_inf = torch.isinf(a64) & torch.isinf(e64) & (a64 == e64)
    diff = (a64 - e64).abs()
    diff = torch.where(nan_a | same_inf, torch.zeros_like(diff), diff)
    finite_e = torch.where(torch.isfinite(e64), e64.abs(), torch.zeros_like(e64))
    bound = atol + rtol * finite_e
    bad = diff > bound
    max_diff = float(diff.max())
    if bool(bad.any()):
        flat = int(torch.argmax(torch.where(bad, diff, torch.full_like(diff, -1.0))))
        idx = tuple(int(i) for i in np.unravel_index(flat, tuple(a.shape))) if a.dim() else ()
        raise AssertionError(
            f"✗ {label}: max |Δ| = {max_diff:.3e} at index {idx} "
            f"(actual {float(a64.reshape(-1)[flat]):.6g}, expected {float(e64.reshape(-1)[flat]):.6g}); "
            f"tolerance atol={atol:g}, rtol={rtol:g}"
        )
    tol = f"max |Δ| < {_fmt(atol)}" if rtol == 0 else f"atol={atol:g}, rtol={rtol:g}"
    if atol == 0 and rtol == 0:
        tol = "exactly equal"
    if not quiet:
        print(f"✓ {label} ({tol})")
    return _result(max_diff, tol)


def _result(value: float, tol: str) -> MaxAbsDiff:
    out = MaxAbsDiff(value)
    out.tol = tol
    return out


def exact(actual: Any, expected: Any, *, name: str | None = None, quiet: bool = False) -> None:
    """Check two values are exactly equal (tensors: same shape and every element; else ``==``)."""
    label = name or "values are equal"
    if isinstance(actual, (torch.Tensor, np.ndarray)) or isinstance(expected, (torch.Tensor, np.ndarray)):
        close(actual, expected, atol=0.0, rtol=0.0, name=label, quiet=quiet)
        return
    if actual != expected:
        raise AssertionError(f"✗ {label}: got {actual!r}, expected {expected!r}")
    if not quiet:
        print(f"✓ {label}")


def exercise(label: str, test: Callable[[], Any]) -> bool:
    """Run an exercise's check and print one line: pass, not implemented yet, or what is wrong.

    ``test`` is a zero-argument function that calls the learner's code and raises
    ``AssertionError`` (e.g. via :func:`close`) when the answer is wrong. Returns ``True`` on pass.
    Learner copies made by ``python -m labkit student`` keep these check cells, so a learner
    sees ``✗ ... not implemented yet`` until their solution is in place.
    """
    if not callable(test):
        raise TypeError("`test` must be a zero-argument callable, e.g. lambda: close(my_fn(x), ref)")
    try:
        test()
    except NotImplementedError as e:
        hint = f" (hint: {e})" if str(e) else ""
        print(f"✗ {label}: not implemented yet{hint}")
        return False
    except AssertionError as e:
        msg = str(e).removeprefix("✗ ")
        print(f"✗ {label}: wrong answer: {msg}")
        return False
    except Exception as e:  # learner code may fail in any way; report it, don't crash the notebook
        print(f"✗ {label}: your code raised {type(e).__name__}: {e}")
        return False
    print(f"✓ {label}: passed")
    return True
