"""Running whole learner copies (``python -m labkit student``) top to bottom, for tests/test_student_run_*.py.

Each learner copy costs as much as its chapter (10–70 s), so the chapters are dealt round-robin into
``SHARES`` test files: ``make test`` runs test files side by side (pytest-xdist ``--dist loadfile``), and one
file holding every run would keep one core busy for the whole suite.
"""
import re
import time

import nbformat
from nbclient import NotebookClient

from labkit.core.paths import NOTEBOOKS
from labkit.course.execute import NOTEBOOK_ENV

SHARES = 3


def _tags(c):
    return c.get("metadata", {}).get("tags", [])


def run_chapters() -> list[str]:
    """Every chapter whose learner copy has lab tasks, plus 20 (its exercises call the retriever): all of them."""
    paths = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    lab = {p.stem for p in paths if any("task" in _tags(c) for c in nbformat.read(p, as_version=4).cells)}
    return sorted(lab | {"20_graphrag"})


def share(k: int) -> list[str]:
    """Chapters of test file ``k`` (0 ≤ k < SHARES): every SHARES-th chapter, so each file mixes long and short."""
    return run_chapters()[k::SHARES]


def run_whole_learner_copy(name: str, learner_copies, monkeypatch) -> None:
    """A learner runs the whole copy with nothing filled in: no cell fails, each lab task function says once
    that labkit's version is used, and every check cell reports its exercise as not implemented yet."""
    for k, v in NOTEBOOK_ENV.items():
        monkeypatch.setenv(k, v)
    nb = nbformat.read(learner_copies / f"{name}.ipynb", as_version=4)
    t0 = time.perf_counter()
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(learner_copies)}}).execute()
    print(f"{name}: learner copy ran in {time.perf_counter() - t0:.1f} s")
    code = [c for c in nb.cells if c.cell_type == "code"]
    text = ["".join(o.get("text", "") for o in c.outputs if o.output_type == "stream") for c in code]
    checks = [t for t, c in zip(text, code) if "check" in _tags(c)]
    assert len(checks) >= 2 and all("not implemented yet" in r and "✗" in r for r in checks), checks
    notices = re.findall(r"⚠ (\w+): your version is not written yet — using labkit's", "".join(text))
    assert sorted(notices) == sorted(nb.metadata["labkit"]["tasks"])
