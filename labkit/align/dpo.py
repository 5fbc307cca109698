"""Direct Preference Optimisation (chapter 16): the DPO loss and a trainer on (chosen, rejected) pairs.

    r̂(x, y) = β (log π_θ(y|x) − log π_ref(y|x))                (the implicit reward)
    L       = −log σ(r̂(x, y_c) − r̂(x, y_r))

Pairs are (N, T) token ids sharing a prompt of length ``prompt_len``; log-probs are summed over
the response tokens (or averaged with ``average_logprobs``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from labkit.align.policy import _logits, _progress
from labkit.core.validate import require_float_tensor, require_int, require_positive, require_same_shape
from labkit.model.logprobs import sequence_logprobs

__all__ = ["dpo_loss", "DPOConfig", "DPOTrainer"]


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float = 0.1,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Direct Preference Optimisation (Rafailov et al. 2023), mean over the batch.

        r̂(x, y) = β (log π_θ(y|x) − log π_ref(y|x))                (the implicit reward)
        L       = −log σ(r̂(x, y_c) − r̂(x, y_r))

    At initialisation (π_θ = π_ref) every r̂ is 0 and L = log 2 exactly.

    Args:
        *_logps: (B,) sequence log-probs (summed over response tokens); the ``ref_*`` ones are
            constants (computed under ``torch.no_grad``; the policy ones must carry gradients).
        beta: β > 0, the strength of the implicit KL constraint (0.1 is the usual default).

    Returns:
        (loss, chosen_rewards, rejected_rewards): the scalar loss and the detached implicit
        rewards r̂ of each chosen and rejected response, (B,) each.
    """
    names = ("policy_chosen_logps", "policy_rejected_logps", "ref_chosen_logps", "ref_rejected_logps")
    xs = (policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    for x, n in zip(xs, names):
        require_float_tensor(x, n)
        require_same_shape(x, policy_chosen_logps, n, "policy_chosen_logps")
    if policy_chosen_logps.dim() != 1 or policy_chosen_logps.numel() == 0:
        raise ValueError(f"`policy_chosen_logps` must be a non-empty (B,) tensor of sequence log-probs, got shape "
                         f"{tuple(policy_chosen_logps.shape)}; an empty batch has no loss (its mean would be NaN)")
    b = require_positive(beta, "beta", "β → 0 removes the preference signal; try 0.1 (0.1–0.5 is common)")
    chosen = b * (policy_chosen_logps - ref_chosen_logps.detach())
    rejected = b * (policy_rejected_logps - ref_rejected_logps.detach())
    loss = -F.logsigmoid(chosen - rejected).mean()
    return loss, chosen.detach(), rejected.detach()


@dataclass
class DPOConfig:
    """Hyper-parameters of :class:`DPOTrainer`."""

    beta: float = 0.1
    lr: float = 1e-4
    batch_size: int = 16
    epochs: int = 1
    average_logprobs: bool = False   # False: summed log-probs (the paper); True: length-normalised
    max_grad_norm: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        require_positive(self.beta, "beta", "β → 0 removes the preference signal; try 0.1 (0.1–0.5 is common)")
        require_positive(self.lr, "lr", "try 1e-4")
        require_positive(self.max_grad_norm, "max_grad_norm", "try 1.0")
        require_int(self.batch_size, "batch_size", 1, "pairs per gradient step, e.g. 16")
        require_int(self.epochs, "epochs", 1, "passes over the pairs, e.g. 1")


class DPOTrainer:
    """DPO on pairs of (N, T) token ids that share a prompt of length ``prompt_len``.

    The reference log-probs are computed once, under no_grad, before training (the reference model
    is never called again, and its weights never change). Only the policy gets gradients.
    """

    def __init__(self, policy: nn.Module, ref: nn.Module, chosen: torch.Tensor, rejected: torch.Tensor,
                 prompt_len: int, config: DPOConfig | None = None):
        require_same_shape(chosen, rejected, "chosen", "rejected")
        if chosen.dim() != 2 or chosen.shape[0] == 0:
            raise ValueError(f"`chosen` must be a non-empty (N, T) tensor of token ids, got {tuple(chosen.shape)}")
        if isinstance(prompt_len, bool) or not isinstance(prompt_len, int) or not 1 <= prompt_len < chosen.shape[1]:
            raise ValueError(f"`prompt_len` must be in [1, T) = [1, {chosen.shape[1]}), got {prompt_len}")
        self.cfg = config or DPOConfig()
        self.policy, self.ref = policy, ref
        self.chosen, self.rejected, self.prompt_len = chosen, rejected, prompt_len
        self.mask = torch.zeros_like(chosen, dtype=torch.bool)
        self.mask[:, prompt_len:] = True
        self.ref_chosen, self.ref_rejected = self.logps(ref, chosen, no_grad=True), self.logps(ref, rejected, no_grad=True)
        self.opt = torch.optim.Adam([p for p in policy.parameters() if p.requires_grad], lr=self.cfg.lr)
        self.gen = torch.Generator().manual_seed(self.cfg.seed)
        self.history: list[dict[str, float]] = []

    def logps(self, model: nn.Module, ids: torch.Tensor, no_grad: bool = False, batch_size: int = 64) -> torch.Tensor:
        """Sequence log-probs of the response part of ``ids`` under ``model`` (N,)."""
        outs = []
        with torch.set_grad_enabled(not no_grad and torch.is_grad_enabled()):
            for i in range(0, len(ids), batch_size):
                s = ids[i:i + batch_size]
                outs.append(sequence_logprobs(_logits(model, s), s, self.mask[i:i + batch_size],
                                              average=self.cfg.average_logprobs))
        return torch.cat(outs)

    def step(self, idx: torch.Tensor) -> dict[str, float]:
        """One gradient step on the pairs ``idx``; returns loss, accuracy and implicit rewards."""
        n = len(idx)
        ids = torch.cat([self.chosen[idx], self.rejected[idx]])
        mask = torch.cat([self.mask[idx], self.mask[idx]])
        lp = sequence_logprobs(_logits(self.policy, ids), ids, mask, average=self.cfg.average_logprobs)
        loss, rc, rr = dpo_loss(lp[:n], lp[n:], self.ref_chosen[idx], self.ref_rejected[idx], self.cfg.beta)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.policy.parameters(), self.cfg.max_grad_norm)
        self.opt.step()
        stats = {"loss": float(loss.detach()), "accuracy": float((rc > rr).float().mean()),
                 "chosen_reward": float(rc.mean()), "rejected_reward": float(rr.mean()),
                 "margin": float((rc - rr).mean())}
        self.history.append(stats)
        return stats

    def train(self, epochs: int | None = None) -> list[dict[str, float]]:
        """Shuffled minibatch passes over the pairs with a progress bar; returns the history."""
        epochs = self.cfg.epochs if epochs is None else epochs
        n, bs = len(self.chosen), self.cfg.batch_size
        self.policy.train()
        bar = _progress(range(epochs * math.ceil(n / bs)), "DPO")
        perm = torch.randperm(n, generator=self.gen)
        for step in bar:
            k = step % math.ceil(n / bs)
            if k == 0 and step > 0:
                perm = torch.randperm(n, generator=self.gen)
            s = self.step(perm[k * bs:(k + 1) * bs])
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{s['loss']:.3f}", acc=f"{s['accuracy']:.2f}")
        self.policy.eval()
        return self.history

    @torch.no_grad()
    def evaluate(self, chosen: torch.Tensor, rejected: torch.Tensor) -> dict[str, float]:
        """Loss, implicit-reward accuracy and margin on held-out pairs (same prompt length)."""
        was = self.policy.training
        self.policy.eval()
        mask = torch.zeros_like(chosen, dtype=torch.bool)
        mask[:, self.prompt_len:] = True
        def lps(model, ids):
            return torch.cat([sequence_logprobs(_logits(model, ids[i:i + 64]), ids[i:i + 64], mask[i:i + 64],
                                                average=self.cfg.average_logprobs) for i in range(0, len(ids), 64)])
        loss, rc, rr = dpo_loss(lps(self.policy, chosen), lps(self.policy, rejected),
                                lps(self.ref, chosen), lps(self.ref, rejected), self.cfg.beta)
        self.policy.train(was)
        return {"loss": float(loss), "accuracy": float((rc > rr).float().mean()), "margin": float((rc - rr).mean())}
