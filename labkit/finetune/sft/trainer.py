"""The SFT training loop and its measurements (chapter 12): masked loss, ``train_sft``, greedy answers, memory.

The loss is next-token cross-entropy on the assistant tokens only (``labels`` from
:mod:`labkit.finetune.sft.chat`, ``-100`` elsewhere): ``logits[:, t]`` predicts ``labels[:, t + 1]``.
Training runs on packed rows (:mod:`labkit.finetune.sft.packing`: document mask + restarted positions).
Evaluation: exact match of greedy answers (:func:`evaluate_task`), teacher-forced answer-token loss and
accuracy (:func:`answer_metrics`), and the bytes a training step holds (:func:`training_memory`).
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from labkit.datasets import task as task_data
from labkit.finetune.sft.chat import END_TOKEN, IGNORE_INDEX, _special_id, apply_chat_template, encode_example
from labkit.finetune.sft.packing import Packed, _logits, pack, packed_forward
from labkit.memory import SavedTensorLog
from labkit.train import AdamW, clip_grad_norm, lr_at

__all__ = ["sft_loss", "train_sft", "generate_answers", "evaluate_task", "training_memory", "answer_metrics"]


# -------------------------------------------------------------------------------------------- training
def sft_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean next-token cross-entropy over target positions: ``logits[:, t]`` predicts ``labels[:, t+1]``.

    ``logits (B, T, V)``, ``labels (B, T)`` with ``-100`` = ignore. Equals the mean negative
    log-likelihood of the assistant tokens only.
    """
    if logits.dim() != 3 or labels.shape != logits.shape[:2]:
        raise ValueError(f"logits must be (B, T, V) and labels (B, T); got {tuple(logits.shape)} and "
                         f"{tuple(labels.shape)}")
    targets = labels[:, 1:]
    if not bool((targets != IGNORE_INDEX).any()):
        raise ValueError("labels has no target token (every position after the first is -100), so the mean loss "
                         "would be 0/0 = NaN; check that the batch holds assistant turns (build_labels)")
    bad = (targets != IGNORE_INDEX) & ((targets < 0) | (targets >= logits.shape[-1]))
    if bool(bad.any()):
        raise ValueError(f"labels holds ids outside [0, {logits.shape[-1]}) that are not -100 "
                         f"(e.g. {int(targets[bad][0])}); pad labels with -100 and check the tokenizer's vocab size")
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), labels[:, 1:].reshape(-1),
                           ignore_index=IGNORE_INDEX)


def train_sft(model: nn.Module, examples: Sequence[dict[str, Sequence[int]]], *, steps: int,
              batch_size: int = 8, max_len: int = 128, lr: float = 1e-3, weight_decay: float = 0.0,
              strategy: str = "ffd", seed: int = 0, grad_clip: float | None = 1.0,
              params: Iterable[nn.Parameter] | None = None, warmup: int = 0,
              forward: Callable[[nn.Module, Packed | dict[str, Tensor]], Tensor] = packed_forward,
              schedule_steps: int | None = None, progress: bool = True) -> list[float]:
    """Fine-tune ``model`` on encoded examples with the loss on assistant tokens only; returns the losses.

    The examples are packed once (``strategy``, rows of ``max_len``); each step draws ``batch_size`` rows
    from a seeded shuffle (a new shuffle each epoch), runs ``forward`` (default: document mask + restarted
    positions), :func:`sft_loss`, global-norm clipping (:func:`labkit.train.clip_grad_norm`) and a step of the
    course's AdamW (:class:`labkit.train.AdamW`, β = (0.9, 0.999)) on ``params`` (default: every parameter with
    ``requires_grad``, so LoRA-wrapped models train only their adapters). The learning rate follows the course's
    one schedule, :func:`labkit.train.lr_at`: linear warm-up for ``warmup`` steps, then cosine decay to 10 % of
    ``lr`` at step ``schedule_steps`` (default ``steps``; pass the original run's length to replay its first
    steps exactly). Deterministic for a given ``seed``.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    packed = pack(list(examples), max_len, strategy)
    params = [p for p in (params if params is not None else model.parameters()) if p.requires_grad]
    if not params:
        raise ValueError("no trainable parameters: every parameter has requires_grad=False")
    opt = AdamW(params, lr=lr, weight_decay=weight_decay)
    total = steps if schedule_steps is None else schedule_steps
    lr_at(0, lr, warmup, total, 0.1 * lr)  # checks warmup <= schedule length before any work
    g = torch.Generator().manual_seed(seed)
    n_rows = packed.input_ids.shape[0]
    order: list[int] = []
    losses = []
    model.train()
    bar_kw = {} if progress else {"disable": True}  # leave `disable` unset so TQDM_DISABLE=1 (CI) silences it
    for step in tqdm(range(steps), desc="sft", **bar_kw):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, lr, warmup, total, 0.1 * lr)
        if len(order) < batch_size:
            order += torch.randperm(n_rows, generator=g).tolist()
        idx, order = torch.tensor(order[:batch_size]), order[batch_size:]
        batch = {k: getattr(packed, k)[idx] for k in ("input_ids", "labels", "position_ids", "doc_ids")}
        loss = sft_loss(forward(model, batch), batch["labels"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip is not None:
            clip_grad_norm(params, grad_clip)
        opt.step()
        losses.append(float(loss.detach()))
    model.eval()
    return losses


# ---------------------------------------------------------------------------------------- evaluation
@torch.no_grad()
def generate_answers(model: nn.Module, tokenizer: Any, records: Sequence[dict[str, Any]],
                     max_new_tokens: int = 12, batch_size: int = 256) -> list[str]:
    """Greedy answers of ``model`` to each record's prompt (chat template + ``<|assistant|>``).

    Prompts of equal length are batched together (no padding needed), decoding uses the model's KV cache
    and stops at ``<|end|>``. Works with labkit's ``Llama`` (``model(ids, kv_cache)``).
    """
    end = _special_id(tokenizer, END_TOKEN)
    prompts = []
    for r in records:
        fmt = task_data.validate_example(r)
        msgs = (task_data.to_chat(r) if fmt == "alpaca" else r)["messages"][:-1]
        prompts.append(apply_chat_template(msgs, tokenizer, add_generation_prompt=True))
    by_len: dict[int, list[int]] = {}
    for i, p in enumerate(prompts):
        by_len.setdefault(len(p), []).append(i)
    answers: list[list[int]] = [[] for _ in records]
    was_training = model.training
    model.eval()
    for _, idxs in sorted(by_len.items()):
        for s in range(0, len(idxs), batch_size):
            chunk = idxs[s:s + batch_size]
            ids = torch.tensor([prompts[i] for i in chunk])
            cache = model.new_cache()
            logits = _logits(model(ids, cache))
            done = torch.zeros(len(chunk), dtype=torch.bool)
            for _ in range(max_new_tokens):
                nxt = logits[:, -1].argmax(-1)
                for j, i in enumerate(chunk):
                    if not done[j] and int(nxt[j]) != end:
                        answers[i].append(int(nxt[j]))
                done |= nxt == end
                if bool(done.all()):
                    break
                logits = _logits(model(nxt[:, None], cache))
    model.train(was_training)
    return [tokenizer.decode(a) for a in answers]


def evaluate_task(model: nn.Module, tokenizer: Any, records: Sequence[dict[str, Any]],
                  max_new_tokens: int = 12) -> tuple[dict[str, float], list[str]]:
    """``(score_by_skill, predictions)`` of greedy answers on task records (exact match)."""
    preds = generate_answers(model, tokenizer, records, max_new_tokens=max_new_tokens)
    return task_data.score_by_skill(preds, records), preds


def training_memory(model: nn.Module, batch: Packed | dict[str, Tensor],
                    forward: Callable[[nn.Module, Packed | dict[str, Tensor]], Tensor] = packed_forward,
                    optimizer_states: int = 2) -> dict[str, int]:
    """Bytes a training step holds at its peak: model state counted from tensor sizes, activations measured on
    one forward/backward of ``batch``. The sum is an estimate of the peak (the allocator's real peak is a few MB
    higher: temporaries; chapter 13 measures it with ``torch.profiler``).

    * ``weights``: every parameter and buffer (a QLoRA base counts its packed NF4 codes + absmax);
    * ``grads``: one gradient per trainable parameter;
    * ``optimizer``: ``optimizer_states`` fp32 tensors per trainable parameter (AdamW: m and v);
    * ``activations``: tensors autograd saved for backward (measured with ``saved_tensors_hooks``,
      storages counted once, parameters excluded).
    """
    params = {id(p): p for p in model.parameters()}.values()
    weights = sum(p.numel() * p.element_size() for p in params)
    weights += sum(b.numel() * b.element_size() for b in model.buffers())
    trainable = [p for p in params if p.requires_grad]
    grads = sum(p.numel() * p.element_size() for p in trainable)
    opt = optimizer_states * sum(p.numel() * 4 for p in trainable)
    get = batch.__getitem__ if isinstance(batch, dict) else lambda k: getattr(batch, k)
    with SavedTensorLog(exclude=list(params)) as log:
        loss = sft_loss(forward(model, batch), get("labels"))
    loss.backward()
    model.zero_grad(set_to_none=True)
    out = {"weights": weights, "grads": grads, "optimizer": opt, "activations": log.total_bytes}
    out["total"] = sum(out.values())
    return out


@torch.no_grad()
def answer_metrics(model: nn.Module, tokenizer: Any, records: Sequence[dict[str, Any]], max_len: int = 128,
                   forward: Callable[[nn.Module, Packed | dict[str, Tensor]], Tensor] = packed_forward,
                   batch_size: int = 16) -> dict[str, float]:
    """Teacher-forced metrics on the answer tokens (answer + ``<|end|>``) of task records.

    ``loss``: mean cross-entropy of the answer tokens (token-weighted over all records); ``token_acc``: fraction
    of them that are the argmax prediction given the gold prefix. Softer than exact match: it shows progress
    before whole answers come out right. ``forward(model, batch)`` is the method's packed forward (prompt and
    prefix tuning wrap the model), run on ``batch_size`` packed rows at a time.
    """
    enc = [encode_example(r, tokenizer) for r in records]
    p = pack(enc, max_len, "ffd")
    was_training = model.training
    model.eval()
    nll, hits, count = 0.0, 0, 0
    for s in range(0, p.input_ids.shape[0], batch_size):
        batch = {k: getattr(p, k)[s:s + batch_size] for k in ("input_ids", "labels", "position_ids", "doc_ids")}
        logits = forward(model, batch)[:, :-1]
        labels = batch["labels"][:, 1:]
        keep = labels != IGNORE_INDEX
        nll += float(F.cross_entropy(logits[keep].float(), labels[keep], reduction="sum"))
        hits += int((logits[keep].argmax(-1) == labels[keep]).sum())
        count += int(keep.sum())
    model.train(was_training)
    return {"loss": nll / count, "token_acc": hits / count}
