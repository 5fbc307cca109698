"""Learner copies of the course notebooks: ``python -m labkit student SRC OUT``.

Two kinds of cells are stubbed; both define functions (and may import), and each function carries its own
``# HINT: ...`` comment line inside its body:

* an **exercise** (end of chapter): a *solution* cell (tag ``solution``) followed by a *check* cell (tag
  ``check``) that calls :func:`labkit.core.check.exercise`; the learner copy tags it ``exercise``;
* a **lab task** (tag ``task``): the chapter's central build, solved where it stands in the instructor
  notebook. The learner copy keeps the tag; a later cell rebinds each function with
  :func:`labkit.course.lab.use`, so Run All keeps going on labkit's version until the learner's is written,
  and ``python -m labkit grade`` runs the hidden tests of :mod:`labkit.course.hidden` on it.

In the learner copy each function keeps its signature and docstring and its body becomes
``raise NotImplementedError(<its own hint>)`` (a function without a hint raises a bare
``NotImplementedError``). All outputs are cleared, and the notebook metadata records that it is a learner
copy, of which chapter, and its task functions (``nb.metadata["labkit"]``), which the grader checks.

Both editions: a Chinese notebook made by :mod:`labkit.course.zh` (``notebooks/zh/``) gives a Chinese learner copy:
the stub headers come from :mod:`labkit.core.messages`, each hint is replaced by its translation (stored in the
notebook's metadata by ``zh build``), and its first code cell sets ``LABKIT_LANG=zh`` so that the checks and the
lab-task notices print in Chinese too.
Running the notebooks headless is :mod:`labkit.course.execute`.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import nbformat

from labkit.core.messages import message
from labkit.course.zh_format import EDITION_KEY

__all__ = ["student_copy", "stub_solution", "write_student_copies", "learner_metadata", "chapter_of", "edition_of",
           "SOLUTION_TAG", "CHECK_TAG", "TASK_TAG", "EXERCISE_TAG", "HINT_RE", "METADATA_KEY"]

SOLUTION_TAG = "solution"
CHECK_TAG = "check"
TASK_TAG = "task"
EXERCISE_TAG = "exercise"
METADATA_KEY = "labkit"
HINT_RE = re.compile(r"^\s*#\s*HINT:\s*(.+?)\s*$", re.MULTILINE | re.IGNORECASE)
#: The header line of a stubbed cell, by kind: a key of labkit.core.messages.MESSAGES (English and Chinese).
_HEADERS = {"exercise": "student.exercise", "task": "student.task"}


def _tags(cell) -> list[str]:
    """The cell's metadata tags (``solution``, ``check``, ``task``, ...)."""
    return list(cell.get("metadata", {}).get("tags", []))


def chapter_of(name: str) -> str | None:
    """``"03"`` for ``03_attention.ipynb``; ``None`` when the name has no two-digit prefix."""
    m = re.match(r"(\d\d)_", Path(name).name)
    return m.group(1) if m else None


def _hints_by_line(source: str) -> dict[int, str]:
    """``{line number: hint text}`` for every ``# HINT: ...`` line (1-based)."""
    return {source.count("\n", 0, m.start()) + 1: m.group(1) for m in HINT_RE.finditer(source)}


def _stub_function(node: ast.FunctionDef, lines: list[str], hint: str | None, lang: str = "en") -> str:
    """Signature (with decorators) and docstring of ``node``, then a body that raises NotImplementedError."""
    first_body = node.body[0]
    has_doc = (isinstance(first_body, ast.Expr) and isinstance(first_body.value, ast.Constant)
               and isinstance(first_body.value.value, str))
    head_end = first_body.end_lineno if has_doc else first_body.lineno - 1
    start = node.decorator_list[0].lineno if node.decorator_list else node.lineno
    indent = re.match(r"\s*", lines[first_body.lineno - 1]).group(0) or "    "
    raise_line = f"raise NotImplementedError({hint!r})" if hint else "raise NotImplementedError"
    body = [f"{indent}{message('student.your_code', lang)}", f"{indent}{raise_line}"]
    # A function without a docstring keeps the comments above its first statement: drop the hint among them
    # (the raise shows it, in the learner's language).
    head = [line for line in lines[start - 1: head_end] if not HINT_RE.match(line)]
    return "\n".join(head + body)


def stub_solution(source: str, kind: str = "exercise", lang: str = "en", hints: dict[str, str] | None = None) -> str:
    """Turn a solution (``kind="exercise"``) or lab-task (``kind="task"``) cell's source into a learner stub.

    Each top-level ``def`` keeps its signature and docstring; its body becomes
    ``raise NotImplementedError("<the hint inside that function>")``. Imports are kept. Anything else is an
    error: the cell must only define functions (so the cells after it can call them). An exercise cell needs
    at least one hint; every function of a task cell needs its own. A function may hold at most one hint,
    and a hint outside every function is an error (it would not be clear which function it helps).
    ``lang`` picks the header's language; ``hints`` maps an English hint to the text the stub shows instead.
    """
    if kind not in _HEADERS:
        raise ValueError(f"kind must be one of {sorted(_HEADERS)}, got {kind!r}")
    found = _hints_by_line(source)
    if not found:
        raise ValueError(f"{kind} cell has no '# HINT: ...' line; add one inside each function so the learner "
                         "stub can show it")
    tree = ast.parse(source)
    lines = source.splitlines()
    out: list[str] = []
    used: set[int] = set()
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            out.append("\n".join(lines[node.lineno - 1: node.end_lineno]))
        elif isinstance(node, ast.FunctionDef):
            mine = [n for n in found if node.lineno <= n <= node.end_lineno]
            if len(mine) > 1:
                raise ValueError(f"function {node.name} has {len(mine)} '# HINT:' lines (lines {mine}); keep one")
            if kind == "task" and not mine:
                raise ValueError(f"task function {node.name} has no '# HINT: ...' line; give every task function "
                                 "its own hint")
            used.update(mine)
            hint = found[mine[0]] if mine else None
            out.append(_stub_function(node, lines, (hints or {}).get(hint, hint) if hint else None, lang))
        else:
            raise ValueError(
                f"{kind} cell line {node.lineno}: only imports and function definitions are allowed "
                f"(found {type(node).__name__}); move other code into the function or another cell"
            )
    if not any(isinstance(n, ast.FunctionDef) for n in tree.body):
        raise ValueError(f"{kind} cell defines no function; the cells after it need one to call")
    stray = sorted(set(found) - used)
    if stray:
        raise ValueError(f"'# HINT:' on line {stray[0]} is outside every function; put it inside the function "
                         "it helps")
    return message(_HEADERS[kind], lang) + "\n" + "\n\n\n".join(out) + "\n"


def _function_names(source: str) -> list[str]:
    return [n.name for n in ast.parse(source).body if isinstance(n, ast.FunctionDef)]


def learner_metadata(nb: nbformat.NotebookNode) -> dict | None:
    """The ``labkit`` metadata of a learner copy (``learner_copy``, ``chapter``, ``source``, ``tasks``), or
    ``None`` for a notebook that was not made by :func:`student_copy`."""
    meta = nb.get("metadata", {}).get(METADATA_KEY)
    return dict(meta) if isinstance(meta, dict) and meta.get("learner_copy") is True else None


def edition_of(nb: nbformat.NotebookNode) -> tuple[str, dict[str, str]]:
    """``("zh", {English hint: Chinese hint})`` for a Chinese notebook made by ``python -m labkit zh build``,
    ``("en", {})`` for any other notebook."""
    meta = nb.get("metadata", {}).get(EDITION_KEY)
    if isinstance(meta, dict) and str(meta.get("language", "")).startswith("zh"):
        return "zh", dict(meta.get("hints") or {})
    return "en", {}


def student_copy(nb: nbformat.NotebookNode, source_name: str | None = None) -> nbformat.NotebookNode:
    """A learner copy of ``nb`` (a new object; ``nb`` is not changed).

    ``source_name`` (e.g. ``"03_attention.ipynb"``) is recorded in the metadata with its chapter number. A Chinese
    notebook (:func:`edition_of`) gives a Chinese learner copy: headers, hints and printed messages in Chinese.
    """
    nb = nbformat.from_dict(nb)  # deep copy
    lang, hints = edition_of(nb)
    cells = nb.cells
    task_functions: list[str] = []
    for i, cell in enumerate(cells):
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        tags = _tags(cell)
        if SOLUTION_TAG in tags and TASK_TAG in tags:
            raise ValueError(f"cell {i}: a cell is either an exercise 'solution' or a lab 'task', not both")
        if SOLUTION_TAG in tags:
            nxt = next((c for c in cells[i + 1:] if c.cell_type == "code"), None)
            if nxt is None or CHECK_TAG not in _tags(nxt):
                raise ValueError(f"cell {i}: a 'solution' cell must be followed by a code cell tagged 'check'")
            cell.source = stub_solution(cell.source, "exercise", lang, hints)
            cell.metadata["tags"] = [t for t in tags if t != SOLUTION_TAG] + [EXERCISE_TAG]
        elif TASK_TAG in tags:
            task_functions += _function_names(cell.source)
            cell.source = stub_solution(cell.source, "task", lang, hints)
    first = next((c for c in cells if c.cell_type == "code"), None)
    if first is not None and lang != "en":
        first.source = message("student.language", lang) + first.source
    nb.metadata[METADATA_KEY] = {"learner_copy": True, "chapter": chapter_of(source_name or ""),
                                 "source": Path(source_name).name if source_name else None,
                                 "tasks": task_functions}
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
        nbformat.write(student_copy(nb, f.name), t)
    return targets
