"""Log-probabilities of given tokens (chapters 08, 15, 16): per token, per sequence, for a model.

The causal shift lives here and only here: ``logits[:, t]`` predicts ``ids[:, t + 1]``.
"""
from __future__ import annotations

from typing import Callable

import torch

from labkit.core.validate import (
    require_float_tensor,
    require_ids_in_vocab,
    require_same_shape,
    require_tensor,
    require_token_ids,
    working_dtype,
)

__all__ = ["token_logprobs", "sequence_logprobs", "sequence_logprob"]


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Log-prob of each next token: ``out[b, t] = log softmax(logits[b, t])[labels[b, t+1]]``.

    Args:
        logits: (B, T, V), position t predicts token t+1.
        labels: (B, T) token ids in ``[0, V)``; -100 (ignored positions) is allowed and gives an arbitrary
            value there, which callers mask out. Any other id outside the vocabulary is a ValueError.

    Returns:
        (B, T-1) log-probs, aligned with ``labels[:, 1:]``, in at least float32 (fp16/bf16 logits are
        upcast; float64 logits stay float64).
    """
    require_float_tensor(logits, "logits")
    require_tensor(labels, "labels")
    if logits.dim() != 3 or labels.dim() != 2 or logits.shape[:2] != labels.shape:
        raise ValueError(
            f"`logits` must be (B, T, V) and `labels` (B, T) with the same B, T; got "
            f"{tuple(logits.shape)} and {tuple(labels.shape)}"
        )
    if logits.shape[1] < 2:
        raise ValueError("need T >= 2: the first token has no prediction, so T=1 leaves nothing to score")
    require_ids_in_vocab(labels, "labels", logits.shape[-1], ignore_index=-100)
    logp = torch.log_softmax(logits[:, :-1].to(working_dtype(logits.dtype)), dim=-1)
    target = labels[:, 1:].clamp_min(0)  # -100 -> 0 only to keep gather in range; masked by the caller
    return logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)


def sequence_logprobs(
    logits: torch.Tensor,
    labels: torch.Tensor,
    mask: torch.Tensor | None = None,
    average: bool = False,
) -> torch.Tensor:
    """log π(y|x) = Σ_{t ∈ response} log π(y_t | y_<t): one number per sequence.

    The causal shift is handled here: ``logits[:, :-1]`` predict ``labels[:, 1:]``. A token counts
    when ``mask`` is True at its position (the mask is aligned with ``labels``, i.e. it marks the
    response tokens themselves) and its label is not -100.

    Args:
        logits: (B, T, V).
        labels: (B, T) token ids, -100 = ignore.
        mask: (B, T) bool/0-1 marking response tokens, or None for "every label that is not -100".
        average: False → the sum (the DPO paper, TRL, eric-mitchell ``_get_batch_logps``);
            True → the mean over response tokens (length-normalised).

    Returns:
        (B,) in at least float32 (float64 logits give float64).

    Raises:
        ValueError: a sequence with no response token (empty mask) or mismatched shapes.
    """
    lp = token_logprobs(logits, labels)
    keep = labels[:, 1:] != -100
    if mask is not None:
        require_same_shape(mask, labels, "mask", "labels")
        if mask.dtype != torch.bool and not bool(((mask == 0) | (mask == 1)).all()):
            raise ValueError("`mask` must be bool or hold only 0 and 1 (1 = response token); got other values")
        keep = keep & mask[:, 1:].bool()
    n = keep.sum(-1)
    if bool((n == 0).any()):
        rows = torch.nonzero(n == 0).flatten().tolist()
        raise ValueError(
            f"`mask` marks no response token in sequence(s) {rows[:5]} (after the shift, position 0 "
            "can never count); mark at least one token after the first, or drop those rows"
        )
    total = (lp * keep).sum(-1)
    return total / n if average else total


@torch.no_grad()
def sequence_logprob(model: Callable[..., torch.Tensor], ids: torch.Tensor, prompt_len: int) -> torch.Tensor:
    r"""Total log-probability of the continuation: :math:`\sum_{t \ge \text{prompt\_len}} \log p(x_t \mid x_{<t})`.

    Args: ids (B, T) prompt + continuation; prompt_len ≥ 1 tokens are conditioned on, not scored. Returns (B,).
    """
    require_token_ids(ids)
    if isinstance(prompt_len, bool) or not isinstance(prompt_len, int) or not 1 <= prompt_len <= ids.shape[1]:
        raise ValueError(f"prompt_len must be an int in [1, {ids.shape[1]}] (T), got {prompt_len!r}")
    tok_logp = token_logprobs(model(ids), ids)                  # (B, T-1): log p(ids[t+1] | ids[..t])
    return tok_logp[:, prompt_len - 1:].sum(dim=-1)
