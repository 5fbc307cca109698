"""Hidden tests of the lab tasks, one module per chapter (``ch01.py`` ...). They live here, not in the
learner copies. ``python -m labkit grade`` (:mod:`labkit.course.grade`) imports a chapter's module only
inside the learner's kernel, where :func:`labkit.course.hidden.base.grade_in_kernel` runs its tests right
after the cell that defines a task's functions; the grader's own process just lists the files.

    base.py   Task, Check, Forbidden; reading a function's source for reference calls; scoring
    chNN.py   ``TASKS`` of chapter NN

To give a new chapter lab tasks: tag its central cell ``task`` (see :mod:`labkit.course.student`), rebind
each task function with :func:`labkit.course.lab.use` in the cell after it, and add ``chNN.py`` with
``TASKS`` here (the file's presence registers the chapter).
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["chapters_with_tasks", "module_of"]


def chapters_with_tasks() -> list[str]:
    """``["01", "02", ...]``: the chapters that have a ``chNN.py`` of hidden tests."""
    return sorted(p.stem[2:] for p in Path(__file__).parent.glob("ch[0-9][0-9].py"))


def module_of(chapter: str) -> str:
    """``"labkit.course.hidden.ch03"``; ``KeyError`` naming the chapters that have lab tasks."""
    if chapter not in chapters_with_tasks():
        raise KeyError(f"chapter {chapter!r} has no lab tasks yet (chapters with tasks: "
                       f"{', '.join(chapters_with_tasks())})")
    return f"{__name__}.ch{chapter}"
