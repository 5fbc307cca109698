"""Advantages for PPO (chapter 15): masked means, GAE, discounted returns, whitening.

    GAE     δ_t = r_t + γ V_{t+1} − V_t,   A_t = δ_t + γλ A_{t+1},   V_T = 0,   R_t = A_t + V_t
    returns G_t = Σ_k γ^k r_{t+k}
    whiten  (x − mean) / std over the masked positions

Shapes: rewards and values (T,) or (B, T); masks are bool tensors of the same shape.
"""
from __future__ import annotations

import torch

from labkit.core.validate import require_same_shape, require_tensor

__all__ = ["masked_mean", "gae", "discounted_returns", "whiten"]


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of ``x`` over the positions where ``mask`` is True (all positions if ``mask`` is None)."""
    if mask is None:
        return x.mean()
    require_same_shape(x, mask, "x", "mask")
    m = mask.to(x.dtype)
    n = m.sum()
    if n == 0:
        raise ValueError("`mask` selects no positions; there is nothing to average")
    return (x * m).sum() / n


def _as_2d(rewards: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, bool]:
    require_tensor(rewards, "rewards")
    require_tensor(values, "values")
    if rewards.shape != values.shape:
        raise ValueError(
            f"`rewards` {tuple(rewards.shape)} and `values` {tuple(values.shape)} must have the same shape: "
            "one reward and one value estimate per step (the value after the last step is taken as 0)"
        )
    if rewards.dim() not in (1, 2):
        raise ValueError(f"`rewards` must be 1-D (T,) or 2-D (B, T), got {rewards.dim()}-D")
    squeeze = rewards.dim() == 1
    if squeeze:
        rewards, values = rewards.unsqueeze(0), values.unsqueeze(0)
    return rewards.float(), values.float(), squeeze


def gae(
    rewards: torch.Tensor, values: torch.Tensor, gamma: float = 1.0, lam: float = 0.95
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016), computed backwards in time.

        δ_t = r_t + γ V_{t+1} − V_t          (V_T = 0: the episode ends after the last step)
        A_t = δ_t + γλ A_{t+1}   =  Σ_l (γλ)^l δ_{t+l}
        R_t = A_t + V_t                      (the value-function target)

    λ = 0 gives the one-step TD error δ_t; λ = 1 gives the discounted return minus V_t.

    Args:
        rewards, values: (T,) or (B, T), same shape.
        gamma: discount γ ∈ [0, 1] (1.0 is standard for LLM RLHF: episodes are short and finite).
        lam: λ ∈ [0, 1].

    Returns:
        (advantages, returns), each the shape of ``rewards``, detached.
    """
    r, v, squeeze = _as_2d(rewards, values)
    for name, x in (("gamma", gamma), ("lam", lam)):
        if not 0.0 <= float(x) <= 1.0:
            raise ValueError(f"`{name}` must be in [0, 1], got {x}")
    r, v = r.detach(), v.detach()
    T = r.shape[1]
    adv = torch.zeros_like(r)
    last = torch.zeros_like(r[:, 0])
    for t in reversed(range(T)):
        next_v = v[:, t + 1] if t + 1 < T else torch.zeros_like(last)
        delta = r[:, t] + gamma * next_v - v[:, t]
        last = delta + gamma * lam * last
        adv[:, t] = last
    ret = adv + v
    if squeeze:
        adv, ret = adv.squeeze(0), ret.squeeze(0)
    return adv, ret


def discounted_returns(rewards: torch.Tensor, gamma: float = 1.0) -> torch.Tensor:
    """G_t = Σ_k γ^k r_{t+k} for (T,) or (B, T) rewards (an independent check of GAE with λ = 1)."""
    r = rewards.float()
    T = r.shape[-1]
    k = torch.arange(T, dtype=torch.float64)
    # W[t, s] = γ^(s−t) for s ≥ t, else 0;  G = r @ Wᵀ
    W = torch.where(k[None, :] >= k[:, None], float(gamma) ** (k[None, :] - k[:, None]), 0.0)
    return (r.double() @ W.T).to(r.dtype)


def whiten(x: torch.Tensor, mask: torch.Tensor | None = None, shift_mean: bool = True) -> torch.Tensor:
    """(x − mean) / std over the masked positions (advantage normalisation)."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    out = (x - mean) * torch.rsqrt(var + 1e-8)
    return out if shift_mean else out + mean
