"""Lab tasks: stubs with one hint per function, `lab.use` falls back to labkit's version only for a stub,
and each chapter's task cells match its hidden tests."""
import ast
import importlib
import json

import nbformat
import pytest

from labkit.core.paths import NOTEBOOKS
from labkit.course import lab
from labkit.course.hidden import chapters_with_tasks, module_of
from labkit.course.student import stub_solution, student_copy

NOTEBOOK_OF = {p.name[:2]: p for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")}


def _tags(cell):
    return cell.get("metadata", {}).get("tags", [])


def test_each_function_gets_its_own_hint_or_none():
    """The bug of review: a cell's first hint was copied into every function of the cell."""
    src = ("def alpha(M):\n    # HINT: the decoder-only row\n    return 1\n\n\n"
           "def encdec(N, M):\n    return 2\n\n\n"
           "def third(x):\n    \"\"\"Doc.\"\"\"\n    # HINT: something else\n    return x\n")
    ns = {}
    exec(stub_solution(src), ns)
    with pytest.raises(NotImplementedError, match="decoder-only row"):
        ns["alpha"](1)
    with pytest.raises(NotImplementedError) as e:
        ns["encdec"](1, 2)
    assert str(e.value) == ""                                   # no hint of its own: a bare NotImplementedError
    with pytest.raises(NotImplementedError, match="something else"):
        ns["third"](0)
    assert "HINT: the decoder-only row" not in stub_solution(src).splitlines()[0]   # the header repeats no hint


@pytest.mark.parametrize("src,msg", [
    ("# HINT: a\ndef f():\n    return 1\n", "outside every function"),
    ("def f():\n    # HINT: a\n    # HINT: b\n    return 1\n", "2 '# HINT:' lines"),
])
def test_misplaced_hints_are_rejected(src, msg):
    with pytest.raises(ValueError, match=msg):
        stub_solution(src)


def test_every_task_function_needs_a_hint():
    src = "def f(x):\n    # HINT: a\n    return x\n\n\ndef g(x):\n    return x\n"
    stub_solution(src, "exercise")                               # exercises: one hint in the cell is enough
    with pytest.raises(ValueError, match="task function g has no"):
        stub_solution(src, "task")
    with pytest.raises(ValueError, match="kind"):
        stub_solution(src, "lesson")


def test_task_cells_become_stubs_and_the_copy_is_marked():
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("def f(x):\n    # HINT: h\n    return x + 1\n", metadata={"tags": ["task"]}),
                nbformat.v4.new_code_cell("f = lab.use(f, g)\nf(1)")]
    out = student_copy(nb, "07_tiny_llama.ipynb")
    assert "raise NotImplementedError('h')" in out.cells[0].source and "return x + 1" not in out.cells[0].source
    assert out.cells[0].source.startswith("# Lab task:") and _tags(out.cells[0]) == ["task"]
    assert out.metadata["labkit"] == {"learner_copy": True, "chapter": "07", "source": "07_tiny_llama.ipynb",
                                      "tasks": ["f"]}
    assert "labkit" not in nb.metadata                            # the original is untouched
    both = nbformat.v4.new_notebook()
    both.cells = [nbformat.v4.new_code_cell("def f():\n    # HINT: h\n    return 1\n", metadata={"tags": ["task", "solution"]})]
    with pytest.raises(ValueError, match="not both"):
        student_copy(both)


# ---- lab.use ------------------------------------------------------------------------------------------------
def stub_fn(z, dim=-1):
    """Docstring."""
    # Your code here.
    raise NotImplementedError("subtract the max")


def bare_stub(x):
    raise NotImplementedError


def written(z, dim=-1):
    """Docstring."""
    return z


def half_written(z):
    y = z + 1
    raise NotImplementedError("not finished")


def test_is_stub():
    assert lab.is_stub(stub_fn) and lab.is_stub(bare_stub)
    assert not lab.is_stub(written) and not lab.is_stub(half_written)
    assert not lab.is_stub(len)                                  # no Python source: counts as written
    assert not lab.is_stub(lambda x: x)


def test_use_falls_back_once_with_one_line(capsys):
    def labkit_version(z, dim=-1):
        return "labkit"
    assert lab.use(stub_fn, labkit_version) is labkit_version
    assert capsys.readouterr().out == ("⚠ stub_fn: your version is not written yet — using labkit's for the rest "
                                       "of the notebook\n")
    assert lab.use(written, labkit_version) is written          # a written task is used, silently
    assert capsys.readouterr().out == ""
    with pytest.raises(TypeError, match="fallback"):
        lab.use(written, None)
    with pytest.raises(TypeError, match="`fn`"):
        lab.use(3, written)


# ---- every chapter with lab tasks: notebook and hidden tests agree ---------------------------------------------
def _defs(source):
    return [n.name for n in ast.parse(source).body if isinstance(n, ast.FunctionDef)]


def _use_targets(source):
    """Names rebound as `name = lab.use(name, ...)` in a cell."""
    out = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            f = node.value.func
            if isinstance(f, ast.Attribute) and f.attr == "use" and isinstance(f.value, ast.Name) and f.value.id == "lab":
                out |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    return out


@pytest.mark.parametrize("chapter", chapters_with_tasks())
def test_task_cells_match_the_hidden_tests(chapter):
    """Each hidden task names functions defined together in one task cell of the chapter, every task function
    is rebound by lab.use in a later cell, and the chapter opens with objectives, prerequisites and a plan."""
    nb = json.loads(NOTEBOOK_OF[chapter].read_text())
    cells = [("".join(c["source"]), c) for c in nb["cells"]]
    task_cells = [_defs(s) for s, c in cells if c["cell_type"] == "code" and "task" in _tags(c)]
    tasks = importlib.import_module(module_of(chapter)).TASKS
    assert sorted(f for t in tasks for f in t.functions) == sorted(f for cell in task_cells for f in cell)
    for t in tasks:
        assert any(set(t.functions) <= set(cell) for cell in task_cells), f"{t.key}: functions split over cells"
        assert t.max_points > 0 and all(c.points > 0 for c in t.checks)
    first_task = next(i for i, (s, c) in enumerate(cells) if "task" in _tags(c))
    rebound = set().union(*(_use_targets(s) for s, c in cells[first_task:] if c["cell_type"] == "code"))
    assert rebound == {f for cell in task_cells for f in cell}
    opening = "".join(s for s, c in cells[:3] if c["cell_type"] == "markdown")
    for needle in ("学习目标", "先修", "时间安排", "Lab tasks"):
        assert needle in opening, f"{NOTEBOOK_OF[chapter].name}: the opening cells lack {needle!r}"
