"""Normalization layers: LayerNorm, RMSNorm (LLaMA numerics) and DeepNorm (chapter 05).

All normalize over the last dim ``H``:

* LayerNorm: ``y = (x - mean) / sqrt(var + eps) * weight + bias`` with the *biased* variance (1/H),
  exactly as ``torch.nn.LayerNorm``;
* RMSNorm: ``y = x / sqrt(mean(x^2) + eps) * weight``: no centering, no bias; half precision is computed
  in float32 and cast back before the weight, as HF ``LlamaRMSNorm`` (float64 stays float64);
* DeepNorm (post-LN for very deep stacks): ``x_{l+1} = LN(alpha * x_l + f(x_l))`` and the branch weights
  ``ffn``, ``v_proj``, ``o_proj`` initialised with Xavier-normal gain ``beta`` (``q_proj``, ``k_proj``: gain 1).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

__all__ = ["LayerNorm", "RMSNorm", "deepnorm_constants", "deepnorm_init_", "DeepNormResidual"]


def _check_dim(dim: int, eps: float) -> None:
    if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
        raise ValueError(f"dim must be a positive int (the size of the last axis), got {dim!r}")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)):
        raise TypeError(f"eps must be a number > 0 (e.g. 1e-5), got {type(eps).__name__}")
    if not eps > 0:
        raise ValueError(f"eps must be > 0 (it keeps the division finite), got {eps!r}")


def _check_input(x: Tensor, dim: int) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor of shape (..., {dim}), got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got dtype {x.dtype}; normalizing integers would "
                        "round the result to 0/±1 (convert first, e.g. x.float())")
    if x.shape[-1:] != (dim,):
        raise ValueError(f"x must have last dim {dim}, got shape {tuple(x.shape)}")


class LayerNorm(nn.Module):
    r"""LayerNorm over the last dim: :math:`y = \frac{x-\mu}{\sqrt{\sigma^2+\epsilon}}\gamma + \beta`.

    :math:`\mu = \frac1H\sum_i x_i`, :math:`\sigma^2 = \frac1H\sum_i (x_i-\mu)^2` (biased). Parameters
    ``weight`` (γ, ones) and ``bias`` (β, zeros), shape ``(dim,)``. x ``(..., dim)`` -> ``(..., dim)``.
    """

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        _check_dim(dim, eps)
        self.dim, self.eps = dim, eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: Tensor) -> Tensor:
        _check_input(x, self.dim)
        mu = x.mean(dim=-1, keepdim=True)
        var = (x - mu).pow(2).mean(dim=-1, keepdim=True)  # biased: divide by H, not H - 1
        return (x - mu) * torch.rsqrt(var + self.eps) * self.weight + self.bias

    def extra_repr(self) -> str:
        return f"{self.dim}, eps={self.eps}"


class RMSNorm(nn.Module):
    r"""RMSNorm: :math:`y = \frac{x}{\sqrt{\frac1H\sum_i x_i^2 + \epsilon}}\,\gamma` (no centering, no bias).

    Numerics as HF ``LlamaRMSNorm``: normalize in at least float32 (fp16/bf16 are upcast to float32, float64
    stays float64, never below the input's precision), cast back to the input dtype, then multiply by
    ``weight`` (ones, shape ``(dim,)``). Scale invariant: ``RMSNorm(c x) == RMSNorm(x)`` for ``c > 0``
    (up to eps). An integer ``x`` is a TypeError.
    """

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        _check_dim(dim, eps)
        self.dim, self.eps = dim, eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        _check_input(x, self.dim)
        dtype = x.dtype
        h = x.to(torch.promote_types(dtype, torch.float32))   # fp16/bf16 -> fp32; fp32, fp64 unchanged
        h = h * torch.rsqrt(h.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return self.weight * h.to(dtype)

    def extra_repr(self) -> str:
        return f"{self.dim}, eps={self.eps}"


def deepnorm_constants(n_encoder_layers: int, n_decoder_layers: int) -> dict[str, tuple[float, float] | None]:
    r"""DeepNorm's :math:`(\alpha, \beta)` (Wang et al. 2022, "DeepNet", Table/Fig. 2).

    Returns ``{"encoder": (alpha, beta) or None, "decoder": (alpha, beta) or None}`` (``None`` for a stack
    with 0 layers). With N encoder and M decoder layers:

    * encoder-only (M = 0): :math:`\alpha = (2N)^{1/4},\ \beta = (8N)^{-1/4}`;
    * decoder-only (N = 0): :math:`\alpha = (2M)^{1/4},\ \beta = (8M)^{-1/4}`;
    * encoder-decoder: encoder :math:`\alpha = 0.81(N^4M)^{1/16},\ \beta = 0.87(N^4M)^{-1/16}`,
      decoder :math:`\alpha = (3M)^{1/4},\ \beta = (12M)^{-1/4}`.

    α up-weights the residual inside the post-LN, ``LN(alpha * x + f(x))``; β is the Xavier gain for the
    ``ffn``, ``v_proj`` and ``o_proj`` weights (``q_proj``/``k_proj`` keep gain 1).
    """
    for name, val in (("n_encoder_layers", n_encoder_layers), ("n_decoder_layers", n_decoder_layers)):
        if not isinstance(val, int) or isinstance(val, bool) or val < 0:
            raise ValueError(f"{name} must be a non-negative int, got {val!r}")
    N, M = n_encoder_layers, n_decoder_layers
    if N == 0 and M == 0:
        raise ValueError("n_encoder_layers and n_decoder_layers are both 0; give at least one layer")
    if M == 0:
        return {"encoder": ((2 * N) ** 0.25, (8 * N) ** -0.25), "decoder": None}
    if N == 0:
        return {"encoder": None, "decoder": ((2 * M) ** 0.25, (8 * M) ** -0.25)}
    g = (N**4 * M) ** (1 / 16)
    return {"encoder": (0.81 * g, 0.87 / g), "decoder": ((3 * M) ** 0.25, (12 * M) ** -0.25)}


def deepnorm_init_(weight: Tensor, beta: float) -> Tensor:
    """Xavier-normal init with gain ``beta`` in place (DeepNorm for ``ffn``, ``v_proj``, ``o_proj``)."""
    if not 0 < beta:
        raise ValueError(f"beta must be > 0, got {beta}")
    return nn.init.xavier_normal_(weight, gain=beta)


class DeepNormResidual(nn.Module):
    """Post-LN residual with DeepNorm's up-weighting: ``LayerNorm(alpha * x + sublayer(x))``.

    ``alpha = 1`` is the plain post-LN block. x ``(..., dim)`` -> ``(..., dim)``.
    """

    def __init__(self, dim: int, sublayer: Callable[[Tensor], Tensor] | nn.Module, alpha: float = 1.0,
                 eps: float = 1e-5) -> None:
        super().__init__()
        if not alpha > 0:
            raise ValueError(f"alpha must be > 0, got {alpha}")
        self.alpha = float(alpha)
        self.sublayer = sublayer
        self.norm = LayerNorm(dim, eps=eps)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.alpha * x + self.sublayer(x))
