"""Learner copies of the course notebooks: ``python -m labkit student SRC OUT``.

In the course notebooks every exercise is two code cells: a *solution* cell (tag ``solution``) that
defines one or more functions, with a ``# HINT: ...`` comment line, and right after it a *check* cell
(tag ``check``) that calls :func:`labkit.core.check.exercise`. In the learner copy each solution function
keeps its signature and docstring and its body becomes ``raise NotImplementedError(<hint>)``; the check
cell stays, so it reports "not implemented yet" until the learner's code passes. All outputs are cleared.
Running the notebooks headless is :mod:`labkit.course.execute`.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import nbformat

__all__ = ["student_copy", "stub_solution", "write_student_copies", "SOLUTION_TAG", "CHECK_TAG", "HINT_RE"]

SOLUTION_TAG = "solution"
CHECK_TAG = "check"
HINT_RE = re.compile(r"^\s*#\s*HINT:\s*(.+?)\s*$", re.MULTILINE | re.IGNORECASE)


def _tags(cell) -> list[str]:
    """The cell's metadata tags (``solution``, ``check``, ...)."""
    return list(cell.get("metadata", {}).get("tags", []))


def stub_solution(source: str) -> str:
    """Turn a solution cell's source into a learner stub.

    Each top-level ``def`` keeps its signature and docstring; its body becomes
    ``raise NotImplementedError("<hint>")``. Imports are kept. Anything else is an error: a solution
    cell must only define functions (so the check cell can call them).
    """
    m = HINT_RE.search(source)
    if not m:
        raise ValueError("solution cell has no '# HINT: ...' line; add one so the learner stub can show it")
    hint = m.group(1)
    tree = ast.parse(source)
    lines = source.splitlines()
    out: list[str] = []
    n_defs = 0
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            out.append("\n".join(lines[node.lineno - 1 : node.end_lineno]))
        elif isinstance(node, ast.FunctionDef):
            n_defs += 1
            first_body = node.body[0]
            has_doc = (isinstance(first_body, ast.Expr) and isinstance(first_body.value, ast.Constant)
                       and isinstance(first_body.value.value, str))
            head_end = (first_body.end_lineno if has_doc else first_body.lineno - 1)
            start = node.decorator_list[0].lineno if node.decorator_list else node.lineno
            head = lines[start - 1 : head_end]
            indent = re.match(r"\s*", lines[first_body.lineno - 1]).group(0) or "    "
            out.append("\n".join(head + [f"{indent}# Your code here.", f"{indent}raise NotImplementedError({hint!r})"]))
        else:
            raise ValueError(
                f"solution cell line {node.lineno}: only imports and function definitions are allowed "
                f"(found {type(node).__name__}); move other code into the function or another cell"
            )
    if n_defs == 0:
        raise ValueError("solution cell defines no function; the check cell needs one to call")
    return f"# Exercise: fill in the function(s) below. HINT: {hint}\n" + "\n\n\n".join(out) + "\n"


def student_copy(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A learner copy of ``nb`` (a new object; ``nb`` is not changed)."""
    nb = nbformat.from_dict(nb)  # deep copy
    cells = nb.cells
    for i, cell in enumerate(cells):
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        if SOLUTION_TAG in _tags(cell):
            nxt = next((c for c in cells[i + 1 :] if c.cell_type == "code"), None)
            if nxt is None or CHECK_TAG not in _tags(nxt):
                raise ValueError(f"cell {i}: a 'solution' cell must be followed by a code cell tagged 'check'")
            cell.source = stub_solution(cell.source)
            cell.metadata["tags"] = [t for t in _tags(cell) if t != SOLUTION_TAG] + ["exercise"]
    return nb


def write_student_copies(src: Path, out: Path) -> list[Path]:
    """Learner copies of one notebook or of every ``*.ipynb`` in a folder; returns the files written."""
    src, out = Path(src), Path(out)
    if not src.exists():
        raise FileNotFoundError(f"SRC {src} does not exist")
    files = sorted(src.glob("*.ipynb")) if src.is_dir() else [src]
    if not files:
        raise ValueError(f"no .ipynb files in {src}")
    if src.is_dir() or out.suffix != ".ipynb":
        out.mkdir(parents=True, exist_ok=True)
        targets = [out / f.name for f in files]
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        targets = [out]
    for f, t in zip(files, targets):
        nb = nbformat.read(f, as_version=4)
        nbformat.write(student_copy(nb), t)
    return targets
