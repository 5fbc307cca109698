"""Sequence packing (样本拼接) for SFT, chapter 12: bins, packed rows, padding waste, the packed forward.

Several short examples share one row of ``max_len`` tokens. A block-diagonal causal **document mask**
(文档掩码, :func:`labkit.blocks.masks.document_causal_mask`) keeps each token inside its own example and
**position ids restart at 0** in every document, so a packed row computes exactly what the examples would
compute one by one, without the padding. All row tensors are ``(n_rows, max_len)``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from labkit.blocks.masks import document_causal_mask
from labkit.finetune.sft.chat import IGNORE_INDEX

__all__ = ["Packed", "assign_bins", "pack", "padding_stats", "packed_forward"]


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
    if not lengths:
        raise ValueError("lengths is empty: padding_stats needs at least one example length")
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


def _logits(out: Any) -> Tensor:
    return out.logits if hasattr(out, "logits") else out


def packed_forward(model: nn.Module, batch: Packed | dict[str, Tensor]) -> Tensor:
    """Logits of a packed batch: document mask + per-document positions (labkit ``Llama`` API)."""
    get = batch.__getitem__ if isinstance(batch, dict) else lambda k: getattr(batch, k)
    mask = document_causal_mask(get("doc_ids"))
    return _logits(model(get("input_ids"), attention_mask=mask, position_ids=get("position_ids")))
