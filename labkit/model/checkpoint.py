"""Checkpoint folders of the tiny LLaMA (chapter 07): save, load, and the shipped pretrained model.

A folder holds ``model.safetensors`` (weights; a tied ``lm_head`` stored once), ``config.json``
(``{"format": "labkit-llama", "version": 1, "config": {...}}``) and ``tokenizer.json``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from labkit.core.io import atomic_write_bytes, read_json
from labkit.core.manifest import verify_data_file
from labkit.core.paths import DATA
from labkit.model.config import LlamaConfig
from labkit.model.llama import Llama
from labkit.model.rope_layout import ROPE_LAYOUTS, convert_rope_layout
from labkit.tokenizer.bpe import BPETokenizer

__all__ = ["PRETRAINED_DIR", "save_checkpoint", "load_checkpoint", "load_pretrained"]


#: Where the shipped checkpoint lives (``python -m labkit.experiments.pretrain`` writes it).
PRETRAINED_DIR = DATA / "tiny_llama"
_CKPT_FORMAT = "labkit-llama"
_TOKENIZER_FILE = "tokenizer.json"
#: How each shipped checkpoint folder under data/ is rebuilt (data/README.md has the details).
_REGENERATE = {"tiny_llama": "python -m labkit.experiments.pretrain",
               "finetune/full": "python -m labkit.experiments.finetune --only full"}


def _regenerate_hint(path: Path) -> str:
    """The command that rebuilds the checkpoint folder ``path`` (a shipped one) or a generic hint."""
    try:
        rel = path.resolve().relative_to(DATA.resolve()).as_posix()
    except ValueError:
        return "save_checkpoint (re-save it from the model that produced it)"
    return _REGENERATE.get(rel, "the command for it in data/README.md (or `make data`)")


def _read_weights(path: Path, hint: str) -> dict[str, Any]:
    """The tensors of ``path/model.safetensors``; a truncated/corrupted file or a non-finite weight is a
    ValueError naming the file (and the tensor) and how to rebuild it."""
    from safetensors.torch import load_file

    file = path / "model.safetensors"
    try:
        weights = load_file(str(file))
    except Exception as e:  # safetensors raises its own SafetensorError (and OSError) with no path in it
        raise ValueError(f"{file} cannot be read ({type(e).__name__}: {e}); the file is truncated or corrupted. "
                         f"Regenerate it with `{hint}`") from None
    for k, t in weights.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise ValueError(f"{file}: tensor {k} holds {bad} non-finite value(s) (NaN/inf); the weights are "
                             f"corrupted or come from a diverged run. Regenerate them with `{hint}`")
    return weights


def save_checkpoint(model: Llama, tokenizer: Any, path: str | Path) -> Path:
    """Write ``model.safetensors`` (weights; a tied ``lm_head`` is stored once), ``config.json`` and
    ``tokenizer.json`` into the folder ``path``. Every file is written atomically (temp name + ``os.replace``)."""
    from safetensors.torch import save as st_save

    if not isinstance(model, Llama):
        raise TypeError(f"model must be a labkit.model.Llama, got {type(model).__name__}")
    vocab = getattr(tokenizer, "vocab_size", None)
    if tokenizer is not None and vocab != model.config.vocab_size:
        raise ValueError(f"tokenizer vocab_size ({vocab}) != model vocab_size ({model.config.vocab_size}); "
                         "train the model with this tokenizer's vocabulary")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    bad = [k for k, v in sd.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise ValueError(f"model has non-finite (NaN/inf) weights in {bad[:5]}; the run diverged. Lower the "
                         "learning rate or clip gradients, then retrain; a checkpoint of NaN weights is useless")
    if model.config.tie_embeddings:
        sd.pop("lm_head.weight")
    atomic_write_bytes(path / "model.safetensors", st_save(dict(sorted(sd.items())), metadata={"format": "pt"}))
    meta = {"format": _CKPT_FORMAT, "version": 1, "config": model.config.to_dict()}
    atomic_write_bytes(path / "config.json", (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode())
    if tokenizer is not None:
        tokenizer.save(path / _TOKENIZER_FILE)
    return path


def _read_config(path: Path, hint: str) -> LlamaConfig:
    """The stored config of the folder ``path``, after checking that its files are there and, for a
    shipped checkpoint, that they have the bytes data/MANIFEST lists."""
    for name in ("config.json", "model.safetensors"):
        if not (path / name).exists():
            raise FileNotFoundError(f"{path / name} is missing: not a checkpoint folder written by "
                                    f"labkit.model.save_checkpoint (regenerate it: {hint})")
    for name in ("config.json", "model.safetensors", _TOKENIZER_FILE):
        if (path / name).exists():
            verify_data_file(path / name, hint)      # a shipped file must have the bytes data/MANIFEST lists
    meta = read_json(path / "config.json", regenerate=hint)
    if not isinstance(meta, dict) or meta.get("format") != _CKPT_FORMAT or not isinstance(meta.get("config"), dict):
        fmt = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise ValueError(f"{path / 'config.json'}: format is {fmt!r}, expected {_CKPT_FORMAT!r} with a "
                         f"\"config\" object; regenerate it with `{hint}`")
    return LlamaConfig.from_dict(meta["config"])


def load_checkpoint(path: str | Path, *, config: LlamaConfig | None = None,
                    rope_layout: str = "half") -> tuple[Llama, Any]:
    """Load a folder written by :func:`save_checkpoint` → ``(model, tokenizer)`` (tokenizer ``None`` if absent).

    ``rope_layout="interleaved"`` is for weights trained by code that pairs RoPE features ``(x_2i, x_2i+1)``
    (GPT-J / Meta style): the q/k projection rows are permuted into this model's rotate-half layout on load
    (:func:`labkit.model.convert_rope_layout`). The default ``"half"`` loads the tensors as stored.

    Raises ValueError when ``config`` is given and differs from the stored one, when a tensor's shape does not
    match the stored config, or when the tokenizer's vocabulary does not match the model's; and, naming the
    file and the command that rebuilds it, when a file of a shipped checkpoint (inside data/) differs from
    its sha256 in data/MANIFEST, when ``model.safetensors`` is truncated or corrupted, or when any weight is
    NaN/inf (in any checkpoint).
    """
    if rope_layout not in ROPE_LAYOUTS:
        raise ValueError(f"rope_layout must be one of {ROPE_LAYOUTS}, got {rope_layout!r}; pass \"interleaved\" "
                         "for weights trained with pairs (x_2i, x_2i+1), \"half\" for this course's own")
    path = Path(path)
    hint = _regenerate_hint(path)
    stored = _read_config(path, hint)
    if config is not None and config != stored:
        diff = {k: (v, getattr(stored, k)) for k, v in config.to_dict().items() if getattr(stored, k) != v}
        raise ValueError("checkpoint config does not match the requested config: "
                         + ", ".join(f"{k}: requested {a!r}, checkpoint {b!r}" for k, (a, b) in diff.items()))
    model = Llama(stored)
    weights = _read_weights(path, hint)
    expected = model.state_dict()
    if stored.tie_embeddings:
        expected.pop("lm_head.weight")
    missing, extra = sorted(set(expected) - set(weights)), sorted(set(weights) - set(expected))
    if missing or extra:
        raise ValueError(f"{path}: weights do not match config.json: missing {missing[:5]}, unexpected {extra[:5]}")
    for k, t in weights.items():
        if tuple(t.shape) != tuple(expected[k].shape):
            raise ValueError(f"{path}: tensor {k} has shape {tuple(t.shape)} but config.json implies "
                             f"{tuple(expected[k].shape)}; the config does not match the weights")
    weights = convert_rope_layout(weights, stored, src=rope_layout, dst="half")
    model.load_state_dict(weights, strict=not stored.tie_embeddings)
    tokenizer = None
    if (path / _TOKENIZER_FILE).exists():
        tokenizer = BPETokenizer.load(path / _TOKENIZER_FILE)
        if tokenizer.vocab_size != stored.vocab_size:
            raise ValueError(f"{path}: tokenizer vocab_size {tokenizer.vocab_size} != model vocab_size "
                             f"{stored.vocab_size}; the tokenizer does not belong to this checkpoint")
    return model, tokenizer


def load_pretrained() -> tuple[Llama, Any]:
    """The shipped tiny LLaMA trained on Shakespeare (``data/tiny_llama/``) and its tokenizer, in eval mode.

    A fresh copy each call (fine-tuning it does not affect the next caller).
    """
    if not (PRETRAINED_DIR / "model.safetensors").exists():
        raise FileNotFoundError(f"{PRETRAINED_DIR} is missing; regenerate it with "
                                "`python -m labkit.experiments.pretrain`")
    model, tok = load_checkpoint(PRETRAINED_DIR)
    return model.eval(), tok
