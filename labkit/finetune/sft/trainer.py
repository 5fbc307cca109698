"""Supervised fine-tuning (SFT, 监督微调): chat template, loss masks, sequence packing, a training loop.

**Chat template (对话模板).** A conversation becomes one token sequence with role tokens::

    <|system|>…<|end|><|user|>Reverse the letters.\\nk e p<|end|><|assistant|>p e k<|end|>

Message contents are encoded as *plain text* (a user who types ``<|end|>`` gets the characters, not the
special token), role markers and ``<|end|>`` are special ids inserted by the template.

**Loss mask (损失掩码).** ``labels`` equal ``input_ids`` on the tokens the model must learn to produce,
the content of every assistant turn and its closing ``<|end|>`` (so it learns to stop), and ``-100``
(ignored by cross-entropy) everywhere else. Labels are *aligned* with ``input_ids``; the loss shifts them
(logits at position t predict the label at t + 1), as Hugging Face does.

**Packing (样本拼接).** Several short examples share one row of ``max_len`` tokens. A block-diagonal causal
**document mask** (文档掩码) keeps each token inside its own example and **position ids restart at 0**
in every document, so a packed row computes exactly what the examples would compute one by one,
without the padding.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from labkit.blocks.masks import document_causal_mask
from labkit.datasets import task as task_data

__all__ = ["IGNORE_INDEX", "ROLE_TOKENS", "END_TOKEN", "render_chat", "apply_chat_template", "build_labels", "encode_example", "Packed", "assign_bins", "pack", "padding_stats", "sft_loss", "packed_forward", "train_sft", "generate_answers", "evaluate_task", "training_memory", "answer_metrics"]

IGNORE_INDEX = -100
ROLE_TOKENS = {"system": "<|system|>", "user": "<|user|>", "assistant": "<|assistant|>"}
END_TOKEN = "<|end|>"


def _special_id(tokenizer: Any, name: str) -> int:
    sp = getattr(tokenizer, "special_tokens", None)
    if not isinstance(sp, dict) or name not in sp:
        raise ValueError(f"the tokenizer has no special token {name!r}; the chat template needs "
                         f"{sorted([*ROLE_TOKENS.values(), END_TOKEN])} (labkit's Shakespeare tokenizer has them)")
    return int(sp[name])


def _check_messages(messages: Any) -> None:
    if not isinstance(messages, (list, tuple)) or not messages:
        raise ValueError("messages must be a non-empty list of {'role', 'content'} dicts")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLE_TOKENS or not isinstance(m.get("content"), str):
            raise ValueError(f"messages[{i}] must be {{'role': one of {list(ROLE_TOKENS)}, 'content': str}}, got {m!r}")


def render_chat(messages: Sequence[dict[str, str]], add_generation_prompt: bool = False) -> str:
    """The template as text: ``<|role|>content<|end|>`` per message (+ ``<|assistant|>`` to prompt a reply)."""
    _check_messages(messages)
    text = "".join(f"{ROLE_TOKENS[m['role']]}{m['content']}{END_TOKEN}" for m in messages)
    return text + (ROLE_TOKENS["assistant"] if add_generation_prompt else "")


def _segments(messages: Sequence[dict[str, str]], tokenizer: Any) -> list[tuple[list[int], bool]]:
    """``[(ids, is_target), ...]``: role token (no), content (yes for assistant), ``<|end|>`` (yes for assistant)."""
    _check_messages(messages)
    end = _special_id(tokenizer, END_TOKEN)
    segs = []
    for m in messages:
        target = m["role"] == "assistant"
        segs.append(([_special_id(tokenizer, ROLE_TOKENS[m["role"]])], False))
        segs.append((tokenizer.encode(m["content"], allowed_special="none"), target))
        segs.append(([end], target))
    return segs


def apply_chat_template(messages: Sequence[dict[str, str]], tokenizer: Any,
                        add_generation_prompt: bool = False) -> list[int]:
    """Token ids of :func:`render_chat`, with role/end markers as special ids and contents as plain text.

    ``add_generation_prompt=True`` appends ``<|assistant|>`` (use it with the conversation *without* the
    answer, to ask the model for one).
    """
    ids = [i for seg, _ in _segments(messages, tokenizer) for i in seg]
    if add_generation_prompt:
        ids.append(_special_id(tokenizer, ROLE_TOKENS["assistant"]))
    return ids


def build_labels(messages: Sequence[dict[str, str]], tokenizer: Any,
                 train_on: str = "all_assistant") -> tuple[list[int], list[int]]:
    """``(input_ids, labels)``: labels are ``-100`` except on assistant tokens (content + closing ``<|end|>``).

    Args:
        train_on: ``"all_assistant"`` (every assistant turn, the usual multi-turn SFT) or
            ``"last_assistant"`` (only the final reply; earlier replies are context).
    """
    if train_on not in ("all_assistant", "last_assistant"):
        raise ValueError(f"train_on must be 'all_assistant' or 'last_assistant', got {train_on!r}")
    segs = _segments(messages, tokenizer)
    if not any(t for _, t in segs):
        raise ValueError("the conversation has no assistant message, so nothing would be trained; "
                         "end it with the assistant's reply")
    last_turn = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    ids, labels = [], []
    for k, (seg, target) in enumerate(segs):
        if train_on == "last_assistant" and k // 3 != last_turn:
            target = False
        ids.extend(seg)
        labels.extend(seg if target else [IGNORE_INDEX] * len(seg))
    return ids, labels


def encode_example(record: dict[str, Any], tokenizer: Any) -> dict[str, list[int]]:
    """An Alpaca or chat record → ``{"input_ids", "labels"}`` (validated first)."""
    fmt = task_data.validate_example(record)
    chat = task_data.to_chat(record) if fmt == "alpaca" else record
    ids, labels = build_labels(chat["messages"], tokenizer)
    return {"input_ids": ids, "labels": labels}


# --------------------------------------------------------------------------------------------- packing
@dataclass
class Packed:
    """Rows of packed examples. All tensors are ``(n_rows, max_len)``.

    ``doc_ids`` numbers the documents inside each row 0, 1, ... and is ``-1`` on padding;
    ``position_ids`` restart at 0 in every document; ``labels`` are ``-100`` on padding and on the first
    token of every document (it has no in-document predecessor). ``bins[i]`` lists the example indices in
    row ``i``.
    """

    input_ids: Tensor
    labels: Tensor
    position_ids: Tensor
    doc_ids: Tensor
    bins: list[list[int]] = field(default_factory=list)

    @property
    def n_tokens(self) -> int:
        """Real (non-padding) tokens."""
        return int((self.doc_ids >= 0).sum())

    @property
    def padding_fraction(self) -> float:
        """Padding slots / all slots."""
        return 1.0 - self.n_tokens / self.doc_ids.numel()

    def attention_mask(self) -> Tensor:
        """The bool ``(n_rows, max_len, max_len)`` document mask (True = may attend)."""
        return document_causal_mask(self.doc_ids)


def _lengths(examples: Sequence[Any]) -> list[int]:
    return [len(e["input_ids"]) if isinstance(e, dict) else len(e) for e in examples]


def assign_bins(lengths: Sequence[int], max_len: int, strategy: str = "greedy") -> list[list[int]]:
    """Group example indices into rows of at most ``max_len`` tokens.

    * ``"pad"``: one example per row (pad every example to ``max_len``);
    * ``"greedy"``: next-fit in the given order (start a new row when the next example does not fit);
    * ``"ffd"``: first-fit decreasing: longest first, each into the first row with room
      (never more than 11/9·OPT + 6/9 rows).
    """
    if isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 1:
        raise ValueError(f"max_len must be a positive int, got {max_len!r}")
    if strategy not in ("pad", "greedy", "ffd"):
        raise ValueError(f"strategy must be 'pad', 'greedy' or 'ffd', got {strategy!r}")
    too_long = [i for i, n in enumerate(lengths) if n > max_len]
    if too_long:
        raise ValueError(f"{len(too_long)} example(s) are longer than max_len={max_len} (first: index "
                         f"{too_long[0]}, {lengths[too_long[0]]} tokens); raise max_len or pass truncate=True")
    if any(n < 1 for n in lengths):
        raise ValueError("every example needs at least one token; drop empty examples")
    if strategy == "pad":
        return [[i] for i in range(len(lengths))]
    bins: list[list[int]] = []
    room: list[int] = []
    if strategy == "greedy":
        for i, n in enumerate(lengths):
            if not bins or room[-1] < n:
                bins.append([]), room.append(max_len)
            bins[-1].append(i)
            room[-1] -= n
        return bins
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):  # stable: ties keep input order
        n = lengths[i]
        for b in range(len(bins)):
            if room[b] >= n:
                bins[b].append(i)
                room[b] -= n
                break
        else:
            bins.append([i]), room.append(max_len - n)
    return bins


def pack(examples: Sequence[dict[str, Sequence[int]] | Sequence[int]], max_len: int,
         strategy: str = "greedy", *, pad_id: int = 0, truncate: bool = False) -> Packed:
    """Pack examples (``{"input_ids", "labels"}`` dicts, or plain id lists whose labels are the ids) into rows.

    Args:
        strategy: see :func:`assign_bins` (``"pad"``, ``"greedy"``, ``"ffd"``).
        pad_id: id written into padding slots (never attended to by real tokens, never a label).
        truncate: cut examples longer than ``max_len`` (keeping the start) instead of raising.
    """
    if not isinstance(examples, (list, tuple)) or not examples:
        raise ValueError("examples must be a non-empty list")
    ids_l, lab_l = [], []
    for k, e in enumerate(examples):
        ids = list(e["input_ids"]) if isinstance(e, dict) else list(e)
        labs = list(e.get("labels", ids)) if isinstance(e, dict) else list(ids)
        if len(labs) != len(ids):
            raise ValueError(f"example {k}: labels ({len(labs)}) and input_ids ({len(ids)}) differ in length")
        if truncate:
            ids, labs = ids[:max_len], labs[:max_len]
        ids_l.append(ids), lab_l.append(labs)
    bins = assign_bins(_lengths(ids_l), max_len, strategy)
    R = len(bins)
    input_ids = torch.full((R, max_len), pad_id, dtype=torch.long)
    labels = torch.full((R, max_len), IGNORE_INDEX, dtype=torch.long)
    position_ids = torch.zeros((R, max_len), dtype=torch.long)
    doc_ids = torch.full((R, max_len), -1, dtype=torch.long)
    for r, b in enumerate(bins):
        t = 0
        for d, i in enumerate(b):
            n = len(ids_l[i])
            input_ids[r, t:t + n] = torch.tensor(ids_l[i])
            labels[r, t:t + n] = torch.tensor(lab_l[i])
            labels[r, t] = IGNORE_INDEX  # the first token of a document is never a target
            position_ids[r, t:t + n] = torch.arange(n)
            doc_ids[r, t:t + n] = d
            t += n
    return Packed(input_ids, labels, position_ids, doc_ids, bins)


def padding_stats(lengths: Sequence[int], max_len: int, strategy: str,
                  batch_size: int | None = None) -> dict[str, float]:
    """Padding waste of a batching strategy.

    ``strategy`` is one of :func:`assign_bins`' strategies, or ``"pad_batch"``: consecutive batches of
    ``batch_size`` examples, each padded to its longest example (dynamic padding).
    Returns ``rows``, ``tokens`` (real), ``slots`` (rows × row length, summed) and ``waste`` = 1 − tokens/slots.
    """
    lengths = list(lengths)
    tokens = sum(lengths)
    if strategy == "pad_batch":
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError("strategy 'pad_batch' needs batch_size, a positive int")
        batches = [lengths[i:i + batch_size] for i in range(0, len(lengths), batch_size)]
        rows, slots = len(lengths), sum(len(b) * max(b) for b in batches)
    else:
        bins = assign_bins(lengths, max_len, strategy)
        rows, slots = len(bins), len(bins) * max_len
    return {"rows": rows, "tokens": tokens, "slots": slots, "waste": 1 - tokens / slots}


# -------------------------------------------------------------------------------------------- training
def _logits(out: Any) -> Tensor:
    return out.logits if hasattr(out, "logits") else out


def sft_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean next-token cross-entropy over target positions: ``logits[:, t]`` predicts ``labels[:, t+1]``.

    ``logits (B, T, V)``, ``labels (B, T)`` with ``-100`` = ignore. Equals the mean negative
    log-likelihood of the assistant tokens only.
    """
    if logits.dim() != 3 or labels.shape != logits.shape[:2]:
        raise ValueError(f"logits must be (B, T, V) and labels (B, T); got {tuple(logits.shape)} and "
                         f"{tuple(labels.shape)}")
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), labels[:, 1:].reshape(-1),
                           ignore_index=IGNORE_INDEX)


def packed_forward(model: nn.Module, batch: Packed | dict[str, Tensor]) -> Tensor:
    """Logits of a packed batch: document mask + per-document positions (labkit ``Llama`` API)."""
    get = batch.__getitem__ if isinstance(batch, dict) else lambda k: getattr(batch, k)
    mask = document_causal_mask(get("doc_ids"))
    return _logits(model(get("input_ids"), attention_mask=mask, position_ids=get("position_ids")))


def train_sft(model: nn.Module, examples: Sequence[dict[str, Sequence[int]]], *, steps: int,
              batch_size: int = 8, max_len: int = 128, lr: float = 1e-3, weight_decay: float = 0.0,
              strategy: str = "ffd", seed: int = 0, grad_clip: float | None = 1.0,
              params: Iterable[nn.Parameter] | None = None, warmup: int = 0,
              forward: Callable[[nn.Module, Packed | dict[str, Tensor]], Tensor] = packed_forward,
              schedule_steps: int | None = None, progress: bool = True) -> list[float]:
    """Fine-tune ``model`` on encoded examples with the loss on assistant tokens only; returns the losses.

    The examples are packed once (``strategy``, rows of ``max_len``); each step draws ``batch_size`` rows
    from a seeded shuffle (a new shuffle each epoch), runs ``forward`` (default: document mask + restarted
    positions), :func:`sft_loss`, and an AdamW step on ``params`` (default: every parameter with
    ``requires_grad``, so LoRA-wrapped models train only their adapters). Linear warm-up for ``warmup``
    steps, then cosine decay to 10 % of ``lr`` at step ``schedule_steps`` (default ``steps``; pass the
    original run's length to replay its first steps exactly). Deterministic for a given ``seed``.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    packed = pack(list(examples), max_len, strategy)
    params = [p for p in (params if params is not None else model.parameters()) if p.requires_grad]
    if not params:
        raise ValueError("no trainable parameters: every parameter has requires_grad=False")
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    total = steps if schedule_steps is None else schedule_steps
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, warmup)) * (
        0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, s / max(1, total - 1))))))
    g = torch.Generator().manual_seed(seed)
    n_rows = packed.input_ids.shape[0]
    order: list[int] = []
    losses = []
    from tqdm.auto import tqdm

    model.train()
    bar_kw = {} if progress else {"disable": True}  # leave `disable` unset so TQDM_DISABLE=1 (CI) silences it
    for _ in tqdm(range(steps), desc="sft", **bar_kw):
        if len(order) < batch_size:
            order += torch.randperm(n_rows, generator=g).tolist()
        idx, order = torch.tensor(order[:batch_size]), order[batch_size:]
        batch = {k: getattr(packed, k)[idx] for k in ("input_ids", "labels", "position_ids", "doc_ids")}
        loss = sft_loss(forward(model, batch), batch["labels"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        opt.step()
        sched.step()
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
    higher: temporaries; chapter 11 measures it with ``torch.profiler``).

    * ``weights``: every parameter and buffer (a QLoRA base counts its packed NF4 codes + absmax);
    * ``grads``: one gradient per trainable parameter;
    * ``optimizer``: ``optimizer_states`` fp32 tensors per trainable parameter (AdamW: m and v);
    * ``activations``: tensors autograd saved for backward (measured with ``saved_tensors_hooks``,
      storages counted once, parameters excluded).
    """
    from labkit.memory.measure import SavedTensorLog

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
def answer_metrics(model: nn.Module, tokenizer: Any, records: Sequence[dict[str, Any]],
                   max_len: int = 128) -> dict[str, float]:
    """Teacher-forced metrics on the answer tokens (answer + ``<|end|>``) of task records.

    ``loss``: mean cross-entropy of the answer tokens; ``token_acc``: fraction of them that are the argmax
    prediction given the gold prefix. Softer than exact match: it shows progress before whole answers
    come out right.
    """
    enc = [encode_example(r, tokenizer) for r in records]
    p = pack(enc, max_len, "ffd")
    was_training = model.training
    model.eval()
    logits = packed_forward(model, p)[:, :-1]
    model.train(was_training)
    labels = p.labels[:, 1:]
    keep = labels != IGNORE_INDEX
    loss = F.cross_entropy(logits[keep].float(), labels[keep])
    acc = (logits[keep].argmax(-1) == labels[keep]).float().mean()
    return {"loss": float(loss), "token_acc": float(acc)}
