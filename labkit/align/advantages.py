"""Advantages for PPO (chapter 15): masked means, GAE, discounted returns, whitening.

    GAE     δ_t = r_t + γ V_{t+1} − V_t,   A_t = δ_t + γλ A_{t+1},   V_T = 0,   R_t = A_t + V_t
    returns G_t = Σ_k γ^k r_{t+k}
    whiten  (x − mean) / std over the masked positions

Shapes: rewards and values (T,) or (B, T); masks are bool tensors of the same shape. Computed in at least
float32 and never below the inputs' precision (float64 stays float64).
"""
from __future__ import annotations

import torch

from labkit.core.validate import require_in_range, require_same_shape, require_tensor, working_dtype

__all__ = ["masked_mean", "gae", "discounted_returns", "whiten"]


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of ``x`` over the positions where ``mask`` is True (all positions if ``mask`` is None)."""
    require_tensor(x, "x")
    if mask is None:
        if x.numel() == 0:
            raise ValueError("`x` is empty; there is nothing to average (pass a non-empty batch)")
        return x.mean()
    require_tensor(mask, "mask")
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
    dt = working_dtype(rewards.dtype, values.dtype)       # float64 stays float64
    return rewards.to(dt), values.to(dt), squeeze


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
        (advantages, returns), each the shape of ``rewards``, detached, in at least float32 (float64 inputs
        give float64).
    """
    r, v, squeeze = _as_2d(rewards, values)
    require_in_range(gamma, "gamma", 0.0, 1.0, "the discount is a probability-like weight; 1.0 is usual for RLHF")
    require_in_range(lam, "lam", 0.0, 1.0, "λ interpolates TD (0) and Monte Carlo (1); 0.95 is usual")
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
    """G_t = Σ_k γ^k r_{t+k} for (T,) or (B, T) rewards (an independent check of GAE with λ = 1).

    Summed in float64; returned in the rewards' dtype, at least float32 (float64 stays float64).
    """
    require_tensor(rewards, "rewards")
    if rewards.dim() not in (1, 2):
        raise ValueError(f"`rewards` must be 1-D (T,) or 2-D (B, T), got shape {tuple(rewards.shape)}")
    require_in_range(gamma, "gamma", 0.0, 1.0, "γ > 1 makes later rewards count more and the sum diverge")
    r = rewards.to(working_dtype(rewards.dtype))
    T = r.shape[-1]
    k = torch.arange(T, dtype=torch.float64)
    # W[t, s] = γ^(s−t) for s ≥ t, else 0;  G = r @ Wᵀ
    W = torch.where(k[None, :] >= k[:, None], float(gamma) ** (k[None, :] - k[:, None]), 0.0)
    return (r.double() @ W.T).to(r.dtype)


def whiten(x: torch.Tensor, mask: torch.Tensor | None = None, shift_mean: bool = True) -> torch.Tensor:
    """(x − mean) / std over the masked positions (advantage normalisation); a constant x gives 0 (not NaN)."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    out = (x - mean) * torch.rsqrt(var + 1e-8)
    return out if shift_mean else out + mean
