"""Chapter 14's lab task 14.A (prompt tuning's forward): the notebook's own solution earns full marks against
peft, the mistakes a learner makes lose the points of the check that catches them, a call into labkit scores 0,
and labkit's fallback (what a learner copy uses) equals PromptTuning."""
import json

import pytest
import torch

from labkit.core.paths import NOTEBOOKS
from labkit.course import fallbacks
from labkit.course.hidden import base, ch14
from labkit.finetune.peft import PromptTuning
from labkit.model import Llama, LlamaConfig

TASK = ch14.TASKS[0]


def _task_source():
    nb = json.loads((NOTEBOOKS / "14_peft_methods.ipynb").read_text())
    cells = ["".join(c["source"]) for c in nb["cells"] if "task" in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1
    return cells[0]


def _score(source, seed):
    ns = {}
    exec(compile(source, "<task cell>", "exec"), ns)
    return base.run_task(TASK, ns, seed=seed)


@pytest.mark.parametrize("seed", [1, 5])
def test_the_notebooks_solution_gets_full_marks(seed):
    r = _score(_task_source(), seed)
    assert r["points"] == TASK.max_points, r["message"]


MUTANTS = {  # a learner's mistake -> the check that must catch it
    "all P + T rows returned": (")[:, P:]", ")", "no padding"),
    "padding ignored (virtual tokens only prepended to the ids)": (
        "mask = mask & real[:, None, None, :]", "pass", "padded batch"),
    "the real tokens restart at position 0": (
        "positions=None", "positions=torch.cat([torch.arange(P), torch.arange(T)])", "no padding"),
    "the prompt detached from the graph": ("prompt.expand(B, P, -1)", "prompt.detach().expand(B, P, -1)", "gradient"),
}


@pytest.mark.parametrize("name", sorted(MUTANTS))
def test_each_mistake_loses_the_points_of_its_check(name):
    old, new, check = MUTANTS[name]
    src = _task_source()
    assert old in src, f"the notebook's task cell changed: {old!r} not found"
    r = _score(src.replace(old, new), seed=3)
    assert r["points"] < TASK.max_points, f"{name}: still full marks"
    failed = [c["what"] for c in r["checks"] if not c["passed"]]
    assert any(check in w for w in failed), (name, failed)


def test_calling_labkit_scores_zero_and_names_it():
    cheat = ("from labkit.finetune import peft as P\n\n"
             "def prompt_tuning_forward(model, input_ids, prompt, attention_mask=None):\n"
             "    return P.PromptTuning(model, prompt.shape[0])(input_ids, attention_mask=attention_mask)\n")
    r = _score(cheat, seed=1)
    assert r["points"] == 0 and "labkit" in r["message"] and "reference" in r["message"], r["message"]
    r = _score("import peft\n\ndef prompt_tuning_forward(model, input_ids, prompt, attention_mask=None):\n"
               "    return peft.get_peft_model(model, None)\n", seed=1)
    assert r["points"] == 0 and "peft" in r["message"], r["message"]


@pytest.mark.parametrize("seed", [0, 4])
def test_fallback_equals_prompt_tuning(seed):
    torch.manual_seed(seed)
    model = Llama(LlamaConfig(vocab_size=71, dim=36, n_layers=2, n_heads=6, n_kv_heads=3, hidden_dim=58)).eval()
    pt = PromptTuning(model, 5 + seed, init="random", seed=seed)
    ids = torch.randint(0, 71, (3, 9))
    am = torch.ones(3, 9, dtype=torch.long)
    am[1, :4] = 0
    am[2, 6:] = 0
    with torch.no_grad():
        torch.testing.assert_close(fallbacks.prompt_tuning_forward(model, ids, pt.prompt, am),
                                   pt(ids, attention_mask=am), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(fallbacks.prompt_tuning_forward(model, ids, pt.prompt), pt(ids),
                                   atol=1e-5, rtol=1e-5)
