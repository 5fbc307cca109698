"""Shared pieces of the PEFT methods (chapter 14): argument checks, freezing, the prompt-wrapper base, saving.

Every method freezes the pretrained model (:func:`_freeze`) and trains a small set of new (or selected)
parameters; :func:`trainable_state_dict` / :func:`load_trainable` store and restore exactly those (what a
PEFT method keeps per task). :class:`_PromptWrapper` holds a frozen :class:`labkit.model.Llama` and exposes
``config`` / ``new_cache`` like one, for prompt tuning and prefix tuning.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from labkit.model import Llama, ModelCache

__all__ = ["trainable_state_dict", "load_trainable"]


def _pos_int(name: str, value: Any, hint: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}; {hint}")
    return value


def _check_llama(model: Any, what: str) -> Llama:
    if isinstance(model, _PromptWrapper):  # PromptTuning or PrefixTuning
        raise ValueError(f"{what}: the model is already wrapped by {type(model).__name__}; apply one prompt "
                         "method to a fresh labkit.model.Llama (stacking two would hide which one helped)")
    if not isinstance(model, Llama):
        raise TypeError(f"{what} expects a labkit.model.Llama, got {type(model).__name__}")
    return model


def _freeze(model: nn.Module) -> None:
    for p in model.parameters():
        p.requires_grad_(False)


def _check_cache(model: Llama, kv_cache: Any) -> None:
    if kv_cache is not None and (not isinstance(kv_cache, ModelCache) or len(kv_cache) != model.config.n_layers):
        raise TypeError(f"kv_cache must be a ModelCache with {model.config.n_layers} layers; use .new_cache()")


class _PromptWrapper(nn.Module):
    """Shared plumbing: hold a frozen Llama, expose ``config`` / ``new_cache`` like a Llama."""

    def __init__(self, model: Llama, what: str) -> None:
        super().__init__()
        _check_llama(model, what)
        _freeze(model)
        self.model = model

    @property
    def config(self):  # noqa: ANN201
        return self.model.config

    def new_cache(self) -> ModelCache:
        """An empty cache; the first forward call fills in what the method needs (prompt / prefix)."""
        return self.model.new_cache()


def trainable_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """``{name: tensor}`` of the parameters with ``requires_grad`` (what a PEFT method stores per task)."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def load_trainable(model: nn.Module, state: dict[str, Tensor]) -> None:
    """Load a :func:`trainable_state_dict` into a model prepared with the same method and sizes."""
    params = dict(model.named_parameters())
    want = {n for n, p in params.items() if p.requires_grad}
    if set(state) != want:
        raise ValueError(f"keys do not fit: missing {sorted(want - set(state))[:4]}, unexpected "
                         f"{sorted(set(state) - want)[:4]}; prepare the model with the same method first")
    with torch.no_grad():
        for n, t in state.items():
            if params[n].shape != t.shape:
                raise ValueError(f"{n}: stored shape {tuple(t.shape)} != model's {tuple(params[n].shape)}")
            params[n].copy_(t)
