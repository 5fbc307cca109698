r"""Speculative decoding (chapter 09): a small draft proposes k tokens, the target checks them in one pass.

Draft distributions :math:`q_1 … q_k` and proposals :math:`x_i \sim q_i`; one target pass over the k proposals
gives :math:`p_1 … p_{k+1}`. For i = 1 … k: accept :math:`x_i` with probability :math:`\min(1, p_i(x_i)/q_i(x_i))`;
at the first rejection emit a token from the **residual** (残差分布)

.. math:: r(x) = \frac{\max(0,\ p_i(x) - q_i(x))}{\sum_y \max(0,\ p_i(y) - q_i(y))}

and stop; if all k are accepted emit a bonus token from :math:`p_{k+1}`. Every emitted token is then
distributed exactly as the target's (Leviathan et al. 2023, Chen et al. 2023):
:math:`P(x) = q(x)\min(1, p/q) + (1-\sum_y \min(p, q))\, r(x) = \min(p, q) + \max(0, p - q) = p(x)`.
With one-hot p and q (greedy) the rule is "accept while the draft's argmax equals the target's", so greedy
speculative output equals the target's greedy output. Each round costs k draft passes + 1 target pass and
emits 1 … k + 1 tokens.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from labkit.core.validate import require_int
from labkit.model.llama import ModelCache

__all__ = ["speculative_accept", "crop_cache", "speculative_generate"]


def speculative_accept(p: Tensor, q: Tensor, draft_tokens: Tensor, generator: torch.Generator | None = None
                       ) -> list[int]:
    """The accept/reject step: the tokens emitted this round (1 … k + 1 of them).

    Args:
        p: ``(k + 1, V)`` target probabilities at the k proposal positions and one more.
        q: ``(k, V)`` draft probabilities the proposals were sampled from.
        draft_tokens: ``(k,)`` the proposals ``x_i ~ q_i``.
        generator: for the uniforms ``u_i`` (accept iff ``u_i · q_i(x_i) < p_i(x_i)``) and the residual sample.
    """
    if p.dim() != 2 or q.dim() != 2 or p.shape[0] != q.shape[0] + 1 or p.shape[1] != q.shape[1]:
        raise ValueError(f"p must be (k + 1, V) and q (k, V), got p {tuple(p.shape)}, q {tuple(q.shape)}")
    k = q.shape[0]
    require_int(k, "k (rows of q)", 1, "propose at least one draft token")
    if draft_tokens.shape != (k,):
        raise ValueError(f"draft_tokens must be ({k},), got {tuple(draft_tokens.shape)}")
    out: list[int] = []
    for i in range(k):
        x = int(draft_tokens[i])
        u = float(torch.rand(1, generator=generator))
        if u * float(q[i, x]) < float(p[i, x]):                       # accept with prob min(1, p/q)
            out.append(x)
            continue
        resid = (p[i] - q[i]).clamp_min(0)
        total = float(resid.sum())
        dist = resid / total if total > 0 else p[i]
        out.append(int(torch.multinomial(dist, 1, generator=generator)))
        return out
    out.append(int(torch.multinomial(p[k], 1, generator=generator)))
    return out


def crop_cache(cache: ModelCache, length: int) -> None:
    """Drop cached positions ≥ ``length`` in every layer (rejected proposals leave the cache)."""
    require_int(length, "length", 0, "pass how many positions to keep")
    for c in cache:
        if c.k is not None and c.v is not None and c.k.shape[2] > length:
            c.k, c.v = c.k[:, :, :length], c.v[:, :, :length]


def _dist(logits: Tensor, temperature: float) -> Tensor:
    """Next-token distribution(s): one-hot argmax when ``temperature == 0`` (greedy), else softmax(z/T)."""
    if temperature == 0:
        return torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).to(logits.dtype)
    return (logits.float() / temperature).softmax(-1)


def _feed(model: Any, cache: ModelCache, ids: list[int]) -> Tensor:
    """Feed the tokens of ``ids`` not yet in ``cache``; returns their logits (n, V)."""
    new = ids[cache.length:]
    return model(torch.tensor([new], dtype=torch.long), kv_cache=cache)[0]


@torch.no_grad()
def speculative_generate(target: Any, draft: Any, prompt: list[int], max_new_tokens: int, k: int, *,
                         temperature: float = 0.0, generator: torch.Generator | None = None
                         ) -> tuple[list[int], dict[str, int]]:
    """Generate ``max_new_tokens`` tokens after ``prompt`` with draft length ``k``; returns
    ``(new_tokens, stats)`` with ``target_calls``, ``draft_calls``, ``proposed``, ``accepted``, ``rounds``.

    ``temperature = 0``: greedy (equals the target's greedy decoding); ``> 0``: sampling from softmax(z/T) of
    the target (the output distribution is the target's). Both models keep a contiguous KV cache that
    holds every token but the newest; rejected proposals are cropped out of it.
    """
    require_int(k, "k", 1, "propose at least one draft token per round (k >= 1)")
    require_int(max_new_tokens, "max_new_tokens", 1, "ask for at least one token")
    if not prompt:
        raise ValueError("prompt must hold at least one token")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or temperature < 0:
        raise ValueError(f"temperature must be a number >= 0 (0 = greedy), got {temperature!r}")
    ids = list(prompt)
    tc, dc = target.new_cache(), draft.new_cache()
    stats = dict(target_calls=0, draft_calls=0, proposed=0, accepted=0, rounds=0)
    while len(ids) - len(prompt) < max_new_tokens:
        base = len(ids)
        props, qs = [], []
        for _ in range(k):
            qi = _dist(_feed(draft, dc, ids + props)[-1], temperature)
            x = int(qi.argmax()) if temperature == 0 else int(torch.multinomial(qi, 1, generator=generator))
            props.append(x)
            qs.append(qi)
        p = _dist(_feed(target, tc, ids + props)[-(k + 1):], temperature)
        emitted = speculative_accept(p, torch.stack(qs), torch.tensor(props), generator)
        stats["target_calls"] += 1
        stats["draft_calls"] += k
        stats["proposed"] += k
        stats["accepted"] += len(emitted) - 1 if len(emitted) <= k else k
        stats["rounds"] += 1
        ids += emitted
        keep = base + len(emitted) - 1                              # tokens whose KV is valid in the caches
        crop_cache(tc, keep)
        crop_cache(dc, min(keep, dc.length))
    return ids[len(prompt):len(prompt) + max_new_tokens], stats
