"""Logits processors (chapter 08): temperature, top-k, top-p, repetition penalty, no-repeat-n-gram.

Every processor takes logits of shape (B, V) and returns a new (B, V) tensor (inputs are not modified),
and equals the matching ``transformers`` logits processor on the same logits (ties included):

==============================  =========================================
labkit                          transformers
==============================  =========================================
``apply_temperature``           ``TemperatureLogitsWarper``
``top_k_filter``                ``TopKLogitsWarper``
``top_p_filter``                ``TopPLogitsWarper``
``apply_repetition_penalty``    ``RepetitionPenaltyLogitsProcessor``
``ban_repeated_ngrams``         ``NoRepeatNGramLogitsProcessor``
==============================  =========================================

:func:`process_logits` chains them in transformers' order; :mod:`labkit.model.decoding` decodes with it.
"""
from __future__ import annotations

import math

import torch

from labkit.core.validate import require_ids_in_vocab, require_int, require_token_ids

__all__ = ["apply_temperature", "top_k_filter", "top_p_filter", "apply_repetition_penalty", "no_repeat_ngram_mask",
           "ban_repeated_ngrams", "process_logits"]


# ----------------------------------------------------------------------------------------------- checks
def _check_logits(logits: torch.Tensor) -> None:
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"logits must be a torch.Tensor of shape (B, V), got {type(logits).__name__}")
    if logits.dim() != 2:
        raise ValueError(f"logits must have shape (B, V), got {tuple(logits.shape)}; "
                         "for model output (B, T, V) pass logits[:, -1, :]")
    if not logits.is_floating_point():
        raise TypeError(f"logits must be a floating-point tensor, got dtype {logits.dtype}; -inf (a removed "
                        "token) needs a float dtype: pass logits.float()")


def _check_temperature(temperature: float) -> None:
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or math.isnan(temperature):
        raise TypeError(f"temperature must be a float, got {temperature!r}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}; for deterministic argmax decoding use "
                         "greedy instead (leave temperature=1.0 and top_k/top_p unset)")
    if math.isinf(temperature):
        raise ValueError("temperature must be finite (inf turns every logit into 0: uniform sampling); "
                         "for uniform sampling pass zeros as logits")


def _check_top_k(k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int):
        raise TypeError(f"top_k must be an int, got {k!r}")
    if k < 1:
        raise ValueError(f"top_k must be >= 1, got {k}; use top_k=None to disable top-k filtering")


def _check_top_p(p: float) -> None:
    if isinstance(p, bool) or not isinstance(p, (int, float)):
        raise TypeError(f"top_p must be a float in (0, 1], got {p!r}")
    if not (0 < p <= 1):
        raise ValueError(f"top_p must be in (0, 1], got {p}; use top_p=None (or 1.0) to disable nucleus filtering")


def _check_penalty(penalty: float) -> None:
    if isinstance(penalty, bool) or not isinstance(penalty, (int, float)) or not 0 < penalty < math.inf:
        raise ValueError(f"repetition_penalty must be a finite float > 0 (1.0 = off, >1 discourages repeats), "
                         f"got {penalty!r}")


# ------------------------------------------------------------------------------------------- processors
def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    r"""Temperature scaling :math:`z_i / T`, so :math:`p_i = e^{z_i/T} / \sum_j e^{z_j/T}`.

    T < 1 sharpens, T > 1 flattens, T → 0 tends to the argmax one-hot, T → ∞ to uniform.
    Shapes: (B, V) → (B, V).
    """
    _check_logits(logits)
    _check_temperature(temperature)
    return logits / temperature


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest logits per row, set the rest to -inf. Shapes: (B, V) → (B, V).

    Ties with the k-th largest value are all kept (same as ``TopKLogitsWarper``). k ≥ V keeps everything.
    """
    _check_logits(logits)
    _check_top_k(k)
    k = min(k, logits.shape[-1])
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]          # (B, 1) the k-th largest
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    r"""Nucleus filter: keep the smallest set of most-probable tokens whose total probability is ≥ p.

    Sort the probabilities in descending order :math:`p_{(1)} \ge p_{(2)} \ge \dots`; token (i) is kept when the mass
    *before* it, :math:`\sum_{j<i} p_{(j)}`, is still < p. The top token is always kept. This is computed as in
    ``TopPLogitsWarper``: sort ascending and drop tokens whose cumulative mass is ≤ 1 − p (the same set, and
    bit-for-bit the same floating-point decisions as transformers). Shapes: (B, V) → (B, V).
    """
    _check_logits(logits)
    _check_top_p(p)
    sorted_logits, sorted_idx = torch.sort(logits, descending=False)
    cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)          # ascending cumulative mass
    remove_sorted = cum <= (1 - p)
    remove_sorted[..., -1:] = False                             # always keep the most probable token
    remove = remove_sorted.scatter(1, sorted_idx, remove_sorted)
    return logits.masked_fill(remove, float("-inf"))


def apply_repetition_penalty(logits: torch.Tensor, input_ids: torch.Tensor, penalty: float) -> torch.Tensor:
    r"""Sign-aware repetition penalty (CTRL as implemented by transformers) on tokens already in ``input_ids``.

    For every token id c seen in the row: :math:`z_c \leftarrow z_c/\theta` if :math:`z_c > 0`, else
    :math:`z_c \cdot \theta`. With θ > 1 a seen token's logit always goes *down*. (Dividing a negative logit
    by θ, the literal formula, would raise it.) Shapes: logits (B, V), input_ids (B, T) → (B, V).
    Every id must lie in ``[0, V)`` (remove padding such as -100 first), else ValueError.
    """
    _check_logits(logits)
    require_token_ids(input_ids, logits.shape[0])
    require_ids_in_vocab(input_ids, "input_ids", logits.shape[-1])
    _check_penalty(penalty)
    seen = torch.gather(logits, 1, input_ids)                   # (B, T) logits of the seen tokens
    seen = torch.where(seen < 0, seen * penalty, seen / penalty)
    return logits.scatter(1, input_ids, seen)


def no_repeat_ngram_mask(input_ids: torch.Tensor, n: int, vocab_size: int) -> torch.Tensor:
    """Bool mask (B, V): True where the next token would complete an n-gram that already occurs in the row.

    The last n−1 tokens form the current prefix; every earlier position where the same n−1 tokens occur bans
    the token that followed them there. The prompt counts too (as in transformers for decoder-only models).
    Every id must lie in ``[0, vocab_size)``, else ValueError.
    """
    require_token_ids(input_ids)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"no_repeat_ngram_size must be an int >= 1 (0 disables it in generate), got {n!r}")
    require_int(vocab_size, "vocab_size", 1, "pass the number of logits per row, logits.shape[-1]")
    require_ids_in_vocab(input_ids, "input_ids", vocab_size)
    B, T = input_ids.shape
    mask = torch.zeros(B, vocab_size, dtype=torch.bool, device=input_ids.device)
    if T < n:
        return mask
    for b, row in enumerate(input_ids.tolist()):
        prefix = tuple(row[T - n + 1:]) if n > 1 else ()
        for start in range(T - n + 1):                          # every complete n-gram in the row
            if tuple(row[start:start + n - 1]) == prefix:
                mask[b, row[start + n - 1]] = True
    return mask


def ban_repeated_ngrams(logits: torch.Tensor, input_ids: torch.Tensor, n: int) -> torch.Tensor:
    """Set to -inf every token that would repeat an n-gram (see :func:`no_repeat_ngram_mask`). (B, V) → (B, V)."""
    _check_logits(logits)
    require_token_ids(input_ids, logits.shape[0])
    return logits.masked_fill(no_repeat_ngram_mask(input_ids, n, logits.shape[-1]), float("-inf"))


def process_logits(logits: torch.Tensor, input_ids: torch.Tensor, *, temperature: float = 1.0,
                   top_k: int | None = None, top_p: float | None = None, repetition_penalty: float = 1.0,
                   no_repeat_ngram_size: int = 0, sampling: bool = True) -> torch.Tensor:
    """Apply the processors in transformers' order: repetition penalty, no-repeat-n-gram, then (only when
    sampling) temperature, top-k, top-p. Shapes: logits (B, V), input_ids (B, T) → (B, V)."""
    if repetition_penalty != 1.0:
        logits = apply_repetition_penalty(logits, input_ids, repetition_penalty)
    if no_repeat_ngram_size:
        logits = ban_repeated_ngrams(logits, input_ids, no_repeat_ngram_size)
    if sampling:
        if temperature != 1.0:
            logits = apply_temperature(logits, temperature)
        if top_k is not None:
            logits = top_k_filter(logits, top_k)
        if top_p is not None and top_p < 1.0:
            logits = top_p_filter(logits, top_p)
    return logits
