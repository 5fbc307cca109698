"""Layer 4, model (chapters 07-08): the LLaMA config and module, checkpoints and 🤗 conversion, decoding.
"""
from __future__ import annotations

from .checkpoint import PRETRAINED_DIR, load_checkpoint, load_pretrained, save_checkpoint  # noqa: F401
from .config import LlamaConfig, count_parameters  # noqa: F401
from .decoding import beam_search, generate, is_sampling, seq_rep_n  # noqa: F401
from .hf import from_hf, to_hf  # noqa: F401
from .llama import Llama, LlamaDecoderLayer, LlamaModel, ModelCache  # noqa: F401
from .logprobs import sequence_logprob, sequence_logprobs, token_logprobs  # noqa: F401
from .processors import (  # noqa: F401
    apply_repetition_penalty,
    apply_temperature,
    ban_repeated_ngrams,
    no_repeat_ngram_mask,
    process_logits,
    top_k_filter,
    top_p_filter,
)
from .rope_layout import (  # noqa: F401
    ROPE_LAYOUTS,
    convert_rope_layout,
    load_state_dict_with_rope_layout,
    state_dict_with_rope_layout,
)

__all__ = ["PRETRAINED_DIR", "save_checkpoint", "load_checkpoint", "load_pretrained", "LlamaConfig", "count_parameters", "is_sampling", "generate", "beam_search", "seq_rep_n", "to_hf", "from_hf", "ModelCache", "LlamaDecoderLayer", "LlamaModel", "Llama", "token_logprobs", "sequence_logprobs", "sequence_logprob", "apply_temperature", "top_k_filter", "top_p_filter", "apply_repetition_penalty", "no_repeat_ngram_mask", "ban_repeated_ngrams", "process_logits", "ROPE_LAYOUTS", "convert_rope_layout", "state_dict_with_rope_layout", "load_state_dict_with_rope_layout"]
