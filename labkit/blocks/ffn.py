"""Feed-forward blocks and their activations: GELU, SiLU/Swish, GLU, GeGLU, SwiGLU (chapter 06).

* classic FFN: ``FFN(x) = W2 f(W1 x + b1) + b2`` with inner size ``4 d`` (two matrices, ``8 d^2`` weights);
* gated FFN (Shazeer 2020): ``FFN(x) = W_down (f(W_gate x) * W_up x)``: three matrices, so the inner size
  shrinks to ``(2/3) 4 d = 8d/3`` for the same budget; LLaMA rounds it up to a multiple of 256
  (4096 -> 11008). ``f = SiLU`` gives SwiGLU (LLaMA), ``f = GELU`` GeGLU, ``f = sigmoid`` the original GLU.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["gelu", "silu", "swish", "glu", "FeedForward", "GeGLU", "SwiGLU", "llama_hidden_dim"]


def gelu(x: Tensor, approximate: str = "none") -> Tensor:
    r"""GELU :math:`x\,\Phi(x)`.

    ``"none"``: :math:`\frac{x}{2}\,(1 + \mathrm{erf}(x/\sqrt2))` (exact).
    ``"tanh"``: :math:`\frac{x}{2}\,(1 + \tanh(\sqrt{2/\pi}\,(x + 0.044715 x^3)))` (GPT-2's approximation,
    within 5e-4 of the exact one).
    """
    if approximate == "none":
        return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))
    if approximate == "tanh":
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))
    raise ValueError(f'approximate must be "none" or "tanh", got {approximate!r}')


def swish(x: Tensor, beta: float = 1.0) -> Tensor:
    r"""Swish :math:`x\,\sigma(\beta x)`; ``beta = 1`` is SiLU, ``beta -> inf`` tends to ReLU."""
    return x * torch.sigmoid(beta * x)


def silu(x: Tensor) -> Tensor:
    r"""SiLU :math:`x\,\sigma(x)` (Swish with beta = 1)."""
    return x * torch.sigmoid(x)


def glu(x: Tensor, dim: int = -1) -> Tensor:
    r"""GLU on a tensor split in two halves ``[a, b]`` along ``dim``: :math:`a \otimes \sigma(b)`
    (as ``torch.nn.functional.glu``); the size of ``dim`` must be even."""
    if x.shape[dim] % 2:
        raise ValueError(f"glu needs an even size along dim={dim}, got shape {tuple(x.shape)}")
    a, b = x.chunk(2, dim=dim)
    return a * torch.sigmoid(b)


def _check_sizes(dim: int, hidden_dim: int) -> None:
    for name, val in (("dim", dim), ("hidden_dim", hidden_dim)):
        if not isinstance(val, int) or isinstance(val, bool) or val < 1:
            raise ValueError(f"{name} must be a positive int, got {val!r}")


class FeedForward(nn.Module):
    """Classic transformer FFN: ``fc2(gelu(fc1(x)))``, ``dim -> hidden_dim (default 4 dim) -> dim``, with bias."""

    def __init__(self, dim: int, hidden_dim: int | None = None, bias: bool = True,
                 approximate: str = "none") -> None:
        super().__init__()
        hidden_dim = 4 * dim if hidden_dim is None else hidden_dim
        _check_sizes(dim, hidden_dim)
        gelu(torch.zeros(1), approximate)  # validate early
        self.approximate = approximate
        self.fc1 = nn.Linear(dim, hidden_dim, bias=bias)
        self.fc2 = nn.Linear(hidden_dim, dim, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(gelu(self.fc1(x), self.approximate))


class _GatedFFN(nn.Module):
    """``down_proj(act(gate_proj(x)) * up_proj(x))``: ``(..., dim) -> (..., dim)``, inner size ``hidden_dim``."""

    def __init__(self, dim: int, hidden_dim: int, bias: bool = False) -> None:
        super().__init__()
        _check_sizes(dim, hidden_dim)
        self.gate_proj = nn.Linear(dim, hidden_dim, bias=bias)
        self.up_proj = nn.Linear(dim, hidden_dim, bias=bias)
        self.down_proj = nn.Linear(hidden_dim, dim, bias=bias)

    def act(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))


class SwiGLU(_GatedFFN):
    r"""LLaMA's FFN: :math:`W_{down}\,(\mathrm{SiLU}(W_{gate}x) \otimes W_{up}x)`; equals HF ``LlamaMLP``
    with the same weights (names ``gate_proj, up_proj, down_proj``)."""

    def act(self, x: Tensor) -> Tensor:
        return silu(x)


class GeGLU(_GatedFFN):
    r""":math:`W_{down}\,(\mathrm{GELU}(W_{gate}x) \otimes W_{up}x)` (exact erf GELU)."""

    def act(self, x: Tensor) -> Tensor:
        return gelu(x)


def llama_hidden_dim(dim: int, multiple_of: int = 256, ffn_dim_multiplier: float | None = None) -> int:
    """LLaMA's SwiGLU inner size: ``h = int(2 * 4 dim / 3)``, times ``ffn_dim_multiplier`` if given, rounded
    *up* to a multiple of ``multiple_of``. ``llama_hidden_dim(4096) = 11008`` (256 * ceil(10922 / 256)).
    """
    _check_sizes(dim, 1)
    if not isinstance(multiple_of, int) or multiple_of < 1:
        raise ValueError(f"multiple_of must be a positive int, got {multiple_of!r}")
    hidden = int(2 * (4 * dim) / 3)
    if ffn_dim_multiplier is not None:
        if not ffn_dim_multiplier > 0:
            raise ValueError(f"ffn_dim_multiplier must be > 0 or None, got {ffn_dim_multiplier!r}")
        hidden = int(ffn_dim_multiplier * hidden)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)
