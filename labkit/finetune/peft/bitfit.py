"""BitFit (Ben Zaken et al. 2022), chapter 14: train only the bias terms, ``y = W x + b`` with ``W`` frozen.

LLaMA's linear layers have **no biases**, so :func:`apply_bitfit` *adds* zero-initialized biases (identity at
init) and trains those; optionally the RMSNorm scales as well (the closest thing to LayerNorm's bias/gain
that BitFit trained).
"""
from __future__ import annotations

import torch
from torch import nn

from labkit.finetune.peft.common import _check_llama, _freeze
from labkit.model import Llama

__all__ = ["apply_bitfit"]


def apply_bitfit(model: Llama, norms: bool = False) -> list[str]:
    """BitFit for a bias-free LLaMA: give every ``nn.Linear`` inside the decoder blocks a **zero** bias and
    train only those (in place). ``norms=True`` also trains the RMSNorm scales (not biases, say so if you
    report it). ``lm_head`` and the embedding stay frozen (they are tied in the shipped model).

    Zero biases leave every output unchanged, so the model is the base model at init. Trainable: the sum
    of the output widths of the 7 projections of each block, ``L·(h·hd + 2·kv·hd + d + 2·f + d)``.
    Returns the names of the trainable parameters.

    Raises:
        ValueError: the model already has biases (BitFit applied twice, or a model with biases: then train
            those directly).
    """
    _check_llama(model, "apply_bitfit")
    linears = [(n, m) for n, m in model.model.layers.named_modules() if isinstance(m, nn.Linear)]
    if any(m.bias is not None for _, m in linears):
        raise ValueError("the model's linear layers already have biases (BitFit applied twice?); start from "
                         "a fresh model, or for a model that has biases just unfreeze them")
    _freeze(model)
    names = []
    for n, m in linears:
        m.bias = nn.Parameter(torch.zeros(m.out_features, dtype=m.weight.dtype, device=m.weight.device))
        names.append(f"model.layers.{n}.bias")
    if norms:
        for n, p in model.named_parameters():
            if n.endswith("norm.weight"):
                p.requires_grad_(True)
                names.append(n)
    return names
