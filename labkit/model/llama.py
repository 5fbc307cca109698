"""A LLaMA-style decoder-only language model (chapter 07), mirroring Hugging Face's ``LlamaForCausalLM``.

The module tree has the same names as ``transformers``' Llama, so ``state_dict`` keys are identical
(``model.layers.0.self_attn.q_proj.weight`` ...), LoRA target names like ``q_proj`` work, and
converting to / from ``transformers`` is a plain state-dict copy.

    x = embed_tokens(ids)                                   (B, T, dim)
    for each layer:  x = x + attn(RMSNorm(x));  x = x + SwiGLU(RMSNorm(x))
    logits = lm_head(RMSNorm(x))                            (B, T, vocab)
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from labkit.blocks.ffn import SwiGLU, llama_hidden_dim
from labkit.blocks.gqa import GroupedQueryAttention, KVCache
from labkit.blocks.masks import build_attention_mask
from labkit.blocks.norms import RMSNorm
from labkit.core.io import atomic_write_bytes
from labkit.core.paths import DATA

__all__ = ["LlamaConfig", "count_parameters", "ModelCache", "LlamaDecoderLayer", "LlamaModel", "Llama", "to_hf", "from_hf", "save_checkpoint", "load_checkpoint", "load_pretrained", "PRETRAINED_DIR"]


@dataclass
class LlamaConfig:
    """Hyper-parameters of :class:`Llama`. ``None`` fields are resolved in ``__post_init__``.

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


# ------------------------------------------------------------------------------------------------ cache
class ModelCache(list):
    """The whole model's KV cache: one :class:`labkit.blocks.KVCache` per layer, updated in place.

    ``len(cache)`` is the number of layers; :attr:`length` the number of cached positions.
    """

    def __init__(self, n_layers: int) -> None:
        super().__init__(KVCache() for _ in range(n_layers))

    @property
    def length(self) -> int:
        """Cached time steps (the same in every layer)."""
        return self[0].length if len(self) else 0

    @property
    def nbytes(self) -> int:
        """Bytes held by all cached keys and values: 2·L·B·n_kv·T·head_dim·bytes_per_element."""
        return sum(c.nbytes for c in self)

    def reorder(self, index: Tensor) -> None:
        """Keep rows ``index`` of the batch dim in every layer (beam search: follow the surviving beams)."""
        for c in self:
            if c.k is not None and c.v is not None:
                c.k, c.v = c.k.index_select(0, index), c.v.index_select(0, index)

    def reset(self) -> None:
        """Empty every layer's cache."""
        for c in self:
            c.reset()


# ----------------------------------------------------------------------------------------------- masks


# ----------------------------------------------------------------------------------------------- model
class LlamaDecoderLayer(nn.Module):
    """One pre-norm block: ``x + attn(RMSNorm(x))`` then ``h + SwiGLU(RMSNorm(h))``. (B, T, dim) → (B, T, dim)."""

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        # registration order = HF's, so state_dict keys come out in the same order
        self.self_attn = GroupedQueryAttention(config.dim, config.n_heads, config.n_kv_heads, bias=False,
                                               rope_base=config.rope_base)
        self.mlp = SwiGLU(config.dim, config.hidden_dim, bias=False)
        self.input_layernorm = RMSNorm(config.dim, eps=config.norm_eps)
        self.post_attention_layernorm = RMSNorm(config.dim, eps=config.norm_eps)

    def forward(self, x: Tensor, *, mask: Tensor | None, positions: Tensor | None,
                kv_cache: KVCache | None) -> Tensor:
        h = x + self.self_attn(self.input_layernorm(x), mask=mask, is_causal=mask is None,
                               positions=positions, kv_cache=kv_cache)
        return h + self.mlp(self.post_attention_layernorm(h))


class LlamaModel(nn.Module):
    """Embedding, the decoder stack and the final norm (HF ``LlamaModel``); returns hidden states (B, T, dim)."""

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.dim)
        self.layers = nn.ModuleList(LlamaDecoderLayer(config) for _ in range(config.n_layers))
        self.norm = RMSNorm(config.dim, eps=config.norm_eps)


class Llama(nn.Module):
    """A LLaMA-style causal LM whose ``state_dict`` keys equal ``transformers.LlamaForCausalLM``'s.

    ``forward(input_ids (B, T), kv_cache=None, *, attention_mask=None, position_ids=None) -> logits (B, T, V)``.

    * ``kv_cache``: a :class:`ModelCache` from :meth:`new_cache`, updated **in place**; positions then start at
      ``kv_cache.length`` and the causal mask is bottom-right aligned (new tokens see all cached ones).
    * ``attention_mask``: see :func:`build_attention_mask` (0/1 padding mask, or a bool mask that replaces
      the causal one, e.g. block-diagonal for packed documents).
    * ``position_ids`` (B, T): RoPE positions (e.g. restarting at 0 in every packed document).
    """

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        if not isinstance(config, LlamaConfig):
            raise TypeError(f"config must be a labkit.model.LlamaConfig, got {type(config).__name__}; "
                            "for a transformers model use labkit.model.from_hf(hf_model)")
        self.config = config
        self.model = LlamaModel(config)
        self.lm_head = nn.Linear(config.dim, config.vocab_size, bias=False)
        self.reset_parameters()
        if config.tie_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def reset_parameters(self, std: float = 0.02) -> None:
        """GPT-2 style init: N(0, 0.02) weights, residual output projections (o_proj, down_proj) scaled by
        1/sqrt(2·n_layers) so the residual stream's variance does not grow with depth; norms at 1."""
        residual_std = std / (2 * self.config.n_layers) ** 0.5
        for name, p in self.named_parameters():
            if name.endswith("norm.weight"):
                nn.init.ones_(p)
            elif name.endswith(("o_proj.weight", "down_proj.weight")):
                nn.init.normal_(p, 0.0, residual_std)
            else:
                nn.init.normal_(p, 0.0, std)

    def new_cache(self) -> ModelCache:
        """An empty :class:`ModelCache` with one :class:`KVCache` per layer."""
        return ModelCache(self.config.n_layers)

    def _check_ids(self, input_ids: Tensor) -> None:
        if not isinstance(input_ids, Tensor) or input_ids.dtype not in (torch.int64, torch.int32):
            raise TypeError("input_ids must be a LongTensor of token ids with shape (B, T)")
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must have shape (B, T), got {tuple(input_ids.shape)}; "
                             "add a batch dim with input_ids[None]")
        if input_ids.numel() and (int(input_ids.min()) < 0 or int(input_ids.max()) >= self.config.vocab_size):
            raise ValueError(f"input_ids must lie in [0, vocab_size={self.config.vocab_size}), got values in "
                             f"[{int(input_ids.min())}, {int(input_ids.max())}]; was the text encoded with "
                             "another tokenizer?")

    def hidden_states(self, input_ids: Tensor, kv_cache: ModelCache | None = None, *,
                      attention_mask: Tensor | None = None, position_ids: Tensor | None = None) -> Tensor:
        """Final RMS-normed hidden states (B, T, dim), the input of ``lm_head`` (and of reward / value heads)."""
        self._check_ids(input_ids)
        B, T = input_ids.shape
        if kv_cache is not None and (not isinstance(kv_cache, ModelCache) or len(kv_cache) != self.config.n_layers):
            raise TypeError(f"kv_cache must be a ModelCache with {self.config.n_layers} layers; "
                            "make one with model.new_cache()")
        past = kv_cache.length if kv_cache is not None else 0
        mask = build_attention_mask(attention_mask, B, T, past, device=input_ids.device)
        positions = None
        if position_ids is not None:
            if not isinstance(position_ids, Tensor) or tuple(position_ids.shape) not in ((B, T), (T,)):
                raise ValueError(f"position_ids must be a tensor of shape (B, T) = ({B}, {T}) or (T,), got "
                                 f"{tuple(position_ids.shape) if isinstance(position_ids, Tensor) else position_ids!r}")
            positions = position_ids.to(input_ids.device)
        x = self.model.embed_tokens(input_ids)
        for i, layer in enumerate(self.model.layers):
            x = layer(x, mask=mask, positions=positions, kv_cache=kv_cache[i] if kv_cache is not None else None)
        return self.model.norm(x)

    def forward(self, input_ids: Tensor, kv_cache: ModelCache | None = None, *,
                attention_mask: Tensor | None = None, position_ids: Tensor | None = None) -> Tensor:
        """Logits (B, T, vocab_size) = ``lm_head(hidden_states(...))``."""
        return self.lm_head(self.hidden_states(input_ids, kv_cache, attention_mask=attention_mask,
                                               position_ids=position_ids))

    def num_parameters(self) -> int:
        """Distinct parameters (a tied embedding counted once); equals :func:`count_parameters`."""
        return sum(p.numel() for p in self.parameters())


# ------------------------------------------------------------------------------------- transformers
def _hf_config(config: LlamaConfig) -> Any:
    import transformers

    hf = transformers.LlamaConfig(
        vocab_size=config.vocab_size, hidden_size=config.dim, intermediate_size=config.hidden_dim,
        num_hidden_layers=config.n_layers, num_attention_heads=config.n_heads,
        num_key_value_heads=config.n_kv_heads, head_dim=config.head_dim, hidden_act="silu",
        max_position_embeddings=config.max_seq_len, rms_norm_eps=config.norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": config.rope_base},
        tie_word_embeddings=config.tie_embeddings, attention_bias=False, mlp_bias=False,
        bos_token_id=None, eos_token_id=None, pad_token_id=None,
    )
    hf._attn_implementation = "eager"
    return hf


def to_hf(model: Llama) -> Any:
    """An equivalent ``transformers.LlamaForCausalLM`` (built from a config, nothing downloaded).

    The weights are a plain ``state_dict`` copy (the key names are identical). Uses the ``"eager"`` attention
    implementation (so ``output_attentions=True`` works); logits agree with ours to < 1e-5 in float32.
    """
    import transformers

    if not isinstance(model, Llama):
        raise TypeError(f"to_hf expects a labkit.model.Llama, got {type(model).__name__}")
    hf = transformers.LlamaForCausalLM(_hf_config(model.config))
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    missing, unexpected = hf.load_state_dict(sd, strict=False)
    missing = [k for k in missing if not (k == "lm_head.weight" and model.config.tie_embeddings)]
    if missing or unexpected:
        raise RuntimeError(f"state_dict keys differ from transformers': missing {missing}, unexpected {unexpected}")
    return hf.to(next(model.parameters()).dtype).train(model.training)


def from_hf(hf_model: Any) -> Llama:
    """The inverse of :func:`to_hf`: a :class:`Llama` with the weights of a ``transformers.LlamaForCausalLM``.

    Refuses (ValueError) what this model does not implement: biases, non-default RoPE scaling, another
    activation, a head_dim other than hidden_size / num_attention_heads.
    """
    c = getattr(hf_model, "config", None)
    if c is None or getattr(c, "model_type", None) != "llama":
        raise TypeError("from_hf expects a transformers.LlamaForCausalLM")
    rope = getattr(c, "rope_parameters", None) or {}
    problems = []
    if getattr(c, "attention_bias", False) or getattr(c, "mlp_bias", False):
        problems.append("attention_bias/mlp_bias must be False")
    if rope.get("rope_type", "default") != "default":
        problems.append(f"rope_type must be 'default', got {rope.get('rope_type')!r}")
    if getattr(c, "hidden_act", "silu") != "silu":
        problems.append(f"hidden_act must be 'silu', got {c.hidden_act!r}")
    if (getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads) * c.num_attention_heads != c.hidden_size:
        problems.append("head_dim must equal hidden_size / num_attention_heads")
    if problems:
        raise ValueError("cannot convert this transformers config: " + "; ".join(problems))
    config = LlamaConfig(vocab_size=c.vocab_size, dim=c.hidden_size, n_layers=c.num_hidden_layers,
                         n_heads=c.num_attention_heads, n_kv_heads=c.num_key_value_heads or c.num_attention_heads,
                         hidden_dim=c.intermediate_size, norm_eps=float(c.rms_norm_eps),
                         rope_base=float(rope.get("rope_theta", 10000.0)),
                         max_seq_len=int(c.max_position_embeddings),
                         tie_embeddings=bool(getattr(c, "tie_word_embeddings", False)))
    model = Llama(config)
    sd = {k: v.detach().clone() for k, v in hf_model.state_dict().items() if "rotary_emb" not in k}
    if config.tie_embeddings:
        sd.pop("lm_head.weight", None)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_embeddings)]
    if missing or unexpected:
        raise RuntimeError(f"state_dict keys differ: missing {missing}, unexpected {unexpected}")
    return model.to(next(hf_model.parameters()).dtype).train(hf_model.training)


# ------------------------------------------------------------------------------------------ checkpoints
#: Where the shipped checkpoint lives (``python -m labkit.train`` writes it).
PRETRAINED_DIR = DATA / "tiny_llama"
_CKPT_FORMAT = "labkit-llama"
_TOKENIZER_FILE = "tokenizer.json"


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
    if model.config.tie_embeddings:
        sd.pop("lm_head.weight")
    atomic_write_bytes(path / "model.safetensors", st_save(dict(sorted(sd.items())), metadata={"format": "pt"}))
    meta = {"format": _CKPT_FORMAT, "version": 1, "config": model.config.to_dict()}
    atomic_write_bytes(path / "config.json", (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode())
    if tokenizer is not None:
        tokenizer.save(path / _TOKENIZER_FILE)
    return path


def load_checkpoint(path: str | Path, *, config: LlamaConfig | None = None) -> tuple[Llama, Any]:
    """Load a folder written by :func:`save_checkpoint` → ``(model, tokenizer)`` (tokenizer ``None`` if absent).

    Raises ValueError when ``config`` is given and differs from the stored one, when a tensor's shape does not
    match the stored config, or when the tokenizer's vocabulary does not match the model's.
    """
    from safetensors.torch import load_file

    from labkit.tokenizer.bpe import BPETokenizer

    path = Path(path)
    for name in ("config.json", "model.safetensors"):
        if not (path / name).exists():
            raise FileNotFoundError(f"{path / name} is missing: not a checkpoint folder written by "
                                    "labkit.model.save_checkpoint (regenerate the shipped one: python -m labkit.train)")
    meta = json.loads((path / "config.json").read_text(encoding="utf-8"))
    if meta.get("format") != _CKPT_FORMAT:
        raise ValueError(f"{path / 'config.json'}: format is {meta.get('format')!r}, expected {_CKPT_FORMAT!r}")
    stored = LlamaConfig.from_dict(meta["config"])
    if config is not None and config != stored:
        diff = {k: (v, getattr(stored, k)) for k, v in config.to_dict().items() if getattr(stored, k) != v}
        raise ValueError(f"checkpoint config does not match the requested config: "
                         + ", ".join(f"{k}: requested {a!r}, checkpoint {b!r}" for k, (a, b) in diff.items()))
    model = Llama(stored)
    weights = load_file(str(path / "model.safetensors"))
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
        raise FileNotFoundError(f"{PRETRAINED_DIR} is missing; regenerate it with `python -m labkit.train`")
    model, tok = load_checkpoint(PRETRAINED_DIR)
    return model.eval(), tok
