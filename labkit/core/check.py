"""One-line checks that notebooks print and tests assert.

``close`` is the workhorse: every "ours equals the reference" claim in the course
goes through it, so a notebook shows exactly one stable line per proof::

    >>> close(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.0]), name="identity")
    ✓ identity (max |Δ| < 1e-06)
    0.0

A failed check raises ``AssertionError`` whose message says what differs: how many values, the worst one
and where, or the shapes, or the dtypes (a ``bool`` mask never equals an ``int`` one). :func:`exercise`
turns those into one learner-facing line and, when the learner's own code raises, names the line of their
cell that raised.
"""
from __future__ import annotations

import linecache
import sys
import sysconfig
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from labkit.core.messages import localize_label, message

__all__ = ["close", "exact", "exercise", "describe_failure", "learner_line", "MaxAbsDiff", "ShapeMismatch"]


class MaxAbsDiff(float):
    """The float that :func:`close` returns. Its repr states the tolerance it passed, not the exact value,
    so a notebook cell ending in ``close(...)`` shows stable text (nbval compares it) on any machine."""

    tol: str = ""

    def __repr__(self) -> str:
        return f"MaxAbsDiff({self.tol})"


class ShapeMismatch(ValueError, AssertionError):
    """:func:`close` got two shapes: a wrong answer (``AssertionError``), and still the ``ValueError`` that
    callers of ``close`` have always caught."""


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


def _prefix(name: str | None) -> str:
    """``"✗ name: "`` for a named check, ``"✗ "`` otherwise (an unnamed check has nothing to name)."""
    return f"✗ {name}: " if name else "✗ "


def _value(t: torch.Tensor) -> str:
    return str(bool(t)) if t.dtype == torch.bool else f"{float(t):.6g}"


def _check_kinds(a: torch.Tensor, e: torch.Tensor, name: str | None, exact_check: bool) -> None:
    """Shapes must agree; an exact check also refuses a bool tensor against a non-bool one (an int 0/1 mask
    is not a bool mask: ``~`` and ``masked_fill`` treat them differently)."""
    if a.shape != e.shape:
        raise ShapeMismatch(
            f"{_prefix(name)}shape mismatch: actual {tuple(a.shape)} vs expected {tuple(e.shape)} "
            "(close() does not broadcast: reshape or index one side)"
        )
    if a.is_complex() or e.is_complex():
        raise TypeError("close() compares real tensors; compare .real and .imag separately")
    if exact_check and (a.dtype == torch.bool) != (e.dtype == torch.bool):
        raise AssertionError(
            f"{_prefix(name)}dtype mismatch: actual {a.dtype} vs expected {e.dtype} (a mask must be "
            "torch.bool; convert with .bool() or build it with a comparison)"
        )


def _mismatch_message(a: torch.Tensor, diff: torch.Tensor, bad: torch.Tensor, e: torch.Tensor,
                      name: str | None, atol: float, rtol: float) -> str:
    """``✗ name: 2 of 6 values differ: max |Δ| = 5.000e-01 at index (1, 2) (actual 0, expected 0.5); ...``
    (for a single value: ``✗ name: got 3.4, expected 3.6 (|Δ| = 2.000e-01); ...``)."""
    flat = int(torch.argmax(torch.where(bad, diff, torch.full_like(diff, -1.0))))
    tol = "exact comparison" if atol == 0 and rtol == 0 else f"tolerance atol={atol:g}, rtol={rtol:g}"
    got, want = _value(a.reshape(-1)[flat]), _value(e.reshape(-1)[flat])
    if a.numel() == 1:
        return f"{_prefix(name)}got {got}, expected {want} (|Δ| = {float(diff.max()):.3e}); {tol}"
    idx = tuple(int(i) for i in np.unravel_index(flat, tuple(a.shape)))
    return (f"{_prefix(name)}{int(bad.sum())} of {a.numel()} values differ: max |Δ| = {float(diff.max()):.3e} "
            f"at index {idx} (actual {got}, expected {want}); {tol}")


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

    Args:
        actual, expected: tensors, arrays or numbers of the same shape (no broadcasting:
            a shape mismatch is almost always a bug worth seeing).
        atol, rtol: absolute and relative tolerances, as in ``torch.allclose``. ``atol = rtol = 0`` is an
            exact check, which also requires both sides to be ``bool`` or neither.
        name: what is being compared, e.g. ``"softmax matches torch.softmax"``.
        quiet: do not print (tests use this).

    Returns:
        The max absolute difference (0.0 for empty tensors), a ``float`` subclass whose repr shows the
        tolerance instead of machine-dependent digits.

    Raises:
        ShapeMismatch: shapes differ (a ``ValueError`` and an ``AssertionError``).
        ValueError: a tolerance is negative.
        AssertionError: not close (the message gives how many values differ, the worst and where), NaN on
            one side only, or a bool/non-bool dtype mismatch in an exact check.
    """
    return _compare(actual, expected, atol, rtol, name, name or "values match", quiet)


def _compare(actual: Any, expected: Any, atol: float, rtol: float, name: str | None, label: str,
             quiet: bool) -> MaxAbsDiff:
    """:func:`close` with the success ``label`` apart from the ``name`` that failures quote."""
    if atol < 0 or rtol < 0:
        raise ValueError(f"atol and rtol must be >= 0, got atol={atol}, rtol={rtol}")
    a = _as_tensor(actual, "actual")
    e = _as_tensor(expected, "expected")
    _check_kinds(a, e, name, exact_check=atol == 0 and rtol == 0)
    a64 = a.to(torch.float64)
    e64 = e.to(torch.float64)
    if a.numel() == 0:
        if not quiet:
            print(f"✓ {label} (empty)")
        return _result(0.0, "empty")
    nan_a, nan_e = torch.isnan(a64), torch.isnan(e64)
    if not torch.equal(nan_a, nan_e):
        idx = tuple(int(i) for i in torch.nonzero(nan_a ^ nan_e)[0])
        side = "actual" if bool(nan_a[idx]) else "expected"
        raise AssertionError(f"{_prefix(name)}NaN in {side} only, first at index {idx}")
    same_inf = torch.isinf(a64) & torch.isinf(e64) & (a64 == e64)
    diff = (a64 - e64).abs()
    diff = torch.where(nan_a | same_inf, torch.zeros_like(diff), diff)
    finite_e = torch.where(torch.isfinite(e64), e64.abs(), torch.zeros_like(e64))
    bad = diff > atol + rtol * finite_e
    if bool(bad.any()):
        raise AssertionError(_mismatch_message(a, diff, bad, e, name, atol, rtol))
    tol = f"max |Δ| < {_fmt(atol)}" if rtol == 0 else f"atol={atol:g}, rtol={rtol:g}"
    if atol == 0 and rtol == 0:
        tol = "exactly equal"
    if not quiet:
        print(f"✓ {label} ({tol})")
    return _result(float(diff.max()), tol)


def _result(value: float, tol: str) -> MaxAbsDiff:
    out = MaxAbsDiff(value)
    out.tol = tol
    return out


def _short(x: Any, limit: int = 120) -> str:
    r = repr(x)
    return r if len(r) <= limit else r[: limit - 5] + " ...]"


def _difference(actual: Any, expected: Any) -> str:
    """What differs between two unequal plain values, in a few words."""
    if isinstance(actual, (bool, np.bool_)) != isinstance(expected, (bool, np.bool_)):
        return (f"got {actual!r} ({type(actual).__name__}), expected {expected!r} ({type(expected).__name__}): "
                "a bool and a number are different answers")
    if isinstance(actual, (list, tuple)) and isinstance(expected, (list, tuple)):
        first = next((i for i, (x, y) in enumerate(zip(actual, expected)) if x != y), None)
        if first is None:
            return f"length {len(actual)}, expected {len(expected)} (the shorter one is a prefix of the other)"
        lens = "" if len(actual) == len(expected) else f"; lengths {len(actual)} and {len(expected)}"
        return f"first difference at index {first}: got {_short(actual[first])}, expected {_short(expected[first])}{lens}"
    if isinstance(actual, dict) and isinstance(expected, dict):
        missing, extra = expected.keys() - actual.keys(), actual.keys() - expected.keys()
        wrong = [k for k in expected.keys() & actual.keys() if actual[k] != expected[k]]
        parts = [f"{len(missing)} missing key(s), e.g. {_short(next(iter(missing)))}" if missing else "",
                 f"{len(extra)} unexpected key(s), e.g. {_short(next(iter(extra)))}" if extra else "",
                 f"{len(wrong)} wrong value(s), e.g. [{wrong[0]!r}] = {_short(actual[wrong[0]])}, expected "
                 f"{_short(expected[wrong[0]])}" if wrong else ""]
        return "; ".join(p for p in parts if p)
    return f"got {_short(actual)}, expected {_short(expected)}"


def exact(actual: Any, expected: Any, *, name: str | None = None, quiet: bool = False) -> None:
    """Check two values are exactly equal (tensors: same shape, bool-ness and every element; else ``==``,
    and a bool never equals a number). The failure names the first differing item of a list or dict."""
    label = name or "values are equal"
    if isinstance(actual, (torch.Tensor, np.ndarray)) or isinstance(expected, (torch.Tensor, np.ndarray)):
        _compare(actual, expected, 0.0, 0.0, name, label, quiet)
        return
    kinds_differ = isinstance(actual, (bool, np.bool_)) != isinstance(expected, (bool, np.bool_))
    if kinds_differ or actual != expected:
        raise AssertionError(f"{_prefix(name)}{_difference(actual, expected)}")
    if not quiet:
        print(f"✓ {label}")


# ----------------------------------------------------------------------------------- exercise reports
_LIBRARY_DIRS = tuple({str(Path(p).resolve()) for p in (
    sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"],
    Path(__file__).resolve().parents[1])})


def _is_library(filename: str) -> bool:
    try:
        path = str(Path(filename).resolve())
    except (OSError, ValueError):
        return False
    return path.startswith(_LIBRARY_DIRS) or filename.startswith("<frozen")


def _where(filename: str) -> str:
    """``Cell In[5]`` for a notebook cell (IPython's name for it), else the file name."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None and hasattr(ipython, "get_ipython") else None
    fmt = getattr(getattr(shell, "compile", None), "format_code_name", None)
    named = fmt(filename) if fmt is not None else None
    return " ".join(named) if named else Path(filename).name


def learner_line(exc: BaseException) -> str | None:
    """Where the learner's own code raised: the deepest traceback frame outside the standard library,
    the installed packages and labkit, as ``"Cell In[5], line 3: `return x.view(B, T, h, d)`"``."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not _is_library(f.filename)]
    if not frames:
        return None
    f = frames[-1]
    code = (f.line or linecache.getline(f.filename, f.lineno or 0)).strip()
    return f"{_where(f.filename)}, line {f.lineno}" + (f": `{code}`" if code else "")


def _from_this_module(exc: BaseException) -> bool:
    tb = traceback.extract_tb(exc.__traceback__)
    return bool(tb) and Path(tb[-1].filename).resolve() == Path(__file__).resolve()


def describe_failure(exc: BaseException) -> str:
    """One line for a failed check: ``wrong answer: <what differs>`` for a verdict of :func:`close` /
    :func:`exact` or an ``assert``, else ``your code raised <Error>: <message> — at <learner's line>``."""
    where = learner_line(exc)
    at = f" — at {where}" if where else ""
    text = (str(exc).splitlines() or [""])[0].removeprefix("✗ ")  # one line: a long message keeps its first
    if _from_this_module(exc):
        return f"wrong answer: {text}"
    if isinstance(exc, AssertionError):
        return f"wrong answer: {text or 'an assert failed'}{at}"
    none_hint = " (did your function return None? it must end with `return ...`)" if "'NoneType'" in text else ""
    return f"your code raised {type(exc).__name__}: {text}{none_hint}{at}"


def exercise(label: str, test: Callable[[], Any]) -> bool:
    """Run an exercise's check and print one line: pass, not implemented yet, wrong answer (what differs),
    or the error the learner's code raised and the line of their cell that raised it.

    ``test`` is a zero-argument function that calls the learner's code and raises ``AssertionError``
    (e.g. via :func:`close`) when the answer is wrong. Returns ``True`` on pass. Learner copies made by
    ``python -m labkit student`` keep these check cells, so a learner sees ``✗ ... not implemented yet``
    until their solution is in place.
    """
    if not callable(test):
        raise TypeError("`test` must be a zero-argument callable, e.g. lambda: close(my_fn(x), ref)")
    shown = localize_label(label)  # the lines come from labkit.core.messages, in $LABKIT_LANG (default English)
    try:
        test()
    except NotImplementedError as e:
        hint = message("check.hint", hint=e) if str(e) else ""
        print(message("check.not_implemented", label=shown, hint=hint))
        return False
    except Exception as e:  # learner code may fail in any way; report it, don't crash the notebook
        print(message("check.failed", label=shown, failure=describe_failure(e)))
        return False
    print(message("check.passed", label=shown))
    return True
