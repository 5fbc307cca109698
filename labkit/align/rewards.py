"""Reward models (chapter 15): the Bradley-Terry loss, pairwise accuracy, and training r_φ.

    P(y_c ≻ y_r) = σ(r_c − r_r),   L = softplus(−(r_c − r_r))      (mean over the B pairs)

``RewardModel``: a transformer backbone plus a scalar :class:`~labkit.align.policy.ValueHead`,
token ids (B, T) → rewards (B,).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from labkit.align.policy import ValueHead, _hidden_dim, _progress
from labkit.core.validate import require_int, require_same_shape, require_tensor

__all__ = ["bradley_terry_loss", "pairwise_accuracy", "RewardModel", "train_reward_model"]


def bradley_terry_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> torch.Tensor:
    """Mean of −log σ(r_c − r_r) = softplus(−(r_c − r_r)) over the batch of pairs (B,) → scalar.

    ``softplus`` is the stable form: ``-torch.log(torch.sigmoid(x))`` is inf for x ≲ −104 in fp32.
    """
    require_tensor(r_chosen, "r_chosen")
    require_tensor(r_rejected, "r_rejected")
    require_same_shape(r_chosen, r_rejected, "r_chosen", "r_rejected")
    if r_chosen.numel() == 0:
        raise ValueError("empty batch: `r_chosen` has no pairs")
    return F.softplus(-(r_chosen - r_rejected)).mean()


def pairwise_accuracy(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> float:
    """Fraction of pairs ranked correctly (r_c > r_r); ties count as wrong (and a NaN reward is never right)."""
    require_tensor(r_chosen, "r_chosen")
    require_tensor(r_rejected, "r_rejected")
    require_same_shape(r_chosen, r_rejected, "r_chosen", "r_rejected")
    if r_chosen.numel() == 0:
        raise ValueError("empty batch: `r_chosen` has no pairs, so there is no accuracy (it would be NaN)")
    return float((r_chosen > r_rejected).float().mean())


class RewardModel(nn.Module):
    """r_φ(x, y): a transformer backbone plus a scalar head, (B, T) → (B,).

    ``pool="last"`` (the InstructGPT/TRL choice) reads the head at the last token, which has
    attended to the whole sequence. ``pool="mean"`` averages the head over the response tokens
    (positions ≥ ``prompt_len``), which suits rewards that add up over the text.

    Start from a copy of the pretrained/SFT model (``RewardModel(frozen_copy(model, trainable=True))``)
    so the reward model already knows the language; only the head is new.
    """

    def __init__(self, backbone: nn.Module, pool: str = "last", prompt_len: int | None = None):
        super().__init__()
        if pool not in ("last", "mean"):
            raise ValueError(f"`pool` must be 'last' or 'mean', got {pool!r}")
        if pool == "mean" and (prompt_len is None or prompt_len < 0):
            raise ValueError("`prompt_len` (>= 0) is required with pool='mean': the response starts there")
        self.backbone = backbone
        self.pool, self.prompt_len = pool, prompt_len
        self.head = ValueHead(_hidden_dim(backbone))

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        h = self.backbone.hidden_states(input_ids)
        if self.pool == "last":
            return self.head(h[:, -1])
        return self.head(h[:, self.prompt_len:]).mean(-1)


def train_reward_model(
    rm: RewardModel,
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    *,
    epochs: int = 2,
    batch_size: int = 16,
    lr: float = 3e-4,
    weight_decay: float = 0.0,
    seed: int = 0,
) -> list[float]:
    """Fit ``rm`` on pairs (N, T) of chosen/rejected token ids with the Bradley–Terry loss.

    Returns the loss per step. Deterministic for a given seed.
    """
    require_same_shape(chosen, rejected, "chosen", "rejected")
    if len(chosen) == 0:
        raise ValueError("`chosen` is empty: a reward model needs at least one (chosen, rejected) pair")
    require_int(batch_size, "batch_size", 1, "pairs per step, e.g. 16")
    require_int(epochs, "epochs", 1, "passes over the pairs, e.g. 2")
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW([p for p in rm.parameters() if p.requires_grad], lr=lr, weight_decay=weight_decay)
    rm.train()
    losses: list[float] = []
    n = len(chosen)
    steps = epochs * math.ceil(n / batch_size)
    bar = _progress(range(steps), "reward model")
    perm = torch.randperm(n, generator=g)
    for step in bar:
        k = step % math.ceil(n / batch_size)
        if k == 0 and step > 0:
            perm = torch.randperm(n, generator=g)
        idx = perm[k * batch_size:(k + 1) * batch_size]
        r = rm(torch.cat([chosen[idx], rejected[idx]]))
        loss = bradley_terry_loss(r[: len(idx)], r[len(idx):])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    rm.eval()
    return losses
