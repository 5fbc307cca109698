r"""Gradient clipping by the global L2 norm (chapter 07), the rule of ``torch.nn.utils.clip_grad_norm_``.

All gradients are seen as one long vector :math:`g`:

.. math::
    \|g\|_2 = \sqrt{\textstyle\sum_i \|g_i\|_2^2}, \qquad
    g_i \leftarrow g_i \cdot \min\!\Big(1, \frac{c}{\|g\|_2 + 10^{-6}}\Big)

for a threshold :math:`c` (``max_norm``). One common factor keeps the direction of the update and only
shortens it when a batch produces an unusually large gradient (a loss spike).
"""
from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from labkit.core.validate import require_positive

__all__ = ["clip_grad_norm"]


@torch.no_grad()
def clip_grad_norm(parameters: Tensor | Iterable[Tensor], max_norm: float) -> Tensor:
    """Scale the gradients of ``parameters`` in place so their global L2 norm is at most ``max_norm``.

    Returns the total norm *before* clipping, a 0-dim tensor (``float(...)`` for a number); parameters whose
    ``.grad`` is ``None`` are skipped (no gradients at all → ``tensor(0.)``). Same gradients after and same
    returned norm as ``torch.nn.utils.clip_grad_norm_(parameters, max_norm)``.

    Raises:
        ValueError: ``max_norm`` <= 0; or the total norm is inf/NaN. Then no gradient is touched, so the
            caller can skip the step: scaling by a NaN factor would turn every weight into NaN.
    """
    require_positive(max_norm, "max_norm", "pass the largest global gradient norm to allow, e.g. 1.0")
    params = [parameters] if isinstance(parameters, Tensor) else list(parameters)
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.tensor(0.0)
    norms = [torch.linalg.vector_norm(g, 2.0) for g in grads]                       # ‖g_i‖ per tensor
    total = torch.linalg.vector_norm(torch.stack([n.to(grads[0].device) for n in norms]), 2.0)
    if not torch.isfinite(total):
        raise ValueError(f"the total gradient norm is {float(total)}: the loss or a gradient is inf/NaN, and "
                         "clipping would make every weight NaN; skip this step (zero_grad), lower the learning "
                         "rate, or find the inf/NaN in the batch or the loss")
    coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)                          # min(1, c / (‖g‖ + 1e-6))
    for g in grads:
        g.mul_(coef.to(g.device))
    return total
