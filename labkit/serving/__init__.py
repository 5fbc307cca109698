"""Serving many requests at once (chapter 09): paged KV cache, continuous batching, speculative decoding.

Layer: beside train / quant / memory, above model (imports model, blocks, tokenizer, datasets, core only).
"""
from __future__ import annotations

from .allocator import BlockAllocator, OutOfBlocks, append_slot  # noqa: F401
from .metrics import serving_metrics  # noqa: F401
from .paged_attention import paged_attention, paged_forward  # noqa: F401
from .paged_cache import PagedKVCache, kv_waste  # noqa: F401
from .scheduler import POLICIES, SeqState, ServeResult, serve  # noqa: F401
from .speculative import crop_cache, speculative_accept, speculative_generate  # noqa: F401
from .trace import TRACE_FILE, TRACE_SETTINGS, Request, load_trace, make_trace, trace_to_json  # noqa: F401

__all__ = ["BlockAllocator", "OutOfBlocks", "append_slot", "serving_metrics", "paged_attention", "paged_forward",
           "PagedKVCache", "kv_waste", "POLICIES", "SeqState", "ServeResult", "serve", "crop_cache",
           "speculative_accept", "speculative_generate", "TRACE_FILE", "TRACE_SETTINGS", "Request", "load_trace",
           "make_trace", "trace_to_json"]
