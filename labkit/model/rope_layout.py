r"""Weights trained with either RoPE layout in the course model (chapters 04 and 07).

:class:`labkit.model.Llama` applies RoPE in the **rotate-half** layout (pairs ``(x_i, x_{i+d/2})``, as 🤗
transformers). Weights trained by code that pairs **interleaved** features ``(x_{2i}, x_{2i+1})`` (GPT-J,
Meta's original LLaMA code, many from-scratch implementations) compute the *same* attention scores in this
model once the rows of every head of ``q_proj`` and ``k_proj`` are permuted
(:func:`labkit.blocks.interleaved_to_half`); nothing else changes (``v_proj``, ``o_proj``, the MLP, norms
and embeddings carry no RoPE pairing). Loading them without the permutation raises no error and silently
scrambles positions: see the Pitfalls of chapter 04.

    state_dict (layout ``src``) ─ convert_rope_layout ─▶ state_dict (layout ``dst``)
    q_proj rows, per head:  half[j] = interleaved[perm[j]],  perm = [0, 2, …, d-2, 1, 3, …, d-1]
"""
from __future__ import annotations

from typing import Any, Mapping

from torch import Tensor

from labkit.blocks.rope import half_to_interleaved, interleaved_to_half
from labkit.model.config import LlamaConfig
from labkit.model.llama import Llama

__all__ = ["ROPE_LAYOUTS", "convert_rope_layout", "state_dict_with_rope_layout", "load_state_dict_with_rope_layout"]

#: ``"half"``: pairs ``(x_i, x_{i+d/2})`` (HF, this course); ``"interleaved"``: pairs ``(x_{2i}, x_{2i+1})``.
ROPE_LAYOUTS = ("half", "interleaved")
_Q_SUFFIXES = (".self_attn.q_proj.weight", ".self_attn.q_proj.bias")
_K_SUFFIXES = (".self_attn.k_proj.weight", ".self_attn.k_proj.bias")


def _check_layout(value: object, arg: str) -> str:
    if value not in ROPE_LAYOUTS:
        raise ValueError(f"{arg} must be one of {ROPE_LAYOUTS} (\"half\": pairs (x_i, x_(i+d/2)) as HF "
                         f"transformers; \"interleaved\": pairs (x_2i, x_2i+1) as GPT-J / Meta), got {value!r}")
    return str(value)


def _heads_of(key: str, config: LlamaConfig) -> int | None:
    """Number of heads whose rows ``key`` holds: n_heads for q_proj, n_kv_heads for k_proj, None otherwise."""
    if key.endswith(_Q_SUFFIXES):
        return config.n_heads
    if key.endswith(_K_SUFFIXES):
        return config.n_kv_heads
    return None


def convert_rope_layout(state_dict: Mapping[str, Tensor], config: LlamaConfig, *, src: str,
                        dst: str = "half") -> dict[str, Tensor]:
    r"""A new state dict with every layer's ``q_proj`` / ``k_proj`` rows (weights and biases) moved from RoPE
    layout ``src`` to ``dst``; every other tensor is passed through unchanged (the same object).

    ``q_proj.weight`` ``(n_heads·head_dim, dim)`` is permuted head by head with ``n_heads``, ``k_proj.weight``
    ``(n_kv_heads·head_dim, dim)`` with ``n_kv_heads`` (GQA). ``src == dst`` returns a shallow copy.
    Raises ValueError for an unknown layout, a q/k tensor whose shape does not match ``config``, or (when a
    conversion is asked for) a state dict without any ``self_attn.q_proj`` / ``k_proj`` key.
    """
    src, dst = _check_layout(src, "src"), _check_layout(dst, "dst")
    if not isinstance(config, LlamaConfig):
        raise TypeError(f"config must be a labkit.model.LlamaConfig, got {type(config).__name__}")
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict must be a mapping name -> tensor, got {type(state_dict).__name__}")
    out = dict(state_dict)
    if src == dst:
        return out
    hd = config.head_dim
    convert = interleaved_to_half if src == "interleaved" else half_to_interleaved
    found = 0
    for key, t in state_dict.items():
        n = _heads_of(key, config)
        if n is None:
            continue
        if not isinstance(t, Tensor) or t.shape[0] != n * hd:
            kind = "n_heads" if key.endswith(_Q_SUFFIXES) else "n_kv_heads"
            shape = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"state_dict[{key!r}] has shape {shape}, but the config ({kind}={n}, head_dim={hd}) "
                             f"implies {n * hd} rows; pass the config these weights were trained with "
                             "(for a GQA k_proj set n_kv_heads)")
        out[key] = convert(t, n, hd)
        found += 1
    if not found:
        raise ValueError(f"state_dict has no '*.self_attn.q_proj.weight' / 'k_proj.weight' keys to convert from "
                         f"{src!r} to {dst!r}; rename the checkpoint's keys to labkit/transformers Llama names "
                         "first (Meta's 'layers.N.attention.wq.weight' -> 'model.layers.N.self_attn.q_proj.weight')")
    return out


def state_dict_with_rope_layout(model: Llama, rope_layout: str = "interleaved") -> dict[str, Tensor]:
    """The weights of ``model`` (rotate-half) as a state dict for code that applies RoPE in ``rope_layout``
    (detached clones; ``"half"`` is a plain copy). Inverse of :func:`load_state_dict_with_rope_layout`."""
    if not isinstance(model, Llama):
        raise TypeError(f"model must be a labkit.model.Llama, got {type(model).__name__}")
    rope_layout = _check_layout(rope_layout, "rope_layout")
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return convert_rope_layout(sd, model.config, src="half", dst=rope_layout)


def load_state_dict_with_rope_layout(model: Llama, state_dict: Mapping[str, Tensor], rope_layout: str = "half",
                                     strict: bool = True) -> Any:
    r"""``model.load_state_dict`` for weights trained with RoPE in ``rope_layout``.

    ``rope_layout="interleaved"``: the ``q_proj`` / ``k_proj`` rows are permuted into the model's rotate-half
    layout first (:func:`convert_rope_layout`), so the attention scores, and hence the logits, equal those of
    the interleaved-RoPE model the weights came from. ``"half"`` (default) loads as is. Returns what
    ``load_state_dict`` returns (missing / unexpected keys when ``strict=False``).
    """
    if not isinstance(model, Llama):
        raise TypeError(f"model must be a labkit.model.Llama, got {type(model).__name__}")
    rope_layout = _check_layout(rope_layout, "rope_layout")
    sd = convert_rope_layout(state_dict, model.config, src=rope_layout, dst="half")
    return model.load_state_dict(sd, strict=strict)
