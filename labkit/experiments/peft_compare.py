"""The chapter 14 experiment: every PEFT method on the course task, next to full fine-tuning and LoRA.

Same data (the task's 2,000 training examples), same loop (:func:`labkit.finetune.sft.train_sft` on packed
rows), same steps, batch and schedule as the chapter 13 runs (:data:`labkit.experiments.finetune_task.TASK_RUN`);
only what trains differs (:data:`METHODS`: bottleneck adapters, BitFit, prompt tuning, prefix tuning,
P-tuning v2). Each run records trainable / total parameters, seconds per step, the loss curve, the answer-token
test loss (:func:`task_loss`) and the exact-match test score per skill. Command (deterministic; CPU):

    python -m labkit.experiments.peft_compare task [--only prompt,lora_r8] [--steps N] [--out DIR]

It writes ``data/peft_methods/results.json`` and each PEFT method's trained parameters (``<name>.safetensors``,
load with :func:`prepare_method` + :func:`labkit.finetune.peft.load_trainable`).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from labkit.core.io import atomic_path, atomic_write_json
from labkit.core.paths import DATA
from labkit.core.repro import seed_everything
from labkit.datasets import task as task_data
from labkit.experiments.finetune_task import TASK_RUN, TASK_VARIANTS, finetune_task
from labkit.finetune import sft
from labkit.finetune.lora import count_trainable
from labkit.finetune.peft import PrefixTuning, PromptTuning, add_adapters, apply_bitfit, trainable_state_dict
from labkit.finetune.sft import packed_forward
from labkit.model import Llama, load_pretrained

__all__ = ["METHODS", "PEFT_DIR_NAME", "prepare_method", "task_loss", "finetune_method", "main"]

#: name → settings. Same loop, data, steps, batch and schedule as chapter 13 (TASK_RUN); each lr is the best
#: final training loss among 2–4 tried values (see lr_tried in data/peft_methods/results.json).
METHODS: dict[str, dict[str, Any]] = {
    "adapter": dict(kind="adapter", bottleneck=16, lr=1e-2),
    "bitfit": dict(kind="bitfit", lr=5e-2),
    "prompt": dict(kind="prompt", n=16, lr=1e-1),
    "prefix": dict(kind="prefix", n=16, reparam=True, lr=3e-2),
    "ptuning_v2": dict(kind="prefix", n=16, reparam=False, lr=1e-1),
}
#: Where ``python -m labkit.experiments.peft_compare task`` writes results and trained parameters.
PEFT_DIR_NAME = "peft_methods"


def _run_settings() -> dict[str, Any]:
    return dict(TASK_RUN)


def prepare_method(model: Llama, name: str) -> tuple[nn.Module, Any]:
    """Apply method ``name`` of :data:`METHODS` to ``model``; returns ``(trainable model, forward)`` where
    ``forward(model, batch)`` is the packed forward for :func:`labkit.finetune.sft.train_sft`."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose from {list(METHODS)}")
    s = METHODS[name]
    if s["kind"] == "adapter":
        add_adapters(model, s["bottleneck"])
        return model, packed_forward
    if s["kind"] == "bitfit":
        apply_bitfit(model)
        return model, packed_forward
    wrapped: PromptTuning | PrefixTuning
    if s["kind"] == "prompt":
        wrapped = PromptTuning(model, s["n"])
    else:
        wrapped = PrefixTuning(model, s["n"], reparam=s["reparam"])
    return wrapped, lambda mdl, batch: mdl.packed_forward(batch)


@torch.no_grad()
def task_loss(model: nn.Module, tokenizer: Any, records: Sequence[dict[str, Any]], forward: Any = None,
              max_len: int = 128) -> float:
    """Mean next-token cross-entropy of the **answer tokens** (assistant content + ``<|end|>``) of ``records``,
    token-weighted over the whole set: a graded test metric next to exact match (which is 0/1 per answer).

    ``forward(model, batch)`` is the method's packed forward (default :func:`labkit.finetune.sft.packed_forward`).
    """
    forward = sft.packed_forward if forward is None else forward
    packed = sft.pack([sft.encode_example(r, tokenizer) for r in records], max_len, "ffd")
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for s in range(0, packed.input_ids.shape[0], 16):
        batch = {k: getattr(packed, k)[s:s + 16] for k in ("input_ids", "labels", "position_ids", "doc_ids")}
        logits = forward(model, batch)
        labels = batch["labels"][:, 1:]
        nll = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), labels.reshape(-1),
                              ignore_index=sft.IGNORE_INDEX, reduction="sum")
        total += float(nll)
        count += int((labels != sft.IGNORE_INDEX).sum())
    model.train(was_training)
    return total / count


def finetune_method(name: str, *, steps: int | None = None, evaluate: bool = True, progress: bool = True,
                    lr: float | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Fine-tune the shipped tiny LLaMA on the task with PEFT method ``name`` (same loop and settings as
    :func:`labkit.experiments.finetune_task.finetune_task`); returns ``(model, result)`` with trainable/total counts, seconds per
    step, the loss curve and the exact-match test score per skill."""
    run = _run_settings()
    steps = run["steps"] if steps is None else steps
    lr = METHODS[name]["lr"] if lr is None else lr
    seed_everything(run["seed"])
    base, tok = load_pretrained()
    total = base.num_parameters()
    model, fwd = prepare_method(base, name)
    trainable, _ = count_trainable(model)
    train = [sft.encode_example(x, tok) for x in task_data.load_task("train")]
    t0 = time.perf_counter()
    losses = sft.train_sft(model, train, steps=steps, batch_size=run["batch_size"], max_len=run["max_len"], lr=lr,
                           seed=run["seed"], warmup=run["warmup"], forward=fwd, progress=progress)
    seconds = time.perf_counter() - t0
    result: dict[str, Any] = {"method": name, **{k: v for k, v in METHODS[name].items()}, "lr": lr,
                              "steps": steps, "trainable": trainable, "total": total,
                              "sec_per_step": round(seconds / steps, 4),
                              "losses": [round(x, 6) for x in losses]}
    if evaluate:
        test = task_data.load_task("test")
        result["test_loss"] = round(task_loss(model, tok, test, fwd), 4)
        result["scores"], _ = sft.evaluate_task(model, tok, test)
    return model, result


def _baseline(results: dict[str, Any], res_path: Path) -> None:
    """The pretrained model, no fine-tuning: the baseline row ``_base`` (test loss and scores only)."""
    model, tok = load_pretrained()
    test = task_data.load_task("test")
    results["_base"] = {"test_loss": round(task_loss(model, tok, test), 4),
                        "scores": sft.evaluate_task(model, tok, test)[0]}
    atomic_write_json(res_path, results, sort_keys=True)


def _reference_run(name: str, steps_arg: int | None) -> dict[str, Any]:
    """``"full"`` or ``"lora_r8"``: the chapter 13 run with its learning rate, in this experiment's format."""
    method, r = ("full", None) if name == "full" else ("lora", 8)
    lr = next(v[2] for v in TASK_VARIANTS if v[0] == method and v[1] == r)
    steps = steps_arg or _run_settings()["steps"]
    model, res = finetune_task(method, r, lr=lr, steps=steps)
    tok = load_pretrained()[1]
    return {"method": name, "lr": lr, "steps": steps, "trainable": res["trainable"], "total": res["total"],
            "sec_per_step": round(res["train_seconds"] / steps, 4), "losses": res["losses"],
            "test_loss": round(task_loss(model, tok, task_data.load_task("test")), 4), "scores": res["scores"]}


def _peft_run(name: str, steps_arg: int | None, out: Path) -> dict[str, Any]:
    """One PEFT method of :data:`METHODS`: train it, write its trained parameters to ``out/<name>.safetensors``."""
    from safetensors.torch import save_file

    model, res = finetune_method(name, steps=steps_arg)
    tensors = {k: v.contiguous() for k, v in trainable_state_dict(model).items()}
    with atomic_path(out / f"{name}.safetensors") as tmp:
        save_file(tensors, tmp)
    return res


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m labkit.experiments.peft_compare task [--only a,b] [--steps N]``: train every method (+ full and
    LoRA r=8 for the comparison), write ``data/peft_methods/results.json`` and each PEFT method's trained parameters."""
    ap = argparse.ArgumentParser(prog="python -m labkit.experiments.peft_compare")
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("task", help="fine-tune the tiny LLaMA on the task with every PEFT method")
    t.add_argument("--out", default=str(DATA / PEFT_DIR_NAME))
    t.add_argument("--steps", type=int, default=None)
    t.add_argument("--only", default=None, help="comma-separated names, e.g. prompt,lora_r8")
    args = ap.parse_args(list(argv) if argv is not None else None)
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    res_path = out / "results.json"
    results = json.loads(res_path.read_text()) if res_path.exists() else {}
    names = ["_base", "full", "lora_r8", *METHODS]
    for name in names:
        if args.only and name not in args.only.split(","):
            continue
        if name == "_base":
            _baseline(results, res_path)
            continue
        if name in ("full", "lora_r8"):
            res = _reference_run(name, args.steps)
        else:
            res = _peft_run(name, args.steps, out)
        print(f"{name:11s} trainable {res['trainable']:>8,d}  loss {res['losses'][-1]:.3f}  "
              f"test loss {res['test_loss']:.3f}  score {res['scores']['all']:.3f}  {res['sec_per_step'] * 1000:.0f} ms/step", flush=True)
        results[name] = res
        atomic_write_json(res_path, results, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
