"""Preference learning for LLMs: reward models, GAE, PPO and DPO (chapters 14 and 15).

The pieces, each a small function that the notebooks build up and the tests check:

    sequence log-prob   log π(y|x) = Σ_t log π(y_t | x, y_<t)              (response tokens only)
    Bradley–Terry       P(y_c ≻ y_r) = σ(r_c − r_r),   L = softplus(−(r_c − r_r))
    GAE                 δ_t = r_t + γ V_{t+1} − V_t,   A_t = δ_t + γλ A_{t+1},   V_T = 0
    PPO clip            L = E[max(−A ρ, −A clip(ρ, 1−ε, 1+ε))],   ρ = exp(log π − log π_old)
    KL estimators       k1 = log π/π_ref,   k3 = π_ref/π − 1 − log(π_ref/π)     (per sampled token)
    DPO                 L = −log σ(β[(log π_c − log π_ref,c) − (log π_r − log π_ref,r)])

Shapes: ``B`` sequences, ``T`` tokens (prompt + response, no padding needed when every prompt and
every response has a fixed length, which is how the chapter's experiment is built), ``V`` vocabulary.
Models only need ``forward(input_ids) -> logits (B, T, V)`` and, for value/reward heads,
``hidden_states(input_ids) -> (B, T, D)``.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from labkit.core.validate import require_positive, require_same_shape, require_tensor
from labkit.model.logprobs import sequence_logprobs, token_logprobs

__all__ = ["bradley_terry_loss", "pairwise_accuracy", "gae", "discounted_returns", "whiten", "masked_mean", "ppo_clip_loss", "value_loss", "kl_k1", "kl_k2", "kl_k3", "exact_kl", "dpo_loss", "ValueHead", "RewardModel", "PolicyWithValue", "frozen_copy", "logits_and_hidden", "sample_responses", "response_stats", "train_reward_model", "PPOConfig", "PPOTrainer", "DPOConfig", "DPOTrainer"]


# ----------------------------------------------------------------------------------------------
# checks
# ----------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------
# log-probabilities of given tokens
# ----------------------------------------------------------------------------------------------


# ----------------------------------------------------------------------------------------------
# reward model loss
# ----------------------------------------------------------------------------------------------
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
    """Fraction of pairs ranked correctly (r_c > r_r); ties count as wrong."""
    require_same_shape(r_chosen, r_rejected, "r_chosen", "r_rejected")
    return float((r_chosen > r_rejected).float().mean())


# ----------------------------------------------------------------------------------------------
# advantages
# ----------------------------------------------------------------------------------------------
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
        c = require_positive(clip, "clip", "use None to turn value clipping off")
        v_clip = old_values.detach() + torch.clamp(values - old_values.detach(), -c, c)
        err = torch.maximum(err, (v_clip - returns.detach()) ** 2)
    return 0.5 * masked_mean(err, mask)


# ----------------------------------------------------------------------------------------------
# KL to the reference
# ----------------------------------------------------------------------------------------------
def kl_k1(logp: torch.Tensor, logp_ref: torch.Tensor) -> torch.Tensor:
    """k1 = log π(a) − log π_ref(a) for a sampled token a ~ π: unbiased for KL(π‖π_ref), can be < 0."""
    require_same_shape(logp, logp_ref, "logp", "logp_ref")
    return logp - logp_ref


def kl_k2(logp: torch.Tensor, logp_ref: torch.Tensor) -> torch.Tensor:
    """k2 = ½ (log π − log π_ref)²: ≥ 0, biased, low variance."""
    require_same_shape(logp, logp_ref, "logp", "logp_ref")
    return 0.5 * (logp - logp_ref) ** 2


def kl_k3(logp: torch.Tensor, logp_ref: torch.Tensor) -> torch.Tensor:
    """k3 = (π_ref/π − 1) − log(π_ref/π) for a ~ π: unbiased and always ≥ 0 (Schulman's estimator)."""
    require_same_shape(logp, logp_ref, "logp", "logp_ref")
    log_r = logp_ref - logp
    return torch.expm1(log_r) - log_r


def exact_kl(logits: torch.Tensor, ref_logits: torch.Tensor) -> torch.Tensor:
    """KL(π‖π_ref) = Σ_v π(v) (log π(v) − log π_ref(v)) at every position, from full distributions.

    (..., V), (..., V) → (...).
    """
    require_same_shape(logits, ref_logits, "logits", "ref_logits")
    logp = torch.log_softmax(logits.float(), -1)
    logq = torch.log_softmax(ref_logits.float(), -1)
    return (logp.exp() * (logp - logq)).sum(-1)


# ----------------------------------------------------------------------------------------------
# DPO
# ----------------------------------------------------------------------------------------------
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
        require_tensor(x, n)
        require_same_shape(x, policy_chosen_logps, n, "policy_chosen_logps")
    b = require_positive(beta, "beta", "β → 0 removes the preference signal; try 0.1 (0.1–0.5 is common)")
    chosen = b * (policy_chosen_logps - ref_chosen_logps.detach())
    rejected = b * (policy_rejected_logps - ref_rejected_logps.detach())
    loss = -F.logsigmoid(chosen - rejected).mean()
    return loss, chosen.detach(), rejected.detach()


# ----------------------------------------------------------------------------------------------
# models: heads on a transformer backbone
# ----------------------------------------------------------------------------------------------
def _hidden_dim(backbone: nn.Module) -> int:
    if not hasattr(backbone, "hidden_states"):
        raise TypeError(
            f"{type(backbone).__name__} has no `hidden_states(input_ids)` method; a value or reward head "
            "needs the final hidden states (B, T, D) of the transformer"
        )
    p = next(backbone.parameters())
    with torch.no_grad():
        h = backbone.hidden_states(torch.zeros(1, 1, dtype=torch.long, device=p.device))
    return int(h.shape[-1])


def _output_head(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The model's hidden → logits projection, if it has one that reproduces ``model(ids)`` exactly."""
    p = next(model.parameters())
    ids = torch.arange(5, device=p.device).unsqueeze(0) % 3
    with torch.no_grad():
        ref = _logits(model, ids)
        h = model.hidden_states(ids)
        for name in ("logits_from_hidden", "lm_head", "output"):
            head = getattr(model, name, None)
            if callable(head):
                try:
                    out = head(h)
                except Exception:  # not a hidden → logits map
                    continue
                if isinstance(out, torch.Tensor) and out.shape == ref.shape and torch.allclose(out, ref, atol=1e-5):
                    return head
    return None


def logits_and_hidden(model: nn.Module, input_ids: torch.Tensor,
                      head: Callable[[torch.Tensor], torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (B, T, V) and final hidden states (B, T, D).

    One pass (``hidden_states`` then ``head``) when the output projection ``head`` is given,
    otherwise two passes (``model(ids)`` and ``model.hidden_states(ids)``).
    """
    h = model.hidden_states(input_ids)
    if head is not None:
        return head(h), h
    return _logits(model, input_ids), h


class ValueHead(nn.Module):
    """A scalar per position: Linear(D, 1) on the final hidden states, (B, T, D) → (B, T)."""

    def __init__(self, dim: int, init_std: float = 0.0):
        super().__init__()
        self.proj = nn.Linear(dim, 1)
        nn.init.normal_(self.proj.weight, std=init_std) if init_std > 0 else nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.proj(hidden).squeeze(-1)


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


class PolicyWithValue(nn.Module):
    """The PPO actor–critic: the policy LM and a value head on its hidden states (shared backbone).

    ``forward(input_ids) -> (logits (B, T, V), values (B, T))``. ``values[:, t]`` estimates the
    return from the state "prefix up to and including token t".
    """

    def __init__(self, policy: nn.Module):
        super().__init__()
        self.policy = policy
        self.value_head = ValueHead(_hidden_dim(policy))
        self._head = _output_head(policy)   # one forward pass instead of two when possible

    def forward(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, h = logits_and_hidden(self.policy, input_ids, self._head)
        return logits, self.value_head(h)


def frozen_copy(model: nn.Module, trainable: bool = False) -> nn.Module:
    """A deep copy in eval mode; with ``trainable=False`` every parameter has requires_grad=False."""
    m = copy.deepcopy(model)
    m.eval()
    for p in m.parameters():
        p.requires_grad_(trainable)
    return m


# ----------------------------------------------------------------------------------------------
# sampling
# ----------------------------------------------------------------------------------------------
@torch.no_grad()
def sample_responses(
    model: nn.Module, prompt_ids: torch.Tensor, n_new: int, generator: torch.Generator | None = None,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Sample ``n_new`` tokens after each prompt from π (pure sampling: no top-k/top-p, so the
    sampled tokens' log-probs are the policy's own). (B, P) → (B, P + n_new).

    Uses ``labkit.model.generate`` (with the KV cache) when available, else a plain loop.
    """
    if n_new < 1:
        raise ValueError(f"`n_new` must be >= 1, got {n_new}")
    was_training = model.training
    model.eval()
    try:
        try:
            from labkit.model.decoding import generate
        except ImportError:
            generate = None
        if generate is not None and hasattr(model, "new_cache"):   # the course Llama: KV-cached sampling
            return generate(model, prompt_ids, n_new, temperature=temperature, do_sample=True,
                            generator=generator)
        ids = prompt_ids
        for _ in range(n_new):
            logits = model(ids)
            logits = logits[0] if isinstance(logits, tuple) else logits
            probs = torch.softmax(logits[:, -1].float() / temperature, -1)
            nxt = torch.multinomial(probs, 1, generator=generator)
            ids = torch.cat([ids, nxt], 1)
        return ids
    finally:
        model.train(was_training)


def _logits(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    out = model(ids)
    return out[0] if isinstance(out, tuple) else out


@torch.no_grad()
def response_stats(
    policy: nn.Module, ref: nn.Module, seqs: torch.Tensor, prompt_len: int, batch_size: int = 64
) -> dict[str, torch.Tensor]:
    """Per-sequence KL(π‖π_ref) measures on sampled sequences (B, P+R).

    Returns ``kl_exact``: Σ_t KL(π(·|s_t)‖π_ref(·|s_t)) over response positions (full distributions;
    an unbiased, low-variance estimate of the sequence KL), ``kl_k1``: Σ_t log π/π_ref of the sampled
    tokens, and ``logp``: log π(y|x); each (B,).
    """
    out: dict[str, list[torch.Tensor]] = {"kl_exact": [], "kl_k1": [], "logp": []}
    was = policy.training
    policy.eval()
    for i in range(0, len(seqs), batch_size):
        s = seqs[i:i + batch_size]
        lg, lr = _logits(policy, s), _logits(ref, s)
        lp_t, lr_t = token_logprobs(lg, s)[:, prompt_len - 1:], token_logprobs(lr, s)[:, prompt_len - 1:]
        kl_t = exact_kl(lg[:, prompt_len - 1:-1], lr[:, prompt_len - 1:-1])
        out["kl_exact"].append(kl_t.sum(-1))
        out["kl_k1"].append((lp_t - lr_t).sum(-1))
        out["logp"].append(lp_t.sum(-1))
    policy.train(was)
    return {k: torch.cat(v) for k, v in out.items()}


# ----------------------------------------------------------------------------------------------
# trainers
# ----------------------------------------------------------------------------------------------
def _progress(iterable, desc: str, total: int | None = None):
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, leave=False)


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
        require_positive(self.clip, "clip", "typical values are 0.1–0.3")
        if self.kl_coef < 0:
            raise ValueError(f"`kl_coef` must be >= 0, got {self.kl_coef}")
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
        if prompts.dim() != 2:
            raise ValueError(f"`prompts` must be (N, P) token ids of equal length, got {tuple(prompts.shape)}")
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
        score = self.reward_fn(seqs).float()
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


class DPOTrainer:
    """DPO on pairs of (N, T) token ids that share a prompt of length ``prompt_len``.

    The reference log-probs are computed once, under no_grad, before training (the reference model
    is never called again, and its weights never change). Only the policy gets gradients.
    """

    def __init__(self, policy: nn.Module, ref: nn.Module, chosen: torch.Tensor, rejected: torch.Tensor,
                 prompt_len: int, config: DPOConfig | None = None):
        require_same_shape(chosen, rejected, "chosen", "rejected")
        if not 1 <= prompt_len < chosen.shape[1]:
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
