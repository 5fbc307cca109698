"""Bottleneck adapters (适配器, Houlsby et al. 2019), chapter 14: ``A(h) = h + U σ(D h)`` after a sublayer.

In a LLaMA block the adapter acts on each chosen sublayer's output inside the residual branch::

    x ──► RMSNorm ──► attention ──► [adapter] ──(+x)──► RMSNorm ──► SwiGLU ──► [adapter] ──(+)──►

``D (m×d)`` down-projects to the bottleneck width ``m``, ``U (d×m)`` projects back and starts at zero, so
``A`` is the identity and the model is unchanged at init. Trainable per adapter: ``2·d·m + d + m``.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from labkit.finetune.peft.common import _check_llama, _freeze, _pos_int
from labkit.model import Llama

__all__ = ["BottleneckAdapter", "adapter_param_count", "add_adapters"]


_ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu, "silu": F.silu}


class BottleneckAdapter(nn.Module):
    """``A(h) = h + U σ(D h)``: down-project ``dim → bottleneck``, nonlinearity, up-project back, residual.

    ``D`` (``down``) has nn.Linear's default init; ``U`` (``up``) is **zero** (weight and bias), so at
    init ``A(h) = h`` exactly and the adapted model equals the base. Shapes: ``h (..., dim) → (..., dim)``.
    Parameters: ``2·dim·bottleneck + dim + bottleneck``.
    """

    def __init__(self, dim: int, bottleneck: int, activation: str = "relu") -> None:
        super().__init__()
        _pos_int("dim", dim, "it is the width of the hidden states")
        _pos_int("bottleneck", bottleneck, "typical values are dim/16 .. dim/4")
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
        self.dim, self.bottleneck, self.activation = dim, bottleneck, activation
        self.down = nn.Linear(dim, bottleneck)
        self.up = nn.Linear(bottleneck, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, h: Tensor) -> Tensor:
        return h + self.up(_ACTIVATIONS[self.activation](self.down(h)))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, bottleneck={self.bottleneck}, activation={self.activation}"


def adapter_param_count(dim: int, bottleneck: int, n_layers: int, n_per_layer: int = 2) -> int:
    """``n_layers · n_per_layer · (2·dim·m + dim + m)``; e.g. d=64, m=16: one adapter = 2,128."""
    return n_layers * n_per_layer * (2 * dim * bottleneck + dim + bottleneck)


def _adapter_hook(module: nn.Module, args: Any, output: Tensor) -> Tensor:
    return module.adapter(output)


def add_adapters(model: Llama, bottleneck: int, where: Sequence[str] = ("attn", "mlp"),
                 activation: str = "relu") -> list[str]:
    """Houlsby adapters: one :class:`BottleneckAdapter` after each chosen sublayer of every block (in place).

    The block becomes ``h = x + A_attn(attn(norm(x)))``, ``out = h + A_mlp(mlp(norm(h)))``: the adapter acts
    on the sublayer's output *inside* the residual branch. The adapter is registered as a child named
    ``adapter`` of ``self_attn`` / ``mlp`` (so the base weights keep their names) and applied by a forward
    hook. Everything else is frozen. Returns the names of the adapter modules.

    Raises:
        ValueError: ``bottleneck < 1``; ``where`` empty or not a subset of ``("attn", "mlp")``; the model
            already has adapters.
    """
    _check_llama(model, "add_adapters")
    _pos_int("bottleneck", bottleneck, "typical values are dim/16 .. dim/4")
    if isinstance(where, str):
        where = (where,)
    where = tuple(where)
    bad = [w for w in where if w not in ("attn", "mlp")]
    if not where or bad or len(set(where)) != len(where):
        raise ValueError(f"where must be a non-empty subset of ('attn', 'mlp') without repeats, got {where!r}")
    if any(hasattr(m, "adapter") for layer in model.model.layers for m in (layer.self_attn, layer.mlp)):
        raise ValueError("the model already has adapters; adding them twice would stack two per sublayer. "
                         "Start from a fresh model (labkit.model.load_pretrained())")
    _freeze(model)
    names = []
    for i, layer in enumerate(model.model.layers):
        for w in where:
            sub = layer.self_attn if w == "attn" else layer.mlp
            sub.adapter = BottleneckAdapter(model.config.dim, bottleneck, activation)
            sub.register_forward_hook(_adapter_hook)
            names.append(f"model.layers.{i}.{'self_attn' if w == 'attn' else 'mlp'}.adapter")
    return names
