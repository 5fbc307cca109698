"""A training checkpoint (chapter 07): everything needed to continue a run as if it had never stopped.

A model checkpoint (:mod:`labkit.model.checkpoint`) holds weights to *use* a model. To *resume training*
bit for bit we also need the optimizer's state (AdamW's moments m, v and step counts), the step reached, and
every source of randomness: the global torch CPU RNG, Python's ``random``, and the torch.Generator that
draws the batches. For random batches (:func:`labkit.train.get_batch`) that generator's state *is* the data
position: restoring it makes the next batch the one the interrupted run would have drawn.

A checkpoint is a folder with two files, no pickle:

* ``training_state.safetensors``: every tensor. ``model.<name>`` (weights; a tensor shared by several names,
  e.g. tied embeddings, is stored once), ``optim.<i>.<key>`` (optimizer tensors such as ``exp_avg`` of
  parameter ``i``), ``rng.torch_cpu`` and ``rng.batch_generator`` (RNG byte states, uint8);
* ``training_state.json``: ``step``, the shared-tensor aliases, the optimizer's scalar state (AdamW's
  ``step`` counts) and parameter groups (lr, betas, eps, weight_decay), Python ``random``'s state, the
  caller's ``extra`` (hyperparameters, loss history) and the sha256 of the ``.safetensors`` file.

Both files are written atomically (:mod:`labkit.core.io`), the JSON last; the hash ties the pair together, so a
save interrupted between the two writes is detected on load instead of mixing two steps.
"""
from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor, nn

from labkit.core.io import atomic_write_bytes, atomic_write_json, read_json

__all__ = ["save_training_state", "load_training_state"]

TENSORS_FILE = "training_state.safetensors"
META_FILE = "training_state.json"
_FORMAT = "labkit-training-state"
_VERSION = 1


def _model_tensors(model: nn.Module) -> tuple[dict[str, Tensor], dict[str, str]]:
    """``model.state_dict()`` with each storage once → (``{name: tensor}``, ``{alias: stored name}``)."""
    tensors: dict[str, Tensor] = {}
    aliases: dict[str, str] = {}
    first: dict[tuple, str] = {}
    for name, t in model.state_dict().items():
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride(), t.dtype)
        if key in first:
            aliases[name] = first[key]
        else:
            first[key] = name
            tensors[f"model.{name}"] = t.detach().to("cpu").contiguous().clone()
    return tensors, aliases


def _json_value(value: Any, where: str) -> Any:
    """``value`` as JSON (tuples → lists); a TypeError naming ``where`` if it is not plain data."""
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError):
        raise TypeError(f"{where} = {value!r} cannot be stored in JSON; pass plain numbers, strings, lists "
                        "and dicts") from None


def _split_optimizer(sd: dict[str, Any]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """``optimizer.state_dict()`` → (tensors ``optim.<i>.<key>``, JSON part: scalar state + param groups)."""
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, pstate in sd["state"].items():
        for k, v in pstate.items():
            if isinstance(v, Tensor):
                tensors[f"optim.{idx}.{k}"] = v.detach().to("cpu").contiguous().clone()
            else:
                scalars.setdefault(str(idx), {})[k] = _json_value(v, f"optimizer state[{idx}][{k!r}]")
    groups = [_json_value(g, "an optimizer param group") for g in sd["param_groups"]]
    return tensors, {"state": scalars, "param_groups": groups}


def save_training_state(path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer, step: int,
                        generator: torch.Generator | None = None, extra: dict[str, Any] | None = None) -> Path:
    """Write a training checkpoint into the folder ``path`` (created if needed); returns ``path``.

    ``step`` is the number of optimizer steps *completed* (the resumed loop starts at step index ``step``).
    ``generator`` is the batch generator (its state is the data position); ``extra`` is any JSON-able dict
    (hyperparameters, loss history, ...) handed back by :func:`load_training_state`.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"`model` must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"`optimizer` must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"`step` must be an int >= 0 (optimizer steps completed), got {step!r}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"`generator` must be a torch.Generator or None, got {type(generator).__name__}")
    tensors, aliases = _model_tensors(model)
    opt_tensors, opt_meta = _split_optimizer(optimizer.state_dict())
    tensors.update(opt_tensors)
    tensors["rng.torch_cpu"] = torch.get_rng_state()
    if generator is not None:
        tensors["rng.batch_generator"] = generator.get_state()
    version, internal, gauss_next = random.getstate()
    blob = st_save(dict(sorted(tensors.items())), metadata={"format": _FORMAT, "step": str(step)})
    meta = {"format": _FORMAT, "version": _VERSION, "step": step, "aliases": aliases,
            "optimizer": {"class": type(optimizer).__name__, **opt_meta},
            "python_random": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
            "batch_generator": generator is not None, "extra": _json_value(extra or {}, "`extra`"),
            "sha256": hashlib.sha256(blob).hexdigest()}
    path = Path(path)
    atomic_write_bytes(path / TENSORS_FILE, blob)
    atomic_write_json(path / META_FILE, meta)                  # last: the pair is complete once this exists
    return path


def _read(path: Path) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """Both files of the checkpoint folder ``path``, checked: format, version, and the sha256 that pairs them."""
    for name in (META_FILE, TENSORS_FILE):
        if not (path / name).exists():
            raise FileNotFoundError(f"{path / name} is missing: {path} is not a training checkpoint written by "
                                    "labkit.train.save_training_state (or its save was interrupted)")
    meta = read_json(path / META_FILE)
    if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
        raise ValueError(f"{path / META_FILE}: format is {meta.get('format') if isinstance(meta, dict) else None!r}, "
                         f"expected {_FORMAT!r}; a model-only checkpoint loads with labkit.model.load_checkpoint")
    if meta.get("version") != _VERSION:
        raise ValueError(f"{path / META_FILE}: version {meta.get('version')!r}, this labkit reads {_VERSION}")
    blob = (path / TENSORS_FILE).read_bytes()
    if hashlib.sha256(blob).hexdigest() != meta.get("sha256"):
        raise ValueError(f"{path / TENSORS_FILE} does not match {META_FILE} (sha256 differs): the files come "
                         "from different saves or one is corrupt; resume from an earlier checkpoint")
    try:
        tensors = st_load(blob)
    except SafetensorError as e:
        raise ValueError(f"{path / TENSORS_FILE} is not a valid safetensors file ({e})") from None
    return meta, tensors


def _model_state(model: nn.Module, meta: dict[str, Any], tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """The stored weights as a ``state_dict`` for ``model``; a ValueError if names or shapes do not match."""
    sd = {k[len("model."):]: t for k, t in tensors.items() if k.startswith("model.")}
    for alias, name in meta["aliases"].items():
        sd[alias] = sd[name]
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(sd)), sorted(set(sd) - set(expected))
    if missing or unexpected:
        raise ValueError(f"checkpoint weights do not fit `model`: missing {missing[:5]}, unexpected "
                         f"{unexpected[:5]}; build the model with the configuration the run was saved with")
    for k, t in sd.items():
        if tuple(t.shape) != tuple(expected[k].shape):
            raise ValueError(f"checkpoint tensor {k} has shape {tuple(t.shape)}, `model` has "
                             f"{tuple(expected[k].shape)}; build the model with the saved configuration")
    return sd


def _optimizer_state(optimizer: torch.optim.Optimizer, meta: dict[str, Any],
                     tensors: dict[str, Tensor]) -> dict[str, Any]:
    """Rebuild ``optimizer.state_dict()`` from the two files; a ValueError if it belongs to another optimizer."""
    om = meta["optimizer"]
    if om["class"] != type(optimizer).__name__:
        raise ValueError(f"checkpoint optimizer is {om['class']}, `optimizer` is {type(optimizer).__name__}; "
                         "build the same optimizer the run was saved with")
    saved = [len(g["params"]) for g in om["param_groups"]]
    ours = [len(g["params"]) for g in optimizer.param_groups]
    if saved != ours:
        raise ValueError(f"checkpoint optimizer has parameter groups of sizes {saved}, `optimizer` has {ours}; "
                         "build it the same way (e.g. AdamW(param_groups(model, weight_decay)))")
    state: dict[int, dict[str, Any]] = {}
    for idx, scalars in om["state"].items():
        state.setdefault(int(idx), {}).update(scalars)
    for k, t in tensors.items():
        if k.startswith("optim."):
            _, idx, key = k.split(".", 2)
            state.setdefault(int(idx), {})[key] = t
    groups = [{k: (tuple(v) if isinstance(v, list) and k not in ("params", "param_names") else v)
               for k, v in g.items()} for g in om["param_groups"]]
    return {"state": state, "param_groups": groups}


def load_training_state(path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                        generator: torch.Generator | None = None) -> tuple[int, dict[str, Any]]:
    """Restore a checkpoint written by :func:`save_training_state` → ``(step, extra)``.

    Loads, in place: ``model``'s weights, ``optimizer``'s state (build both exactly as for the saved run),
    the torch CPU RNG, Python ``random``, and ``generator`` (required iff one was saved). Everything is
    checked before anything is changed. ``step`` = optimizer steps completed: continue with step index ``step``.

    Raises:
        FileNotFoundError: a file of the pair is missing.
        ValueError: not a training checkpoint, files from different saves, or model / optimizer / generator
            that do not fit the saved run.
    """
    path = Path(path)
    meta, tensors = _read(path)
    sd = _model_state(model, meta, tensors)
    opt_sd = _optimizer_state(optimizer, meta, tensors)
    if meta["batch_generator"] and not isinstance(generator, torch.Generator):
        raise ValueError("the checkpoint holds the batch generator's state (the data position): pass the "
                         "torch.Generator that draws the batches as `generator`")
    if generator is not None and not meta["batch_generator"]:
        raise ValueError("the checkpoint was saved without a batch generator; pass generator=None")
    model.load_state_dict(sd)
    optimizer.load_state_dict(opt_sd)
    torch.set_rng_state(tensors["rng.torch_cpu"])
    if generator is not None:
        generator.set_state(tensors["rng.batch_generator"])
    pr = meta["python_random"]
    random.setstate((pr["version"], tuple(pr["internal"]), pr["gauss_next"]))
    return int(meta["step"]), meta["extra"]
