"""LoRA (低秩适配, Low-Rank Adaptation) and QLoRA, from scratch, name-compatible with ``peft``.

A frozen linear layer ``W0 ∈ R^{d_out×d_in}`` gets a trainable low-rank update::

    h = W0 x + (α / r) · B A x,       A ∈ R^{r×d_in} (random),  B ∈ R^{d_out×r} (zeros)

so at initialization ``BA = 0`` and the model is exactly the base model; only ``A`` and ``B`` train:
``r·(d_in + d_out)`` parameters instead of ``d_in·d_out``. After training, ``W0 + (α/r)BA`` can be merged
into one matrix (no extra inference cost) and unmerged again.

**QLoRA** keeps the frozen base weight in 4-bit NF4 (``labkit.quant``, chapter 09), two codes per byte plus
one fp32 absmax per block, dequantizes it on the fly for each matmul, and trains LoRA on top. The base
matmul is a custom autograd function that saves only the 4-bit codes (not the dequantized weight) for
the backward pass, as bitsandbytes does.

Conventions follow ``peft`` (``LoraConfig(r, lora_alpha, target_modules, lora_dropout)``):
A is Kaiming-uniform (a = √5), B is zero, scaling = α/r, dropout is applied to the input of the LoRA path
only, and ``target_modules`` given as a list matches a module whose name equals an entry or ends with
``"." + entry``; given as a string it is a regular expression that must match the full name.
"""
from __future__ import annotations

import contextlib
import json
import math
import re
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from labkit.core.io import atomic_path, atomic_write_json

__all__ = [
    "LoRALinear", "QLoRALinear", "add_lora", "merge_lora", "unmerge_lora", "unload_lora",
    "lora_layers", "lora_state_dict", "load_lora", "save_lora", "read_lora", "set_lora_enabled",
    "lora_disabled", "lora_param_count", "count_trainable", "LLAMA_TARGETS", "TASK_VARIANTS", "TASK_RUN",
    "variant_name", "prepare_variant", "finetune_task",
]

#: The seven projection names of a LLaMA block (peft's usual "all linear" choice for LLaMA).
LLAMA_TARGETS: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _check_hparams(r: Any, alpha: Any, dropout: Any) -> None:
    if isinstance(r, bool) or not isinstance(r, int) or r < 1:
        raise ValueError(f"r (the LoRA rank) must be an int >= 1, got {r!r}; typical values are 4, 8, 16")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0:
        raise ValueError(f"alpha must be a positive number (the update is scaled by alpha / r), got {alpha!r}")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be a float in [0, 1), got {dropout!r}")


class LoRALinear(nn.Module):
    """``y = base(x) + (α/r) · dropout(x) Aᵀ Bᵀ``, with ``base`` frozen.

    Args:
        base: the ``nn.Linear`` to adapt (its weight and bias are frozen, not copied).
        r: rank, ``1 <= r``; with ``r >= min(d_in, d_out)`` LoRA can represent any update.
        alpha: scale numerator; the update is multiplied by ``scaling = alpha / r``.
        dropout: dropout probability on the LoRA path's input (the base path sees ``x`` unchanged).

    Shapes: ``x (..., d_in) → y (..., d_out)``; ``lora_A (r, d_in)``, ``lora_B (d_out, r)``.
    """

    def __init__(self, base: nn.Linear, r: int, alpha: float, dropout: float = 0.0) -> None:
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"base must be an nn.Linear, got {type(base).__name__}")
        _check_hparams(r, alpha, dropout)
        self.in_features, self.out_features = base.in_features, base.out_features
        self.r, self.alpha, self.scaling = r, float(alpha), float(alpha) / r
        self._attach_base(base)
        w = self._base_weight()
        self.lora_A = nn.Parameter(torch.empty(r, self.in_features, dtype=w.dtype, device=w.device))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, r, dtype=w.dtype, device=w.device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # as peft (and nn.Linear's default)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False
        self.enabled = True

    # -- the frozen base (QLoRALinear overrides these three) --------------------------------------------
    def _attach_base(self, base: nn.Linear) -> None:
        base.requires_grad_(False)
        self.base = base

    def _base_weight(self) -> torch.Tensor:
        return self.base.weight

    def _base_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x)

    @property
    def weight(self) -> torch.Tensor:
        """The base weight (merged weight when merged), for code that reads ``layer.weight``."""
        return self._base_weight()

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base.bias

    # -- LoRA ---------------------------------------------------------------------------------------------
    def delta_weight(self) -> torch.Tensor:
        """``ΔW = (α/r) · B A``, shape ``(d_out, d_in)``."""
        return (self.lora_B @ self.lora_A) * self.scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self._base_forward(x)
        if self.enabled and not self.merged:
            y = y + F.linear(F.linear(self.dropout(x), self.lora_A), self.lora_B) * self.scaling
        return y

    @torch.no_grad()
    def merge(self) -> None:
        """``W0 ← W0 + (α/r)BA``: afterwards the layer is one plain matmul."""
        if self.merged:
            raise ValueError("this LoRA layer is already merged; merging twice would add BA twice. "
                             "Call unmerge() (or unmerge_lora(model)) first")
        self.base.weight += self.delta_weight().to(self.base.weight.dtype)
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """``W0 ← W0 − (α/r)BA`` (inverse of :meth:`merge`, exact up to float rounding)."""
        if not self.merged:
            raise ValueError("this LoRA layer is not merged; call merge() first")
        self.base.weight -= self.delta_weight().to(self.base.weight.dtype)
        self.merged = False

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, r={self.r}, "
                f"alpha={self.alpha:g}, merged={self.merged}")


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
        from labkit.quant.int8 import nf4_quantize

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
        from labkit.quant.int8 import nf4_dequantize

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


# ------------------------------------------------------------------------------------------ injection
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


# ------------------------------------------------------------------------------------ adapters on disk
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


# -------------------------------------------------------------------------------------------- counting
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


# ------------------------------------------------------------------ chapter 11: fine-tuning the tiny LLaMA
#: The chapter-11 comparison: (method, rank, learning rate). LoRA uses all seven projections, alpha = 2r.
TASK_VARIANTS: tuple[tuple[str, int | None, float], ...] = (
    ("full", None, 1e-3), ("lora", 2, 4e-3), ("lora", 8, 4e-3), ("lora", 32, 4e-3), ("qlora", 8, 4e-3))
#: Shared settings of those runs (``python -m labkit.finetune.lora task``).
TASK_RUN: dict[str, Any] = dict(steps=200, batch_size=8, max_len=128, seed=0, warmup=20)
#: Where the shipped adapters and the results of those runs live.
TASK_DIR_NAME = "lora_task"


def variant_name(method: str, r: int | None) -> str:
    """``"full"``, ``"lora_r8"``, ``"qlora_r8"``."""
    return method if method == "full" else f"{method}_r{r}"


def prepare_variant(model: nn.Module, method: str, r: int | None = None,
                    targets: Sequence[str] = LLAMA_TARGETS) -> nn.Module:
    """Make ``model`` ready for one of the chapter's methods (in place): ``"full"`` (everything trains),
    ``"lora"`` or ``"qlora"`` (rank ``r``, ``alpha = 2r`` on ``targets``, the rest frozen)."""
    if method == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    if method not in ("lora", "qlora"):
        raise ValueError(f"method must be 'full', 'lora' or 'qlora', got {method!r}")
    if r is None:
        raise ValueError(f"method {method!r} needs a rank r")
    add_lora(model, list(targets), r=r, alpha=2 * r, qlora=method == "qlora")
    return model


def finetune_task(method: str, r: int | None = None, *, lr: float, steps: int = TASK_RUN["steps"],
                  batch_size: int = TASK_RUN["batch_size"], max_len: int = TASK_RUN["max_len"],
                  seed: int = TASK_RUN["seed"], warmup: int = TASK_RUN["warmup"], evaluate: bool = True,
                  schedule_steps: int | None = None, progress: bool = True) -> tuple[nn.Module, dict[str, Any]]:
    """Fine-tune the shipped tiny LLaMA on the task's training split with one method; measure it.

    Returns ``(model, result)`` with ``result`` holding the trainable / total parameter counts, the
    training memory (:func:`labkit.finetune.sft.training_memory` on the first batch: model state counted,
    activations measured), the loss curve and (if ``evaluate``) the exact-match test score per skill.
    ``schedule_steps`` (default ``steps``) sets the length of the learning-rate schedule, so a short rerun can
    replay a long run's first steps.
    """
    import time

    from labkit.core.repro import seed_everything
    from labkit.datasets import task as task_data
    from labkit.finetune import sft
    from labkit.model.llama import load_pretrained

    seed_everything(seed)  # also turns on deterministic algorithms, as notebooks do
    model, tok = load_pretrained()
    prepare_variant(model, method, r)
    train = [sft.encode_example(x, tok) for x in task_data.load_task("train")]
    probe = sft.pack(train[:64], max_len, "ffd")
    probe_batch = {k: getattr(probe, k)[:batch_size] for k in ("input_ids", "labels", "position_ids", "doc_ids")}
    memory = sft.training_memory(model, probe_batch)
    trainable, total = count_trainable(model)
    t0 = time.perf_counter()
    losses = sft.train_sft(model, train, steps=steps, batch_size=batch_size, max_len=max_len, lr=lr,
                           seed=seed, warmup=warmup, schedule_steps=schedule_steps, progress=progress)
    seconds = time.perf_counter() - t0
    result: dict[str, Any] = {"method": method, "r": r, "alpha": None if r is None else 2 * r, "lr": lr,
                              "steps": steps, "batch_size": batch_size, "max_len": max_len, "seed": seed,
                              "warmup": warmup, "trainable": trainable, "total": total, "memory": memory,
                              "losses": [round(x, 6) for x in losses], "train_seconds": round(seconds, 1)}
    if evaluate:
        result["scores"], _ = sft.evaluate_task(model, tok, task_data.load_task("test"))
    return model, result


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m labkit.finetune.lora task [--out DIR] [--steps N]``: run :data:`TASK_VARIANTS`, ship adapters."""
    import argparse

    from labkit.core.paths import DATA

    ap = argparse.ArgumentParser(prog="python -m labkit.finetune.lora")
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("task", help="fine-tune the tiny LLaMA on the task: full vs LoRA ranks vs QLoRA")
    t.add_argument("--out", default=str(DATA / TASK_DIR_NAME))
    t.add_argument("--steps", type=int, default=TASK_RUN["steps"])
    t.add_argument("--only", default=None, help="comma-separated variant names, e.g. lora_r8,full")
    args = ap.parse_args(list(argv) if argv is not None else None)
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    res_path = out / "results.json"
    results = json.loads(res_path.read_text()) if res_path.exists() else {}
    for method, r, lr in TASK_VARIANTS:
        name = variant_name(method, r)
        if args.only and name not in args.only.split(","):
            continue
        model, res = finetune_task(method, r, lr=lr, steps=args.steps)
        print(f"{name:10s} trainable {res['trainable']:>9,d}  loss {res['losses'][-1]:.3f}  "
              f"score {res['scores']['all']:.3f}  {res['train_seconds']}s", flush=True)
        if method != "full":
            save_lora(model, out / f"{name}.safetensors", extra={"method": method})
        else:  # the SFT model of chapter 13 (weights only, 7 MB)
            from labkit.model.llama import save_checkpoint

            save_checkpoint(model, None, out / "full_sft")
        results[name] = res
        atomic_write_json(res_path, results, sort_keys=True)
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
