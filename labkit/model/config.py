"""The LLaMA hyper-parameters (chapter 07): :class:`LlamaConfig` and the parameter count by formula.

Per layer: attention ``d·h·hd + 2·d·kv·hd + h·hd·d`` (q, k, v, o), SwiGLU ``3·d·f``, two RMSNorms ``2·d``;
plus the embedding ``V·d``, the final norm ``d`` and the LM head ``V·d`` (0 if tied).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labkit.blocks.ffn import llama_hidden_dim

__all__ = ["LlamaConfig", "count_parameters"]


@dataclass
class LlamaConfig:
    """Hyper-parameters of :class:`labkit.model.Llama`. ``None`` fields are resolved in ``__post_init__``.

    Args:
        vocab_size: number of token ids V.
        dim: model width d (``hidden_size`` in transformers).
        n_layers: number of decoder blocks.
        n_heads: query heads; head_dim = dim / n_heads (must be even for RoPE).
        n_kv_heads: key/value heads for GQA (``None`` → n_heads = MHA; 1 = MQA).
        hidden_dim: SwiGLU width (``None`` → int(8·dim/3) rounded up to ``multiple_of``).
        multiple_of: rounding of the default hidden_dim.
        norm_eps: RMSNorm epsilon.
        rope_base: RoPE base θ (10000 in LLaMA 1/2).
        max_seq_len: the context length the model is trained for (RoPE itself works beyond it, quality does not).
        tie_embeddings: share the weight of ``embed_tokens`` and ``lm_head``.
    """

    vocab_size: int
    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int | None = None
    hidden_dim: int | None = None
    multiple_of: int = 64
    norm_eps: float = 1e-6
    rope_base: float = 10000.0
    max_seq_len: int = 256
    tie_embeddings: bool = False

    def __post_init__(self) -> None:
        for name in ("vocab_size", "dim", "n_layers", "n_heads", "multiple_of", "max_seq_len"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if self.n_kv_heads is None:
            self.n_kv_heads = self.n_heads
        if isinstance(self.n_kv_heads, bool) or not isinstance(self.n_kv_heads, int) or self.n_kv_heads < 1:
            raise ValueError(f"n_kv_heads must be a positive int or None, got {self.n_kv_heads!r}")
        if self.dim % self.n_heads:
            divisors = [h for h in range(1, self.dim + 1) if self.dim % h == 0 and h <= 64]
            raise ValueError(f"dim ({self.dim}) must be divisible by n_heads ({self.n_heads}); "
                             f"pick n_heads from {divisors}")
        if (self.dim // self.n_heads) % 2:
            raise ValueError(f"head_dim = dim / n_heads = {self.dim // self.n_heads} must be even for RoPE; "
                             "change dim or n_heads")
        if self.n_heads % self.n_kv_heads:
            opts = [h for h in range(1, self.n_heads + 1) if self.n_heads % h == 0]
            raise ValueError(f"n_heads ({self.n_heads}) must be divisible by n_kv_heads ({self.n_kv_heads}); "
                             f"pick n_kv_heads from {opts}")
        if self.hidden_dim is None:
            self.hidden_dim = llama_hidden_dim(self.dim, self.multiple_of)
        if isinstance(self.hidden_dim, bool) or not isinstance(self.hidden_dim, int) or self.hidden_dim < 1:
            raise ValueError(f"hidden_dim must be a positive int or None, got {self.hidden_dim!r}")
        if not (isinstance(self.norm_eps, (int, float)) and self.norm_eps > 0):
            raise ValueError(f"norm_eps must be a positive float, got {self.norm_eps!r}")
        if not (isinstance(self.rope_base, (int, float)) and self.rope_base > 1):
            raise ValueError(f"rope_base must be a float > 1, got {self.rope_base!r}")
        self.norm_eps = float(self.norm_eps)
        self.rope_base = float(self.rope_base)
        self.tie_embeddings = bool(self.tie_embeddings)

    @property
    def head_dim(self) -> int:
        """Per-head width ``dim // n_heads``."""
        return self.dim // self.n_heads

    def to_dict(self) -> dict[str, Any]:
        """All fields as a plain dict (``None`` fields already resolved)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LlamaConfig":
        """Inverse of :meth:`to_dict`; unknown keys are an error (they usually mean a typo)."""
        if not isinstance(d, dict):
            raise TypeError(f"from_dict expects a dict, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown LlamaConfig field(s) {unknown}; known fields: {sorted(known)}")
        return cls(**d)

    def to_json(self, path: str | Path | None = None) -> str:
        """Serialize to JSON text; also write it to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text

    @classmethod
    def from_json(cls, text_or_path: str | Path) -> "LlamaConfig":
        """Read a config from JSON text or from a ``.json`` file path."""
        s = str(text_or_path)
        if not s.lstrip().startswith("{"):
            s = Path(s).read_text(encoding="utf-8")
        return cls.from_dict(json.loads(s))


def _config_numbers(config: Any) -> dict[str, Any]:
    """Read the sizes that determine the parameter count from a labkit or a transformers config."""
    if isinstance(config, LlamaConfig):
        return dict(V=config.vocab_size, d=config.dim, L=config.n_layers, h=config.n_heads,
                    kv=config.n_kv_heads, hd=config.head_dim, f=config.hidden_dim,
                    tied=config.tie_embeddings, attn_bias=False, mlp_bias=False)
    needed = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
    if all(hasattr(config, k) for k in needed):
        h = config.num_attention_heads
        kv = getattr(config, "num_key_value_heads", None) or h
        hd = getattr(config, "head_dim", None) or config.hidden_size // h
        return dict(V=config.vocab_size, d=config.hidden_size, L=config.num_hidden_layers, h=h, kv=kv, hd=hd,
                    f=config.intermediate_size, tied=bool(getattr(config, "tie_word_embeddings", False)),
                    attn_bias=bool(getattr(config, "attention_bias", False)),
                    mlp_bias=bool(getattr(config, "mlp_bias", False)))
    raise TypeError("count_parameters expects a labkit.model.LlamaConfig or a transformers.LlamaConfig, "
                    f"got {type(config).__name__}")


def count_parameters(config: Any) -> int:
    """Number of parameters of a LLaMA model, by formula (no model is built).

    Per layer: attention ``d·h·hd + 2·d·kv·hd + h·hd·d`` (q, k, v, o), SwiGLU ``3·d·f``, two RMSNorms ``2·d``.
    Plus the embedding ``V·d``, the final norm ``d`` and the LM head ``V·d`` (0 if tied).
    LLaMA-7B (V=32000, d=4096, L=32, f=11008, untied) → 6,738,415,616.

    Accepts a :class:`LlamaConfig` or a ``transformers.LlamaConfig``.
    """
    n = _config_numbers(config)
    d, h, kv, hd, f = n["d"], n["h"], n["kv"], n["hd"], n["f"]
    attn = d * h * hd + 2 * d * kv * hd + h * hd * d
    if n["attn_bias"]:
        attn += h * hd + 2 * kv * hd + d
    mlp = 3 * d * f + ((2 * f + d) if n["mlp_bias"] else 0)
    per_layer = attn + mlp + 2 * d
    embed = n["V"] * d
    head = 0 if n["tied"] else n["V"] * d
    return embed + n["L"] * per_layer + d + head
