"""QLoRA (chapter 13): LoRA on a frozen base weight stored in 4-bit NF4 and dequantized on the fly.

The base weight ``W0 (d_out, d_in)`` is kept as NF4 codes (``labkit.quant``, chapter 10), two codes per byte,
plus one fp32 absmax per block of ``block_size`` weights (≈ 4.5 bits per weight for block 64); each matmul
dequantizes ``Ŵ = NF4[codes] · absmax`` and LoRA trains on top::

    y = x Ŵᵀ + b + (α / r) · dropout(x) Aᵀ Bᵀ

The base matmul is a custom autograd function (:class:`_NF4Matmul`) that saves only the 4-bit codes (not the
dequantized weight) for the backward pass, as bitsandbytes does.
"""
from __future__ import annotations

import torch
from torch import nn

from labkit.finetune.lora.layer import LoRALinear
from labkit.quant import nf4_dequantize, nf4_quantize

__all__ = ["QLoRALinear"]


class _NF4Matmul(torch.autograd.Function):
    """``y = x Ŵᵀ`` with ``Ŵ = dequant(codes)``; saves the 4-bit codes, re-dequantizes in backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, layer: "QLoRALinear") -> torch.Tensor:  # type: ignore[override]
        ctx.layer = layer
        return x @ layer.dequantized_weight().to(x.dtype).t()

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[override]
        w = ctx.layer.dequantized_weight().to(grad_out.dtype)
        return grad_out @ w, None  # the base is frozen: no gradient for the codes


class QLoRALinear(LoRALinear):
    """LoRA on top of a frozen base weight stored in NF4 (4-bit NormalFloat) with block-wise absmax.

    Storage of the base: ``d_out·d_in / 2`` bytes of packed codes + 4 bytes per block of ``block_size``
    weights (≈ 4.5 bits per weight for block 64), instead of 32 bits. The LoRA factors stay in fp32.
    Forward: ``y = x Ŵᵀ + b + (α/r)·dropout(x)AᵀBᵀ`` with ``Ŵ`` dequantized on the fly.
    A QLoRA layer cannot be merged in place (that would re-quantize ``W0 + ΔW`` and lose the update's
    precision); use :meth:`merged_linear` to get a float ``nn.Linear`` with the update folded in.
    """

    def __init__(self, base: nn.Linear, r: int, alpha: float, dropout: float = 0.0,
                 block_size: int = 64) -> None:
        if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 2 or block_size % 2:
            raise ValueError(f"block_size must be an even int >= 2, got {block_size!r}")
        self._block_size = block_size
        super().__init__(base, r, alpha, dropout)

    def _attach_base(self, base: nn.Linear) -> None:
        w = base.weight.detach().float()
        codes, absmax = nf4_quantize(w, block_size=self._block_size)
        codes = codes.to(torch.uint8).reshape(-1)
        if codes.numel() % 2:
            codes = torch.cat([codes, codes.new_zeros(1)])
        self.register_buffer("codes", codes[0::2] | (codes[1::2] << 4))  # two 4-bit codes per byte
        self.register_buffer("absmax", absmax.float())
        self.register_buffer("base_bias", None if base.bias is None else base.bias.detach().clone())
        self.block_size = self._block_size
        self.weight_shape = tuple(w.shape)
        self._dtype = w.dtype

    def dequantized_weight(self) -> torch.Tensor:
        """``Ŵ = NF4[codes] · absmax`` per block, shape ``(d_out, d_in)``, float32."""
        n = self.weight_shape[0] * self.weight_shape[1]
        pad = (-n) % self.block_size
        codes = torch.stack([self.codes & 0x0F, self.codes >> 4], dim=1).reshape(-1)[: n + pad]
        return nf4_dequantize(codes, self.absmax, self.block_size, self.weight_shape)

    def _base_weight(self) -> torch.Tensor:
        return self.dequantized_weight()

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base_bias

    def _base_forward(self, x: torch.Tensor) -> torch.Tensor:
        y = _NF4Matmul.apply(x, self)
        return y if self.base_bias is None else y + self.base_bias

    def base_bytes(self) -> int:
        """Bytes that hold the frozen base: packed codes + absmax (+ bias)."""
        b = self.codes.numel() * self.codes.element_size() + self.absmax.numel() * self.absmax.element_size()
        return b + (0 if self.base_bias is None else self.base_bias.numel() * self.base_bias.element_size())

    def merge(self) -> None:
        raise ValueError("a QLoRA layer cannot be merged in place: its base is 4-bit NF4 and re-quantizing "
                         "W0 + ΔW would destroy the update. Use layer.merged_linear() for a float copy")

    def unmerge(self) -> None:
        raise ValueError("a QLoRA layer is never merged; nothing to unmerge")

    @torch.no_grad()
    def merged_linear(self) -> nn.Linear:
        """A float ``nn.Linear`` with weight ``Ŵ + (α/r)BA`` (the dequantized base plus the update)."""
        lin = nn.Linear(self.in_features, self.out_features, bias=self.base_bias is not None)
        lin.weight.copy_(self.dequantized_weight() + self.delta_weight())
        if self.base_bias is not None:
            lin.bias.copy_(self.base_bias)
        return lin.requires_grad_(False)
