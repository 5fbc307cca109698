"""Putting LoRA into a model and taking it out again (chapter 13): inject, merge/unmerge, unload, enable/disable.

:func:`add_lora` replaces every targeted ``nn.Linear`` by a :class:`~labkit.finetune.lora.layer.LoRALinear`
(or :class:`~labkit.finetune.lora.qlora.QLoRALinear`) and freezes everything else. As in ``peft``,
``target_modules`` given as a list matches a module whose name equals an entry or ends with ``"." + entry``;
given as a string it is a regular expression that must match the full name. Merging folds
``W0 ← W0 + (α/r)BA`` into each base weight (no extra inference cost); :func:`unload_lora` leaves plain
``nn.Linear`` layers (peft's ``merge_and_unload``).
"""
from __future__ import annotations

import contextlib
import re
from typing import Iterator, Sequence

import torch
from torch import nn

from labkit.finetune.lora.layer import LoRALinear, _check_hparams
from labkit.finetune.lora.qlora import QLoRALinear

__all__ = ["LLAMA_TARGETS", "add_lora", "lora_layers", "merge_lora", "unmerge_lora", "unload_lora", "set_lora_enabled", "lora_disabled"]


#: The seven projection names of a LLaMA block (peft's usual "all linear" choice for LLaMA).
LLAMA_TARGETS: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _matches(name: str, target_modules: str | Sequence[str]) -> bool:
    if isinstance(target_modules, str):
        return re.fullmatch(target_modules, name) is not None
    return any(name == t or name.endswith("." + t) for t in target_modules)


def add_lora(model: nn.Module, target_modules: str | Sequence[str], r: int, alpha: float,
             dropout: float = 0.0, *, qlora: bool = False, block_size: int = 64) -> list[str]:
    """Replace every targeted ``nn.Linear`` by a :class:`LoRALinear` (or :class:`QLoRALinear`) in place.

    Every other parameter of ``model`` is frozen (``requires_grad=False``); only the LoRA ``A``/``B``
    train. Returns the names of the replaced modules.

    Args:
        target_modules: list of names (a module matches if its name equals an entry or ends with
            ``"." + entry``, e.g. ``["q_proj", "v_proj"]``), or one regex matched against the full name.
        qlora: store the targeted base weights in NF4 (:class:`QLoRALinear`).

    Raises:
        ValueError: bad ``r``/``alpha``/``dropout``; nothing matches (the message lists the linear layer
            names you can target); a matched module already has LoRA.
        TypeError: a matched module is not an ``nn.Linear``.
    """
    _check_hparams(r, alpha, dropout)
    if isinstance(target_modules, str):
        targets: str | tuple[str, ...] = target_modules
    elif isinstance(target_modules, (list, tuple, set)) and target_modules and all(
            isinstance(t, str) for t in target_modules):
        targets = tuple(target_modules)
    else:
        raise TypeError(f"target_modules must be a non-empty list of module names or a regex string, "
                        f"got {target_modules!r}")
    hits = []
    for name, mod in model.named_modules():
        if not name or not _matches(name, targets):
            continue
        parent_name = name.rsplit(".", 1)[0] if "." in name else ""
        if isinstance(model.get_submodule(parent_name), LoRALinear):
            continue  # the `base` inside an existing LoRA layer
        if isinstance(mod, LoRALinear):
            raise ValueError(f"module {name!r} already has LoRA; call unload_lora(model) first")
        if not isinstance(mod, nn.Linear):
            raise TypeError(f"target {name!r} is a {type(mod).__name__}; LoRA here adapts nn.Linear only. "
                            "Pick a more specific name")
        hits.append(name)
    if not hits:
        cands = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)})
        raise ValueError(f"target_modules {target_modules!r} matched no module. "
                         f"Linear layers you can target: {cands}")
    for p in model.parameters():
        p.requires_grad_(False)
    cls_kw = {"block_size": block_size} if qlora else {}
    cls = QLoRALinear if qlora else LoRALinear
    for name in hits:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, cls(getattr(parent, child), r, alpha, dropout, **cls_kw))
    return hits


def lora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    """``{module name: LoRALinear}`` for every LoRA layer in ``model``."""
    return {n: m for n, m in model.named_modules() if isinstance(m, LoRALinear)}


def _layers_or_raise(model: nn.Module) -> dict[str, LoRALinear]:
    layers = lora_layers(model)
    if not layers:
        raise ValueError("the model has no LoRA layers; call add_lora(model, ...) first")
    return layers


def merge_lora(model: nn.Module) -> None:
    """Merge every LoRA update into its base weight (``W0 ← W0 + (α/r)BA``). Merging twice is an error."""
    layers = _layers_or_raise(model)
    done = [n for n, m in layers.items() if m.merged]
    if done:
        raise ValueError(f"LoRA is already merged in {done[:3]}{'...' if len(done) > 3 else ''}; "
                         "merging twice would add BA twice. Call unmerge_lora(model) first")
    for m in layers.values():
        m.merge()


def unmerge_lora(model: nn.Module) -> None:
    """Undo :func:`merge_lora` (``W0 ← W0 − (α/r)BA``)."""
    layers = _layers_or_raise(model)
    if not all(m.merged for m in layers.values()):
        raise ValueError("LoRA is not merged; call merge_lora(model) first")
    for m in layers.values():
        m.unmerge()


def unload_lora(model: nn.Module, merge: bool = True) -> nn.Module:
    """Replace each LoRA layer by a plain ``nn.Linear`` (with the update merged in if ``merge``).

    The result has no LoRA modules left (peft's ``merge_and_unload`` / ``unload``). QLoRA layers become
    float ``nn.Linear`` layers holding the dequantized base (plus the update if ``merge``).
    """
    for name, m in _layers_or_raise(model).items():
        if isinstance(m, QLoRALinear):
            lin = m.merged_linear()
            if not merge:
                with torch.no_grad():
                    lin.weight -= m.delta_weight()
        else:
            if merge and not m.merged:
                m.merge()
            if not merge and m.merged:
                m.unmerge()
            lin = m.base
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, lin)
    return model


def set_lora_enabled(model: nn.Module, enabled: bool) -> None:
    """Turn every (unmerged) LoRA path on or off; off gives exactly the base model."""
    for m in _layers_or_raise(model).values():
        if m.merged and not enabled:
            raise ValueError("cannot disable a merged LoRA; call unmerge_lora(model) first")
        m.enabled = bool(enabled)


@contextlib.contextmanager
def lora_disabled(model: nn.Module) -> Iterator[nn.Module]:
    """``with lora_disabled(model): ...`` runs the base model (peft's ``disable_adapter()``)."""
    set_lora_enabled(model, False)
    try:
        yield model
    finally:
        set_lora_enabled(model, True)
