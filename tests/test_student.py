"""`python -m labkit student`: learner copies stub the solutions, keep the checks, and the checks work."""
import subprocess
import sys

import nbformat
import pytest
from nbclient import NotebookClient

from labkit.core.paths import NOTEBOOKS
from labkit.course.execute import NOTEBOOK_ENV
from labkit.course.student import stub_solution, student_copy

ALL = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def _tags(c):
    return c.get("metadata", {}).get("tags", [])


@pytest.mark.parametrize("path", ALL, ids=[p.stem for p in ALL])
def test_student_copy_of_every_notebook(path):
    nb = nbformat.read(path, as_version=4)
    sols = [c for c in nb.cells if "solution" in _tags(c)]
    out = student_copy(nb)
    assert len(out.cells) == len(nb.cells)
    assert all(c.outputs == [] and c.execution_count is None for c in out.cells if c.cell_type == "code")
    stubs = [c for c in out.cells if "exercise" in _tags(c)]
    assert len(stubs) == len(sols)
    for s in stubs:
        assert "raise NotImplementedError(" in s.source
    if path.name != "00_start_here.ipynb":
        assert len(sols) >= 2, f"{path.name}: each chapter ends with 2–4 exercises"
    assert nb.cells[0].cell_type == "markdown"  # the original is untouched


def _run(nb, cwd):
    # The setup cell (imports) plus the exercise and check cells: the learner's path, without the lesson body.
    first = next(c for c in nb.cells if c.cell_type == "code")
    nb.cells = [first] + [c for c in nb.cells if {"solution", "exercise", "check"} & set(_tags(c))]
    client = NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(cwd)}})
    client.execute()
    return [
        "".join(o.get("text", "") for o in c.outputs if o.output_type == "stream")
        for c in nb.cells if c.cell_type == "code" and "check" in _tags(c)
    ]


def test_learner_copy_checks_fail_on_stubs_and_pass_with_solutions(tmp_path, monkeypatch):
    for k, v in NOTEBOOK_ENV.items():
        monkeypatch.setenv(k, v)
    src = NOTEBOOKS / "01_softmax_and_losses.ipynb"
    subprocess.run([sys.executable, "-m", "labkit", "student", str(src), str(tmp_path)], check=True)
    learner = nbformat.read(tmp_path / src.name, as_version=4)
    reports = _run(nbformat.from_dict(learner), NOTEBOOKS)
    assert len(reports) == 3
    assert reports and all("not implemented yet" in r and "✗" in r for r in reports), reports
    # The learner pastes the solutions back in: every check passes.
    original = nbformat.read(src, as_version=4)
    for c_learn, c_orig in zip(learner.cells, original.cells):
        if "exercise" in _tags(c_learn):
            c_learn.source = c_orig.source
    reports = _run(learner, NOTEBOOKS)
    assert all("✓" in r and "passed" in r for r in reports), reports


def test_stub_keeps_signature_and_docstring():
    src = 'import torch\n\ndef f(x, y=2):\n    """Doc."""\n    # HINT: add them\n    return x + y\n'
    out = stub_solution(src)
    assert "def f(x, y=2):" in out and '"""Doc."""' in out and "raise NotImplementedError('add them')" in out
    assert "return x + y" not in out
    ns = {}
    exec(out, ns)
    with pytest.raises(NotImplementedError, match="add them"):
        ns["f"](1)


@pytest.mark.parametrize("src,msg", [
    ("def f():\n    return 1\n", "HINT"),
    ("# HINT: x\nx = 3\n", "only imports and function definitions"),
    ("# HINT: x\nimport torch\n", "defines no function"),
])
def test_stub_rejects_malformed_solution_cells(src, msg):
    with pytest.raises(ValueError, match=msg):
        stub_solution(src)


def test_solution_without_check_cell_is_rejected():
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("# HINT: h\ndef f():\n    return 1\n", metadata={"tags": ["solution"]}),
                nbformat.v4.new_code_cell("f()")]
    with pytest.raises(ValueError, match="check"):
        student_copy(nb)


def test_student_cli_rejects_missing_source(tmp_path):
    out = subprocess.run([sys.executable, "-m", "labkit", "student", str(tmp_path / "nope"), str(tmp_path / "o")],
                         capture_output=True, text=True)
    assert out.returncode != 0 and "does not exist" in out.stderr


def test_every_notebook_opens_in_the_course_kernel():
    """No "select a kernel" prompt in JupyterLab: each notebook names the python3 kernel."""
    from labkit.core.paths import NOTEBOOKS
    from labkit.course.execute import KERNEL_METADATA

    for p in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")):
        nb = nbformat.read(p, as_version=4)
        assert nb.metadata.get("kernelspec") == KERNEL_METADATA["kernelspec"], p.name


@pytest.mark.parametrize("name", ["03_attention", "05_normalization", "06_ffn_and_activations", "20_graphrag"])
def test_whole_learner_copy_runs_and_reports_the_stubs(name, tmp_path, monkeypatch):
    """A learner runs the whole copy top to bottom: no cell may fail (a lesson cell must not need an
    exercise's solution), and every check cell reports its exercise as not implemented yet."""
    for k, v in NOTEBOOK_ENV.items():
        monkeypatch.setenv(k, v)
    src = NOTEBOOKS / f"{name}.ipynb"
    nb = student_copy(nbformat.read(src, as_version=4))
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    checks = ["".join(o.get("text", "") for o in c.outputs if o.output_type == "stream")
              for c in nb.cells if c.cell_type == "code" and "check" in _tags(c)]
    assert len(checks) >= 2 and all("not implemented yet" in r and "✗" in r for r in checks), checks
