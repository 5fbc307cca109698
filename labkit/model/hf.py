"""Conversion to and from 🤗 ``transformers.LlamaForCausalLM`` (chapter 07).

The module tree of :class:`labkit.model.Llama` has the same names as transformers' Llama, so converting
is a plain ``state_dict`` copy in either direction; only the configs need translating.
"""
from __future__ import annotations

from typing import Any

from labkit.model.config import LlamaConfig
from labkit.model.llama import Llama

__all__ = ["to_hf", "from_hf"]


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
    if ((getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads) * c.num_attention_heads
            != c.hidden_size):
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
