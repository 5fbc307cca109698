"""The tool-use experiment of chapter 21: the course model fine-tuned to call a calculator and a retriever,
against the same model fine-tuned to answer directly, on held-out questions.

Both runs start from the shipped base model (``data/tiny_llama``) and use the chapter-12 loop
(:func:`labkit.finetune.sft.train_sft`: packed rows, loss on the assistant turns, the course's AdamW,
warm-up + cosine) with the same settings (:data:`RUN`) and the same questions (:func:`training_questions`);
they differ only in the target: ``tools`` learns ``<call>…</call>`` → observation → answer for calc and search
questions (and to answer single-digit sums alone), ``direct`` learns the answer at once for every question.
Test questions (:func:`test_questions`): fresh arithmetic, world facts about entities never seen in training,
and sums. Command (deterministic; CPU, one thread)::

    python -m labkit.experiments.tools [--steps N] [--jobs 2] [--out DIR]

Writes ``data/tools/results.json`` (settings, losses, accuracy per kind, every trace) and
``data/tools/tool_model.safetensors`` (the tool model's weights in float16, 1.8 MB; the results are measured
with these rounded weights). :func:`load_tool_model` loads it back (sha256-checked against data/MANIFEST).
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from labkit.agents import toolmodel as tm
from labkit.agents.tools import CALC_TOOL, Tool
from labkit.core.io import atomic_write_bytes, atomic_write_json, read_json
from labkit.core.manifest import verify_data_file
from labkit.core.paths import DATA
from labkit.core.repro import seed_everything
from labkit.finetune import sft
from labkit.model import Llama, load_pretrained

__all__ = ["RUN", "TOOLS_DIR", "RESULTS_PATH", "WEIGHTS_PATH", "REGENERATE", "training_questions",
           "test_questions", "training_records", "train_run", "load_tool_model", "load_results", "main"]

#: Settings shared by both runs (lr: the chapter-12 full-SFT value).
RUN: dict[str, Any] = dict(steps=400, batch_size=16, max_len=128, lr=1e-3, warmup=30, seed=0,
                           n_arith_train=1200, n_arith_test=150, world_repeat=3, sum_repeat=2)
TOOLS_DIR: Path = DATA / "tools"
RESULTS_PATH: Path = TOOLS_DIR / "results.json"
WEIGHTS_PATH: Path = TOOLS_DIR / "tool_model.safetensors"
REGENERATE = "python -m labkit.experiments.tools"


def training_questions() -> list[dict[str, Any]]:
    """Arithmetic (seed 1), the world's training entities (repeated ``world_repeat`` times) and the sums."""
    arith = tm.arithmetic_questions(RUN["n_arith_train"], seed=1)
    return arith + tm.world_questions("train") * RUN["world_repeat"] + tm.sum_questions() * RUN["sum_repeat"]


def test_questions() -> list[dict[str, Any]]:
    """Fresh arithmetic (seed 2, none in training), the world's test entities, and 30 sums (seed 3)."""
    seen = [q["arg"] for q in tm.arithmetic_questions(RUN["n_arith_train"], seed=1)]
    sums = tm.sum_questions()
    picks = torch.randperm(len(sums), generator=torch.Generator().manual_seed(3))[:30].tolist()
    return (tm.arithmetic_questions(RUN["n_arith_test"], seed=2, exclude=seen) + tm.world_questions("test")
            + [sums[i] for i in sorted(picks)])


def training_records(mode: str, tools: Sequence[Tool]) -> list[dict[str, Any]]:
    """Chat records for ``mode`` ``"tools"`` (calls with the *real* tool output as observation) or ``"direct"``."""
    if mode not in ("tools", "direct"):
        raise ValueError(f"mode must be 'tools' or 'direct', got {mode!r}")
    table = {t.name: t for t in tools}
    out = []
    for q in training_questions():
        if mode == "direct" or q["tool"] is None:
            out.append(tm.direct_conversation(q))
        else:
            out.append(tm.tool_conversation(q, table[q["tool"]].fn(q["arg"])))
    return out


def _round_fp16(model: Llama) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.half().float())


def train_run(mode: str, *, steps: int | None = None, tools: Sequence[Tool] | None = None,
              progress: bool = True) -> tuple[Llama, Any, list[float]]:
    """Fine-tune the base model for ``mode``; returns ``(model, tokenizer, losses)``.

    ``steps`` (default ``RUN["steps"]``) stops early on the shipped cosine schedule, so the first losses of a
    short rerun equal the shipped ones.
    """
    tools = [CALC_TOOL, tm.make_search_tool()] if tools is None else tools
    seed_everything(RUN["seed"])
    model, tok = load_pretrained()
    enc = [sft.encode_example(r, tok) for r in training_records(mode, tools)]
    losses = sft.train_sft(model, enc, steps=RUN["steps"] if steps is None else steps,
                           batch_size=RUN["batch_size"], max_len=RUN["max_len"], lr=RUN["lr"],
                           seed=RUN["seed"], warmup=RUN["warmup"], schedule_steps=RUN["steps"], progress=progress)
    return model, tok, losses


def load_tool_model(path: str | Path | None = None) -> tuple[Llama, Any]:
    """The shipped tool model (base architecture + float16 weights from :data:`WEIGHTS_PATH`), eval mode."""
    path = WEIGHTS_PATH if path is None else Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; regenerate it with `{REGENERATE}`")
    verify_data_file(path, REGENERATE)
    model, tok = load_pretrained()
    weights = {k: v.float() for k, v in st_load(path.read_bytes()).items()}
    model.load_state_dict(weights, strict=not model.config.tie_embeddings)
    return model.eval(), tok


def load_results(path: str | Path | None = None) -> dict[str, Any]:
    """The shipped ``results.json`` (sha256-checked)."""
    path = RESULTS_PATH if path is None else Path(path)
    verify_data_file(path, REGENERATE)
    return read_json(path)


def _measure(mode: str, tools: Sequence[Tool], steps: int, progress: bool) -> tuple[Llama, dict[str, Any]]:
    """Train ``mode``, round to float16, evaluate on the test questions (tools: free and constrained decoding)."""
    t0 = time.perf_counter()
    model, tok, losses = train_run(mode, steps=steps, tools=tools, progress=progress)
    seconds = time.perf_counter() - t0
    _round_fp16(model)
    test = test_questions()
    out: dict[str, Any] = {"losses": [round(x, 6) for x in losses], "sec_per_step": round(seconds / steps, 4),
                           "copy_accuracy": round(tm.copy_accuracy(model), 4)}
    if mode == "direct":
        traces = tm.run_direct(model, tok, test)
        out.update(accuracy=tm.accuracy_by_kind(traces), traces=traces)
        return model, out
    for how in ("free", "constrained"):
        traces = tm.run_tool_agent(model, tok, test, tools, constrained=how == "constrained")
        out[how] = {"accuracy": tm.accuracy_by_kind(traces), "traces": traces}
    return model, out


def _worker(args: tuple[str, int, bool]) -> tuple[str, dict[str, Any], dict[str, torch.Tensor] | None]:
    """One run in its own process (one thread): ``(mode, result, float16 state dict of the tool model)``."""
    mode, steps, progress = args
    torch.set_num_threads(1)
    tools = [CALC_TOOL, tm.make_search_tool()]
    model, result = _measure(mode, tools, steps, progress)
    sd = None
    if mode == "tools":
        sd = {k: v.detach().half().contiguous() for k, v in model.state_dict().items()
              if k != "lm_head.weight" or not model.config.tie_embeddings}
    return mode, result, sd


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=RUN["steps"])
    ap.add_argument("--out", type=Path, default=TOOLS_DIR)
    ap.add_argument("--jobs", type=int, default=1, help="runs in parallel (2: tools and direct at once)")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    base, _ = load_pretrained()
    results: dict[str, Any] = {"settings": {**RUN, "steps": args.steps},
                               "base_copy_accuracy": round(tm.copy_accuracy(base), 4),
                               "n_train": len(training_questions()),
                               "n_test": {k: sum(q["kind"] == k for q in test_questions())
                                          for k in ("calc", "search", "direct")}}
    jobs = [(mode, args.steps, not args.quiet) for mode in ("tools", "direct")]
    if args.jobs > 1:
        with mp.get_context("spawn").Pool(min(args.jobs, 2)) as pool:
            done = pool.map(_worker, jobs)
    else:
        done = [_worker(j) for j in jobs]
    for mode, result, sd in done:
        results[mode] = result
        acc = {k: result[k]["accuracy"] for k in ("free", "constrained")} if mode == "tools" else result["accuracy"]
        print(mode, acc, f"{result['sec_per_step']} s/step", flush=True)
        if sd is not None:
            args.out.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(args.out / WEIGHTS_PATH.name, st_save(dict(sorted(sd.items()))))
    atomic_write_json(args.out / RESULTS_PATH.name, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
