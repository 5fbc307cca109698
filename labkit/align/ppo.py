"""PPO for RLHF (chapter 15): the clipped policy and value losses, and a PPO trainer for a language model.

    ratio     ρ = exp(log π_new − log π_old)
    PPO clip  L = E[max(−A ρ, −A clip(ρ, 1−ε, 1+ε))]
    value     L = ½ E[max((V − R)², (V_clip − R)²)],   V_clip = V_old + clip(V − V_old, −c, c)
    reward    r_t = −β (log π_old − log π_ref)(y_t), plus the score on the last token

Shapes: ``B`` sequences, ``P`` prompt and ``R`` response tokens (every prompt and every response has a
fixed length, so no padding is needed), ``V`` vocabulary; per-token tensors are (B, R).
The rest of the chapter's pieces live next door: :mod:`labkit.align.rewards` (Bradley–Terry reward
model), :mod:`labkit.align.advantages` (GAE), :mod:`labkit.align.kl`, :mod:`labkit.align.policy`
and :mod:`labkit.align.dpo` (chapter 16).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn

from labkit.align.advantages import gae, masked_mean, whiten
from labkit.align.policy import PolicyWithValue, _logits, _progress, sample_responses
from labkit.core.validate import (
    require_in_range,
    require_int,
    require_positive,
    require_same_shape,
    require_tensor,
    require_token_ids,
)
from labkit.model.logprobs import token_logprobs

__all__ = ["ppo_clip_loss", "value_loss", "PPOConfig", "PPOTrainer"]


# ----------------------------------------------------------------------------------------------
# PPO losses
# ----------------------------------------------------------------------------------------------
def ppo_clip_loss(
    logp_new: torch.Tensor,
    logp_old: torch.Tensor,
    advantages: torch.Tensor,
    clip: float = 0.2,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's clipped surrogate, as a loss to minimise.

        ρ = exp(log π_new − log π_old)
        L = mean[ max(−A·ρ, −A·clip(ρ, 1−ε, 1+ε)) ]

    ``logp_old`` and ``advantages`` are constants (detached here). Where the clipped term wins
    (A > 0 and ρ > 1+ε, or A < 0 and ρ < 1−ε), the token's gradient is exactly zero.

    Args:
        logp_new, logp_old, advantages: same shape, e.g. (B, T) per token.
        clip: ε > 0.
        mask: optional bool mask of the positions that count.

    Returns:
        (loss, clip_fraction): the scalar loss and the fraction of counted positions whose gradient
        is zeroed by the clip.
    """
    for a, name in ((logp_new, "logp_new"), (logp_old, "logp_old"), (advantages, "advantages")):
        require_tensor(a, name)
    require_same_shape(logp_new, logp_old, "logp_new", "logp_old")
    require_same_shape(logp_new, advantages, "logp_new", "advantages")
    eps = require_positive(clip, "clip", "typical values are 0.1–0.3")
    adv = advantages.detach()
    ratio = torch.exp(logp_new - logp_old.detach())
    unclipped = -adv * ratio
    clipped = -adv * torch.clamp(ratio, 1.0 - eps, 1.0 + eps)
    per_token = torch.maximum(unclipped, clipped)
    loss = masked_mean(per_token, mask)
    clip_fraction = masked_mean((clipped > unclipped).float(), mask).detach()
    return loss, clip_fraction


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    clip: float | None = 0.2,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """½ mean[max((V − R)², (V_clip − R)²)], V_clip = V_old + clip(V − V_old, −c, c) (TRL/baselines).

    ``clip=None`` gives the plain ½ mean (V − R)².
    """
    require_same_shape(values, returns, "values", "returns")
    err = (values - returns.detach()) ** 2
    if clip is not None:
        require_same_shape(old_values, values, "old_values", "values")
        c = require_positive(clip, "clip", "use None to turn value clipping off")
        v_clip = old_values.detach() + torch.clamp(values - old_values.detach(), -c, c)
        err = torch.maximum(err, (v_clip - returns.detach()) ** 2)
    return 0.5 * masked_mean(err, mask)


# ----------------------------------------------------------------------------------------------
# trainer
# ----------------------------------------------------------------------------------------------
@dataclass
class PPOConfig:
    """Hyper-parameters of :class:`PPOTrainer` (defaults follow TRL where it makes sense on a CPU)."""

    batch_size: int = 32          # rollouts per iteration
    minibatch_size: int = 16      # sequences per gradient step
    ppo_epochs: int = 4           # passes over one rollout buffer
    response_len: int = 16        # new tokens per rollout
    lr: float = 1e-4
    clip: float = 0.2             # ε of the policy ratio
    value_clip: float = 0.2
    vf_coef: float = 0.1
    kl_coef: float = 0.05         # β of the per-token KL penalty (k1)
    gamma: float = 1.0
    lam: float = 0.95
    whiten_advantages: bool = True
    max_grad_norm: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("batch_size", "minibatch_size", "ppo_epochs", "response_len"):
            require_int(getattr(self, name), name, 1, "it counts sequences, passes or tokens: use a positive int")
        for name, hint in (("clip", "typical values are 0.1–0.3"), ("lr", "try 1e-4"),
                           ("max_grad_norm", "try 1.0")):
            require_positive(getattr(self, name), name, hint)
        if self.value_clip is not None:
            require_positive(self.value_clip, "value_clip", "use None to turn value clipping off")
        for name in ("kl_coef", "vf_coef"):
            if isinstance(getattr(self, name), bool) or not getattr(self, name) >= 0:
                raise ValueError(f"`{name}` must be >= 0, got {getattr(self, name)}")
        require_in_range(self.gamma, "gamma", 0.0, 1.0, "1.0 is usual for RLHF (short, finite episodes)")
        require_in_range(self.lam, "lam", 0.0, 1.0, "0.95 is usual")
        if self.batch_size % self.minibatch_size:
            raise ValueError(
                f"`batch_size` ({self.batch_size}) must be divisible by `minibatch_size` ({self.minibatch_size})"
            )


class PPOTrainer:
    """RLHF with PPO on a language model, one rollout buffer at a time.

    Each :meth:`step`:
      1. sample responses y ~ π_old for a batch of prompts; score them with ``reward_fn`` (B,);
      2. under no_grad, once per rollout: log π_old(y_t), log π_ref(y_t), values V_old(s_t);
      3. per-token rewards r_t = −β (log π_old − log π_ref)(y_t), plus the score on the last token;
      4. GAE (γ, λ) → advantages and returns; advantages whitened;
      5. ``ppo_epochs`` passes over shuffled minibatches: clipped policy loss + vf_coef · clipped
         value loss, gradient clipping, Adam. The first minibatch of a rollout has ratio exactly 1.

    Args:
        policy: the LM to train (wrapped with a fresh :class:`ValueHead`).
        ref: the frozen reference π_ref (usually the SFT model).
        reward_fn: (B, P+R) token ids → (B,) scores (a reward model or a ground-truth function).
        prompts: (N, P) prompt token ids, all the same length.
    """

    def __init__(self, policy: nn.Module, ref: nn.Module, reward_fn: Callable[[torch.Tensor], torch.Tensor],
                 prompts: torch.Tensor, config: PPOConfig | None = None):
        self.cfg = config or PPOConfig()
        self.model = PolicyWithValue(policy)
        self.ref = ref
        self.reward_fn = reward_fn
        if not isinstance(prompts, torch.Tensor) or prompts.dim() != 2 or prompts.shape[0] == 0:
            shape = tuple(prompts.shape) if isinstance(prompts, torch.Tensor) else type(prompts).__name__
            raise ValueError(f"`prompts` must be a non-empty (N, P) tensor of token ids of equal length, got {shape}")
        require_token_ids(prompts)
        self.prompts = prompts
        self.opt = torch.optim.Adam(self.model.parameters(), lr=self.cfg.lr)
        self.gen = torch.Generator().manual_seed(self.cfg.seed)
        self.history: list[dict[str, float]] = []

    @property
    def policy(self) -> nn.Module:
        return self.model.policy

    @torch.no_grad()
    def rollout(self) -> dict[str, torch.Tensor]:
        """Sample a buffer and compute everything that stays fixed during the PPO epochs."""
        cfg = self.cfg
        idx = torch.randint(len(self.prompts), (cfg.batch_size,), generator=self.gen)
        P = self.prompts.shape[1]
        seqs = sample_responses(self.policy, self.prompts[idx], cfg.response_len, generator=self.gen)
        self.model.eval()
        logits, values = self.model(seqs)
        logp_old = token_logprobs(logits, seqs)[:, P - 1:]          # (B, R): log π_old(y_t)
        logp_ref = token_logprobs(_logits(self.ref, seqs), seqs)[:, P - 1:]
        values = values[:, P - 1:-1]                                # V(s_t), s_t = prefix before y_t
        score = self.reward_fn(seqs)
        if not isinstance(score, torch.Tensor) or tuple(score.shape) != (cfg.batch_size,):
            got = tuple(score.shape) if isinstance(score, torch.Tensor) else type(score).__name__
            raise ValueError(f"`reward_fn` must return one score per sequence, shape ({cfg.batch_size},), got {got}")
        score = score.float()
        kl = logp_old - logp_ref                                    # k1 per token
        rewards = -cfg.kl_coef * kl
        rewards[:, -1] += score
        adv, ret = gae(rewards, values, cfg.gamma, cfg.lam)
        if cfg.whiten_advantages:
            adv = whiten(adv)
        return {"seqs": seqs, "logp_old": logp_old, "values": values, "adv": adv, "ret": ret,
                "score": score, "kl": kl.sum(-1)}

    def step(self) -> dict[str, float]:
        """One rollout plus ``ppo_epochs`` of minibatch updates; returns (and records) the stats."""
        cfg = self.cfg
        buf = self.rollout()
        P = self.prompts.shape[1]
        self.model.train()
        clip_fracs, vlosses, plosses, first_ratio_dev = [], [], [], None
        for _ in range(cfg.ppo_epochs):
            perm = torch.randperm(cfg.batch_size, generator=self.gen)
            for j in range(0, cfg.batch_size, cfg.minibatch_size):
                mb = perm[j:j + cfg.minibatch_size]
                logits, values = self.model(buf["seqs"][mb])
                logp = token_logprobs(logits, buf["seqs"][mb])[:, P - 1:]
                if first_ratio_dev is None:  # the first minibatch of the rollout: π = π_old exactly
                    first_ratio_dev = float((logp.detach() - buf["logp_old"][mb]).abs().max())
                pl, cf = ppo_clip_loss(logp, buf["logp_old"][mb], buf["adv"][mb], cfg.clip)
                vl = value_loss(values[:, P - 1:-1], buf["values"][mb], buf["ret"][mb], cfg.value_clip)
                loss = pl + cfg.vf_coef * vl
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
                self.opt.step()
                clip_fracs.append(float(cf))
                vlosses.append(float(vl.detach()))
                plosses.append(float(pl.detach()))
        stats = {
            "score": float(buf["score"].mean()),
            "kl": float(buf["kl"].mean()),
            "clip_fraction": sum(clip_fracs) / len(clip_fracs),
            "value_loss": sum(vlosses) / len(vlosses),
            "policy_loss": sum(plosses) / len(plosses),
            "first_ratio_max_dev": first_ratio_dev or 0.0,
        }
        self.history.append(stats)
        return stats

    def train(self, iterations: int) -> list[dict[str, float]]:
        """Run ``iterations`` PPO steps with a progress bar; returns the history."""
        bar = _progress(range(iterations), "PPO")
        for _ in bar:
            s = self.step()
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(score=f"{s['score']:.2f}", kl=f"{s['kl']:.2f}")
        return self.history


