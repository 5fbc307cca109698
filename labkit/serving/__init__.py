"""Serving many requests at once (chapter 09): paged KV cache, continuous batching, speculative decoding."""
