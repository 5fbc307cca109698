"""The README's results tables, written from the shipped result files (one JSON per experiment).

README.md quotes these tables verbatim and ``tests/test_readme_results.py`` checks it, so a rerun of an
experiment that changes a number fails the tests until the README is regenerated::

    python -m labkit.experiments.tables      # prints the tables to paste into README.md
"""
from __future__ import annotations

import json
import sys
from typing import Any, Sequence

from labkit.datasets.task import SKILLS
from labkit.experiments import finetune as ft
from labkit.experiments import preferences as pref

__all__ = ["FINETUNE_LABELS", "finetune_table", "preferences_table", "main"]

#: Row labels of the fine-tuning table, in the order printed.
FINETUNE_LABELS: dict[str, str] = {
    "full": "full fine-tune", "lora_r2": "LoRA r=2", "lora_r8": "LoRA r=8", "lora_r32": "LoRA r=32",
    "qlora_r8": "QLoRA r=8 (NF4 base)", "adapter": "bottleneck adapters (16)", "bitfit": "BitFit",
    "prefix": "prefix tuning (16, reparametrised)", "ptuning_v2": "P-tuning v2 (16)", "prompt": "prompt tuning (16)",
}


def _skills(scores: dict[str, float], skills: Sequence[str]) -> str:
    return " | ".join(f"{scores[s]:.3f}" for s in skills)


def finetune_table(results: dict[str, Any] | None = None) -> str:
    """Markdown table of ``data/finetune/results.json``: per method trainable parameters, test loss, answer-token
    accuracy, exact match per skill and overall; the base model and the most-frequent-answer baseline first."""
    r = results or ft.load_results()
    skills = list(SKILLS)
    head = ("| method | trainable params | test loss | answer-token accuracy | "
            + " | ".join(skills) + " | **exact match** |")
    lines = [head, "|" + "---|" * (4 + len(skills) + 1)]
    mf, base = r["baselines"]["most_frequent"], r["baselines"]["base_model"]
    lines.append(f"| most-frequent answer per skill (no model) | 0 | – | – | {_skills(mf['scores'], skills)} "
                 f"| {mf['exact_match']:.3f} |")
    lines.append(f"| pretrained base, no fine-tuning | 0 | {base['test_loss']:.3f} | {base['token_accuracy']:.3f} | "
                 f"{_skills(base['scores'], skills)} | {base['exact_match']:.3f} |")
    for name, label in FINETUNE_LABELS.items():
        m = r["methods"][name]
        lines.append(f"| {label} | {m['trainable_params']:,} | {m['test_loss']:.3f} | {m['token_accuracy']:.3f} | "
                     f"{_skills(m['scores'], skills)} | **{m['exact_match']:.3f}** |")
    return "\n".join(lines)


def preferences_table(results: dict[str, Any] | None = None) -> str:
    """Markdown table of ``data/preferences/results.json``: each method's operating point (the smallest KL at which
    its held-out win rate against the reference reaches the target) with reward and setting."""
    r = results or json.loads(pref.RESULTS_PATH.read_text())
    ref = r["reference"]
    lines = ["| policy | setting | win rate vs reference | KL(π‖π_ref), nats | ground-truth reward |",
             "|---|---|---|---|---|",
             f"| reference (the starting model) | – | {ref['win_rate']:.3f} ± {ref['win_rate_se']:.3f} | 0 | "
             f"{ref['reward']:.3f} ± {ref['reward_se']:.3f} |"]
    settings = {"dpo": lambda p: f"β = {p['beta']:g}, epoch {p['epoch']}",
                "ppo": lambda p: f"KL coefficient {p['kl_coef']:g}, iteration {p['iteration']}"}
    for method in ("dpo", "ppo"):
        p = r[method]
        lines.append(f"| {method.upper()} | {settings[method](p)} | **{p['win_rate']:.3f}** ± {p['win_rate_se']:.3f} | "
                     f"{p['kl']:.2f} ± {p['kl_se']:.2f} | {p['reward']:.3f} ± {p['reward_se']:.3f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m labkit.experiments.tables``: print both tables."""
    print(finetune_table(), preferences_table(), sep="\n\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
