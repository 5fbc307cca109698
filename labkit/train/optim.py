r"""AdamW written out (chapter 07): Adam's two moment estimates, bias correction, decoupled weight decay.

For each parameter :math:`\theta` with gradient :math:`g_t` at its :math:`t`-th update (:math:`t = 1, 2, ...`;
a parameter whose ``.grad`` is ``None`` on a step is skipped and its :math:`t` does not advance):

.. math::
    \theta &\leftarrow \theta - \eta\,\lambda\,\theta                  && \text{decoupled weight decay}\\
    m_t &= \beta_1 m_{t-1} + (1-\beta_1)\,g_t                          && \text{first moment (mean)}\\
    v_t &= \beta_2 v_{t-1} + (1-\beta_2)\,g_t^2                        && \text{second moment (uncentred variance)}\\
    \hat m_t &= m_t / (1-\beta_1^t), \quad \hat v_t = v_t / (1-\beta_2^t) && \text{bias correction}\\
    \theta &\leftarrow \theta - \eta\,\hat m_t / (\sqrt{\hat v_t} + \epsilon)

with :math:`m_0 = v_0 = 0`, learning rate :math:`\eta` (``lr``) and weight decay :math:`\lambda`
(``weight_decay``). "Decoupled" (Loshchilov & Hutter, 2019): the decay shrinks the weights directly instead
of being added to the gradient as :math:`\lambda\theta`, where Adam's division by :math:`\sqrt{\hat v}` would
rescale it per coordinate. The operations are ordered as in ``torch.optim.AdamW`` (its single-tensor CPU path),
so the two agree to the last bit on CPU.

:func:`param_groups` splits a model's parameters into the usual two groups: decay on weight matrices, none on
norm gains, biases and embeddings.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn

from labkit.core.validate import require_positive

__all__ = ["AdamW", "param_groups"]


def _require_number(x: object, arg: str) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise TypeError(f"`{arg}` must be a number, got {type(x).__name__}")
    if not math.isfinite(x):
        raise ValueError(f"`{arg}` must be finite, got {x}")
    return float(x)


def _check_hparams(lr: Any, betas: Any, eps: Any, weight_decay: Any) -> None:
    """Raise a ValueError/TypeError naming the first bad AdamW hyperparameter and the fix."""
    if _require_number(lr, "lr") < 0:
        raise ValueError(f"`lr` must be >= 0, got {lr}; a typical AdamW learning rate is 1e-4 .. 1e-2")
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"`betas` must be a pair (beta1, beta2), got {betas!r}; e.g. betas=(0.9, 0.95)")
    for i, b in enumerate(betas):
        if not 0.0 <= _require_number(b, f"betas[{i}]") < 1.0:
            raise ValueError(f"`betas[{i}]` must be in [0, 1), got {b}; e.g. betas=(0.9, 0.95) "
                             "(1 would never forget the first gradient and divide by 1 - 1**t = 0)")
    require_positive(_require_number(eps, "eps"), "eps",
                     "eps keeps sqrt(v_hat) + eps away from 0 where a gradient entry is 0; use 1e-8")
    if _require_number(weight_decay, "weight_decay") < 0:
        raise ValueError(f"`weight_decay` must be >= 0, got {weight_decay}; 0 turns decay off, 0.1 is usual "
                         "for LLM pretraining")


class AdamW(torch.optim.Optimizer):
    r"""AdamW (Adam with decoupled weight decay), the arguments and results of ``torch.optim.AdamW``.

    Args:
        params: an iterable of tensors, or of parameter-group dicts (``{"params": [...], "lr": ...,
            "weight_decay": ...}``; a group's own value overrides the default), e.g. :func:`param_groups`.
        lr: learning rate :math:`\eta` (>= 0). A schedule changes ``group["lr"]`` before each step.
        betas: :math:`(\beta_1, \beta_2)`, each in [0, 1).
        eps: :math:`\epsilon > 0`, added to :math:`\sqrt{\hat v_t}`.
        weight_decay: :math:`\lambda \ge 0`; each step multiplies the weights by :math:`1 - \eta\lambda`.

    State per parameter (``optimizer.state[p]``): ``step`` (int, its :math:`t`), ``exp_avg`` (:math:`m_t`) and
    ``exp_avg_sq`` (:math:`v_t`), tensors shaped like ``p``. ``state_dict()`` / ``load_state_dict()`` are
    ``torch.optim.Optimizer``'s. Not supported: ``amsgrad``, ``maximize``, sparse gradients.
    """

    def __init__(self, params: Iterable[Tensor] | Iterable[dict[str, Any]], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 1e-2) -> None:
        _check_hparams(lr, betas, eps, weight_decay)
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """``torch.optim.Optimizer.add_param_group``, after checking the group's own hyperparameters."""
        if isinstance(param_group, dict):
            merged = {**self.defaults, **param_group}
            _check_hparams(merged["lr"], merged["betas"], merged["eps"], merged["weight_decay"])
        super().add_param_group(param_group)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One AdamW update of every parameter that has a gradient (formulas in the module docstring).

        ``closure`` (optional) re-evaluates the model and returns the loss, as for any torch optimizer.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    self._update(p, group)
        return loss

    def _update(self, p: Tensor, group: dict[str, Any]) -> None:
        """The update of one parameter ``p`` (any shape) with ``p.grad``; ``m``, ``v`` live in ``self.state[p]``."""
        g = p.grad
        if g.is_sparse:
            raise TypeError("AdamW does not support sparse gradients; use torch.optim.SparseAdam")
        lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
        state = self.state[p]
        if len(state) == 0:
            state["step"] = 0
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        t = int(state["step"]) + 1                                  # a torch state_dict stores a float tensor
        state["step"] = t
        m, v = state["exp_avg"], state["exp_avg_sq"]
        if wd != 0:
            p.mul_(1 - lr * wd)                                     # θ ← θ − η λ θ   (decoupled)
        m.lerp_(g, 1 - beta1)                                       # m ← β1 m + (1 − β1) g
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)               # v ← β2 v + (1 − β2) g²
        bias1, bias2 = 1 - beta1 ** t, 1 - beta2 ** t
        denom = (v.sqrt() / bias2 ** 0.5).add_(eps)                 # √v̂ + ε, with v̂ = v / (1 − β2^t)
        p.addcdiv_(m, denom, value=-lr / bias1)                     # θ ← θ − η m̂ / (√v̂ + ε), m̂ = m/(1−β1^t)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two AdamW parameter groups: ``[{"params": decay, "weight_decay": weight_decay},
    {"params": no_decay, "weight_decay": 0.0}]``.

    * decay: weight matrices (parameters with 2+ dimensions: linear layers, an untied LM head);
    * no decay: 1-D parameters (RMSNorm / LayerNorm gains, biases) and every ``nn.Embedding`` weight.
      Decay would pull a norm gain towards 0 instead of 1, and a rare token's embedding (few gradient
      updates) would shrink towards 0 each step. With tied embeddings the LM head *is* the embedding
      tensor, so it is not decayed either.

    Each trainable parameter appears once (shared tensors are listed under the first name
    ``model.named_parameters()`` gives them), in ``named_parameters()`` order; frozen ones are left out.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"`model` must be a torch.nn.Module, got {type(model).__name__}")
    if _require_number(weight_decay, "weight_decay") < 0:
        raise ValueError(f"`weight_decay` must be >= 0, got {weight_decay}; 0.1 is usual for LLM pretraining")
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    decay, no_decay, seen = [], [], set()
    for _, p in model.named_parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        (decay if p.dim() >= 2 and id(p) not in embeddings else no_decay).append(p)
    if not seen:
        raise ValueError("`model` has no trainable parameters (all requires_grad=False); unfreeze some first")
    return [{"params": decay, "weight_decay": float(weight_decay)}, {"params": no_decay, "weight_decay": 0.0}]
