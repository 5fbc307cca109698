"""LLM-as-judge and its biases: a pairwise judge that reads both answers in one context, position bias,
length (verbosity) bias, and the swap-and-average fix.

The judge here is a language model's own likelihood: it reads ``prompt + first + sep + prompt + second``
and scores each answer by its mean token log-prob in its slot,

    d(first, second) = mean log p(first | prompt) − mean log p(second | prompt, first, sep, prompt)

and prefers ``first`` when d > 0. The second answer is read with the first in context, so the order matters
(a position bias from the mechanism, as in a real LLM judge). Swapping and averaging,

    d_sym(A, B) = ½ [d(A, B) − d(B, A)],

is antisymmetric by construction: d_sym(B, A) = −d_sym(A, B), so the verdict no longer depends on the order.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

__all__ = ["pairwise_logprob_margin", "swap_average", "position_consistency", "first_slot_win_rate"]


@torch.no_grad()
def pairwise_logprob_margin(model: Callable[[torch.Tensor], torch.Tensor], prompts: torch.Tensor,
                            first: torch.Tensor, second: torch.Tensor, sep: Sequence[int]) -> torch.Tensor:
    """d(first, second) for a batch: prompts (B, P), first (B, R1), second (B, R2) token ids → (B,) float64.

    The model reads [prompt, first, sep, prompt, second] (one row per pair, length 2P + R1 + |sep| + R2)."""
    for name, t in (("prompts", prompts), ("first", first), ("second", second)):
        if not isinstance(t, torch.Tensor) or t.dim() != 2 or t.dtype != torch.long:
            raise TypeError(f"{name} must be a (B, T) long tensor of token ids")
    if not prompts.shape[0] == first.shape[0] == second.shape[0]:
        raise ValueError(f"prompts, first and second must have the same batch size, got {prompts.shape[0]}, "
                         f"{first.shape[0]}, {second.shape[0]}")
    B, P = prompts.shape
    sep_t = torch.as_tensor(list(sep), dtype=torch.long).expand(B, -1)
    x = torch.cat([prompts, first, sep_t, prompts, second], dim=1)
    logp = torch.log_softmax(model(x[:, :-1]).double(), dim=-1).gather(-1, x[:, 1:, None])[..., 0]
    r1, r2 = first.shape[1], second.shape[1]
    lp_first = logp[:, P - 1:P - 1 + r1].mean(1)                 # position t − 1 predicts token t
    lp_second = logp[:, x.shape[1] - 1 - r2:].mean(1)
    return lp_first - lp_second


def swap_average(d_ab: np.ndarray | torch.Tensor, d_ba: np.ndarray | torch.Tensor) -> np.ndarray:
    """½ (d(A, B) − d(B, A)): the judge's margin for A, symmetrised over the two orders."""
    d_ab, d_ba = np.asarray(d_ab, dtype=np.float64), np.asarray(d_ba, dtype=np.float64)
    if d_ab.shape != d_ba.shape:
        raise ValueError(f"d_ab {d_ab.shape} and d_ba {d_ba.shape} must have the same shape (one per pair)")
    return 0.5 * (d_ab - d_ba)


def position_consistency(d_ab: np.ndarray | torch.Tensor, d_ba: np.ndarray | torch.Tensor) -> float:
    """Share of pairs with the same winner in both orders: A wins as first (d_ab > 0) iff it wins as second
    (d_ba < 0). A symmetric judge scores 1.0."""
    d_ab, d_ba = np.asarray(d_ab, dtype=np.float64), np.asarray(d_ba, dtype=np.float64)
    if d_ab.shape != d_ba.shape or d_ab.size == 0:
        raise ValueError(f"d_ab {d_ab.shape} and d_ba {d_ba.shape} must be non-empty and of the same shape")
    return float(np.mean((d_ab > 0) == (d_ba < 0)))


def first_slot_win_rate(d_ab: np.ndarray | torch.Tensor, d_ba: np.ndarray | torch.Tensor) -> float:
    """How often the answer in the *first* slot wins, over both orders (0.5 for a judge without position bias)."""
    d_ab, d_ba = np.asarray(d_ab, dtype=np.float64), np.asarray(d_ba, dtype=np.float64)
    if d_ab.shape != d_ba.shape or d_ab.size == 0:
        raise ValueError(f"d_ab {d_ab.shape} and d_ba {d_ba.shape} must be non-empty and of the same shape")
    return float(np.mean(np.concatenate([d_ab > 0, d_ba > 0])))
