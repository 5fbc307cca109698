"""Notebook tooling: run the course headless, and make learner copies.

``python -m labkit execute [--inplace] [NB ...]``
    Executes each notebook top to bottom in a fresh kernel (offline, tqdm silenced), prints a table of
    wall time and peak memory per notebook, and with ``--inplace`` stores the outputs (how committed
    notebooks are refreshed; nbval then checks them).

``python -m labkit student SRC OUT``
    Writes learner copies. In the course notebooks every exercise is two code cells: a *solution* cell
    (tag ``solution``) that defines one or more functions, with a ``# HINT: ...`` comment line, and right
    after it a *check* cell (tag ``check``) that calls :func:`labkit.core.check.exercise`. In the learner copy
    each solution function keeps its signature and docstring and its body becomes
    ``raise NotImplementedError(<hint>)``; the check cell stays, so it reports "not implemented yet"
    until the learner's code passes. All outputs are cleared.
"""
from __future__ import annotations

import ast
import os
import re
import time
from pathlib import Path

import nbformat

__all__ = ["student_copy", "stub_solution", "execute_notebook", "NOTEBOOK_ENV"]

SOLUTION_TAG = "solution"
CHECK_TAG = "check"
HINT_RE = re.compile(r"^\s*#\s*HINT:\s*(.+?)\s*$", re.MULTILINE | re.IGNORECASE)

#: Environment every notebook runs in, for `make execute` and for nbval alike.
NOTEBOOK_ENV = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TQDM_DISABLE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "PYTHONHASHSEED": "0",
    "PYTHONWARNINGS": "ignore::DeprecationWarning",
    "OMP_WAIT_POLICY": "passive",
    # identical floats on AVX2 and AVX-512 CPUs, Intel and AMD (the Makefile says why)
    "ATEN_CPU_CAPABILITY": "avx2",
    "MKL_CBWR": "COMPATIBLE",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
}


#: Stored in every executed notebook, so JupyterLab does not ask which kernel to use.
KERNEL_METADATA = {
    "kernelspec": {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"},
    "language_info": {"name": "python", "file_extension": ".py", "mimetype": "text/x-python"},
}


def _tags(cell) -> list[str]:
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


def execute_notebook(path: Path, *, inplace: bool = False, timeout: int = 600) -> tuple[float, float, float]:
    """Execute a notebook in a fresh kernel (cwd = its folder).

    Returns (wall seconds, CPU seconds, peak RSS in MB). CPU seconds (user + system, kernel and its
    children) hardly change when other work shares the machine, so they are the fairer budget measure
    there. Peak RSS is the kernel's high-water mark plus the largest child it waited for (torchrun demos).
    """
    from nbclient import NotebookClient

    for k, v in NOTEBOOK_ENV.items():
        os.environ[k] = v
    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    t0 = time.perf_counter()
    with client.setup_kernel():
        for i, cell in enumerate(nb.cells):
            client.execute_cell(cell, i)
        wall = time.perf_counter() - t0
        probe = nbformat.v4.new_code_cell(
            "import resource as _r\n"
            "_s, _c = _r.getrusage(_r.RUSAGE_SELF), _r.getrusage(_r.RUSAGE_CHILDREN)\n"
            "print(_s.ru_maxrss, _c.ru_maxrss, _s.ru_utime + _s.ru_stime + _c.ru_utime + _c.ru_stime)")
        nb.cells.append(probe)
        try:
            client.execute_cell(probe, len(nb.cells) - 1)
        finally:
            nb.cells.pop()
    txt = "".join(o.get("text", "") for o in probe.outputs)
    self_kb, child_kb, cpu = txt.split()[:3]
    if inplace:
        nb.metadata.update(KERNEL_METADATA)  # JupyterLab opens it straight in the course kernel, no prompt
        nbformat.write(nb, path)
    return wall, float(cpu), (int(self_kb) + int(child_kb)) / 1024


def main_execute(argv: list[str]) -> int:
    inplace = "--inplace" in argv
    paths = [Path(a) for a in argv if not a.startswith("--")]
    if not paths:
        from labkit.core.paths import NOTEBOOKS
        paths = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    rows, failed = [], False
    for p in paths:
        print(f"executing {p} ...", flush=True)
        try:
            wall, cpu, mb = execute_notebook(p, inplace=inplace)
            rows.append((p.name, f"{wall:6.1f}", f"{cpu:5.1f}", f"{mb:7.0f}",
                         "ok" if wall <= 60 and mb <= 2048 else "OVER BUDGET"))
        except Exception as e:  # report every notebook, then fail
            failed = True
            rows.append((p.name, "-", "-", "-", f"FAILED: {type(e).__name__}: {str(e).splitlines()[0][:80] if str(e) else ''}"))
    w = max(len(r[0]) for r in rows)
    print(f"\n{'notebook':<{w}}  wall s  cpu s  peak MB  status (budget 60 s wall, 2048 MB)")
    for r in rows:
        print(f"{r[0]:<{w}}  {r[1]}  {r[2]}  {r[3]}  {r[4]}")
    return 1 if failed else 0
