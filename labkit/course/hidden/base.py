"""The machinery of the hidden tests: a task, its checks, what it may not call, and how it is scored.

A :class:`Task` names the learner's functions and holds :class:`Check` s worth points each. Scoring
(:func:`run_task`):

1. a missing function, or one that is still the learner-copy stub, scores 0;
2. a function that *uses the reference* scores 0 and says which one: its source (and the source of the
   learner's own helpers it calls) is read with :mod:`ast` and every name and attribute is resolved against
   the function's globals; a forbidden object (``torch.softmax``, ``F.scaled_dot_product_attention`` ...),
   anything from a forbidden package (``labkit``, ``transformers`` ...) or a forbidden method name
   (``x.softmax(...)``) is found before anything runs. While the learner's code runs, the forbidden
   functions are also replaced by ones that raise, which catches what reading the source cannot;
3. otherwise each check runs on fresh random shapes and values from its own seeded generator; its points
   count when it passes. References (torch, transformers ...) are computed outside the learner's calls.

Checks raise ``AssertionError`` (usually through :func:`labkit.core.check.close`) with a message that says
what differs; the learner's own exceptions are reported with the line of their cell that raised.
"""
from __future__ import annotations

import ast
import builtins
import contextlib
import inspect
import json
import random
import signal
import textwrap
import threading
import types
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np
import torch

from labkit.core.check import describe_failure
from labkit.course.lab import is_stub

__all__ = ["Check", "Task", "Forbidden", "Learner", "ForbiddenCall", "LearnerError", "find_forbidden", "run_task",
           "task_specs", "grade_in_kernel", "CHECK_SECONDS"]

#: Wall-clock limit of one check (a learner's endless loop fails that check, not the whole notebook).
CHECK_SECONDS = 30.0
_MISSING = object()
_LIBRARIES = frozenset({"torch", "numpy", "scipy", "labkit", "transformers", "tokenizers", "tiktoken", "regex",
                        "collections", "functools", "itertools", "math", "typing"})


class ForbiddenCall(Exception):
    """Raised in place of a reference function while the learner's code runs."""


class LearnerError(Exception):
    """The learner's function raised (the original exception is ``__cause__``)."""


@dataclass(frozen=True)
class Forbidden:
    """What a task's functions may not use.

    ``patch``: ``(owner, attribute, label)``: ``owner.attribute`` is forbidden and, while learner code
    runs, replaced by a function that raises. ``objects``: more forbidden objects (found by identity).
    ``packages``: top-level package names nothing may come from. ``methods``: attribute names that may not
    be called on anything (``z.softmax(-1)``). ``allowed``: objects exempt from ``packages``, e.g. labkit's
    version of *another* task's function, which a learner copy uses while that task is unwritten.
    """

    patch: tuple[tuple[Any, str, str], ...] = ()
    objects: tuple[tuple[Any, str], ...] = ()
    packages: tuple[str, ...] = ("labkit",)
    methods: frozenset[str] = frozenset()
    allowed: tuple[Any, ...] = ()

    def is_allowed(self, obj: Any) -> bool:
        return any(obj is a for a in self.allowed)

    def label_of(self, obj: Any) -> str | None:
        """The reason ``obj`` is forbidden, or ``None``."""
        if self.is_allowed(obj):
            return None
        for owner, attr, label in self.patch:
            if obj is getattr(owner, attr, _MISSING):
                return label
        for o, label in self.objects:
            if obj is o:
                return label
        mod = obj.__name__ if isinstance(obj, types.ModuleType) else getattr(obj, "__module__", None)
        if not isinstance(mod, str):
            mod = type(obj).__module__
        top = (mod or "").split(".")[0]
        if top in self.packages:
            name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None) or type(obj).__name__
            return f"{mod}.{name}" if not isinstance(obj, types.ModuleType) else mod
        return None


@dataclass(frozen=True)
class Check:
    """One hidden check: ``run(learner, generator)`` raises ``AssertionError`` when the answer is wrong."""

    what: str
    points: int
    run: Callable[["Learner", torch.Generator], None]


@dataclass(frozen=True)
class Task:
    """A lab task: the learner's ``functions`` (defined in one cell tagged ``task``) and their checks."""

    key: str
    title: str
    functions: tuple[str, ...]
    checks: tuple[Check, ...]
    forbidden: Forbidden = field(default_factory=Forbidden)

    @property
    def max_points(self) -> int:
        return sum(c.points for c in self.checks)


# ---------------------------------------------------------------------------------------- reading source
def _tree(fn: Callable[..., Any]) -> ast.AST | None:
    try:
        return ast.parse(textwrap.dedent(inspect.getsource(fn)))
    except (OSError, TypeError, SyntaxError):
        return None


def _resolve(node: ast.AST, scope: dict[str, Any]) -> Any:
    """The object a ``Name`` or ``a.b.c`` chain denotes in ``scope``; attributes only of modules and classes."""
    if isinstance(node, ast.Name):
        return scope.get(node.id, getattr(builtins, node.id, _MISSING))
    if isinstance(node, ast.Attribute):
        base = _resolve(node.value, scope)
        if isinstance(base, (types.ModuleType, type)):
            return getattr(base, node.attr, _MISSING)
    return _MISSING


def _scope(fn: Callable[..., Any], tree: ast.AST | None = None) -> dict[str, Any]:
    """The names ``fn`` reads from outside: its globals and closure, minus the names it binds itself (a
    learner's local ``D = x.shape[-1]`` is not the notebook's global ``D``, e.g. ``labkit.parallel``)."""
    scope = dict(getattr(fn, "__globals__", {}))
    try:
        scope.update(inspect.getclosurevars(fn).nonlocals)
    except (TypeError, ValueError):
        pass
    for name in _local_names(tree) if tree is not None else ():
        scope.pop(name, None)
    return scope


def _local_names(tree: ast.AST) -> set[str]:
    """Names bound inside the function of ``tree`` (arguments, assignments, loop and ``with`` targets,
    nested functions), except those declared ``global`` or ``nonlocal``; nested scopes are included."""
    bound, declared = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            bound.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node is not _first_def(tree):
            bound.add(node.name)
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            declared.update(node.names)
    return bound - declared


def _first_def(tree: ast.AST) -> ast.AST | None:
    body = getattr(tree, "body", [])
    return body[0] if body and isinstance(body[0], (ast.FunctionDef, ast.AsyncFunctionDef)) else None


def find_forbidden(fn: Callable[..., Any], forbidden: Forbidden, _seen: set[int] | None = None) -> str | None:
    """Why ``fn`` (or a helper of the learner's it calls) uses the reference, e.g. ``"uses torch.softmax
    (line 5, in stable_softmax)"``; ``None`` when it does not."""
    seen = set() if _seen is None else _seen
    if id(fn) in seen or len(seen) > 20:
        return None
    seen.add(id(fn))
    tree = _tree(fn)
    if tree is None:
        return _scan_code(fn, forbidden)
    scope, name = _scope(fn, tree), getattr(fn, "__name__", "?")
    first = getattr(getattr(fn, "__code__", None), "co_firstlineno", 1)  # lines as numbered in the learner's cell
    for node in ast.walk(tree):
        where = f"(line {first + getattr(node, 'lineno', 1) - 1}, in {name})"
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            mods = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
            bad = [m for m in mods if m.split(".")[0] in forbidden.packages]
            if bad:
                return f"imports {bad[0]} {where}"
        if isinstance(node, (ast.Name, ast.Attribute)) and isinstance(getattr(node, "ctx", None), ast.Load):
            obj = _resolve(node, scope)
            if obj is _MISSING:
                if isinstance(node, ast.Attribute) and node.attr in forbidden.methods:
                    return f"calls .{node.attr}(...) {where}"
                continue
            label = forbidden.label_of(obj)
            if label:
                return f"uses {label} {where}"
            if inspect.isfunction(obj) and obj is not fn and not forbidden.is_allowed(obj) and _is_learner_code(obj):
                found = find_forbidden(obj, forbidden, seen)
                if found:
                    return found
    return None


def _scan_code(fn: Callable[..., Any], forbidden: Forbidden) -> str | None:
    """:func:`find_forbidden` for a function whose source cannot be read: the names its byte code loads
    (globals and attribute names, nested functions included), resolved against its globals."""
    code = getattr(fn, "__code__", None)
    if code is None:
        return None
    names, stack = set(), [code]
    while stack:
        c = stack.pop()
        names.update(c.co_names)
        stack.extend(k for k in c.co_consts if isinstance(k, types.CodeType))
    scope, where = _scope(fn), f"(in {getattr(fn, '__name__', '?')})"
    modules = [scope[n] for n in names if isinstance(scope.get(n), types.ModuleType)]  # modules it loads
    for n in sorted(names):
        if n in forbidden.methods:
            return f"calls .{n}(...) {where}"
        candidates = [scope.get(n, _MISSING)] + [getattr(m, n, _MISSING) for m in modules]
        for obj in candidates:
            label = None if obj is _MISSING else forbidden.label_of(obj)
            if label:
                return f"uses {label} {where}"
    return None


def _is_learner_code(fn: Callable[..., Any]) -> bool:
    """A function defined in a notebook cell or a test, not in an installed package or labkit."""
    mod = (getattr(fn, "__module__", "") or "").split(".")[0]
    return mod not in _LIBRARIES


# ------------------------------------------------------------------------------------------ running code
@contextlib.contextmanager
def _patched(forbidden: Forbidden) -> Iterator[None]:
    """Replace each forbidden ``owner.attr`` by a function that raises :class:`ForbiddenCall`."""
    saved = []
    try:
        for owner, attr, label in forbidden.patch:
            if hasattr(owner, attr):
                saved.append((owner, attr, owner.__dict__.get(attr, _MISSING), getattr(owner, attr)))

                def _raise(*_a: Any, _label: str = label, **_k: Any) -> Any:
                    raise ForbiddenCall(f"called {_label} at run time")

                setattr(owner, attr, _raise)
        yield
    finally:
        for owner, attr, own, original in reversed(saved):
            setattr(owner, attr, original if own is _MISSING else own)


class Learner:
    """The learner's functions as attributes; each call runs with the task's references disabled."""

    def __init__(self, functions: dict[str, Callable[..., Any]], forbidden: Forbidden) -> None:
        self._functions, self._forbidden = functions, forbidden

    def __getattr__(self, name: str) -> Callable[..., Any]:
        fn = self._functions[name]

        def call(*args: Any, **kwargs: Any) -> Any:
            with _patched(self._forbidden):
                try:
                    return fn(*args, **kwargs)
                except ForbiddenCall:
                    raise
                except Exception as e:  # the learner's own error, told apart from the check's verdict
                    raise LearnerError(str(e)) from e
        return call


@contextlib.contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    """``TimeoutError`` after ``seconds`` of wall time (main thread only; elsewhere no limit)."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    def _alarm(*_: Any) -> None:
        raise TimeoutError(f"the check took longer than {seconds:.0f} s (an endless loop?)")

    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@contextlib.contextmanager
def _rng_kept() -> Iterator[None]:
    """The hidden tests leave the notebook's random state as they found it."""
    states = torch.get_rng_state(), random.getstate(), np.random.get_state()
    try:
        yield
    finally:
        torch.set_rng_state(states[0])
        random.setstate(states[1])
        np.random.set_state(states[2])


def _run_check(check: Check, learner: Learner, seed: int) -> tuple[bool, str]:
    g = torch.Generator().manual_seed(seed)
    try:
        with _time_limit(CHECK_SECONDS):
            check.run(learner, g)
    except ForbiddenCall:
        raise
    except LearnerError as e:
        cause = e.__cause__
        if isinstance(cause, NotImplementedError):
            return False, f"raised NotImplementedError{f' ({cause})' if str(cause) else ''}: not written yet"
        return False, describe_failure(cause)
    except AssertionError as e:
        return False, describe_failure(e)
    except Exception as e:  # the check could not use what the learner's function returned
        return False, f"wrong answer: the check could not use your result ({type(e).__name__}: {e})"
    return True, "passed"


def _result(task: Task, points: int, message: str, checks: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"key": task.key, "title": task.title, "points": points, "max_points": task.max_points,
            "message": message, "checks": checks or []}


def run_task(task: Task, namespace: dict[str, Any], seed: int = 0) -> dict[str, Any]:
    """Score ``task`` on the functions found in ``namespace`` (a notebook's globals); see the module doc.

    Returns ``{"key", "title", "points", "max_points", "message", "checks": [{"what", "points",
    "passed", "message"}]}``; never raises for anything the learner's code does.
    """
    fns = {}
    for name in task.functions:
        fn = namespace.get(name)
        if not callable(fn):
            return _result(task, 0, f"{name} is not defined (keep the task cell's function names)")
        if is_stub(fn):
            return _result(task, 0, f"{name} is not written yet (it still raises NotImplementedError)")
        fns[name] = fn
    for name, fn in fns.items():
        label = task.forbidden.label_of(fn)
        why = f"is {label} itself, not a function of yours" if label else find_forbidden(fn, task.forbidden)
        if why:
            return _result(task, 0, f"{name} {why}: a task answered by calling the reference scores 0; "
                                    "write it yourself (the task's text says what you may use)")
    learner, rows, points = Learner(fns, task.forbidden), [], 0
    with _rng_kept():
        for i, check in enumerate(task.checks):
            try:
                ok, msg = _run_check(check, learner, seed * 1000 + i)
            except ForbiddenCall as e:
                return _result(task, 0, f"{e}: a task answered by calling the reference scores 0; write it yourself")
            points += check.points if ok else 0
            rows.append({"what": check.what, "points": check.points, "passed": ok, "message": msg})
    failed = [f"✗ {r['what']}: {r['message']}" for r in rows if not r["passed"]]
    message = f"all {len(rows)} checks passed" if not failed else " | ".join(failed)
    return _result(task, points, message, rows)


# -------------------------------------------------------------------------------- called in the kernel
def task_specs(tasks: tuple[Task, ...], marker: str) -> None:
    """Print ``<marker><JSON>``: each task's key, title, functions, points and time budget (seconds)."""
    specs = [{"key": t.key, "title": t.title, "functions": list(t.functions), "max_points": t.max_points,
              "seconds": CHECK_SECONDS * len(t.checks)} for t in tasks]
    print(marker + json.dumps(specs, ensure_ascii=False), flush=True)


def grade_in_kernel(tasks: tuple[Task, ...], keys: list[str], namespace: dict[str, Any], seed: int,
                    marker: str) -> None:
    """Score the tasks ``keys`` on ``namespace`` (the notebook's globals) and print one line
    ``<marker><JSON list of results>`` for the grader (the cell the grader injects calls this)."""
    by_key = {t.key: t for t in tasks}
    results = []
    for key in keys:
        try:
            results.append(run_task(by_key[key], namespace, seed=seed))
        except Exception as e:  # a bug in a hidden test: say so, do not blame the learner silently
            results.append(_result(by_key[key], 0, f"the grader failed on this task ({type(e).__name__}: {e}); "
                                                   "tell the instructor"))
    print(marker + json.dumps(results, ensure_ascii=False), flush=True)
