"""`python -m labkit grade`: full marks for the instructor's solutions, 0 (and no crash) for untouched learner
copies, 0 for a task answered by calling the reference, partial marks for a bug, only the unreached tasks
lost when a notebook stops, and clear errors for what cannot be graded.

One session fixture grades a folder of made-up learners once (12 notebooks, the KERNEL_CHAPTERS subset, 2
kernels at a time); the hidden tests of every chapter are also run without kernels, on the instructor's task
cells and on mutants of them.
"""
import csv
import importlib.util
import json
import subprocess
import sys
import time

import nbformat
import pytest

from labkit.core.paths import NOTEBOOKS
from labkit.course import grade
from labkit.course.hidden import base, chapters_with_tasks, module_of
from labkit.course.student import student_copy
from labsupport import module_from_source

CHAPTERS = chapters_with_tasks()
# Grading in kernels costs 5-20 s per notebook, so the session fixture grades a representative subset: two early
# chapters with lab tasks and one distributed chapter whose notebook launches torchrun before its tasks and whose
# tasks simulate ranks in one process (22). Every chapter's hidden tests still run without kernels
# (test_hidden_tests_pass_the_solution_and_fail_a_mutant), tests/test_lab.py checks every chapter's task cells
# against its hidden tests, and tests/test_student_run_*.py run every learner copy top to bottom.
KERNEL_CHAPTERS = [ch for ch in CHAPTERS if ch in {"01", "03", "05", "22"}]
# Untouched copies are graded for two of them; tests/test_student_run_*.py run every untouched copy to the end.
EMPTY_CHAPTERS = ["01", "03"]
NOTEBOOK_OF = {p.name[:2]: p for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")}


def _tags(cell):
    return cell.get("metadata", {}).get("tags", [])


def _tasks(chapter):
    return importlib.import_module(module_of(chapter)).TASKS


def learner_copy(chapter, **replace):
    """A learner copy of ``chapter`` with its task cells filled in: by the instructor's code, except each
    function named in ``replace`` (name -> new source of the whole cell it is in)."""
    src = NOTEBOOK_OF[chapter]
    original = {c.id: c.source for c in nbformat.read(src, as_version=4).cells}
    nb = student_copy(nbformat.read(src, as_version=4), src.name)
    for cell in nb.cells:
        if "task" in _tags(cell):
            cell.source = original[cell.id]
            for name, code in replace.items():
                if f"def {name}(" in cell.source:
                    cell.source = code
    return nb


def untouched_copy(chapter):
    src = NOTEBOOK_OF[chapter]
    return student_copy(nbformat.read(src, as_version=4), src.name)


CHEAT_SOFTMAX = "import torch\n\ndef stable_softmax(z, dim=-1):\n    return torch.softmax(z, dim=dim)\n"
CHEAT_CE = ("def cross_entropy(z, y, ignore_index=-100, label_smoothing=0.0):\n"
            "    return numerics.cross_entropy(z, y, ignore_index, label_smoothing)\n")
NAIVE_SOFTMAX = ("import torch\n\ndef stable_softmax(z, dim=-1):\n    e = torch.exp(z)  # no max subtracted\n"
                 "    return e / e.sum(dim=dim, keepdim=True)\n")


def _cheat_attention(chapter_nb_source):
    """The instructor's 03 task cell with attention answered by a helper that calls PyTorch's SDPA."""
    return chapter_nb_source + (
        "\n\ndef _helper(q, k, v, m):\n    return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=m)\n"
        "\n\ndef attention(q, k, v, mask=None, is_causal=False):\n"
        "    m = causal_mask(q.shape[-2], k.shape[-2]) if is_causal else mask\n    return _helper(q, k, v, m)\n")


@pytest.fixture(scope="session")
def graded(tmp_path_factory):
    """Grade once: full/ (instructor code), empty/ (untouched), cheat/, buggy/, crash/, confused/."""
    root = tmp_path_factory.mktemp("submissions")
    subs, out = root / "SUB", root / "OUT"
    attn_cell = next(c.source for c in nbformat.read(NOTEBOOK_OF["03"], as_version=4).cells
                     if "task" in _tags(c) and "def attention(" in c.source)
    crash = learner_copy("05")
    after = next(i for i, c in enumerate(crash.cells) if "rms_norm = lab.use(" in c.source)
    crash.cells.insert(after + 1, nbformat.v4.new_code_cell("import os\nos._exit(1)  # the kernel dies here"))
    books = {
        "full": {ch: learner_copy(ch) for ch in KERNEL_CHAPTERS},
        "empty": {ch: untouched_copy(ch) for ch in EMPTY_CHAPTERS},
        "cheat": {"01": learner_copy("01", stable_softmax=CHEAT_SOFTMAX, cross_entropy=CHEAT_CE),
                  "03": learner_copy("03", attention=_cheat_attention(attn_cell.replace("def attention(", "def _unused(")))},
        "buggy": {"01": learner_copy("01", stable_softmax=NAIVE_SOFTMAX)},
        "crash": {"05": crash},
        "confused": {"01": nbformat.read(NOTEBOOK_OF["01"], as_version=4), "00": untouched_copy("00")},
    }
    for learner, nbs in books.items():
        (subs / learner).mkdir(parents=True)
        for ch, nb in nbs.items():
            nbformat.write(nb, subs / learner / NOTEBOOK_OF[ch].name)
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "labkit", "grade", str(subs), "--out", str(out), "--jobs", "2"],
                       capture_output=True, text=True, timeout=900)
    print(f"graded {sum(map(len, books.values()))} notebooks in {time.perf_counter() - t0:.0f} s")
    with open(out / "grades.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return {"run": r, "rows": rows, "out": out}


def _rows(graded, learner, chapter=None):
    return [r for r in graded["rows"] if r["learner"] == learner and (chapter is None or r["chapter"] == chapter)]


def test_instructor_solutions_get_full_marks(graded):
    rows = _rows(graded, "full")
    assert {r["chapter"] for r in rows} == set(KERNEL_CHAPTERS)
    assert len(rows) == sum(len(_tasks(ch)) for ch in KERNEL_CHAPTERS)
    for r in rows:
        assert int(r["max_points"]) > 0 and r["points"] == r["max_points"], r
        assert r["message"].startswith("all ") and r["message"].endswith("checks passed")


def test_untouched_learner_copies_score_zero_without_crashing(graded):
    rows = [r for r in _rows(graded, "empty") if r["chapter"] in EMPTY_CHAPTERS]
    assert len(rows) == sum(len(_tasks(ch)) for ch in EMPTY_CHAPTERS)
    assert all(r["points"] == "0" and "not written yet" in r["message"] for r in rows), rows


def test_calling_the_reference_scores_zero_and_says_why(graded):
    by_task = {r["task"].split()[0]: r for r in _rows(graded, "cheat")}
    assert by_task["01.A"]["points"] == "0" and "torch.softmax" in by_task["01.A"]["message"]
    assert by_task["01.B"]["points"] == "0" and "labkit.core.numerics.cross_entropy" in by_task["01.B"]["message"]
    assert by_task["03.B"]["points"] == "0" and "scaled_dot_product_attention" in by_task["03.B"]["message"]
    # the other tasks of the same notebooks are scored on their own
    assert by_task["03.A"]["points"] == by_task["03.A"]["max_points"]
    assert by_task["03.C"]["points"] == by_task["03.C"]["max_points"]
    # chapters another learner handed in and this one did not: 0 with a reason
    missing = _rows(graded, "cheat", "22")
    assert missing and all(r["points"] == "0" and "no notebook for chapter" in r["message"] for r in missing)


def test_a_bug_gets_partial_marks_and_the_failing_checks_named(graded):
    softmax = next(r for r in _rows(graded, "buggy", "01") if r["task"].startswith("01.A"))
    assert 0 < int(softmax["points"]) < int(softmax["max_points"])
    assert "✗ huge and -inf logits" in softmax["message"] and "NaN" in softmax["message"]


def test_a_notebook_that_stops_loses_only_the_tasks_it_did_not_reach(graded):
    by_task = {r["task"].split()[0]: r for r in _rows(graded, "crash", "05")}
    assert by_task["05.A"]["points"] == by_task["05.A"]["max_points"]
    for key in ("05.B", "05.C"):
        assert by_task[key]["points"] == "0"
        assert by_task[key]["message"].startswith("not reached: the kernel died in cell")


def test_a_cell_that_raises_does_not_cost_the_next_task(graded):
    """The buggy softmax makes the notebook's own check after task 01.A raise; 01.B is still scored, and the
    feedback lists the cell that raised."""
    ce = next(r for r in _rows(graded, "buggy", "01") if r["task"].startswith("01.B"))
    assert ce["points"] == ce["max_points"]
    fb = (graded["out"] / "feedback" / "buggy.md").read_text()
    assert "Cells that raised an error" in fb and "raised AssertionError: ✗ stable softmax matches torch.softmax: NaN" in fb


def test_what_cannot_be_graded_is_reported_not_fatal(graded):
    r = graded["run"]
    assert r.returncode == 1, r.stderr
    rows = _rows(graded, "confused")
    notebook_rows = [x for x in rows if x["task"] == "(notebook)"]
    assert len(notebook_rows) == 2 and all(x["max_points"] == "0" for x in notebook_rows)
    messages = " ".join(x["message"] for x in notebook_rows)
    assert "is not a learner copy (an instructor notebook" in messages and "python -m labkit student" in messages
    assert "chapter '00' has no lab tasks" in messages
    assert "confused: 01_softmax_and_losses.ipynb is not a learner copy" in r.stderr


def test_reports_csv_feedback_and_summary(graded):
    out, r = graded["out"], graded["run"]
    with open(out / "grades.csv", newline="") as f:
        assert next(csv.reader(f)) == ["learner", "chapter", "task", "points", "max_points", "message"]
    learners = {"full", "empty", "cheat", "buggy", "crash", "confused"}
    assert {p.stem for p in (out / "feedback").glob("*.md")} == learners
    fb = (out / "feedback" / "buggy.md").read_text()
    assert fb.startswith("# Lab feedback: buggy") and "✗ huge and -inf logits" in fb and "✓ the dim argument" in fb
    assert "stopped early" in (out / "feedback" / "crash.md").read_text()
    summary = r.stdout.splitlines()
    header = next(line for line in summary if line.startswith("learner"))
    assert header.split() == ["learner", *KERNEL_CHAPTERS, "total"]
    full = next(line for line in summary if line.startswith("full "))
    total = sum(t.max_points for ch in KERNEL_CHAPTERS for t in _tasks(ch))
    assert full.split()[-1] == f"{total}/{total}"


# ---- errors that stop the grader before any kernel -----------------------------------------------------------
@pytest.mark.parametrize("make, msg", [
    (lambda p: p / "missing", "is not a folder"),
    (lambda p: p, "has no learner notebooks"),
    (lambda p: (p / "alice").mkdir() or p, "has no learner notebooks"),
    (lambda p: _touch(p / "01_softmax_and_losses.ipynb").parent, "directly inside it"),
])
def test_unusable_submissions_folder(tmp_path, capsys, make, msg):
    assert grade.main_grade([str(make(tmp_path)), "--out", str(tmp_path / "out")]) == 2
    assert msg in capsys.readouterr().err
    assert not (tmp_path / "out" / "grades.csv").exists()


def _touch(path):
    path.write_text("{}")
    return path


def test_check_notebook_messages(tmp_path):
    assert grade.check_notebook(_write(tmp_path / "a.ipynb", untouched_copy("06"))) == "06"
    with pytest.raises(ValueError, match="not a learner copy .an instructor notebook"):
        grade.check_notebook(NOTEBOOK_OF["03"])
    with pytest.raises(ValueError, match="chapter '00' has no lab tasks to grade .chapters with lab tasks: 01, 02"):
        grade.check_notebook(_write(tmp_path / "00_start_here.ipynb", untouched_copy("00")))
    (tmp_path / "broken.ipynb").write_text("not json")
    with pytest.raises(ValueError, match="not a readable notebook"):
        grade.check_notebook(tmp_path / "broken.ipynb")


def _write(path, nb):
    nbformat.write(nb, path)
    return path


# ---- the hidden tests without kernels: accept the instructor's code, reject a mutant, catch the reference ---------
MUTATIONS = {
    "stable_softmax": "out + 1e-3", "cross_entropy": "out * 1.001", "get_stats": "{**out, (999, 999): 1}",
    "train_bpe": "(out[0][:-1], out[1][:-1])", "encode_chunk": "out + [0]", "causal_mask": "~out",
    "attention": "out + 1e-3", "split_heads": "out.flip(1)", "rms_norm": "out * 1.001", "pre_ln_block": "out + 1e-3",
    "post_ln_block": "out + 1e-3", "swiglu": "out * 1.001", "llama_params": "out + 1",
    "repeat_kv": "out.flip(1)", "online_softmax_update": "(out[0], out[1] * 1.001, out[2])", "rotate_half": "-out",
    "append_slot": "(out[0] + 1, out[1])", "paged_attention": "out * 1.001", "speculative_accept": "out[:1]",
    "corpus_bleu_score": "out * 1.001", "lcs_length": "out + 1", "bradley_terry_fit": "out * 1.001",
    "multi_query_fusion": "out[::-1]", "hyde_embedding": "out * 1.001", "context_precision": "out * 0.999",
    "bm25_scores": "out * 1.001", "rrf": "out[::-1]", "ndcg_at_k": "out * 0.999",
    "triples_to_graph": "out.add_node('extra') or out", "follow_relations": "out | {'extra'}",
    "parse_tool_call": "type(out)(out.name, {**out.arguments, 'zz_extra': 1})",
    "react_loop": "type(out)(None, out.steps, out.stopped, out.transcript)", "window_messages": "out[1:]",
    "ring_allreduce": "[o + 1e-3 for o in out]", "ddp_step": "[x * 1.1 for x in out]",
    "zero1_adam_step": "[p + 1e-3 for p in out]", "column_parallel": "[o + 1e-3 for o in out]",
    "one_f_one_b": "out[::-1]",
    "adamw_step": "args[0].mul_(1.001)", "clip_grad_global": "out * 1.001", "lr_schedule": "out * 1.001",
    "nucleus_filter": "out.flip(-1)", "greedy_with_cache": "out.flip(1)",
    "quantize_per_channel": "(out[0], out[1] * 1.001)", "nf4_quantize_blocks": "((out[0] + 1) % 16, out[1])",
    "saved_bytes": "out + 4", "loss_scaler_step": "(out[0], out[1] * 2, out[2])",
    "sequence_logprobs": "out * 1.001", "dpo_loss": "(out[0] * 1.001, out[1], out[2])",
    "build_labels": "(out[0], out[1][:-1] + [-100])", "document_causal_mask": "~out", "ffd_bins": "out[::-1]",
    "gae_advantages": "(out[0] * 1.001, out[1])", "ppo_policy_loss": "(out[0] * 1.001, out[1])",
    "lora_forward": "out * 1.001", "prompt_tuning_forward": "out * 1.001",
}


def _solutions(chapter, tmp_path):
    """The instructor's task cells of ``chapter`` as an importable module (so their source can be read), plus
    one mutant per function: ``<name>_mutant`` returns a slightly wrong answer."""
    cells = [c.source for c in nbformat.read(NOTEBOOK_OF[chapter], as_version=4).cells if "task" in _tags(c)]
    mutants = [f"\n\ndef {name}_mutant(*args, **kwargs):\n    out = {name}(*args, **kwargs)\n    return {expr}\n"
               for name, expr in MUTATIONS.items() if any(f"def {name}(" in c for c in cells)]
    return vars(module_from_source(tmp_path, f"solutions_{chapter}", "\n\n".join(cells) + "".join(mutants)))


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_hidden_tests_pass_the_solution_and_fail_a_mutant(chapter, tmp_path):
    ns = _solutions(chapter, tmp_path)
    for task in _tasks(chapter):
        r = base.run_task(task, ns, seed=3)
        assert r["points"] == task.max_points, (task.key, r["message"])
        first = task.functions[0]
        mutant = base.run_task(task, {**ns, first: ns[f"{first}_mutant"]}, seed=3)
        assert mutant["points"] < task.max_points, (task.key, "a wrong answer passed every check")
        assert "uses" not in mutant["message"], mutant["message"]      # failed on values, not as a reference call


def test_reference_calls_are_found_in_the_source_and_at_run_time(tmp_path):
    path = tmp_path / "learner_refs.py"
    path.write_text(
        "import torch\nimport torch.nn.functional as F\nfrom torch.nn.functional import softmax as sm\n"
        "from labkit.core import numerics\n\n"
        "def direct(z, dim=-1):\n    return torch.softmax(z, dim)\n\n"
        "def imported_name(z, dim=-1):\n    return sm(z, dim)\n\n"
        "def method(z, dim=-1):\n    return z.softmax(dim)\n\n"
        "def labkit_module(z, dim=-1):\n    return numerics.stable_softmax(z, dim)\n\n"
        "def _helper(z, dim):\n    return F.log_softmax(z, dim).exp()\n\n"
        "def through_helper(z, dim=-1):\n    return _helper(z, dim)\n\n"
        "def dynamic(z, dim=-1):\n    return getattr(torch, 'soft' + 'max')(z, dim)\n")
    spec = importlib.util.spec_from_file_location("learner_refs", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    softmax_task = next(t for t in _tasks("01") if t.key == "01.A")
    expect = {"direct": "torch.softmax", "imported_name": "F.softmax", "method": ".softmax(", "labkit_module": "labkit",
              "through_helper": "F.log_softmax"}
    for name, needle in expect.items():
        why = base.find_forbidden(getattr(mod, name), softmax_task.forbidden)
        assert why is not None and needle in why, (name, why)
    assert base.find_forbidden(mod.dynamic, softmax_task.forbidden) is None     # invisible to the source ...
    r = base.run_task(softmax_task, {"stable_softmax": mod.dynamic})
    assert r["points"] == 0 and "called torch.softmax at run time" in r["message"]   # ... caught when it runs
    import torch
    assert torch.softmax(torch.zeros(2), -1).tolist() == [0.5, 0.5]                  # and torch is restored


def test_an_endless_loop_fails_one_check_not_the_grader(tmp_path, monkeypatch):
    monkeypatch.setattr(base, "CHECK_SECONDS", 0.5)
    path = tmp_path / "slow.py"
    path.write_text("def llama_params(*args, **kwargs):\n    while True:\n        pass\n")
    spec = importlib.util.spec_from_file_location("slow", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    task = next(t for t in _tasks("06") if t.key == "06.B")
    t0 = time.perf_counter()
    r = base.run_task(task, {"llama_params": mod.llama_params})
    assert r["points"] == 0 and "longer than" in r["message"] and time.perf_counter() - t0 < 10


def test_task_specs_are_what_the_grader_reads(capsys):
    base.task_specs(_tasks("03"), "M:")
    specs = json.loads(capsys.readouterr().out.removeprefix("M:"))
    assert [s["key"] for s in specs] == ["03.A", "03.B", "03.C"]
    assert specs[1]["functions"] == ["attention"] and specs[1]["max_points"] == 4


def test_a_kernel_that_dies_while_starting_is_started_again(monkeypatch, tmp_path):
    """Kernels started side by side can die before their first reply (two picked the same free port): that is
    the machine's fault, so grade_notebook tries again; only KERNEL_START_ATTEMPTS failures in a row count."""
    from labkit.course import grade as G

    path = tmp_path / NOTEBOOK_OF["01"].name
    nbformat.write(learner_copy("01"), path)
    calls = []

    def flaky(nb, chapter, workdir, timeout, seed, fail=1):
        calls.append(chapter)
        if len(calls) <= fail:
            raise G.KernelStartError("RuntimeError: Kernel died before replying to kernel_info")
        return [], [], None

    monkeypatch.setattr(G, "_execute", flaky)
    monkeypatch.setattr(G.time, "sleep", lambda s: None)
    g = G.grade_notebook(path, "ada")
    assert len(calls) == 2 and not g.problem, g.problem
    calls.clear()
    monkeypatch.setattr(G, "_execute", lambda *a: flaky(*a, fail=99))
    g = G.grade_notebook(path, "ada")
    assert len(calls) == G.KERNEL_START_ATTEMPTS
    assert "no kernel started in 3 tries" in g.problem and "kernel_info" in g.problem


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl(PR_SET_PDEATHSIG) is Linux only")
def test_grading_workers_die_with_a_killed_grader(tmp_path):
    """`labkit grade --jobs N` runs notebooks in worker processes; when the grader is killed (Ctrl-C twice, a CI
    timeout), its workers must not go on starting kernels. A parent with the grader's pool is SIGKILLed: its
    worker is gone within seconds. Without the initializer the worker outlives it (checked too)."""
    import os
    import signal

    script = tmp_path / "parent.py"
    script.write_text(
        "import os, sys, time\nfrom concurrent.futures import ProcessPoolExecutor\nfrom multiprocessing import get_context\n"
        "from labkit.course.grade import die_with_parent\n"
        "def job(_):\n    print(os.getpid(), flush=True)\n    time.sleep(60)\n"
        "if __name__ == '__main__':\n"
        "    init = die_with_parent if sys.argv[1] == 'yes' else None\n"
        "    pool = ProcessPoolExecutor(1, mp_context=get_context('spawn'), initializer=init)\n"
        "    pool.submit(job, 0)\n    time.sleep(60)\n")

    def worker_survives(flag):
        p = subprocess.Popen([sys.executable, str(script), flag], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             text=True)
        worker = int(p.stdout.readline())
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        for _ in range(50):
            try:
                os.kill(worker, 0)
                if open(f"/proc/{worker}/stat").read().split()[2] == "Z":
                    return False
            except (ProcessLookupError, FileNotFoundError):
                return False
            time.sleep(0.1)
        os.kill(worker, signal.SIGKILL)
        return True

    assert not worker_survives("yes")
    assert worker_survives("no")
