"""The chapter 17 experiment: the same held-out Shakespeare scored by models with different units.

Models (all fitted on the train split, scored on the val split; nothing is trained by gradient here):

* ``tiny_llama``: the shipped course model (byte-level BPE, 1024 tokens), non-overlapping 128-token windows;
* ``token_unigram`` / ``token_bigram``: count models over the same BPE tokens (add-k smoothing);
* ``byte_unigram`` / ``byte_trigram`` / ``byte_4gram``: count models over UTF-8 bytes (add-k smoothing).

Every model scores the same text span (the val text after its first BPE token), so the NLL sums are
comparable; per-unit perplexities are not (a token is ≈ 2.5 bytes). The smoothing constants k were set by
hand (not tuned on val). Command (deterministic, CPU, ≈ 15 s):

    python -m labkit.experiments.evaluation            # data/evaluation/lm_scores.json
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from labkit.core.io import atomic_write_json, read_json
from labkit.core.manifest import verify_data_file
from labkit.core.paths import DATA
from labkit.datasets import load_shakespeare
from labkit.evaluation import NGramLM, bits_per_byte, causal_lm_nll, perplexity
from labkit.model import load_pretrained

__all__ = ["SCORES_PATH", "GENERATIONS_PATH", "SLICE_CHARS", "MODELS", "score_models", "load_lm_scores",
           "load_generations", "main"]

SCORES_PATH = DATA / "evaluation" / "lm_scores.json"
GENERATIONS_PATH = DATA / "evaluation" / "generations.json"
REGENERATE = "python -m labkit.experiments.evaluation"
#: The notebook's live slice: the first SLICE_CHARS characters of the val split.
SLICE_CHARS = 20_000
#: name -> (unit, n-gram order or None for the transformer, add-k constant)
MODELS: dict[str, tuple[str, int | None, float]] = {
    "tiny_llama": ("token", None, 0.0),
    "token_unigram": ("token", 1, 1.0),
    "token_bigram": ("token", 2, 0.1),
    "byte_unigram": ("byte", 1, 1.0),
    "byte_trigram": ("byte", 3, 0.1),
    "byte_4gram": ("byte", 4, 0.05),
}


def _row(nll: float, n_units: int, n_bytes: int, unit: str) -> dict[str, Any]:
    return {"unit": unit, "nll": round(nll, 6), "n_units": n_units, "n_bytes": n_bytes,
            "perplexity": round(perplexity(nll, n_units), 6), "bits_per_byte": round(bits_per_byte(nll, n_bytes), 6)}


def score_models(text: str, names: Sequence[str] = tuple(MODELS), *, model: Any = None, tokenizer: Any = None,
                 train: str | None = None) -> dict[str, dict[str, Any]]:
    """Score ``text`` with each named model (see MODELS); every model predicts the same span, the text after
    its first BPE token (B bytes). Returns name -> {unit, nll, n_units, n_bytes, perplexity, bits_per_byte}."""
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        raise ValueError(f"unknown model name(s) {unknown}; choose from {sorted(MODELS)}")
    if model is None or tokenizer is None:
        model, tokenizer = load_pretrained()
    model.eval()
    train = load_shakespeare("train") if train is None else train
    ids = tokenizer.encode(text)
    skip = len(tokenizer.token_bytes(ids[0]))               # bytes of the first token: never predicted
    data = text.encode("utf-8")
    n_bytes = len(data) - skip
    out: dict[str, dict[str, Any]] = {}
    train_ids = None
    for name in names:
        unit, order, k = MODELS[name]
        if order is None:
            nll, n = causal_lm_nll(model, ids, model.config.max_seq_len)
        elif unit == "token":
            train_ids = np.array(tokenizer.encode(train)) if train_ids is None else train_ids
            nll, n = NGramLM(order, tokenizer.vocab_size, k).fit(train_ids).nll(ids, 1), len(ids) - 1
        else:
            lm = NGramLM(order, 256, k).fit(np.frombuffer(train.encode("utf-8"), dtype=np.uint8))
            nll, n = lm.nll(np.frombuffer(data, dtype=np.uint8), skip), n_bytes
        out[name] = _row(nll, n, n_bytes, unit)
    return out


def load_lm_scores(path: Path | str = SCORES_PATH) -> dict[str, Any]:
    """The shipped table (checksum-verified): {"slice": {...}, "full": {...}} as written by :func:`main`."""
    verify_data_file(path, REGENERATE)
    return read_json(path, regenerate=REGENERATE)


def load_generations(path: Path | str = GENERATIONS_PATH) -> list[dict[str, Any]]:
    """The shipped references and outputs (checksum-verified): items with id, kind, references, output, human."""
    verify_data_file(path, "git checkout -- data/evaluation/generations.json (hand-written, not generated)")
    return read_json(path)["items"]


def main(argv: list[str] | None = None) -> int:
    """``python -m labkit.experiments.evaluation``: write data/evaluation/lm_scores.json."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv:
        print("usage: python -m labkit.experiments.evaluation", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model, tok = load_pretrained()
    val = load_shakespeare("val")
    res = {"description": "Negative log-likelihood (nats) of held-out Shakespeare (val split) under models with "
                          "different units; the same text span for every model. slice = val[:20000], full = val.",
           "command": REGENERATE, "slice_chars": SLICE_CHARS,
           "slice": score_models(val[:SLICE_CHARS], model=model, tokenizer=tok),
           "full": score_models(val, model=model, tokenizer=tok)}
    atomic_write_json(SCORES_PATH, res)
    for name, r in res["full"].items():
        print(f"{name:14s} ppl/{r['unit']:5s} {r['perplexity']:9.3f}   bits/byte {r['bits_per_byte']:.4f}")
    print(f"wrote {SCORES_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
