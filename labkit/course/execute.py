"""Run the course headless: ``python -m labkit execute [--inplace] [NB ...]``.

Executes each notebook top to bottom in a fresh course kernel (:mod:`labkit.course.kernel`, which carries
:data:`NOTEBOOK_ENV`: offline, tqdm silenced, the pinned CPU code paths), prints a table of wall time and
peak memory per notebook, and with ``--inplace`` stores the outputs (how committed notebooks are refreshed;
nbval then checks them; a chapter with a Chinese translation also gets its notebooks/zh/ copy rewritten with the
new outputs, :func:`labkit.course.zh.refresh_edition`). Learner copies are :mod:`labkit.course.student`.
"""
from __future__ import annotations

import os
import time
import sys
from pathlib import Path

import nbformat

from labkit.core.paths import NOTEBOOKS
from labkit.course.kernel import NOTEBOOK_ENV, ensure_kernel, notebook_metadata
from labkit.course.zh import refresh_edition

__all__ = ["execute_notebook", "main_execute", "NOTEBOOK_ENV", "KERNEL_METADATA"]


#: Stored in every executed notebook (with the kernel's own language_info): JupyterLab opens it straight in the
#: course kernel, and opening it changes nothing (:func:`labkit.course.kernel.notebook_metadata`).
KERNEL_METADATA = notebook_metadata()


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
    client = NotebookClient(nb, timeout=timeout, kernel_name=ensure_kernel(),
                            resources={"metadata": {"path": str(path.parent)}})
    t0 = time.perf_counter()
    with client.setup_kernel():
        language_info = client.wait_for_reply(client.kc.kernel_info())["content"]["language_info"]
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
        nb.metadata.update(notebook_metadata(language_info))  # what JupyterLab would write: opening it is a no-op
        nbformat.write(nb, path)
    return wall, float(cpu), (int(self_kb) + int(child_kb)) / 1024


def main_execute(argv: list[str]) -> int:
    """``python -m labkit execute [--inplace] [NB ...]``: run each notebook, print the budget table; 1 if any failed.

    Without a notebook it runs all of them; an unknown option (``--help`` included) prints the usage and runs
    nothing."""
    unknown = [a for a in argv if a.startswith("-") and a != "--inplace"]
    if unknown:
        print(f"usage: python -m labkit execute [--inplace] [NB ...]   (got {' '.join(unknown)}); without NB it runs "
              "every notebook, --inplace stores the outputs", file=sys.stderr)
        return 2
    inplace = "--inplace" in argv
    paths = [Path(a) for a in argv if not a.startswith("--")]
    if not paths:
        paths = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    rows, failed = [], False
    for p in paths:
        print(f"executing {p} ...", flush=True)
        try:
            wall, cpu, mb = execute_notebook(p, inplace=inplace)
            zh = refresh_edition(p) if inplace else None  # the Chinese edition carries the same outputs
            if zh:
                print(f"updated the Chinese edition {zh}", flush=True)
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
