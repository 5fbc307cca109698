"""Decoding (chapter 08): logits processors, greedy / sampling / beam search, with or without a KV cache.

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

A model here is anything callable as ``model(input_ids, kv_cache=None) -> logits (B, T, V)`` that has a
``new_cache()`` method when ``use_cache=True`` (``labkit.model.Llama``).
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from labkit.core.validate import require_token_ids

__all__ = ["apply_temperature", "top_k_filter", "top_p_filter", "apply_repetition_penalty", "no_repeat_ngram_mask", "ban_repeated_ngrams", "process_logits", "is_sampling", "generate", "beam_search", "seq_rep_n"]


# ----------------------------------------------------------------------------------------------- checks
def _check_logits(logits: torch.Tensor) -> None:
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"logits must be a torch.Tensor of shape (B, V), got {type(logits).__name__}")
    if logits.dim() != 2:
        raise ValueError(f"logits must have shape (B, V), got {tuple(logits.shape)}; "
                         "for model output (B, T, V) pass logits[:, -1, :]")


def _check_temperature(temperature: float) -> None:
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or math.isnan(temperature):
        raise TypeError(f"temperature must be a float, got {temperature!r}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}; for deterministic argmax decoding use "
                         "greedy instead (leave temperature=1.0 and top_k/top_p unset)")


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
    if isinstance(penalty, bool) or not isinstance(penalty, (int, float)) or not penalty > 0:
        raise ValueError(f"repetition_penalty must be a float > 0 (1.0 = off, >1 discourages repeats), got {penalty!r}")


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
    """
    _check_logits(logits)
    require_token_ids(input_ids, logits.shape[0])
    _check_penalty(penalty)
    seen = torch.gather(logits, 1, input_ids)                   # (B, T) logits of the seen tokens
    seen = torch.where(seen < 0, seen * penalty, seen / penalty)
    return logits.scatter(1, input_ids, seen)


def no_repeat_ngram_mask(input_ids: torch.Tensor, n: int, vocab_size: int) -> torch.Tensor:
    """Bool mask (B, V): True where the next token would complete an n-gram that already occurs in the row.

    The last n−1 tokens form the current prefix; every earlier position where the same n−1 tokens occur bans
    the token that followed them there. The prompt counts too (as in transformers for decoder-only models).
    """
    require_token_ids(input_ids)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"no_repeat_ngram_size must be an int >= 1 (0 disables it in generate), got {n!r}")
    B, T = input_ids.shape
    mask = torch.zeros(B, vocab_size, dtype=torch.bool, device=input_ids.device)
    if T < n:
        return mask
    for b, row in enumerate(input_ids.tolist()):
        prefix = tuple(row[T - n + 1:]) if n > 1 else ()
        for start in range(T - n + 1):                          # every complete n-gram in the row
            if tuple(row[start:start + n - 1]) == prefix and row[start + n - 1] < vocab_size:
                mask[b, row[start + n - 1]] = True
    return mask


def ban_repeated_ngrams(logits: torch.Tensor, input_ids: torch.Tensor, n: int) -> torch.Tensor:
    """Set to -inf every token that would repeat an n-gram (see :func:`no_repeat_ngram_mask`). (B, V) → (B, V)."""
    _check_logits(logits)
    require_token_ids(input_ids, logits.shape[0])
    return logits.masked_fill(no_repeat_ngram_mask(input_ids, n, logits.shape[-1]), float("-inf"))


def is_sampling(temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                do_sample: bool | None = None) -> bool:
    """The decoding rule of :func:`generate`: sample when ``do_sample`` says so, else when any of
    temperature ≠ 1, top_k or top_p is set; otherwise greedy (argmax)."""
    if do_sample is not None:
        return bool(do_sample)
    return temperature != 1.0 or top_k is not None or top_p is not None


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


# --------------------------------------------------------------------------------------------- decoding
def _model_step(model: Any, ids: torch.Tensor, cache: Any, new_tokens: torch.Tensor | None) -> torch.Tensor:
    """Next-token logits (B, V): with a cache feed only the new tokens, without it the whole sequence."""
    if cache is None:
        return model(ids)[:, -1, :]
    return model(ids if new_tokens is None else new_tokens, kv_cache=cache)[:, -1, :]


def _validate_generate_args(input_ids: torch.Tensor, max_new_tokens: int, temperature: float,
                            top_k: int | None, top_p: float | None, repetition_penalty: float,
                            no_repeat_ngram_size: int, num_beams: int) -> None:
    require_token_ids(input_ids)
    if input_ids.shape[1] < 1:
        raise ValueError("input_ids must hold at least one token per row (a prompt, e.g. a BOS token)")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be an int >= 0, got {max_new_tokens!r}")
    _check_temperature(temperature)
    if top_k is not None:
        _check_top_k(top_k)
    if top_p is not None:
        _check_top_p(top_p)
    _check_penalty(repetition_penalty)
    if isinstance(no_repeat_ngram_size, bool) or not isinstance(no_repeat_ngram_size, int) or no_repeat_ngram_size < 0:
        raise ValueError(f"no_repeat_ngram_size must be an int >= 0 (0 = off), got {no_repeat_ngram_size!r}")
    if isinstance(num_beams, bool) or not isinstance(num_beams, int) or num_beams < 1:
        raise ValueError(f"num_beams must be an int >= 1 (1 = no beam search), got {num_beams!r}")


@torch.no_grad()
def generate(model: Any, input_ids: torch.Tensor, max_new_tokens: int, *, temperature: float = 1.0,
             top_k: int | None = None, top_p: float | None = None, repetition_penalty: float = 1.0,
             no_repeat_ngram_size: int = 0, num_beams: int = 1, use_cache: bool = True,
             eos_token_id: int | None = None, generator: torch.Generator | None = None,
             do_sample: bool | None = None) -> torch.Tensor:
    """Autoregressive decoding. Returns (B, T + n_new) token ids, prompt included.

    Rule: **greedy by default**. Sampling (``torch.multinomial`` with ``generator``) happens when ``do_sample``
    is True, or, when ``do_sample`` is None, when any of temperature ≠ 1, ``top_k`` or ``top_p`` is given.
    ``num_beams > 1`` runs :func:`beam_search` (deterministic; cannot be combined with sampling).
    Processors run in transformers' order (see :func:`process_logits`).
    With ``eos_token_id`` a finished row is padded with EOS and decoding stops when every row is finished,
    so n_new ≤ max_new_tokens. ``use_cache`` feeds one new token per step to a KV cache (same tokens, faster).
    """
    _validate_generate_args(input_ids, max_new_tokens, temperature, top_k, top_p, repetition_penalty,
                            no_repeat_ngram_size, num_beams)
    sampling = is_sampling(temperature, top_k, top_p, do_sample)
    if num_beams > 1:
        if sampling:
            raise ValueError("num_beams > 1 is deterministic beam search; drop temperature/top_k/top_p "
                             "(or set do_sample=False) - beam *sampling* is not implemented")
        return beam_search(model, input_ids, max_new_tokens, num_beams=num_beams, eos_token_id=eos_token_id,
                           repetition_penalty=repetition_penalty, no_repeat_ngram_size=no_repeat_ngram_size,
                           use_cache=use_cache)
    ids = input_ids
    cache = model.new_cache() if use_cache else None
    finished = torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)
    new: torch.Tensor | None = None
    for _ in range(max_new_tokens):
        logits = _model_step(model, ids, cache, new).float()
        logits = process_logits(logits, ids, temperature=temperature, top_k=top_k, top_p=top_p,
                                repetition_penalty=repetition_penalty,
                                no_repeat_ngram_size=no_repeat_ngram_size, sampling=sampling)
        if sampling:
            nxt = torch.multinomial(logits.softmax(dim=-1), 1, generator=generator).squeeze(1)
        else:
            nxt = logits.argmax(dim=-1)
        if eos_token_id is not None:
            nxt = torch.where(finished, torch.full_like(nxt, eos_token_id), nxt)
            finished |= nxt == eos_token_id
        new = nxt[:, None]
        ids = torch.cat([ids, new], dim=1)
        if eos_token_id is not None and bool(finished.all()):
            break
    return ids


@torch.no_grad()
def beam_search(model: Any, input_ids: torch.Tensor, max_new_tokens: int, *, num_beams: int,
                eos_token_id: int | None = None, length_penalty: float = 1.0, repetition_penalty: float = 1.0,
                no_repeat_ngram_size: int = 0, use_cache: bool = True) -> torch.Tensor:
    r"""Beam search: keep the ``num_beams`` partial sequences with the highest total log-probability.

    Each step scores every (beam, token) extension by :math:`\sum_t \log p(x_t \mid x_{<t})`, keeps the best
    ``2·num_beams`` candidates, moves those ending in EOS to the finished pool (scored
    :math:`\text{logp} / \text{len}^{\alpha}` with α = ``length_penalty``, len = generated tokens) and continues
    with the best ``num_beams`` others. Without EOS it runs ``max_new_tokens`` steps and returns the best beam.
    Matches ``transformers``' ``generate(num_beams=..., do_sample=False)`` when no EOS is hit.
    num_beams=1 is greedy decoding. Returns (B, T + n_new), rows padded with EOS after they finish.
    """
    _validate_generate_args(input_ids, max_new_tokens, 1.0, None, None, repetition_penalty,
                            no_repeat_ngram_size, num_beams)
    B, T = input_ids.shape
    K = num_beams
    ids = input_ids.repeat_interleave(K, dim=0)                              # (B·K, T)
    scores = torch.zeros(B, K, device=ids.device)
    scores[:, 1:] = float("-inf")                                            # start from a single live beam
    cache = model.new_cache() if use_cache else None
    new: torch.Tensor | None = None
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(B)]
    done = [False] * B
    for step in range(max_new_tokens):
        logits = _model_step(model, ids, cache, new).float()                 # (B·K, V)
        logits = process_logits(logits, ids, repetition_penalty=repetition_penalty,
                                no_repeat_ngram_size=no_repeat_ngram_size, sampling=False)
        logp = F.log_softmax(logits, dim=-1)
        V = logp.shape[-1]
        cand = (scores.reshape(-1, 1) + logp).reshape(B, K * V)              # total log-prob of each extension
        top_scores, top_idx = torch.topk(cand, 2 * K, dim=-1)               # (B, 2K)
        beam_src, tok = top_idx // V, top_idx % V
        next_beams = torch.empty(B, K, dtype=torch.long)
        next_tok = torch.empty(B, K, dtype=torch.long)
        next_scores = torch.full((B, K), float("-inf"))
        for b in range(B):
            j = 0
            for s, src, t in zip(top_scores[b].tolist(), beam_src[b].tolist(), tok[b].tolist()):
                if j == K:
                    break
                if done[b]:                                                  # keep shapes, content is ignored
                    next_beams[b, j], next_tok[b, j], next_scores[b, j] = src, t, s
                    j += 1
                elif eos_token_id is not None and t == eos_token_id:
                    seq = ids[b * K + src, T:].tolist() + [t]
                    finished[b].append((s / (len(seq) ** length_penalty), seq))
                else:
                    next_beams[b, j], next_tok[b, j], next_scores[b, j] = src, t, s
                    j += 1
            if eos_token_id is not None and len(finished[b]) >= K and not done[b]:
                best_alive = next_scores[b, 0].item() / ((step + 1) ** length_penalty)
                done[b] = max(f[0] for f in finished[b]) >= best_alive
        flat_src = (torch.arange(B)[:, None] * K + next_beams).reshape(-1)  # rows of ids to continue
        ids = torch.cat([ids[flat_src], next_tok.reshape(-1, 1)], dim=1)
        scores = next_scores
        new = next_tok.reshape(-1, 1)
        if cache is not None:
            cache.reorder(flat_src)
        if all(done):
            break
    pad = eos_token_id if eos_token_id is not None else 0
    out = []
    for b in range(B):
        pool = list(finished[b])
        if not done[b]:                                                      # alive beams compete too
            gen_len = ids.shape[1] - T
            for j in range(K):
                if scores[b, j] > float("-inf"):
                    pool.append((scores[b, j].item() / (max(gen_len, 1) ** length_penalty),
                                 ids[b * K + j, T:].tolist()))
        best = max(pool, key=lambda x: x[0])[1] if pool else []
        out.append(input_ids[b].tolist() + best)
    width = max(len(r) for r in out)
    return torch.tensor([r + [pad] * (width - len(r)) for r in out], dtype=torch.long, device=input_ids.device)


def seq_rep_n(tokens: list[int] | torch.Tensor, n: int) -> float:
    """Repetition metric seq-rep-n = 1 − |unique n-grams| / |n-grams| (0 = no repeated n-gram).

    "a b a b a b" with n=2 → 1 − 2/5 = 0.6.
    """
    toks = tokens.tolist() if isinstance(tokens, torch.Tensor) else list(tokens)
    grams = [tuple(toks[i:i + n]) for i in range(len(toks) - n + 1)]
    if not grams:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)
