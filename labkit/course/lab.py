"""Lab tasks keep Run All going: ``fn = lab.use(fn, labkit_version)`` in the cell after a task.

A lab task (a cell tagged ``task``, :mod:`labkit.course.student`) is solved in the instructor notebook and a
stub in the learner copy. The cell after it rebinds each task function::

    stable_softmax = lab.use(stable_softmax, numerics.stable_softmax)

* the learner's function is still the stub (its body only raises ``NotImplementedError``): one line says
  so, ``⚠ stable_softmax: your version is not written yet — using labkit's for the rest of the notebook``,
  and the name now means labkit's version, so every later cell runs;
* the function is written (the instructor notebook, or a learner who filled it in): it is returned
  unchanged and nothing is printed, so the instructor notebook's outputs are the same as without the line.

Re-running the task cell and then this cell switches to the learner's version from then on.
"""
from __future__ import annotations

import ast
import inspect
import textwrap
from typing import Any, Callable

from labkit.core.messages import MESSAGES, message

__all__ = ["use", "is_stub", "FALLBACK_NOTICE"]

#: The line a learner copy prints when it falls back to labkit's version of a task function (English; the
#: Chinese learner copies print ``MESSAGES["lab.fallback"]["zh"]``, see labkit.core.messages).
FALLBACK_NOTICE = MESSAGES["lab.fallback"]["en"]


def _raises_not_implemented(stmt: ast.stmt) -> bool:
    if not isinstance(stmt, ast.Raise) or stmt.exc is None:
        return False
    exc = stmt.exc.func if isinstance(stmt.exc, ast.Call) else stmt.exc
    return isinstance(exc, ast.Name) and exc.id == "NotImplementedError"


def is_stub(fn: Callable[..., Any]) -> bool:
    """True when ``fn``'s body (after its docstring) only raises ``NotImplementedError``: the stub that
    ``python -m labkit student`` writes. A function whose source cannot be read counts as written."""
    try:
        source = textwrap.dedent(inspect.getsource(fn))
        tree = ast.parse(source)
    except (OSError, TypeError, SyntaxError):
        return False
    node = tree.body[0] if tree.body else None
    if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return False
    body = node.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        body = body[1:]
    return bool(body) and all(_raises_not_implemented(s) for s in body)


def use(fn: Callable[..., Any], fallback: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` if it is written, else ``fallback`` (labkit's version) after printing one notice line.

    Args:
        fn: the task function the learner writes (defined in the cell tagged ``task``).
        fallback: labkit's implementation with the same signature (``labkit.course.fallbacks`` has one for
            each task whose labkit counterpart has another signature).
    """
    for arg, value in (("fn", fn), ("fallback", fallback)):
        if not callable(value):
            raise TypeError(f"lab.use: `{arg}` must be a function, got {type(value).__name__}; "
                            "call it as fn = lab.use(fn, labkit_version)")
    if is_stub(fn):
        print(message("lab.fallback", name=getattr(fn, "__name__", "task")))
        return fallback
    return fn
