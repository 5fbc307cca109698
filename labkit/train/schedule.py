"""The learning-rate schedule of the course (chapter 07): linear warmup, then cosine decay to ``min_lr``.

The one schedule every labkit training loop uses. Convention: ``step`` t is 0-based and ``lr_at(t)`` is the
learning rate *of the update made at step t* (set before ``optimizer.step()``); W = ``warmup``,
S = ``total`` (the run's number of steps)::

    lr_at(t) = max_lr · (t + 1) / W                                           t < W
    lr_at(t) = min_lr + ½ (max_lr − min_lr) (1 + cos(π (t − W) / (S − W)))    W ≤ t ≤ S
    lr_at(t) = min_lr                                                          t ≥ S

So the first update already moves (max_lr / W, not 0), the peak max_lr is reached at t = W − 1 and
t = W, and the last step of a run, t = S − 1, is just above ``min_lr`` (which t = S would reach).
"""
from __future__ import annotations

import math

__all__ = ["lr_at"]


def lr_at(step: int, max_lr: float, warmup: int, total: int, min_lr: float = 0.0) -> float:
    r"""Learning rate of the update at ``step`` (0-based): linear warmup then cosine decay.

    .. math:: \eta_t = \eta_{max}\,\frac{t+1}{W} \ (t < W), \qquad
              \eta_t = \eta_{min} + \tfrac12(\eta_{max}-\eta_{min})
                       \bigl(1+\cos(\pi\,\tfrac{t-W}{S-W})\bigr) \ (W \le t \le S)

    and :math:`\eta_{min}` after ``total`` = S steps.
    """
    if warmup < 0 or total < 1 or warmup > total:
        raise ValueError(f"need 0 <= warmup <= total and total >= 1, got warmup={warmup}, total={total}")
    if not 0 <= min_lr <= max_lr:
        raise ValueError(f"need 0 <= min_lr <= max_lr, got min_lr={min_lr}, max_lr={max_lr}")
    if step < warmup:
        return max_lr * (step + 1) / warmup
    if step >= total:
        return min_lr
    progress = (step - warmup) / max(1, total - warmup)
    return min_lr + 0.5 * (max_lr - min_lr) * (1 + math.cos(math.pi * progress))
