"""Perplexity and bits per byte: the same text scored by models with different tokenizers.

For a text scored by a model that predicts N units (tokens, bytes, characters) with total negative
log-likelihood NLL = −Σ_i ln p(u_i | u_<i) (nats):

    perplexity = exp(NLL / N)                 (per *unit*: depends on what a unit is)
    bits per byte = NLL / (ln 2 · B)          (B = UTF-8 bytes of the scored text: a tokenizer-free unit)

A model with longer tokens predicts fewer, harder units, so its per-token perplexity is larger even when it
predicts the text better; NLL/B compares them. Conversions: bpb = log2(ppl_token) · N_tokens / B.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["TextScore", "perplexity", "bits_per_byte", "causal_lm_nll", "NGramLM"]


@dataclass(frozen=True)
class TextScore:
    """Total NLL (nats) of a text, the number of units predicted and the UTF-8 bytes they cover."""

    nll: float
    n_units: int
    n_bytes: int

    @property
    def perplexity(self) -> float:
        return perplexity(self.nll, self.n_units)

    @property
    def bits_per_byte(self) -> float:
        return bits_per_byte(self.nll, self.n_bytes)


def perplexity(nll: float, n_units: int) -> float:
    """exp(NLL / N): the per-unit perplexity of a total NLL in nats over ``n_units`` predictions."""
    if n_units <= 0:
        raise ValueError(f"n_units must be > 0 (the number of predicted tokens), got {n_units}")
    return math.exp(nll / n_units)


def bits_per_byte(nll: float, n_bytes: int) -> float:
    """NLL / (ln 2 · B): total NLL in nats over a text of ``n_bytes`` UTF-8 bytes, in bits per byte."""
    if n_bytes <= 0:
        raise ValueError(f"n_bytes must be > 0 (UTF-8 bytes of the scored text), got {n_bytes}")
    return nll / (math.log(2.0) * n_bytes)


def _window_nll(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> float:
    logits = model(x[:, :-1]).float()
    return float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1), reduction="sum"))


@torch.no_grad()
def causal_lm_nll(model: Callable[[torch.Tensor], torch.Tensor], ids: Sequence[int], window: int,
                  batch_size: int = 32) -> tuple[float, int]:
    """Total NLL (nats) of ids[1:] under a causal LM, in non-overlapping windows of ``window`` predictions.

    Chunk i feeds ids[iW : iW + W] and predicts ids[iW + 1 : iW + W + 1], so every token after the first is
    predicted exactly once, with at most W − 1 tokens of context. Returns (NLL, number predicted = len − 1)."""
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"window must be a positive int (at most the model's max_seq_len), got {window!r}")
    ids_t = torch.as_tensor(list(ids), dtype=torch.long)
    if ids_t.numel() < 2:
        raise ValueError("ids must hold at least 2 tokens (the first one is never predicted)")
    n_pred = ids_t.numel() - 1
    n_full = n_pred // window
    windows = [ids_t[i * window:(i + 1) * window + 1] for i in range(n_full)]
    total = 0.0
    for b in range(0, n_full, batch_size):
        total += _window_nll(model, torch.stack(windows[b:b + batch_size]))
    if n_pred % window:                                          # the last, shorter window
        total += _window_nll(model, ids_t[n_full * window:][None])
    return total, ids_t.numel() - 1


class NGramLM:
    """An n-gram model over integer symbols (bytes, characters or token ids) with add-k smoothing:

        p(x | c) = (count(c, x) + k) / (count(c) + k·V),     c = the previous n − 1 symbols

    The first n − 1 positions see a context padded with a start symbol V. Fitted by counting (numpy)."""

    def __init__(self, n: int, vocab_size: int, k: float = 1.0):
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive int (1 = unigram), got {n!r}")
        if not k > 0:
            raise ValueError(f"k (add-k smoothing) must be > 0, got {k}; a zero count would give p = 0")
        if (vocab_size + 1) ** n >= 2 ** 62:
            raise ValueError(f"(vocab_size + 1)^n = {vocab_size + 1}^{n} overflows int64 keys; lower n")
        self.n, self.V, self.k = n, vocab_size, float(k)

    def _keys(self, seq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        seq = np.asarray(seq, dtype=np.int64)
        if seq.size and (seq.min() < 0 or seq.max() >= self.V):
            raise ValueError(f"symbols must be in [0, vocab_size) = [0, {self.V})")
        padded = np.concatenate([np.full(self.n - 1, self.V, dtype=np.int64), seq])
        ctx = np.zeros(seq.size, dtype=np.int64)
        for j in range(self.n - 1):
            ctx = ctx * (self.V + 1) + padded[j:j + seq.size]
        return ctx, ctx * (self.V + 1) + seq

    def fit(self, seq: Sequence[int] | np.ndarray) -> "NGramLM":
        ctx, full = self._keys(np.asarray(seq))
        self._full, self._full_n = np.unique(full, return_counts=True)
        self._ctx, self._ctx_n = np.unique(ctx, return_counts=True)
        return self

    @staticmethod
    def _lookup(table: np.ndarray, counts: np.ndarray, keys: np.ndarray) -> np.ndarray:
        pos = np.clip(np.searchsorted(table, keys), 0, max(table.size - 1, 0))
        return np.where(table[pos] == keys, counts[pos], 0)

    def nll(self, seq: Sequence[int] | np.ndarray, start: int = 0) -> float:
        """Total NLL (nats) of seq[start:] given everything before it."""
        if not hasattr(self, "_full"):
            raise ValueError("call fit(training_symbols) before nll()")
        ctx, full = self._keys(np.asarray(seq))
        c_full = self._lookup(self._full, self._full_n, full[start:])
        c_ctx = self._lookup(self._ctx, self._ctx_n, ctx[start:])
        return float(-np.log((c_full + self.k) / (c_ctx + self.k * self.V)).sum())
