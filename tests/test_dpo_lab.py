"""Chapter 16's lab tasks (16.A sequence_logprobs, 16.B dpo_loss): the instructor's code in the notebook gets full
marks for several seeds of the hidden tests, each typical mistake loses points on the check meant to catch it, and
an answer that calls a reference scores 0 and names it."""
import itertools
import json
import linecache

import pytest

from labkit.core.paths import NOTEBOOKS
from labkit.course.hidden import base, ch16

TASK = {t.key: t for t in ch16.TASKS}


def _task_sources():
    nb = json.loads((NOTEBOOKS / "16_dpo.ipynb").read_text())
    return ["".join(c["source"]) for c in nb["cells"] if "task" in c.get("metadata", {}).get("tags", [])]


_CELLS = itertools.count()


def _namespace(source):
    """Run ``source`` as a notebook cell does, its source readable by ``inspect`` (as ipykernel's cells are)."""
    name = f"<ch16 task cell {next(_CELLS)}>"
    linecache.cache[name] = (len(source), None, source.splitlines(True), name)
    ns = {"__name__": "__main__"}
    exec(compile(source, name, "exec"), ns)
    return ns


def _solution(key):
    fn = TASK[key].functions[0]
    return next(s for s in _task_sources() if f"def {fn}(" in s)


@pytest.mark.parametrize("seed", [0, 1, 7])
@pytest.mark.parametrize("key", ["16.A", "16.B"])
def test_instructor_code_gets_full_marks(key, seed):
    r = base.run_task(TASK[key], _namespace(_solution(key)), seed=seed)
    assert r["points"] == r["max_points"] == TASK[key].max_points, r["message"]


SEQ_MUTANTS = {  # a mistake -> (old text, new text, the check that must fail)
    "no causal shift": ("logits[:, :-1], dim=-1", "logits[:, 1:], dim=-1", "float64 loop"),
    "log of softmax": ("torch.log_softmax(logits[:, :-1], dim=-1)", "torch.log(torch.softmax(logits[:, :-1], dim=-1))",
                       "size 1e4"),
    "mask not shifted": ("m = mask[:, 1:]", "m = mask[:, :-1]", "float64 loop"),
    "average ignored": ("return total / m.sum(-1) if average else total", "return total", "float64 loop"),
    "detached": ("return total / m.sum(-1) if average else total",
                 "return (total / m.sum(-1) if average else total).detach()", "gradient"),
}
DPO_MUTANTS = {
    "sum instead of mean": (".mean()\n", ".sum()\n", "float64 formula"),
    "reference not detached": ("ref_chosen_logps.detach()", "ref_chosen_logps", "gradients"),
    "rewards not detached": ("return loss, chosen.detach(), rejected.detach()", "return loss, chosen, rejected",
                             "gradients"),
    "log of sigmoid": ("-F.logsigmoid(chosen - rejected)", "-torch.log(torch.sigmoid(chosen - rejected))",
                       "±300..3000"),
    "beta outside the sigmoid": ("loss = -F.logsigmoid(chosen - rejected).mean()",
                                 "loss = -beta * F.logsigmoid((chosen - rejected) / beta).mean()", "float64 formula"),
}


@pytest.mark.parametrize("key,name", [("16.A", k) for k in SEQ_MUTANTS] + [("16.B", k) for k in DPO_MUTANTS])
def test_each_mistake_loses_points_on_its_check(key, name):
    old, new, check = (SEQ_MUTANTS if key == "16.A" else DPO_MUTANTS)[name]
    src = _solution(key)
    assert old in src, f"the notebook's task cell changed; update the mutant {name!r}"
    src = src.replace(old, new) if key == "16.A" or name != "log of sigmoid" else "import torch\n" + src.replace(old, new)
    r = base.run_task(TASK[key], _namespace(src), seed=3)
    assert r["points"] < r["max_points"], f"{name}: the hidden tests did not notice"
    failed = [c["what"] for c in r["checks"] if not c["passed"]]
    assert any(check in w for w in failed), (name, failed)


CHEATS = {
    "16.A": ("import torch.nn.functional as F\n\ndef sequence_logprobs(logits, labels, mask, average=False):\n"
             "    lab = labels.masked_fill(~mask.bool(), -100)[:, 1:]\n"
             "    ce = F.cross_entropy(logits[:, :-1].transpose(1, 2), lab, ignore_index=-100, reduction='none')\n"
             "    return -ce.sum(-1)\n", "cross_entropy"),
    "16.B": ("from labkit import align\n\ndef dpo_loss(pc, pr, rc, rr, beta=0.1):\n"
             "    return align.dpo_loss(pc, pr, rc, rr, beta=beta)\n", "labkit"),
}


@pytest.mark.parametrize("key", sorted(CHEATS))
def test_calling_the_reference_scores_zero_and_names_it(key):
    src, needle = CHEATS[key]
    r = base.run_task(TASK[key], _namespace(src), seed=1)
    assert r["points"] == 0 and needle in r["message"] and "reference" in r["message"], r["message"]


def test_a_stub_scores_zero():
    stub = "def dpo_loss(pc, pr, rc, rr, beta=0.1):\n    raise NotImplementedError('write it')\n"
    r = base.run_task(TASK["16.B"], _namespace(stub), seed=0)
    assert r["points"] == 0 and "not written yet" in r["message"]
