"""Pretraining a causal LM (chapter 07): the Shakespeare token stream, batches, the loop, evaluation.

:func:`train_lm` is the loop written out: :func:`get_batch` → :func:`train_step` (forward → loss → backward →
clip → lr → step) with labkit's own AdamW (:mod:`labkit.train.optim`), clipping (:mod:`labkit.train.clip`),
the warmup + cosine schedule (:mod:`labkit.train.schedule`) and optional resumable training checkpoints
(:mod:`labkit.train.checkpoint`). The shipped run that uses it (``data/tiny_llama/``) is
:mod:`labkit.experiments.pretrain`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from labkit.core.io import read_json
from labkit.datasets.shakespeare import load_shakespeare
from labkit.train.checkpoint import META_FILE, load_training_state, save_training_state
from labkit.train.clip import clip_grad_norm
from labkit.train.optim import AdamW, param_groups
from labkit.train.schedule import lr_at

__all__ = ["corpus_tokens", "get_batch", "train_step", "train_lm", "evaluate", "unigram_loss"]


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


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: Tensor, y: Tensor, *, lr: float,
               grad_clip: float | None = None) -> float:
    """One optimizer step on the batch ``x``, ``y`` (B, T): forward → loss → backward → clip → lr → step.

    loss = mean next-token cross-entropy of ``model(x)`` (B, T, V) against ``y``; gradients are zeroed first,
    clipped to global norm ``grad_clip`` (:func:`labkit.train.clip_grad_norm`; ``None`` = no clipping), every
    parameter group gets learning rate ``lr``, then ``optimizer.step()``. Returns the loss (before the step).
    """
    optimizer.zero_grad(set_to_none=True)
    logits = model(x)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
    loss.backward()
    if grad_clip is not None:
        clip_grad_norm(model.parameters(), grad_clip)
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.step()
    return loss.item()


def _check_run_args(train_tokens: Tensor, val_tokens: Tensor, steps: int, block_size: int, lr: float,
                    checkpoint_path: str | Path | None, checkpoint_every: int | None, resume: bool) -> None:
    _check_tokens(train_tokens, block_size, "train_tokens")
    _check_tokens(val_tokens, block_size, "val_tokens")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr!r}")
    if checkpoint_every is not None and (isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, int)
                                         or checkpoint_every < 1):
        raise ValueError(f"checkpoint_every must be an int >= 1 or None, got {checkpoint_every!r}")
    if checkpoint_path is None and (checkpoint_every is not None or resume):
        raise ValueError("checkpoint_every and resume need checkpoint_path (the folder of the training checkpoint)")


def _resume(path: str | Path, model: nn.Module, opt: torch.optim.Optimizer, gen: torch.Generator,
            settings: dict[str, Any]) -> tuple[int, dict[str, list[float]]]:
    """Load the training checkpoint at ``path`` → (steps done, history so far).

    The saved run's settings are checked first (nothing is loaded if they differ from ``settings``).
    """
    meta = read_json(Path(path) / META_FILE) if (Path(path) / META_FILE).exists() else None
    if isinstance(meta, dict):
        extra = meta.get("extra") or {}
        if "settings" not in extra or "history" not in extra:
            raise ValueError(f"{path} holds a training checkpoint that train_lm did not write (no settings and "
                             "history in its extra); continue it with load_training_state and your own loop")
        saved = extra["settings"]
        diff = {k: (v, saved.get(k)) for k, v in settings.items() if saved.get(k) != v}
        if diff:
            raise ValueError("resume=True with other settings than the saved run: "
                             + ", ".join(f"{k}: now {a!r}, saved {b!r}" for k, (a, b) in diff.items())
                             + "; pass the saved settings (or start a new run in another checkpoint_path)")
    step, extra = load_training_state(path, model, opt, gen)
    return step, extra["history"]


def train_lm(model: nn.Module, train_tokens: Tensor, val_tokens: Tensor, *, steps: int, batch_size: int,
             block_size: int, lr: float, warmup: int, weight_decay: float = 0.1, grad_clip: float | None = 1.0,
             eval_every: int = 50, seed: int = 0, min_lr: float | None = None, eval_batches: int = 8,
             progress: bool = True, checkpoint_path: str | Path | None = None, checkpoint_every: int | None = None,
             resume: bool = False, stop_after: int | None = None) -> dict[str, list[float]]:
    """Pretrain a causal LM: labkit's :class:`AdamW` (β = 0.9, 0.95) on :func:`param_groups`, :func:`lr_at`
    warmup + cosine (``min_lr`` defaults to lr / 10), :func:`clip_grad_norm` (``grad_clip``), :func:`train_step`.

    Each step draws a random batch (:func:`get_batch` with a generator seeded by ``seed``), so the same seed gives
    the same run. Every ``eval_every`` steps (and at the end) the validation loss is measured with
    :func:`evaluate` on the first ``eval_batches`` batches of fixed windows.

    Checkpointing: with ``checkpoint_path`` a training checkpoint (:func:`save_training_state`: weights, AdamW
    state, step, RNGs, batch generator, settings and history) is written there every ``checkpoint_every``
    steps and at the end. ``resume=True`` continues from it (the settings must be the saved ones) and gives
    bit for bit the run that was never interrupted.

    ``stop_after=n`` runs only the first n steps of the ``steps``-step run (the schedule still spans ``steps``):
    a cheap replay of a long run's start, e.g. to check a shipped training log.

    Returns a history dict: ``step``, ``lr``, ``train_loss`` (every step), ``val_step``, ``val_loss``.
    """
    if stop_after is not None and (isinstance(stop_after, bool) or not isinstance(stop_after, int) or stop_after < 1):
        raise ValueError(f"stop_after must be an int >= 1 or None (None = run all `steps`), got {stop_after!r}")
    _check_run_args(train_tokens, val_tokens, steps, block_size, lr, checkpoint_path, checkpoint_every, resume)
    min_lr = lr / 10 if min_lr is None else min_lr
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    opt = AdamW(param_groups(model, weight_decay), lr=lr, betas=(0.9, 0.95), eps=1e-8)
    settings = dict(steps=steps, batch_size=batch_size, block_size=block_size, lr=lr, warmup=warmup,
                    min_lr=min_lr, weight_decay=weight_decay, grad_clip=grad_clip, eval_every=eval_every,
                    eval_batches=eval_batches, seed=seed, train_tokens=train_tokens.numel(),
                    val_tokens=val_tokens.numel())
    hist: dict[str, list[float]] = {"step": [], "lr": [], "train_loss": [], "val_step": [], "val_loss": []}
    start = 0
    if resume:
        start, hist = _resume(checkpoint_path, model, opt, gen, settings)
    model.train()
    # disable only when asked: otherwise tqdm's own default applies (TQDM_DISABLE=1 silences it in CI)
    end = steps if stop_after is None else min(steps, stop_after)
    bar = tqdm(range(start, end), desc="train", initial=start, total=steps,
               **({} if progress else {"disable": True}))
    for step in bar:
        cur_lr = lr_at(step, lr, warmup, steps, min_lr)
        x, y = get_batch(train_tokens, batch_size, block_size, gen)
        loss = train_step(model, opt, x, y, lr=cur_lr, grad_clip=grad_clip)
        hist["step"].append(step)
        hist["lr"].append(cur_lr)
        hist["train_loss"].append(loss)
        if (step + 1) % eval_every == 0 or step == steps - 1:
            hist["val_step"].append(step)
            hist["val_loss"].append(evaluate(model, val_tokens, block_size, batch_size, max_batches=eval_batches))
            bar.set_postfix(train=f"{loss:.3f}", val=f"{hist['val_loss'][-1]:.3f}")
        due = step == steps - 1 or (checkpoint_every is not None and (step + 1) % checkpoint_every == 0)
        if checkpoint_path is not None and due:
            save_training_state(checkpoint_path, model, opt, step + 1, gen,
                                extra={"settings": settings, "history": hist})
    model.eval()
    return hist
