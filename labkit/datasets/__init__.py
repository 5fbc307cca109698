"""Layer 1, datasets: the course's data, generated deterministically and loaded from data/.

* ``shakespeare``: the public-domain plays as plain text (chapters 02, 07 and later);
* ``task``: the instruction task with exactly checkable answers (chapters 12-14);
* ``world``: the fictional world, its articles and questions (chapters 18-20).
"""
from __future__ import annotations

from . import shakespeare, task, world  # noqa: F401
from .shakespeare import load_shakespeare  # noqa: F401

__all__ = ["shakespeare", "task", "world", "load_shakespeare"]
