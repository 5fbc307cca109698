"""The policy side of RLHF (chapters 15-16): value heads, the PPO actor-critic, sampling, KL stats.

Models only need ``forward(input_ids) -> logits (B, T, V)`` and, for value/reward heads,
``hidden_states(input_ids) -> (B, T, D)``. ``ValueHead`` maps hidden states (B, T, D) → (B, T);
``PolicyWithValue(ids)`` → (logits (B, T, V), values (B, T)); ``sample_responses`` (B, P) → (B, P + R)
with ``labkit.model.generate``; ``response_stats`` gives per-sequence KL(π‖π_ref) (B,).
"""
from __future__ import annotations

import copy
from typing import Any, Callable, Iterable

import torch
import torch.nn as nn

from labkit.align.kl import exact_kl
from labkit.core.validate import require_int, require_token_ids
from labkit.model import generate
from labkit.model.logprobs import token_logprobs

__all__ = ["logits_and_hidden", "ValueHead", "PolicyWithValue", "frozen_copy", "sample_responses", "response_stats"]


def _logits(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    out = model(ids)
    return out[0] if isinstance(out, tuple) else out


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
        require_int(dim, "dim", 1, "the hidden size D of the backbone")
        if isinstance(init_std, bool) or not isinstance(init_std, (int, float)) or not 0 <= init_std < float("inf"):
            raise ValueError(f"`init_std` must be a finite number >= 0 (0 = zero init), got {init_std!r}")
        self.proj = nn.Linear(dim, 1)
        nn.init.normal_(self.proj.weight, std=init_std) if init_std > 0 else nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.proj(hidden).squeeze(-1)


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
    if not isinstance(model, nn.Module):
        raise TypeError(f"`model` must be an nn.Module, got {type(model).__name__}")
    m = copy.deepcopy(model)
    m.eval()
    for p in m.parameters():
        p.requires_grad_(trainable)
    return m


@torch.no_grad()
def sample_responses(
    model: nn.Module, prompt_ids: torch.Tensor, n_new: int, generator: torch.Generator | None = None,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Sample ``n_new`` tokens after each prompt from π (pure sampling: no top-k/top-p, so the
    sampled tokens' log-probs are the policy's own). (B, P) → (B, P + n_new).

    Uses ``labkit.model.generate``: KV-cached for models with ``new_cache()`` (the course Llama),
    re-running the whole prefix each step for models that only have ``forward(ids) -> logits``.
    """
    require_int(n_new, "n_new", 1, "the number of tokens to sample after each prompt")
    was_training = model.training
    model.eval()
    try:
        return generate(model, prompt_ids, n_new, temperature=temperature, do_sample=True,
                        generator=generator, use_cache=hasattr(model, "new_cache"))
    finally:
        model.train(was_training)


@torch.no_grad()
def response_stats(
    policy: nn.Module, ref: nn.Module, seqs: torch.Tensor, prompt_len: int, batch_size: int = 64
) -> dict[str, torch.Tensor]:
    """Per-sequence KL(π‖π_ref) measures on sampled sequences (B, P+R).

    Returns ``kl_exact``: Σ_t KL(π(·|s_t)‖π_ref(·|s_t)) over response positions (full distributions;
    an unbiased, low-variance estimate of the sequence KL), ``kl_k1``: Σ_t log π/π_ref of the sampled
    tokens, and ``logp``: log π(y|x); each (B,).
    """
    require_token_ids(seqs)
    if isinstance(prompt_len, bool) or not isinstance(prompt_len, int) or not 1 <= prompt_len < seqs.shape[1]:
        raise ValueError(f"`prompt_len` must be an int in [1, T) = [1, {seqs.shape[1]}): the response starts "
                         f"there and must not be empty; got {prompt_len!r}")
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


def _progress(iterable: Iterable[Any], desc: str, total: int | None = None) -> Any:
    """A tqdm progress bar that disappears when done (tqdm is imported only when a trainer runs)."""
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, leave=False)
