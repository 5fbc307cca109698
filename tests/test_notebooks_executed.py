"""Every committed notebook was executed top to bottom in one fresh kernel (`make execute`): each code cell has
an execution count, and the counts are 1..n in order. nbval only compares cells that were executed, so a cell
edited after the run (count None) would go unchecked."""
import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("[0-9][0-9]_*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_executed_top_to_bottom(path):
    cells = [c for c in json.loads(path.read_text(encoding="utf-8"))["cells"] if c["cell_type"] == "code"]
    counts = [c["execution_count"] for c in cells]
    never = [i for i, n in enumerate(counts) if n is None]
    assert not never, f"{path.name}: code cells {never} were never executed; run `make execute NB={path}`"
    assert counts == list(range(1, len(counts) + 1)), (
        f"{path.name}: execution counts {counts} are not 1..n; run `make execute NB={path}`")
