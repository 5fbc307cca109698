"""Parameter counts (chapter 13): LoRA's trainable parameters from a config, and trainable / total of a model.

For a LLaMA config with ``L`` layers, LoRA of rank ``r`` on projections ``targets`` trains
``L · Σ_targets r · (d_in + d_out)`` parameters instead of ``L · Σ_targets d_in · d_out``.
:func:`count_trainable` is the one home of the ``(trainable, total)`` count used by LoRA and the PEFT methods.
"""
from __future__ import annotations

from typing import Any, Sequence

from torch import nn

from labkit.finetune.lora.layer import _check_hparams

__all__ = ["lora_param_count", "count_trainable"]


def _linear_shapes(config: Any) -> tuple[int, dict[str, tuple[int, int]]]:
    """``(n_layers, {projection: (d_in, d_out)})`` of a LLaMA config (labkit, transformers or dict)."""
    get = (config.get if isinstance(config, dict) else lambda k, d=None: getattr(config, k, d))
    d = get("hidden_size") or get("dim")
    L = get("num_hidden_layers") or get("n_layers")
    h = get("num_attention_heads") or get("n_heads")
    f = get("intermediate_size") or get("hidden_dim")
    if not all(isinstance(v, int) and v > 0 for v in (d, L, h, f)):
        raise TypeError("config must give hidden_size/dim, num_hidden_layers/n_layers, "
                        "num_attention_heads/n_heads and intermediate_size/hidden_dim as positive ints")
    kv = get("num_key_value_heads") or get("n_kv_heads") or h
    hd = get("head_dim") or d // h
    shapes = {"q_proj": (d, h * hd), "k_proj": (d, kv * hd), "v_proj": (d, kv * hd), "o_proj": (h * hd, d),
              "gate_proj": (d, f), "up_proj": (d, f), "down_proj": (f, d)}
    return L, shapes


def lora_param_count(config: Any, targets: Sequence[str], r: int) -> int:
    """Trainable LoRA parameters for a LLaMA config: ``L · Σ_targets r · (d_in + d_out)``.

    >>> lora_param_count(dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32,
    ...                       intermediate_size=11008), ["q_proj", "v_proj"], 8)
    4194304
    """
    _check_hparams(r, 1.0, 0.0)
    L, shapes = _linear_shapes(config)
    bad = [t for t in targets if t not in shapes]
    if bad or isinstance(targets, str):
        raise ValueError(f"unknown target(s) {bad or targets!r}; choose from {list(shapes)}")
    return L * sum(r * sum(shapes[t]) for t in targets)


def count_trainable(model: nn.Module) -> tuple[int, int]:
    """``(trainable, total)`` parameter counts (unique tensors; NF4 buffers are not parameters)."""
    seen: dict[int, nn.Parameter] = {id(p): p for p in model.parameters()}
    total = sum(p.numel() for p in seen.values())
    trainable = sum(p.numel() for p in seen.values() if p.requires_grad)
    return trainable, total
