"""Pretraining a causal LM (chapter 07): the Shakespeare token stream, batches, the loop, evaluation.

:func:`train_lm` is AdamW with the warmup + cosine schedule of :mod:`labkit.train.schedule`. The shipped
run that uses it (``data/tiny_llama/``) is :mod:`labkit.experiments.pretrain`.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from labkit.datasets.shakespeare import load_shakespeare
from labkit.train.schedule import lr_at

__all__ = ["corpus_tokens", "get_batch", "train_lm", "evaluate", "unigram_loss"]


_TOKEN_CACHE: dict[tuple[int, str], Tensor] = {}


def _tokenizer_key(tokenizer: Any) -> int:
    merges = getattr(tokenizer, "merges", None)
    return hash((tuple(merges.items()) if isinstance(merges, dict) else id(tokenizer),
                 getattr(tokenizer, "pattern", None)))


def corpus_tokens(tokenizer: Any, split: str = "train") -> Tensor:
    """The shipped Shakespeare split (``data/shakespeare/{split}.txt``) encoded with ``tokenizer``: LongTensor (N,).

    Encoding the 1.7 MB training split takes a few seconds, so the result is cached in memory per
    (tokenizer, split) for the life of the process.
    """
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    key = (_tokenizer_key(tokenizer), split)
    if key not in _TOKEN_CACHE:
        _TOKEN_CACHE[key] = torch.tensor(tokenizer.encode(load_shakespeare(split)), dtype=torch.long)
    return _TOKEN_CACHE[key]


def _check_tokens(tokens: Tensor, block_size: int, name: str = "tokens") -> None:
    if not isinstance(tokens, Tensor) or tokens.dim() != 1 or tokens.dtype != torch.long:
        raise TypeError(f"{name} must be a 1-D LongTensor of token ids (see corpus_tokens)")
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size must be an int >= 1, got {block_size!r}")
    if tokens.numel() < block_size + 1:
        raise ValueError(f"{name} has {tokens.numel()} tokens, need at least block_size + 1 = {block_size + 1}; "
                         "lower block_size")


def get_batch(tokens: Tensor, batch_size: int, block_size: int,
              generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Random windows of the token stream: inputs x (B, T) and next-token targets y = x shifted by one.

    Window starts are uniform in [0, N − T − 1], drawn with ``generator`` (seeded → same batches every run).
    """
    _check_tokens(tokens, block_size)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    starts = torch.randint(0, tokens.numel() - block_size, (batch_size,), generator=generator)
    idx = starts[:, None] + torch.arange(block_size + 1)                # (B, T + 1)
    window = tokens[idx]
    return window[:, :-1], window[:, 1:]


@torch.no_grad()
def evaluate(model: nn.Module, tokens: Tensor, block_size: int, batch_size: int,
             max_batches: int | None = None) -> float:
    """Mean next-token cross-entropy (nats/token) over fixed, non-overlapping windows.

    Windows start at 0, block_size, 2·block_size, ... (the tail shorter than a window is dropped); with
    ``max_batches`` only the first ``max_batches · batch_size`` windows are used. Deterministic: no sampling.
    Perplexity = exp(this).
    """
    _check_tokens(tokens, block_size)
    n_windows = (tokens.numel() - 1) // block_size
    if max_batches is not None:
        n_windows = min(n_windows, max_batches * batch_size)
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for b0 in range(0, n_windows, batch_size):
        starts = torch.arange(b0, min(b0 + batch_size, n_windows)) * block_size
        idx = starts[:, None] + torch.arange(block_size + 1)
        w = tokens[idx]
        logits = model(w[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), w[:, 1:].reshape(-1), reduction="sum")
        total += float(loss)
        count += w[:, 1:].numel()
    model.train(was_training)
    return total / count


def unigram_loss(train_tokens: Tensor, eval_tokens: Tensor, vocab_size: int) -> float:
    """Cross-entropy (nats/token) of the unigram baseline p(x) = add-one-smoothed training frequency:
    the best a model can do without looking at any context."""
    counts = torch.bincount(train_tokens, minlength=vocab_size).double() + 1.0
    logp = (counts / counts.sum()).log()
    return float(-logp[eval_tokens].mean())


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on matrices (linear layers, embedding), none on the 1-D RMSNorm gains."""
    decay, no_decay, seen = [], [], set()
    for _, p in model.named_parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        (decay if p.dim() >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def train_lm(model: nn.Module, train_tokens: Tensor, val_tokens: Tensor, *, steps: int, batch_size: int,
             block_size: int, lr: float, warmup: int, weight_decay: float = 0.1, grad_clip: float | None = 1.0,
             eval_every: int = 50, seed: int = 0, min_lr: float | None = None, eval_batches: int = 8,
             progress: bool = True) -> dict[str, list[float]]:
    """Pretrain a causal LM with AdamW (β = 0.9, 0.95), warmup + cosine LR, gradient clipping.

    Each step draws a random batch (:func:`get_batch` with a generator seeded by ``seed``), so the same
    seed gives the same run. Every ``eval_every`` steps (and at the end) the validation loss is measured
    with :func:`evaluate` on the first ``eval_batches`` batches of fixed windows.

    Returns a history dict: ``step``, ``lr``, ``train_loss`` (every step), ``val_step``, ``val_loss``.
    """
    from tqdm import tqdm

    _check_tokens(train_tokens, block_size, "train_tokens")
    _check_tokens(val_tokens, block_size, "val_tokens")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr!r}")
    min_lr = lr / 10 if min_lr is None else min_lr
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(_param_groups(model, weight_decay), lr=lr, betas=(0.9, 0.95), eps=1e-8)
    hist: dict[str, list[float]] = {"step": [], "lr": [], "train_loss": [], "val_step": [], "val_loss": []}
    model.train()
    # disable only when asked: otherwise tqdm's own default applies (TQDM_DISABLE=1 silences it in CI)
    bar = tqdm(range(steps), desc="train", **({} if progress else {"disable": True}))
    for step in bar:
        cur_lr = lr_at(step, lr, warmup, steps, min_lr)
        for g in opt.param_groups:
            g["lr"] = cur_lr
        x, y = get_batch(train_tokens, batch_size, block_size, gen)
        logits = model(x)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
        hist["step"].append(step)
        hist["lr"].append(cur_lr)
        hist["train_loss"].append(loss.item())
        if (step + 1) % eval_every == 0 or step == steps - 1:
            val = evaluate(model, val_tokens, block_size, batch_size, max_batches=eval_batches)
            hist["val_step"].append(step)
            hist["val_loss"].append(val)
            bar.set_postfix(train=f"{loss.item():.3f}", val=f"{val:.3f}")
    model.eval()
    return hist

