"""Grade lab tasks: ``python -m labkit grade SUBMISSIONS --out DIR``.

``SUBMISSIONS`` holds one folder per learner (the folder name is the learner) with their filled learner
notebooks (made by ``python -m labkit student``). Each notebook runs top to bottom in a fresh kernel, in a
temporary folder, with a time limit. Right after the cell that defines a task's functions, the grader runs
that task's hidden tests (:mod:`labkit.course.hidden`) in the same kernel, on the learner's functions as
defined there (before any ``lab.use`` rebinds the name). It stops once every task is scored; a notebook that
raises or runs out of time loses only the tasks it had not reached. Reports are
:mod:`labkit.course.grade_report` (``grades.csv``, one markdown feedback file per learner, a summary).
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import re
import secrets
import signal
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

from labkit.course.execute import NOTEBOOK_ENV
from labkit.course.grade_report import NotebookGrade, write_reports
from labkit.course.hidden import chapters_with_tasks, module_of
from labkit.course.student import chapter_of, learner_metadata

__all__ = ["NotebookGrade", "GradeError", "KernelStartError", "KERNEL_START_ATTEMPTS", "find_submissions",
           "check_notebook", "grade_notebook", "grade_all", "main_grade", "DEFAULT_TIMEOUT"]

#: Seconds a notebook may run (up to its last task) before it is stopped.
DEFAULT_TIMEOUT = 300
#: Tries to start a notebook's kernel: a kernel can die while starting when many start at once (two of them
#: picking the same free port), which is the machine's fault, not the learner's.
KERNEL_START_ATTEMPTS = 3


class KernelStartError(RuntimeError):
    """The kernel died or hung before it ran any cell (retried by :func:`grade_notebook`)."""


class GradeError(ValueError):
    """SUBMISSIONS cannot be graded at all (missing, empty, no learner folders)."""


def find_submissions(root: str | Path) -> dict[str, list[Path]]:
    """``{learner: [notebooks]}`` under ``root`` (one folder per learner, ``.ipynb_checkpoints`` ignored)."""
    root = Path(root)
    if not root.is_dir():
        raise GradeError(f"SUBMISSIONS {root} is not a folder; give the folder that holds one folder per learner")
    loose = sorted(p.name for p in root.glob("*.ipynb"))
    if loose:
        raise GradeError(f"{root} has notebooks directly inside it ({', '.join(loose[:3])}); put each learner's "
                         "notebooks in a folder named after the learner, e.g. SUBMISSIONS/alice/01_softmax_and_losses.ipynb")
    learners = {d.name: sorted(p for p in d.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
                for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith(".")}
    if not learners or not any(learners.values()):
        raise GradeError(f"SUBMISSIONS {root} has no learner notebooks: it needs one folder per learner, each with "
                         "their filled learner notebooks (*.ipynb), e.g. SUBMISSIONS/alice/01_softmax_and_losses.ipynb")
    return learners


def check_notebook(path: Path) -> str:
    """The chapter of a gradable learner notebook; ``ValueError`` saying why ``path`` cannot be graded."""
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as e:  # any unreadable file: say so, grade the rest
        raise ValueError(f"{path.name} is not a readable notebook ({type(e).__name__}: {e})") from None
    meta = learner_metadata(nb)
    if meta is None:
        kind = "an instructor notebook (it has the solutions)" if chapter_of(path.name) else "not a course notebook"
        raise ValueError(f"{path.name} is not a learner copy ({kind}); hand out copies made with "
                         "`python -m labkit student notebooks/ OUT/` and collect those")
    chapter = meta.get("chapter")
    if chapter not in chapters_with_tasks():
        raise ValueError(f"{path.name}: chapter {chapter!r} has no lab tasks to grade (chapters with lab tasks: "
                         f"{', '.join(chapters_with_tasks())})")
    return chapter


def _defined(source: str) -> set[str]:
    """Names of the functions a cell defines at top level (a regex: cells may hold IPython magics)."""
    return set(re.findall(r"^def\s+([A-Za-z_]\w*)\s*\(", source, re.MULTILINE))


def _where(i: int, cell: Any) -> str:
    first = next((line.strip() for line in cell.source.splitlines() if line.strip()), "")
    return f"cell {i + 1} (`{first[:60]}`)"


def _kernel_json(client: NotebookClient, nb: Any, source: str, marker: str, timeout: int) -> Any:
    """Run ``source`` in the kernel (an extra cell that leaves no history) and decode the JSON it prints
    after ``marker``; ``RuntimeError`` if it fails or prints none."""
    cell = nbformat.v4.new_code_cell(source)
    client.timeout = timeout
    nb.cells.append(cell)
    try:
        client.execute_cell(cell, len(nb.cells) - 1, store_history=False)
    except (CellExecutionError, CellTimeoutError) as e:
        raise RuntimeError(f"{type(e).__name__}: {getattr(e, 'evalue', e)}") from None
    finally:
        nb.cells.pop()
    text = "".join(o.get("text", "") for o in cell.outputs if o.get("output_type") == "stream")
    line = next((ln for ln in text.splitlines() if ln.startswith(marker)), None)
    if line is None:
        raise RuntimeError("the hidden tests printed no result")
    return json.loads(line[len(marker):])


def _call(chapter: str, fn: str, args: str, marker: str) -> str:
    return (f"from {module_of(chapter)} import TASKS as _labkit_tasks\n"
            f"from labkit.course.hidden.base import {fn} as _labkit_fn\n"
            f"_labkit_fn(_labkit_tasks, {args}marker={marker!r})\n"
            "del _labkit_tasks, _labkit_fn\n")


def _run_hidden(client: NotebookClient, nb: Any, chapter: str, specs: dict[str, dict[str, Any]], keys: list[str],
                seed: int) -> list[dict[str, Any]]:
    """Run the hidden tests of ``keys`` in the kernel, on the functions the notebook defined so far."""
    marker = f"LABKIT-GRADE-{secrets.token_hex(8)}:"
    budget = int(sum(specs[k]["seconds"] for k in keys) + 60)
    try:
        return _kernel_json(client, nb, _call(chapter, "grade_in_kernel", f"{keys!r}, globals(), seed={seed}, ",
                                              marker), marker, budget)
    except RuntimeError as e:
        return [_failed(specs[k], f"the hidden tests could not run ({e}); tell the instructor") for k in keys]


def _failed(spec: dict[str, Any], message: str) -> dict[str, Any]:
    return {"key": spec["key"], "title": spec["title"], "points": 0, "max_points": spec["max_points"],
            "message": message, "checks": []}


class _Stop(Exception):
    """The notebook cannot go on: out of time, or the kernel died."""


def _run_cell(client: NotebookClient, i: int, cell: Any, deadline: float, timeout: float) -> str | None:
    """Execute one notebook cell; ``None``, or the error it raised (the grader goes on to the next cell);
    :class:`_Stop` when the notebook cannot go on."""
    remaining = deadline - time.monotonic()
    if remaining < 1:
        raise _Stop(f"the notebook reached its time limit ({timeout:.0f} s) before {_where(i, cell)}")
    client.timeout = int(remaining)
    try:
        client.execute_cell(cell, i)
    except CellTimeoutError:
        raise _Stop(f"{_where(i, cell)} ran past the notebook's time limit ({timeout:.0f} s)") from None
    except DeadKernelError:
        raise _Stop(f"the kernel died in {_where(i, cell)} (out of memory, or the code ended the process)") from None
    except CellExecutionError as e:
        return f"{_where(i, cell)} raised {e.ename}: {(str(e.evalue).splitlines() or [''])[0][:200]}"
    return None


def _execute(nb: Any, chapter: str, workdir: str, timeout: float, seed: int) -> tuple[list[dict[str, Any]], list[str], str | None]:
    """Run ``nb`` cell by cell, scoring each task right after the cell that completes its functions.

    A cell that raises is recorded and the run goes on (a task cell only defines functions, so later tasks
    can still be scored); running out of time or a dead kernel stops it. Returns (results, errors, stopped)."""
    client = NotebookClient(nb, timeout=int(timeout), kernel_name="python3", shutdown_kernel="immediate",
                            resources={"metadata": {"path": workdir}})
    deadline = time.monotonic() + timeout
    results: list[dict[str, Any]] = []
    errors: list[str] = []
    stopped, seen = None, set()
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(client.setup_kernel())
        except Exception as e:  # nothing of the learner's ran yet: grade_notebook tries again
            raise KernelStartError(f"{type(e).__name__}: {e}") from e
        marker = f"LABKIT-SPECS-{secrets.token_hex(8)}:"
        specs = {s["key"]: s for s in _kernel_json(client, nb, _call(chapter, "task_specs", "", marker), marker, 120)}
        pending = dict(specs)
        for i, cell in enumerate(list(nb.cells)):
            if not pending:
                break
            if cell.cell_type != "code":
                continue
            try:
                error = _run_cell(client, i, cell, deadline, timeout)
            except _Stop as e:
                stopped = str(e)
                break
            errors += [error] if error else []
            here = _defined(cell.source) if not error else set()
            seen |= here
            ready = [k for k, s in pending.items() if set(s["functions"]) <= seen and set(s["functions"]) & here]
            if ready:
                results += _run_hidden(client, nb, chapter, specs, ready, seed)
                for k in ready:
                    pending.pop(k)
    for spec in pending.values():
        why = f"not reached: {stopped}" if stopped else "its functions were not defined in the notebook " \
              f"({', '.join(spec['functions'])}): keep the task cell and its function names, and make it run"
        results.append(_failed(spec, why))
    order = list(specs)
    return sorted(results, key=lambda r: order.index(r["key"])), errors, stopped


def grade_notebook(path: str | Path, learner: str = "", *, timeout: float = DEFAULT_TIMEOUT, seed: int = 0) -> NotebookGrade:
    """Grade one learner notebook (a fresh kernel, a temporary working folder); never raises for the
    notebook's own failures: a problem or a stopped run is recorded in the result."""
    path = Path(path)
    t0 = time.perf_counter()
    try:
        chapter = check_notebook(path)
    except ValueError as e:
        return NotebookGrade(learner, chapter_of(path.name), path, problem=str(e))
    for k, v in NOTEBOOK_ENV.items():
        os.environ[k] = v
    nb = nbformat.read(path, as_version=4)
    with tempfile.TemporaryDirectory(prefix="labkit-grade-") as workdir:
        for attempt in range(1, KERNEL_START_ATTEMPTS + 1):
            try:
                results, errors, stopped = _execute(nb, chapter, workdir, timeout, seed)
                break
            except KernelStartError as e:
                if attempt == KERNEL_START_ATTEMPTS:
                    return NotebookGrade(learner, chapter, path, problem=f"could not run {path.name}: no kernel "
                                         f"started in {attempt} tries (last: {e})")
                time.sleep(attempt)
            except Exception as e:  # this notebook fails, the others go on
                return NotebookGrade(learner, chapter, path,
                                     problem=f"could not run {path.name}: {type(e).__name__}: {e}")
    return NotebookGrade(learner, chapter, path, results, stopped=stopped, errors=errors,
                         seconds=time.perf_counter() - t0)


def die_with_parent() -> bool:
    """Ask Linux to send this process SIGTERM when its parent dies (``prctl(PR_SET_PDEATHSIG)``), so a grading
    worker, and with it its kernels, does not outlive a killed ``labkit grade``. Returns False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(1, int(signal.SIGTERM), 0, 0, 0) == 0          # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return False


def _grade_job(args: tuple[str, str, float, int]) -> NotebookGrade:
    path, learner, timeout, seed = args
    return grade_notebook(path, learner, timeout=timeout, seed=seed)


def grade_all(submissions: str | Path, *, timeout: float = DEFAULT_TIMEOUT, jobs: int = 1, seed: int = 0,
              progress: bool = False) -> list[NotebookGrade]:
    """Grade every learner's notebooks (``jobs`` kernels at a time); one :class:`NotebookGrade` per notebook
    plus one per missing chapter (a chapter some learner submitted that this learner did not)."""
    learners = find_submissions(submissions)
    work = [(str(p), learner, timeout, seed) for learner, paths in learners.items() for p in paths]
    if jobs > 1:
        with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn"),
                                 initializer=die_with_parent) as pool:
            grades = list(pool.map(_grade_job, work))
    else:
        grades = []
        for w in work:
            if progress:
                print(f"grading {Path(w[0]).relative_to(Path(submissions))} ...", flush=True)
            grades.append(_grade_job(w))
    return _complete(grades, learners)


def _complete(grades: list[NotebookGrade], learners: dict[str, list[Path]]) -> list[NotebookGrade]:
    """Mark duplicate chapters per learner, and add the chapters a learner did not hand in."""
    out, seen = [], set()
    for g in grades:
        if g.problem is None and (g.learner, g.chapter) in seen:
            g = NotebookGrade(g.learner, g.chapter, g.path, problem=f"{g.path.name}: a second notebook for chapter "
                              f"{g.chapter} in {g.learner}'s folder; only the first (by name) is graded")
        elif g.problem is None:
            seen.add((g.learner, g.chapter))
        out.append(g)
    specs: dict[str, dict[str, dict[str, Any]]] = {}
    for g in out:
        if g.problem is None:
            specs.setdefault(g.chapter, {}).update({r["key"]: r for r in g.results})
    for learner in learners:
        if not learners[learner]:
            out.append(NotebookGrade(learner, None, None, problem=f"no notebooks in {learner}'s folder"))
        for ch in sorted(specs):
            if (learner, ch) not in seen:
                out.append(NotebookGrade(learner, ch, None, [
                    _failed(r, f"no notebook for chapter {ch} in {learner}'s folder") for r in specs[ch].values()]))
    return out


def main_grade(argv: list[str]) -> int:
    """``python -m labkit grade SUBMISSIONS --out DIR``: 0 graded, 1 some notebook could not be graded,
    2 SUBMISSIONS unusable."""
    p = argparse.ArgumentParser(prog="python -m labkit grade", description=__doc__.split("\n\n")[0])
    p.add_argument("submissions", help="folder with one folder per learner, each with their learner notebooks")
    p.add_argument("--out", required=True, help="where grades.csv and feedback/<learner>.md are written")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds per notebook (default %(default)s)")
    p.add_argument("--jobs", type=int, default=1, help="notebooks graded at once (kernels; default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the hidden tests' random inputs (default 0)")
    args = p.parse_args(argv)
    try:
        grades = grade_all(args.submissions, timeout=args.timeout, jobs=max(1, args.jobs), seed=args.seed,
                           progress=True)
    except GradeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    problems = write_reports(grades, Path(args.out), seed=args.seed)
    for msg in problems:
        print(f"problem: {msg}", file=sys.stderr)
    return 1 if problems else 0
