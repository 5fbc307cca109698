"""Write the shipped arrival trace of chapter 09, ``data/serving/trace.json``.

    python -m labkit.experiments.serving      # deterministic (seeded), under a second

Prompts are cut from the Shakespeare validation split (encoded with the course tokenizer); arrivals,
prompt lengths and output lengths come from :func:`labkit.serving.make_trace` with
:data:`labkit.serving.TRACE_SETTINGS`.
"""
from __future__ import annotations

import sys

from labkit.core.io import atomic_write_json
from labkit.serving.trace import TRACE_FILE, TRACE_SETTINGS, Request, make_trace, trace_to_json
from labkit.tokenizer.shipped import load_shakespeare_tokenizer
from labkit.train.loop import corpus_tokens

__all__ = ["build_trace", "main"]


def build_trace() -> list[Request]:
    """The shipped trace, rebuilt from the settings (no file read)."""
    tokens = corpus_tokens(load_shakespeare_tokenizer(), "val")
    return make_trace(tokens, **TRACE_SETTINGS)


def main(argv: list[str] | None = None) -> int:
    """``python -m labkit.experiments.serving``: write ``data/serving/trace.json``."""
    reqs = build_trace()
    TRACE_FILE.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(TRACE_FILE, trace_to_json(reqs, TRACE_SETTINGS))
    print(f"wrote {TRACE_FILE}: {len(reqs)} requests, {sum(r.max_new_tokens for r in reqs)} tokens to generate")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
