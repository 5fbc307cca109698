"""Memory accounting (显存估算), measured activation memory, gradient checkpointing and accumulation,
and a dynamic loss scaler: the tools behind chapter 10.

Model states per parameter (bytes), the ZeRO paper's convention:

=================  =======  =====  =================  ======  =====
recipe             weights  grads  optimizer (m, v)   master  total
=================  =======  =====  =================  ======  =====
``fp32_adam``      4        4      8                  0       16
``mixed_adam``     2        2      8                  4       16
``mixed_adam_hf``  6        4      8                  0       18   (HF: fp32 weights + fp16 copy, fp32 grads)
``*_inference``    4/2/1/½  0      0                  0       4/2/2/1/½
=================  =======  =====  =================  ======  =====

Activations come on top of that and depend on batch and sequence length: measure them with
:class:`SavedTensorLog` / :func:`saved_activation_bytes` rather than trusting a formula.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

__all__ = ["RECIPES", "MemoryBreakdown", "training_bytes", "finetune_bytes", "GB", "GiB", "notes_activation_bytes", "korthikanti_activation_bytes", "CheckpointedBlock", "checkpoint_blocks", "accumulate_gradients", "DynamicLossScaler", "kv_cache_bytes"]

GB = 1e9
GiB = 2 ** 30

# bytes per parameter: (weights, grads, optimizer, master)
RECIPES: dict[str, tuple[float, float, float, float]] = {
    "fp32_adam": (4, 4, 8, 0),
    "mixed_adam": (2, 2, 8, 4),
    "mixed_adam_hf": (6, 4, 8, 0),
    "fp32_inference": (4, 0, 0, 0),
    "fp16_inference": (2, 0, 0, 0),
    "bf16_inference": (2, 0, 0, 0),
    "int8_inference": (1, 0, 0, 0),
    "int4_inference": (0.5, 0, 0, 0),
}


@dataclass(frozen=True)
class MemoryBreakdown:
    """Bytes of model state, split by what holds them (activations are *not* included)."""

    label: str
    weights: float
    grads: float = 0.0
    optimizer: float = 0.0
    master: float = 0.0

    @property
    def total(self) -> float:
        return self.weights + self.grads + self.optimizer + self.master

    def as_dict(self, unit: float = GB, ndigits: int = 2) -> dict[str, Any]:
        """The breakdown in ``unit`` (GB = 1e9 bytes by default), rounded."""
        return {"recipe": self.label, **{k: round(getattr(self, k) / unit, ndigits)
                                         for k in ("weights", "grads", "optimizer", "master", "total")}}


def _check_count(n: Any, arg: str) -> None:
    if isinstance(n, bool) or not isinstance(n, (int, float)) or n < 0 or not math.isfinite(n):
        raise ValueError(f"`{arg}` must be a non-negative number of parameters, got {n!r}")


def training_bytes(n_params: float, recipe: str) -> MemoryBreakdown:
    """Model-state bytes of ``n_params`` parameters under ``recipe`` (see :data:`RECIPES`).

    ``mixed_adam``: fp16/bf16 weights (2) + fp16 grads (2) + fp32 Adam m and v (8) + fp32 master
    weights (4) = 16 B/param, the same 16 as plain fp32 Adam: mixed precision saves activation memory
    and time, not model-state memory.
    """
    _check_count(n_params, "n_params")
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; choose one of {sorted(RECIPES)}")
    w, g, o, m = RECIPES[recipe]
    return MemoryBreakdown(recipe, w * n_params, g * n_params, o * n_params, m * n_params)


def finetune_bytes(
    n_params: float, method: str, n_trainable: float = 0, *, n_unquantized: float = 0,
    nf4_bits: float = 4.0 + 8 / 64 + 32 / (64 * 256),
) -> MemoryBreakdown:
    """Model states for fine-tuning with mixed-precision Adam (16 B per *trainable* parameter).

    * ``"full"``: every parameter trainable: 16 B/param.
    * ``"lora"``: frozen base in bf16 (2 B/param) + ``n_trainable`` adapter params at 16 B.
    * ``"qlora"``: frozen base in NF4 with double quantization (``nf4_bits`` ≈ 4.127 bits/param) except
      ``n_unquantized`` params (embeddings, norms, ...) kept in bf16, + adapters at 16 B.
    """
    _check_count(n_params, "n_params")
    _check_count(n_trainable, "n_trainable")
    _check_count(n_unquantized, "n_unquantized")
    if method == "full":
        b = training_bytes(n_params, "mixed_adam")
        return MemoryBreakdown("full", b.weights, b.grads, b.optimizer, b.master)
    if method not in ("lora", "qlora"):
        raise ValueError(f"unknown method {method!r}; choose 'full', 'lora' or 'qlora'")
    if n_trainable == 0:
        raise ValueError(f"`n_trainable` (the adapter parameter count) is required for {method!r}")
    if method == "lora":
        base = 2.0 * n_params
    else:
        base = nf4_bits / 8 * (n_params - n_unquantized) + 2.0 * n_unquantized
    a = training_bytes(n_trainable, "mixed_adam")
    return MemoryBreakdown(method, base + a.weights, a.grads, a.optimizer, a.master)


def notes_activation_bytes(hidden: int, ffn_hidden: int, seq_len: int, n_layers: int, batch: int = 1) -> int:
    """The source notes' estimate ``(h + h_ff) · s · L · b`` at 1 byte per element (a large under-estimate)."""
    return (hidden + ffn_hidden) * seq_len * n_layers * batch


def korthikanti_activation_bytes(seq_len: int, batch: int, hidden: int, n_heads: int, n_layers: int) -> float:
    """Korthikanti et al. (2022) for a GPT block in fp16 with dropout: ``L · s·b·h · (34 + 5·a·s / h)``.

    The ``5·a·s²·b`` part is the attention scores, softmax output and dropout mask (quadratic in s)."""
    return n_layers * seq_len * batch * hidden * (34 + 5 * n_heads * seq_len / hidden)


# ------------------------------------------------------------------------------ measured activations


# ------------------------------------------------------------------------------ checkpointing
class CheckpointedBlock(nn.Module):
    """Wraps a block so its forward runs under ``torch.utils.checkpoint.checkpoint(use_reentrant=False)``:
    only the block's inputs are saved; its internals are recomputed during backward."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if not torch.is_grad_enabled():
            return self.block(*args, **kwargs)
        return checkpoint(self.block, *args, use_reentrant=False, **kwargs)


def checkpoint_blocks(blocks: nn.ModuleList, every: int = 1) -> int:
    """Wrap every ``every``-th block of ``blocks`` in :class:`CheckpointedBlock`, in place. Returns how many.

    Parameters stay the same objects, so optimizers and gradients are unaffected (state-dict keys gain
    a ``.block`` segment)."""
    if not isinstance(blocks, nn.ModuleList):
        raise TypeError(f"`blocks` must be an nn.ModuleList (e.g. model.model.layers), got {type(blocks).__name__}")
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ValueError(f"`every` must be a positive int, got {every!r}")
    n = 0
    for i in range(0, len(blocks), every):
        if not isinstance(blocks[i], CheckpointedBlock):
            blocks[i] = CheckpointedBlock(blocks[i])
            n += 1
    return n


# ------------------------------------------------------------------------------ gradient accumulation
def accumulate_gradients(
    model: nn.Module, loss_fn: Callable[[nn.Module, Any], Tensor], micro_batches: Sequence[Any],
    weights: Sequence[float] | None = None,
) -> dict[str, Tensor]:
    """Zero the grads, then ``(w_i · loss_fn(model, mb_i)).backward()`` for each micro-batch; return the grads.

    ``weights`` default to ``1/k`` (equal to one big batch when ``loss_fn`` is a mean over equally
    sized micro-batches). For token-mean losses with different token counts use ``n_i / Σ n``.
    """
    k = len(micro_batches)
    if k == 0:
        raise ValueError("`micro_batches` is empty")
    w = [1.0 / k] * k if weights is None else list(weights)
    if len(w) != k:
        raise ValueError(f"`weights` has {len(w)} entries for {k} micro-batches")
    model.zero_grad(set_to_none=True)
    for mb, wi in zip(micro_batches, w):
        (loss_fn(model, mb) * wi).backward()
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


# ------------------------------------------------------------------------------ loss scaling
@dataclass
class DynamicLossScaler:
    """Dynamic loss scaling for fp16 training, from scratch (same rules as ``torch.amp.GradScaler``).

    Multiply the loss by ``scale`` before backward so small gradients do not underflow fp16; divide the
    gradients by ``scale`` before the optimizer step. If any gradient is inf/NaN the step is **skipped**
    and ``scale *= backoff_factor``; after ``growth_interval`` consecutive clean steps
    ``scale *= growth_factor``.
    """

    init_scale: float = 2.0 ** 16
    growth_factor: float = 2.0
    backoff_factor: float = 0.5
    growth_interval: int = 2000
    scale: float = field(init=False)
    good_steps: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        if not self.init_scale > 0:
            raise ValueError(f"`init_scale` must be > 0, got {self.init_scale}")
        if not self.growth_factor > 1:
            raise ValueError(f"`growth_factor` must be > 1, got {self.growth_factor}")
        if not 0 < self.backoff_factor < 1:
            raise ValueError(f"`backoff_factor` must be in (0, 1), got {self.backoff_factor}")
        if isinstance(self.growth_interval, bool) or not isinstance(self.growth_interval, int) \
                or self.growth_interval < 1:
            raise ValueError(f"`growth_interval` must be a positive int, got {self.growth_interval!r}")
        self.scale = float(self.init_scale)

    def scale_loss(self, loss: Tensor) -> Tensor:
        return loss * self.scale

    def unscale_(self, params: Iterable[Tensor]) -> bool:
        """Divide each ``p.grad`` by ``scale`` in place; return True if any gradient is inf or NaN."""
        found_inf = False
        for p in params:
            if p.grad is not None:
                p.grad.div_(self.scale)
                found_inf |= not bool(torch.isfinite(p.grad).all())
        return found_inf

    def update(self, found_inf: bool) -> None:
        """Back off on overflow, grow after ``growth_interval`` clean steps in a row."""
        if found_inf:
            self.scale *= self.backoff_factor
            self.good_steps = 0
        else:
            self.good_steps += 1
            if self.good_steps == self.growth_interval:
                self.scale *= self.growth_factor
                self.good_steps = 0

    def step(self, optimizer: torch.optim.Optimizer, params: Iterable[Tensor]) -> bool:
        """Unscale, step unless there was an overflow, update the scale. Returns whether it stepped."""
        found_inf = self.unscale_(params)
        if not found_inf:
            optimizer.step()
        self.update(found_inf)
        return not found_inf

    def run_trace(self, overflows: Iterable[bool]) -> list[tuple[float, bool]]:
        """Feed a synthetic overflow trace; return ``(scale used at that step, stepped)`` per step."""
        out = []
        for ov in overflows:
            out.append((self.scale, not ov))
            self.update(bool(ov))
        return out


def kv_cache_bytes(
    n_layers: int, n_kv_heads: int, head_dim: int, seq_len: int, batch: int = 1, bytes_per_elem: int = 2
) -> int:
    """KV-cache size in bytes: ``2 (K and V) * n_layers * n_kv_heads * head_dim * seq_len * batch * bytes``.

    LLaMA-7B (32 layers, 32 KV heads of 128, fp16) at 2048 tokens: ``2*32*32*128*2048*2 = 2**30`` (1 GiB).
    """
    args = dict(n_layers=n_layers, n_kv_heads=n_kv_heads, head_dim=head_dim, seq_len=seq_len, batch=batch,
                bytes_per_elem=bytes_per_elem)
    for name, val in args.items():
        if not isinstance(val, int) or isinstance(val, bool) or val < 0:
            raise ValueError(f"{name} must be a non-negative int, got {val!r}")
    return 2 * n_layers * n_kv_heads * head_dim * seq_len * batch * bytes_per_elem
