"""Layer 4, model (chapters 07-08): the LLaMA config and module, checkpoints and 🤗 conversion, decoding.
"""
from __future__ import annotations

from .decoding import (  # noqa: F401
    apply_repetition_penalty,
    apply_temperature,
    ban_repeated_ngrams,
    beam_search,
    generate,
    is_sampling,
    no_repeat_ngram_mask,
    process_logits,
    seq_rep_n,
    top_k_filter,
    top_p_filter,
)
from .llama import (  # noqa: F401
    PRETRAINED_DIR,
    Llama,
    LlamaConfig,
    LlamaDecoderLayer,
    LlamaModel,
    ModelCache,
    count_parameters,
    from_hf,
    load_checkpoint,
    load_pretrained,
    save_checkpoint,
    to_hf,
)
from .logprobs import sequence_logprob, sequence_logprobs, token_logprobs  # noqa: F401

__all__ = ["LlamaConfig", "count_parameters", "ModelCache", "LlamaDecoderLayer", "LlamaModel", "Llama", "to_hf", "from_hf", "save_checkpoint", "load_checkpoint", "load_pretrained", "PRETRAINED_DIR", "token_logprobs", "sequence_logprobs", "sequence_logprob", "apply_temperature", "top_k_filter", "top_p_filter", "apply_repetition_penalty", "no_repeat_ngram_mask", "ban_repeated_ngrams", "process_logits", "is_sampling", "generate", "beam_search", "seq_rep_n"]
