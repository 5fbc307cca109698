"""Memory accounting by formula (显存估算, chapter 11): model-state bytes per training / fine-tuning recipe,
activation estimates and the KV-cache size.

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
:class:`labkit.memory.SavedTensorLog` / :func:`labkit.memory.saved_activation_bytes` (:mod:`labkit.memory.measure`)
rather than trusting a formula. The techniques that trade memory for compute are in
:mod:`labkit.memory.checkpointing`, :mod:`labkit.memory.accumulation` and :mod:`labkit.memory.mixed_precision`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

__all__ = ["RECIPES", "MemoryBreakdown", "training_bytes", "finetune_bytes", "GB", "GiB", "notes_activation_bytes",
           "korthikanti_activation_bytes", "kv_cache_bytes"]
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
        """weights + grads + optimizer + master, in bytes."""
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


# ------------------------------------------------------------------------------ inference
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
