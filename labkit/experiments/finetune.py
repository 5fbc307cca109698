"""The fine-tuning experiment of chapters 12–14: every method on the course task, one results file.

Every run starts from the shipped base model (``data/tiny_llama``), uses the same data (the task's training
split, chat template, loss on the answer tokens), the same loop (:func:`labkit.finetune.sft.train_sft`: packed
rows, the course's AdamW, warm-up + cosine) and the same settings (:data:`RUN`); runs differ only in what trains
(:data:`METHODS`): all weights; LoRA of rank r (alpha = 2r, the seven projections); QLoRA (the same on an NF4
base); bottleneck adapters; BitFit; prompt tuning; prefix tuning; P-tuning v2. Each run is measured on the test
split: exact match per skill (greedy answers), the answer tokens' loss and accuracy (teacher-forced), trainable
parameters, training memory and seconds per step. Command (deterministic; CPU, one thread per run):

    python -m labkit.experiments.finetune [--only full,lora_r8] [--steps N] [--jobs 2] [--out DIR]

It writes ``data/finetune/results.json`` (``methods``: one entry per method; ``baselines``: the
most-frequent-answer baseline and the base model before fine-tuning) and each method's trained weights:
``full/`` (the SFT model, a checkpoint other chapters load), ``lora_r8.safetensors`` … (:func:`save_lora`),
``adapter.safetensors`` … (:func:`labkit.finetune.peft.trainable_state_dict`). Load any of them back with
:func:`load_method`.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from labkit.core.io import atomic_path, atomic_write_json, read_json
from labkit.core.paths import DATA
from labkit.core.repro import seed_everything
from labkit.datasets import task as task_data
from labkit.finetune import sft
from labkit.finetune.lora import LLAMA_TARGETS, add_lora, count_trainable, load_lora, save_lora
from labkit.finetune.peft import PrefixTuning, PromptTuning, add_adapters, apply_bitfit, load_trainable
from labkit.finetune.peft import trainable_state_dict
from labkit.model import Llama, load_checkpoint, load_pretrained, save_checkpoint

__all__ = ["METHODS", "RUN", "FINETUNE_DIR", "RESULTS_PATH", "prepare", "run_method", "most_frequent_baseline",
           "base_model_row", "load_method", "load_results", "main"]

#: name → what trains and its learning rate (each lr: the best of 2–3 tried on a short run, see data/README).
#: LoRA with alpha = 2r keeps the scale alpha/r = 2 fixed, so under Adam (which moves every entry of A and B by
#: about lr per step) the update of W = 2·B·A sums r such terms and grows with r: the full runs measured
#: r = 32 at lr 4e-3 at exact match 0.413 and at 2e-3 at 0.967 (the lr below); r = 2 at 8e-3 at 0.733 against
#: 0.750 at 4e-3.
METHODS: dict[str, dict[str, Any]] = {
    "full": dict(kind="full", lr=1e-3),
    "lora_r2": dict(kind="lora", r=2, lr=4e-3),
    "lora_r8": dict(kind="lora", r=8, lr=4e-3),
    "lora_r32": dict(kind="lora", r=32, lr=2e-3),
    "qlora_r8": dict(kind="qlora", r=8, lr=4e-3),
    "adapter": dict(kind="adapter", bottleneck=16, lr=1e-2),
    "bitfit": dict(kind="bitfit", lr=5e-2),
    "prefix": dict(kind="prefix", n=16, reparam=True, lr=3e-2),
    "ptuning_v2": dict(kind="prefix", n=16, reparam=False, lr=1e-1),
    "prompt": dict(kind="prompt", n=16, lr=1e-1),
}
#: Settings shared by every run.
RUN: dict[str, Any] = dict(steps=1000, batch_size=16, max_len=128, seed=0, warmup=50)
#: Where the shipped results and weights live.
FINETUNE_DIR: Path = DATA / "finetune"
RESULTS_PATH: Path = FINETUNE_DIR / "results.json"

Forward = Callable[[nn.Module, Any], torch.Tensor]


def _method(name: str) -> dict[str, Any]:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose from {list(METHODS)}")
    return METHODS[name]


def prepare(model: Llama, name: str) -> tuple[nn.Module, Forward]:
    """Make ``model`` ready for method ``name`` (in place; prompt/prefix tuning wrap it).

    Returns ``(trainable model, forward)``, ``forward(model, batch)`` being the packed forward that
    :func:`labkit.finetune.sft.train_sft` and :func:`labkit.finetune.sft.answer_metrics` call.
    """
    s = _method(name)
    kind = s["kind"]
    if kind == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return model, sft.packed_forward
    if kind in ("lora", "qlora"):
        add_lora(model, list(LLAMA_TARGETS), r=s["r"], alpha=2 * s["r"], qlora=kind == "qlora")
        return model, sft.packed_forward
    if kind == "adapter":
        add_adapters(model, s["bottleneck"])
        return model, sft.packed_forward
    if kind == "bitfit":
        apply_bitfit(model)
        return model, sft.packed_forward
    wrapped = PromptTuning(model, s["n"]) if kind == "prompt" else PrefixTuning(model, s["n"], reparam=s["reparam"])
    return wrapped, lambda mdl, batch: mdl.packed_forward(batch)


def _evaluate(model: nn.Module, forward: Forward, tokenizer: Any) -> dict[str, Any]:
    """Exact match per skill, answer-token loss and accuracy, and every prediction on the test split."""
    test = task_data.load_task("test")
    scores, preds = sft.evaluate_task(model, tokenizer, test)
    tf = sft.answer_metrics(model, tokenizer, test, forward=forward)
    return {"exact_match": scores["all"], "scores": scores, "token_accuracy": round(tf["token_acc"], 6),
            "test_loss": round(tf["loss"], 6), "predictions": preds}


def run_method(name: str, *, steps: int | None = None, schedule_steps: int | None = None, evaluate: bool = True,
               progress: bool = True) -> tuple[nn.Module, dict[str, Any]]:
    """Fine-tune the shipped base model on the task's training split with method ``name``; measure it.

    ``steps`` (default ``RUN["steps"]``) and ``schedule_steps`` (default ``steps``) let a short rerun replay the
    first steps of the shipped run exactly. Returns ``(model, result)``; ``result`` holds the settings,
    ``trainable_params`` / ``total_params``, ``memory`` (bytes of one training step,
    :func:`labkit.finetune.sft.training_memory`), ``losses``, ``sec_per_step`` and, if ``evaluate``, the
    measurements of :func:`_evaluate`.
    """
    s = _method(name)
    steps = RUN["steps"] if steps is None else steps
    seed_everything(RUN["seed"])
    base, tok = load_pretrained()
    total = base.num_parameters()
    model, forward = prepare(base, name)
    train = [sft.encode_example(x, tok) for x in task_data.load_task("train")]
    probe = sft.pack(train[:64], RUN["max_len"], "ffd")
    batch = {k: getattr(probe, k)[:RUN["batch_size"]] for k in ("input_ids", "labels", "position_ids", "doc_ids")}
    memory = sft.training_memory(model, batch, forward=forward)
    trainable, _ = count_trainable(model)
    t0 = time.perf_counter()
    losses = sft.train_sft(model, train, steps=steps, batch_size=RUN["batch_size"], max_len=RUN["max_len"],
                           lr=s["lr"], seed=RUN["seed"], warmup=RUN["warmup"], forward=forward,
                           schedule_steps=schedule_steps, progress=progress)
    seconds = time.perf_counter() - t0
    result: dict[str, Any] = {"method": name, **s, "steps": steps, **{k: RUN[k] for k in RUN if k != "steps"},
                              "trainable_params": trainable, "total_params": total, "memory": memory,
                              "losses": [round(x, 6) for x in losses], "sec_per_step": round(seconds / steps, 4)}
    if evaluate:
        result.update(_evaluate(model, forward, tok))
    return model, result


def most_frequent_baseline() -> dict[str, Any]:
    """Answer every test question of a skill with that skill's most frequent training answer."""
    by_skill: dict[str, Counter[str]] = {}
    for r in task_data.load_task("train"):
        by_skill.setdefault(task_data.skill_of(r), Counter())[r["output"]] += 1
    guess = {k: c.most_common(1)[0][0] for k, c in by_skill.items()}
    test = task_data.load_task("test")
    preds = [guess[task_data.skill_of(r)] for r in test]
    scores = task_data.score_by_skill(preds, test)
    return {"exact_match": scores["all"], "scores": scores, "answers": guess}


def base_model_row() -> dict[str, Any]:
    """The base model before any fine-tuning, measured like a method (it has never seen the chat template)."""
    seed_everything(RUN["seed"])
    model, tok = load_pretrained()
    return _evaluate(model, sft.packed_forward, tok)


def _save(model: nn.Module, name: str, out: Path) -> None:
    kind = _method(name)["kind"]
    if kind == "full":
        save_checkpoint(model, load_pretrained()[1], out / "full")
    elif kind in ("lora", "qlora"):
        save_lora(model, out / f"{name}.safetensors", extra={"method": kind})
    else:
        from safetensors.torch import save_file

        with atomic_path(out / f"{name}.safetensors") as tmp:
            save_file({k: v.contiguous() for k, v in trainable_state_dict(model).items()}, tmp)


def load_method(name: str, root: str | Path | None = None) -> tuple[nn.Module, Forward, Any]:
    """The shipped fine-tuned model of method ``name`` → ``(model, forward, tokenizer)``, ready to evaluate."""
    root = Path(root or FINETUNE_DIR)
    kind = _method(name)["kind"]
    if kind == "full":
        model, tok = load_checkpoint(root / "full")
        return model, sft.packed_forward, tok
    base, tok = load_pretrained()
    model, forward = prepare(base, name)
    path = root / f"{name}.safetensors"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; regenerate it with `python -m labkit.experiments.finetune "
                                f"--only {name}`")
    if kind in ("lora", "qlora"):
        load_lora(model, path)
    else:
        from safetensors.torch import load_file

        load_trainable(model, load_file(path))
    model.eval()
    return model, forward, tok


def load_results(path: str | Path | None = None) -> dict[str, Any]:
    """``data/finetune/results.json``: ``{"run": RUN, "methods": {name: result}, "baselines": {...}}``."""
    return read_json(Path(path or RESULTS_PATH))


def _worker(args: tuple[str, int | None, str]) -> tuple[str, dict[str, Any]]:
    name, steps, out = args
    torch.set_num_threads(1)                      # the same floats on any machine
    model, res = run_method(name, steps=steps, progress=False)
    _save(model, name, Path(out))
    print(f"{name:10s} trainable {res['trainable_params']:>9,d}  EM {res['exact_match']:.3f}  "
          f"token acc {res['token_accuracy']:.3f}  test loss {res['test_loss']:.3f}  "
          f"{res['sec_per_step'] * 1000:.0f} ms/step", flush=True)
    return name, res


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m labkit.experiments.finetune [--only a,b] [--steps N] [--jobs J] [--out DIR]``."""
    ap = argparse.ArgumentParser(prog="python -m labkit.experiments.finetune", description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(FINETUNE_DIR))
    ap.add_argument("--steps", type=int, default=None, help=f"steps per run (default {RUN['steps']})")
    ap.add_argument("--only", default=None, help="comma-separated method names, e.g. full,lora_r8")
    ap.add_argument("--jobs", type=int, default=1, help="runs in parallel, one thread each (results do not change)")
    args = ap.parse_args(list(argv) if argv is not None else None)
    names = args.only.split(",") if args.only else list(METHODS)
    for n in names:
        _method(n)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    res_path = out / "results.json"
    results = read_json(res_path) if res_path.exists() else {"methods": {}}
    results["run"] = dict(RUN, steps=args.steps or RUN["steps"])
    results["baselines"] = {"most_frequent": most_frequent_baseline(), "base_model": base_model_row()}
    jobs = [(n, args.steps, str(out)) for n in names]
    if args.jobs > 1:
        with mp.get_context("spawn").Pool(args.jobs, maxtasksperchild=1) as pool:
            done = pool.imap_unordered(_worker, jobs)
            for name, res in done:
                results["methods"][name] = res
                atomic_write_json(res_path, results, sort_keys=True)
    else:
        for job in jobs:
            name, res = _worker(job)
            results["methods"][name] = res
            atomic_write_json(res_path, results, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
