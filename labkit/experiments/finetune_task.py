"""The chapter 13 experiment: fine-tune the tiny LLaMA on the course task, full vs LoRA ranks vs QLoRA.

Every run uses the same data (the task's training split, chat template, loss on the answer tokens), the same
loop (:func:`labkit.finetune.sft.train_sft` on packed rows) and the same settings (:data:`TASK_RUN`); they differ
in what trains (:data:`TASK_VARIANTS`: all weights, LoRA of rank r with alpha = 2r on the seven projections,
or the same on an NF4 base). Each run records trainable / total parameters, training memory, the loss curve
and the exact-match test score per skill. Command (deterministic; CPU, a few minutes per run):

    python -m labkit.experiments.finetune_task task [--out DIR] [--steps N] [--only lora_r8,full]

It writes ``data/lora_task/results.json``, each adapter (``lora_r8.safetensors``, ...) and the fully fine-tuned
model (``full_sft/``, the SFT model of chapter 12).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from labkit.core.io import atomic_write_json
from labkit.core.paths import DATA
from labkit.core.repro import seed_everything
from labkit.datasets import task as task_data
from labkit.finetune import sft
from labkit.finetune.lora import LLAMA_TARGETS, add_lora, count_trainable, save_lora
from labkit.model import load_pretrained, save_checkpoint

__all__ = ["TASK_VARIANTS", "TASK_RUN", "TASK_DIR_NAME", "variant_name", "prepare_variant", "finetune_task", "main"]

#: The chapter-13 comparison: (method, rank, learning rate). LoRA uses all seven projections, alpha = 2r.
TASK_VARIANTS: tuple[tuple[str, int | None, float], ...] = (
    ("full", None, 1e-3), ("lora", 2, 4e-3), ("lora", 8, 4e-3), ("lora", 32, 4e-3), ("qlora", 8, 4e-3))
#: Shared settings of those runs (``python -m labkit.experiments.finetune_task task``).
TASK_RUN: dict[str, Any] = dict(steps=200, batch_size=8, max_len=128, seed=0, warmup=20)
#: Where the shipped adapters and the results of those runs live.
TASK_DIR_NAME = "lora_task"


def variant_name(method: str, r: int | None) -> str:
    """``"full"``, ``"lora_r8"``, ``"qlora_r8"``."""
    return method if method == "full" else f"{method}_r{r}"


def prepare_variant(model: nn.Module, method: str, r: int | None = None,
                    targets: Sequence[str] = LLAMA_TARGETS) -> nn.Module:
    """Make ``model`` ready for one of the chapter's methods (in place): ``"full"`` (everything trains),
    ``"lora"`` or ``"qlora"`` (rank ``r``, ``alpha = 2r`` on ``targets``, the rest frozen)."""
    if method == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    if method not in ("lora", "qlora"):
        raise ValueError(f"method must be 'full', 'lora' or 'qlora', got {method!r}")
    if r is None:
        raise ValueError(f"method {method!r} needs a rank r")
    add_lora(model, list(targets), r=r, alpha=2 * r, qlora=method == "qlora")
    return model


def finetune_task(method: str, r: int | None = None, *, lr: float, steps: int = TASK_RUN["steps"],
                  batch_size: int = TASK_RUN["batch_size"], max_len: int = TASK_RUN["max_len"],
                  seed: int = TASK_RUN["seed"], warmup: int = TASK_RUN["warmup"], evaluate: bool = True,
                  schedule_steps: int | None = None, progress: bool = True) -> tuple[nn.Module, dict[str, Any]]:
    """Fine-tune the shipped tiny LLaMA on the task's training split with one method; measure it.

    Returns ``(model, result)`` with ``result`` holding the trainable / total parameter counts, the
    training memory (:func:`labkit.finetune.sft.training_memory` on the first batch: model state counted,
    activations measured), the loss curve and (if ``evaluate``) the exact-match test score per skill.
    ``schedule_steps`` (default ``steps``) sets the length of the learning-rate schedule, so a short rerun can
    replay a long run's first steps.
    """
    seed_everything(seed)  # also turns on deterministic algorithms, as notebooks do
    model, tok = load_pretrained()
    prepare_variant(model, method, r)
    train = [sft.encode_example(x, tok) for x in task_data.load_task("train")]
    probe = sft.pack(train[:64], max_len, "ffd")
    probe_batch = {k: getattr(probe, k)[:batch_size] for k in ("input_ids", "labels", "position_ids", "doc_ids")}
    memory = sft.training_memory(model, probe_batch)
    trainable, total = count_trainable(model)
    t0 = time.perf_counter()
    losses = sft.train_sft(model, train, steps=steps, batch_size=batch_size, max_len=max_len, lr=lr,
                           seed=seed, warmup=warmup, schedule_steps=schedule_steps, progress=progress)
    seconds = time.perf_counter() - t0
    result: dict[str, Any] = {"method": method, "r": r, "alpha": None if r is None else 2 * r, "lr": lr,
                              "steps": steps, "batch_size": batch_size, "max_len": max_len, "seed": seed,
                              "warmup": warmup, "trainable": trainable, "total": total, "memory": memory,
                              "losses": [round(x, 6) for x in losses], "train_seconds": round(seconds, 1)}
    if evaluate:
        result["scores"], _ = sft.evaluate_task(model, tok, task_data.load_task("test"))
    return model, result


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m labkit.experiments.finetune_task task [--out DIR] [--steps N]``: run :data:`TASK_VARIANTS`, ship adapters."""
    ap = argparse.ArgumentParser(prog="python -m labkit.experiments.finetune_task")
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("task", help="fine-tune the tiny LLaMA on the task: full vs LoRA ranks vs QLoRA")
    t.add_argument("--out", default=str(DATA / TASK_DIR_NAME))
    t.add_argument("--steps", type=int, default=TASK_RUN["steps"])
    t.add_argument("--only", default=None, help="comma-separated variant names, e.g. lora_r8,full")
    args = ap.parse_args(list(argv) if argv is not None else None)
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    res_path = out / "results.json"
    results = json.loads(res_path.read_text()) if res_path.exists() else {}
    for method, r, lr in TASK_VARIANTS:
        name = variant_name(method, r)
        if args.only and name not in args.only.split(","):
            continue
        model, res = finetune_task(method, r, lr=lr, steps=args.steps)
        print(f"{name:10s} trainable {res['trainable']:>9,d}  loss {res['losses'][-1]:.3f}  "
              f"score {res['scores']['all']:.3f}  {res['train_seconds']}s", flush=True)
        if method != "full":
            save_lora(model, out / f"{name}.safetensors", extra={"method": method})
        else:  # the SFT model of chapter 12 (weights only, 7 MB)
            save_checkpoint(model, None, out / "full_sft")
        results[name] = res
        atomic_write_json(res_path, results, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
