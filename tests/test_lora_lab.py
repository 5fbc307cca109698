"""Chapter 13's lab task 13.A (the LoRA layer as functions): the instructor's cell and labkit's fallbacks score
full marks on the hidden tests (peft's LoRA layer as reference), typical mistakes lose the checks that should
catch them, a cell that calls peft scores 0, and the fallback's forward passes gradients to A and B."""
import json

import pytest
import torch
from torch import nn

from labkit.core.paths import NOTEBOOKS
from labkit.course import fallbacks
from labkit.course.hidden import base
from labkit.course.hidden.ch13 import TASKS
from labkit.finetune.lora import LoRALinear

TASK = TASKS[0]
NOTEBOOK = NOTEBOOKS / "13_lora_and_qlora.ipynb"


def task_source():
    nb = json.loads(NOTEBOOK.read_text())
    cells = ["".join(c["source"]) for c in nb["cells"]
             if c["cell_type"] == "code" and "task" in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1
    return cells[0]


def namespace(source):
    ns = {"__name__": "learner_cell"}                 # the task cell imports what it uses
    exec(compile(source, "<task cell>", "exec"), ns)
    return ns


@pytest.mark.parametrize("seed", [0, 1, 5])
def test_instructor_cell_scores_full_marks(seed):
    r = base.run_task(TASK, namespace(task_source()), seed=seed)
    assert r["points"] == TASK.max_points, r["message"]


def test_fallbacks_pass_every_check():
    """labkit's versions (what a learner copy falls back to) pass the same checks; labkit is allowed here."""
    allowed = base.Task(TASK.key, TASK.title, TASK.functions, TASK.checks, base.Forbidden(packages=()))
    fns = {name: getattr(fallbacks, name) for name in TASK.functions}
    r = base.run_task(allowed, fns, seed=3)
    assert r["points"] == TASK.max_points, r["message"]


MUTANTS = {  # mistake -> (text replaced in the task cell, the replacement, a check that must fail)
    "scale alpha, not alpha / r": ("* (alpha / A.shape[0])\n\n\ndef lora_merge", "* alpha\n\n\ndef lora_merge",
                                   "eval forward"),
    "dropout on the base path too": ("F.linear(x, weight, bias) +", "F.linear(x_lora, weight, bias) +",
                                     "train forward"),
    "merge scaled by r / alpha": ("return weight + (B @ A) * (alpha / A.shape[0])",
                                  "return weight + (B @ A) * (A.shape[0] / alpha)", "merge =="),
    "merge in place": ("return weight + (B @ A) * (alpha / A.shape[0])",
                       "return weight.add_((B @ A) * (alpha / A.shape[0]))", "merge =="),
    "unmerge adds": ("return weight - (B @ A)", "return weight + (B @ A)", "unmerge =="),
    "A and B swapped in merge": ("return weight + (B @ A) * (alpha / A.shape[0])",
                                 "return weight + (A.T @ B.T).T * (alpha / A.shape[0])", None),
}


@pytest.mark.parametrize("mistake", sorted(MUTANTS))
def test_mistakes_lose_points(mistake):
    old, new, failing = MUTANTS[mistake]
    src = task_source()
    assert old in src
    r = base.run_task(TASK, namespace(src.replace(old, new, 1)), seed=2)
    if failing is None:  # (B A)ᵀᵀ is the same matrix: an equivalent rewrite keeps full marks
        assert r["points"] == TASK.max_points, r["message"]
        return
    assert r["points"] < TASK.max_points, mistake
    assert any(not c["passed"] and failing in c["what"] for c in r["checks"]), r["message"]


def test_calling_peft_scores_zero():
    cheat = ("import torch\nfrom peft import LoraConfig\nfrom peft.tuners.lora import Linear as PL\n\n"
             "def lora_forward(x, weight, bias, A, B, alpha, mask=None):\n"
             "    lin = torch.nn.Linear(weight.shape[1], weight.shape[0])\n"
             "    return PL(lin, 'default', LoraConfig(r=A.shape[0], lora_alpha=alpha), r=A.shape[0])(x)\n\n"
             "def lora_merge(weight, A, B, alpha):\n    return weight\n\n"
             "def lora_unmerge(weight, A, B, alpha):\n    return weight\n")
    r = base.run_task(TASK, namespace(cheat), seed=0)
    assert r["points"] == 0 and "peft" in r["message"] and "reference" in r["message"], r["message"]


@pytest.mark.parametrize("seed", [0, 4])
def test_fallback_forward_is_differentiable_like_labkit(seed):
    """fallbacks.lora_forward gives A and B the gradients labkit's LoRALinear gives them (awkward sizes)."""
    torch.manual_seed(seed)
    layer = LoRALinear(nn.Linear(13, 7), r=3, alpha=5)
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(2, 5, 13)
    layer(x).square().sum().backward()
    A = layer.lora_A.detach().clone().requires_grad_(True)
    B = layer.lora_B.detach().clone().requires_grad_(True)
    out = fallbacks.lora_forward(x, layer.base.weight, layer.base.bias, A, B, 5)
    torch.testing.assert_close(out, layer(x))
    out.square().sum().backward()
    torch.testing.assert_close(A.grad, layer.lora_A.grad)
    torch.testing.assert_close(B.grad, layer.lora_B.grad)
