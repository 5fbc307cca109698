"""Hidden tests of chapter 13's lab task: the LoRA linear layer as functions (forward, merge, unmerge).

Reference: ``peft``'s LoRA layer (``peft.tuners.lora.Linear`` wrapping an ``nn.Linear``, peft 0.21), with
``lora_alpha != r`` so that a missing or inverted scale fails: its eval-mode forward, its train-mode forward
with ``lora_dropout`` (the same dropout mask drawn under the same seed), its ``merge()`` and ``unmerge()``;
plus float64 worked values (``B = 0`` is the base layer; rank 1; the update's rank is at most ``r``).
Random sizes (odd widths, ``r`` larger than a side), 2-D and 3-D inputs, with and without bias.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from peft import LoraConfig
from peft.tuners.lora import Linear as PeftLoraLinear
from torch import nn

from labkit.core.check import close, exact
from labkit.course.hidden.base import Check, Forbidden, Learner, Task

__all__ = ["TASKS"]


def _n(g: torch.Generator, lo: int, hi: int) -> int:
    return int(torch.randint(lo, hi + 1, (1,), generator=g))


def _alpha(g: torch.Generator, r: int) -> int:
    """An integer alpha different from r (alpha = r would hide a missing scale)."""
    a = _n(g, 1, 48)
    return a + 1 if a == r else a


def _peft_layer(g: torch.Generator, d_in: int, d_out: int, r: int, alpha: int, bias: bool,
                dropout: float = 0.0, dtype: torch.dtype = torch.float32) -> PeftLoraLinear:
    """peft's LoRA layer around a random nn.Linear, with random A and a random non-zero B."""
    base = nn.Linear(d_in, d_out, bias=bias).to(dtype)
    layer = PeftLoraLinear(base, "default", LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout),
                           r=r, lora_alpha=alpha, lora_dropout=dropout)
    with torch.no_grad():
        base.weight.copy_(torch.randn(d_out, d_in, generator=g, dtype=dtype) / d_in ** 0.5)
        if bias:
            base.bias.copy_(torch.randn(d_out, generator=g, dtype=dtype))
        layer.lora_A["default"].weight.copy_(torch.randn(r, d_in, generator=g, dtype=dtype) / d_in ** 0.5)
        layer.lora_B["default"].weight.copy_(torch.randn(d_out, r, generator=g, dtype=dtype))
    return layer


def _parts(layer: PeftLoraLinear) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """(W0, b, A, B) of a peft layer, detached copies (the learner cannot change peft's tensors)."""
    base = layer.get_base_layer()
    b = None if base.bias is None else base.bias.detach().clone()
    return (base.weight.detach().clone(), b, layer.lora_A["default"].weight.detach().clone(),
            layer.lora_B["default"].weight.detach().clone())


def _x(g: torch.Generator, d_in: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A 2-D (N, d_in) or 3-D (batch, T, d_in) input, at random."""
    shape = (_n(g, 1, 7), d_in) if _n(g, 0, 1) else (_n(g, 1, 3), _n(g, 2, 9), d_in)
    return torch.randn(shape, generator=g, dtype=dtype)


def _sizes(g: torch.Generator) -> tuple[int, int, int]:
    d_in, d_out = _n(g, 3, 37), _n(g, 2, 29)
    return d_in, d_out, _n(g, 1, min(7, d_in + 3))   # r may exceed d_in or d_out


# ---- 13.A lora_forward, lora_merge, lora_unmerge ---------------------------------------------------------
def _forward_eval(L: Learner, g: torch.Generator) -> None:
    for bias in (True, False, bool(_n(g, 0, 1))):
        d_in, d_out, r = _sizes(g)
        alpha = _alpha(g, r)
        layer = _peft_layer(g, d_in, d_out, r, alpha, bias).eval()
        x = _x(g, d_in)
        with torch.no_grad():
            ref = layer(x)
        W0, b, A, B = _parts(layer)
        out = L.lora_forward(x.clone(), W0, b, A, B, alpha)
        close(out, ref, atol=1e-5, rtol=1e-5, quiet=True,
              name=f"lora_forward == peft's LoRA Linear (eval), x {tuple(x.shape)}, d_out {d_out}, r {r}, "
                   f"lora_alpha {alpha} (scaling α/r = {alpha / r:.4f}), bias {bias}")


def _forward_dropout(L: Learner, g: torch.Generator) -> None:
    for _ in range(2):
        d_in, d_out, r = _sizes(g)
        alpha, p = _alpha(g, r), [0.1, 0.3, 0.5][_n(g, 0, 2)]
        layer = _peft_layer(g, d_in, d_out, r, alpha, True, dropout=p).train()
        x = _x(g, d_in)
        seed = _n(g, 0, 10_000)
        torch.manual_seed(seed)
        with torch.no_grad():
            ref = layer(x)
        torch.manual_seed(seed)                                  # the mask peft's nn.Dropout drew
        mask = F.dropout(torch.ones_like(x), p, training=True)
        W0, b, A, B = _parts(layer)
        out = L.lora_forward(x.clone(), W0, b, A, B, alpha, mask)
        close(out, ref, atol=1e-5, rtol=1e-5, quiet=True,
              name=f"train mode, lora_dropout {p}: lora_forward(..., mask) == peft's LoRA Linear under the same "
                   "seed (the mask multiplies the LoRA path's input only; the base path sees the whole x)")


def _merge(L: Learner, g: torch.Generator) -> None:
    for bias in (True, False):
        d_in, d_out, r = _sizes(g)
        alpha = _alpha(g, r)
        layer = _peft_layer(g, d_in, d_out, r, alpha, bias).eval()
        W0, b, A, B = _parts(layer)
        W0_before = W0.clone()
        merged = L.lora_merge(W0, A, B, alpha)
        exact(W0, W0_before, quiet=True, name="lora_merge returns a new tensor and leaves W0 as it was")
        x = _x(g, d_in)
        with torch.no_grad():
            unmerged_out = layer(x)
            layer.merge()
        close(merged, layer.get_base_layer().weight, atol=1e-5, rtol=1e-5, quiet=True,
              name=f"lora_merge == peft's merge() (d_in {d_in}, d_out {d_out}, r {r}, lora_alpha {alpha})")
        close(F.linear(x, merged, b), unmerged_out, atol=1e-4, rtol=1e-5, quiet=True,
              name="one matmul with the merged weight == the unmerged LoRA layer")


def _unmerge(L: Learner, g: torch.Generator) -> None:
    d_in, d_out, r = _sizes(g)
    alpha = _alpha(g, r)
    layer = _peft_layer(g, d_in, d_out, r, alpha, True).eval()
    W0, _, A, B = _parts(layer)
    with torch.no_grad():
        layer.merge()
    W = layer.get_base_layer().weight.detach().clone()
    W_before = W.clone()
    back = L.lora_unmerge(W, A, B, alpha)
    exact(W, W_before, quiet=True, name="lora_unmerge returns a new tensor and leaves its input as it was")
    with torch.no_grad():
        layer.unmerge()
    close(back, layer.get_base_layer().weight, atol=1e-5, rtol=1e-5, quiet=True,
          name=f"lora_unmerge == peft's unmerge() (r {r}, lora_alpha {alpha})")
    close(back, W0, atol=1e-5, rtol=1e-5, quiet=True, name="unmerge(merge(W0)) gives W0 back")


def _worked(L: Learner, g: torch.Generator) -> None:
    d_in, d_out = _n(g, 4, 19), _n(g, 3, 17)
    dt = torch.float64
    W0, b = torch.randn(d_out, d_in, generator=g, dtype=dt), torch.randn(d_out, generator=g, dtype=dt)
    x = torch.randn(_n(g, 1, 5), d_in, generator=g, dtype=dt)
    A = torch.randn(3, d_in, generator=g, dtype=dt)
    close(L.lora_forward(x, W0, b, A, torch.zeros(d_out, 3, dtype=dt), 7.0), x @ W0.T + b, atol=1e-12, quiet=True,
          name="B = 0 (LoRA's initialization): exactly the base layer x W0ᵀ + b (float64)")
    a, c = torch.randn(1, d_in, generator=g, dtype=dt), torch.randn(d_out, 1, generator=g, dtype=dt)
    close(L.lora_forward(x, W0, None, a, c, 5.0), x @ W0.T + 5.0 * (x @ a.T) @ c.T, atol=1e-10, quiet=True,
          name="rank 1, alpha 5, no bias: x W0ᵀ + 5·(x aᵀ) cᵀ (float64)")
    r = _n(g, 1, min(d_in, d_out) - 1)
    A, B = torch.randn(r, d_in, generator=g, dtype=dt), torch.randn(d_out, r, generator=g, dtype=dt)
    delta = L.lora_merge(W0, A, B, 2.0 * r + 1) - W0
    exact(int(torch.linalg.matrix_rank(delta)), r, quiet=True,
          name=f"the merged update W − W0 has rank r = {r} (float64, d_in {d_in}, d_out {d_out})")


_FORBIDDEN = Forbidden(packages=("labkit", "peft"))

TASKS = (
    Task("13.A", "the LoRA linear layer: forward (with dropout on the LoRA path), merge, unmerge",
         ("lora_forward", "lora_merge", "lora_unmerge"), (
             Check("eval forward == peft's LoRA Linear (lora_alpha ≠ r, 2-D/3-D x, with/without bias)", 3,
                   _forward_eval),
             Check("train forward with a dropout mask == peft's LoRA Linear (lora_dropout) under the same seed", 1,
                   _forward_dropout),
             Check("merge == peft's merge(), W0 untouched, merged matmul == unmerged layer", 2, _merge),
             Check("unmerge == peft's unmerge(), gives W0 back, input untouched", 1, _unmerge),
             Check("worked values in float64: B = 0, rank 1, rank of the update", 1, _worked),
         ), _FORBIDDEN),
)
