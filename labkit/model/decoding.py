"""Decoding (chapter 08): greedy / sampling / beam search, with or without a KV cache, and seq-rep-n.

The logits processors (temperature, top-k, top-p, repetition penalty, no-repeat-n-gram) are in
:mod:`labkit.model.processors`; :func:`generate` applies them through :func:`process_logits` each step.

A model here is anything callable as ``model(input_ids, kv_cache=None) -> logits (B, T, V)`` that has a
``new_cache()`` method when ``use_cache=True`` (``labkit.model.Llama``).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from labkit.core.validate import require_token_ids
from labkit.model.processors import _check_penalty, _check_temperature, _check_top_k, _check_top_p, process_logits

__all__ = ["is_sampling", "generate", "beam_search", "seq_rep_n"]


def is_sampling(temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                do_sample: bool | None = None) -> bool:
    """The decoding rule of :func:`generate`: sample when ``do_sample`` says so, else when any of
    temperature ≠ 1, top_k or top_p is set; otherwise greedy (argmax)."""
    if do_sample is not None:
        return bool(do_sample)
    return temperature != 1.0 or top_k is not None or top_p is not None


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


def _route_candidates(b: int, top_scores: torch.Tensor, beam_src: torch.Tensor, tok: torch.Tensor,
                      ids: torch.Tensor, T: int, K: int, eos_token_id: int | None, length_penalty: float,
                      finished: list[list[tuple[float, list[int]]]], done: list[bool], next_beams: torch.Tensor,
                      next_tok: torch.Tensor, next_scores: torch.Tensor) -> None:
    """Row ``b`` of one beam step: walk its 2K best candidates in score order; an EOS candidate goes to the
    finished pool (scored logp / len^α), the others fill the K next beams (written into ``next_*`` in place)."""
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


def _select_beams(top_scores: torch.Tensor, top_idx: torch.Tensor, V: int, ids: torch.Tensor, T: int, K: int,
                  step: int, eos_token_id: int | None, length_penalty: float,
                  finished: list[list[tuple[float, list[int]]]],
                  done: list[bool]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The K surviving beams of every row after one step: ``(next_beams, next_tok, next_scores)``, each (B, K).

    Updates ``finished`` and ``done`` in place: a row is done once it has K finished sequences and the best
    of them beats the best alive beam's length-normalised score."""
    B = top_scores.shape[0]
    beam_src, tok = top_idx // V, top_idx % V
    next_beams = torch.empty(B, K, dtype=torch.long)
    next_tok = torch.empty(B, K, dtype=torch.long)
    next_scores = torch.full((B, K), float("-inf"))
    for b in range(B):
        _route_candidates(b, top_scores, beam_src, tok, ids, T, K, eos_token_id, length_penalty, finished, done,
                          next_beams, next_tok, next_scores)
        if eos_token_id is not None and len(finished[b]) >= K and not done[b]:
            best_alive = next_scores[b, 0].item() / ((step + 1) ** length_penalty)
            done[b] = max(f[0] for f in finished[b]) >= best_alive
    return next_beams, next_tok, next_scores


def _best_sequences(input_ids: torch.Tensor, ids: torch.Tensor, scores: torch.Tensor, K: int,
                    finished: list[list[tuple[float, list[int]]]], done: list[bool], eos_token_id: int | None,
                    length_penalty: float) -> torch.Tensor:
    """Per row, the best of the finished pool and (if the row is not done) the alive beams; prompt + best,
    padded with EOS (or 0) to a common width: (B, T + n_new)."""
    B, T = input_ids.shape
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
        next_beams, next_tok, next_scores = _select_beams(top_scores, top_idx, V, ids, T, K, step, eos_token_id,
                                                          length_penalty, finished, done)
        flat_src = (torch.arange(B)[:, None] * K + next_beams).reshape(-1)  # rows of ids to continue
        ids = torch.cat([ids[flat_src], next_tok.reshape(-1, 1)], dim=1)
        scores = next_scores
        new = next_tok.reshape(-1, 1)
        if cache is not None:
            cache.reorder(flat_src)
        if all(done):
            break
    return _best_sequences(input_ids, ids, scores, K, finished, done, eos_token_id, length_penalty)


def seq_rep_n(tokens: list[int] | torch.Tensor, n: int) -> float:
    """Repetition metric seq-rep-n = 1 − |unique n-grams| / |n-grams| (0 = no repeated n-gram).

    "a b a b a b" with n=2 → 1 − 2/5 = 0.6.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int (the n-gram length, usually 4), got n={n!r}")
    toks = tokens.tolist() if isinstance(tokens, torch.Tensor) else list(tokens)
    grams = [tuple(toks[i:i + n]) for i in range(len(toks) - n + 1)]
    if not grams:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)
