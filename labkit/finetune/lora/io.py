"""LoRA adapters on disk (chapter 13): only the ``lora_A`` / ``lora_B`` tensors, as safetensors.

Keys are ``"<module>.lora_A" (r, d_in)`` and ``"<module>.lora_B" (d_out, r)``; the file's metadata
(``labkit_lora``, JSON) holds ``r``, ``alpha`` and the target module names. Switching adapters is loading
another file into the same LoRA layers (:func:`load_lora`).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from labkit.core.io import atomic_path
from labkit.finetune.lora.inject import _layers_or_raise

__all__ = ["lora_state_dict", "save_lora", "read_lora", "load_lora"]


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only the LoRA tensors: ``{"<module>.lora_A": (r, d_in), "<module>.lora_B": (d_out, r)}`` (copies)."""
    out = {}
    for name, m in _layers_or_raise(model).items():
        out[f"{name}.lora_A"] = m.lora_A.detach().clone()
        out[f"{name}.lora_B"] = m.lora_B.detach().clone()
    return out


def _adapter_meta(model: nn.Module) -> dict[str, Any]:
    layers = _layers_or_raise(model)
    first = next(iter(layers.values()))
    return {"r": first.r, "alpha": first.alpha, "targets": sorted(layers)}


def save_lora(model: nn.Module, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write the adapter (LoRA tensors only, safetensors) atomically; ``r``/``alpha`` go in the metadata."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {**_adapter_meta(model), **(extra or {})}
    tensors = {k: v.contiguous() for k, v in lora_state_dict(model).items()}
    with atomic_path(path) as tmp:
        save_file(tensors, tmp, metadata={"labkit_lora": json.dumps(meta, sort_keys=True)})
    return path


def read_lora(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read an adapter file written by :func:`save_lora`: ``(state_dict, metadata)``."""
    from safetensors import safe_open

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no adapter file at {path}")
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads((f.metadata() or {}).get("labkit_lora", "{}"))
        sd = {k: f.get_tensor(k) for k in f.keys()}
    return sd, meta


def load_lora(model: nn.Module, state_dict: dict[str, torch.Tensor] | str | Path) -> None:
    """Load LoRA tensors (a dict from :func:`lora_state_dict`, or a file from :func:`save_lora`).

    Switching adapters is loading another one into the same LoRA layers. Every LoRA tensor of the model
    must be given, with the same shape; a file's ``r``/``alpha`` must equal the model's.

    Raises:
        ValueError: missing or unexpected keys, a shape mismatch (e.g. a different rank), a different
            ``alpha``, or the model is merged (unmerge first, or the old update stays in the weights).
    """
    layers = _layers_or_raise(model)
    if isinstance(state_dict, (str, Path)):
        state_dict, meta = read_lora(state_dict)
        mine = _adapter_meta(model)
        for k in ("r", "alpha"):
            if k in meta and meta[k] != mine[k]:
                raise ValueError(f"adapter was trained with {k}={meta[k]} but the model's LoRA layers have "
                                 f"{k}={mine[k]}; call add_lora(..., {k}={meta[k]}) on a fresh base")
    if not isinstance(state_dict, dict):
        raise TypeError(f"state_dict must be a dict of tensors or a path, got {type(state_dict).__name__}")
    if any(m.merged for m in layers.values()):
        raise ValueError("the model's LoRA is merged; call unmerge_lora(model) before loading another adapter")
    want = {f"{n}.lora_{ab}": getattr(m, f"lora_{ab}") for n, m in layers.items() for ab in "AB"}
    missing, unexpected = sorted(set(want) - set(state_dict)), sorted(set(state_dict) - set(want))
    if missing or unexpected:
        raise ValueError(f"adapter keys do not fit the model: missing {missing[:4]}, unexpected "
                         f"{unexpected[:4]}; was it trained with the same target_modules?")
    for k, p in want.items():
        t = state_dict[k]
        if tuple(t.shape) != tuple(p.shape):
            raise ValueError(f"adapter tensor {k!r} has shape {tuple(t.shape)} but the model's is "
                             f"{tuple(p.shape)}; the adapter was trained with a different rank r or model size")
    with torch.no_grad():
        for k, p in want.items():
            p.copy_(state_dict[k])
