"""Requests and arrival traces for the serving chapter (chapter 09).

A :class:`Request` arrives at a step of the virtual clock (one step = one forward pass of the server) with
a prompt (token ids) and a number of tokens to generate. :func:`make_trace` draws a seeded trace: bursty
arrivals (exponential gaps), prompts cut from the Shakespeare validation text, a long-tailed mix of output
lengths (most replies short, a few long), as in chat traffic. The shipped one is ``data/serving/trace.json``
(``python -m labkit.experiments.serving`` writes it; :func:`load_trace` reads it).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

from labkit.core.io import read_json
from labkit.core.manifest import verify_data_file
from labkit.core.paths import DATA
from labkit.core.validate import require_int

__all__ = ["Request", "TRACE_FILE", "TRACE_SETTINGS", "make_trace", "trace_to_json", "load_trace"]

TRACE_FILE = DATA / "serving" / "trace.json"
#: The shipped trace's settings.
TRACE_SETTINGS: dict[str, Any] = dict(n=24, seed=0, mean_gap=2.0, prompt_len=(4, 40), max_new=(4, 72),
                                      max_total=120)
_REGEN = "python -m labkit.experiments.serving"


@dataclass(frozen=True)
class Request:
    """One request: id, arrival step, prompt token ids, tokens to generate (greedy, no EOS)."""
    rid: int
    arrival: int
    prompt: tuple[int, ...]
    max_new_tokens: int

    def __post_init__(self) -> None:
        require_int(self.arrival, "arrival", 0, "arrival is a step of the virtual clock")
        require_int(self.max_new_tokens, "max_new_tokens", 1, "ask for at least one new token")
        if len(self.prompt) < 1:
            raise ValueError(f"request {self.rid}: prompt must hold at least one token")


def make_trace(tokens: torch.Tensor, n: int, seed: int, mean_gap: float = 2.0,
               prompt_len: tuple[int, int] = (4, 40), max_new: tuple[int, int] = (4, 72),
               max_total: int = 120) -> list[Request]:
    """``n`` requests: gaps ~ Exponential(mean ``mean_gap`` steps) rounded down, prompt lengths uniform in
    ``prompt_len`` cut at random offsets of ``tokens`` (1-D ids), output lengths log-uniform in ``max_new``
    (long tail), prompt + output ≤ ``max_total``. Deterministic in ``seed``."""
    require_int(n, "n", 1, "pass the number of requests")
    if tokens.dim() != 1 or tokens.numel() < prompt_len[1] + 1:
        raise ValueError("tokens must be a 1-D tensor of ids longer than the longest prompt")
    g = torch.Generator().manual_seed(seed)
    t, out = 0.0, []
    for rid in range(n):
        if rid:
            t += float(-mean_gap * torch.log(1 - torch.rand(1, generator=g)))
        L = int(torch.randint(prompt_len[0], prompt_len[1] + 1, (1,), generator=g))
        start = int(torch.randint(0, tokens.numel() - L, (1,), generator=g))
        lo, hi = torch.log(torch.tensor(float(max_new[0]))), torch.log(torch.tensor(float(max_new[1])))
        m = int(torch.exp(lo + (hi - lo) * torch.rand(1, generator=g)).round())
        m = max(1, min(m, max_total - L))
        out.append(Request(rid, int(t), tuple(tokens[start:start + L].tolist()), m))
    return out


def trace_to_json(requests: list[Request], settings: dict[str, Any]) -> dict[str, Any]:
    """The JSON layout of a trace file: settings + one object per request."""
    return {"settings": settings, "requests": [{**asdict(r), "prompt": list(r.prompt)} for r in requests]}


def load_trace(path: Any = None) -> list[Request]:
    """The requests of a trace file (default: the shipped ``data/serving/trace.json``, checksum-verified)."""
    path = TRACE_FILE if path is None else path
    verify_data_file(path, _REGEN)
    obj = read_json(path, regenerate=_REGEN)
    return [Request(r["rid"], r["arrival"], tuple(r["prompt"]), r["max_new_tokens"]) for r in obj["requests"]]
