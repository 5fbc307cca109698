"""What ``python -m labkit grade`` writes: ``grades.csv`` (one row per learner, chapter and task),
``feedback/<learner>.md`` (each task's checks, what failed and why) and a summary table on stdout.

``grades.csv`` columns: ``learner, chapter, task, points, max_points, message``. A notebook that could not
be graded (not a learner copy, a chapter without lab tasks ...) gets one row with ``task = (notebook)`` and
0 of 0 points, so it shows in the spreadsheet without changing anyone's total.
"""
from __future__ import annotations

import csv
import io
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labkit.core.io import atomic_write_text

__all__ = ["NotebookGrade", "write_reports", "csv_rows", "feedback_markdown", "summary_table", "CSV_COLUMNS"]

CSV_COLUMNS = ("learner", "chapter", "task", "points", "max_points", "message")


@dataclass
class NotebookGrade:
    """The outcome for one learner and chapter: task results, or the problem that prevented grading."""

    learner: str
    chapter: str | None
    path: Path | None
    results: list[dict[str, Any]] = field(default_factory=list)
    problem: str | None = None
    stopped: str | None = None
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _task_name(r: dict[str, Any]) -> str:
    return f"{r['key']} {r['title']}"


def csv_rows(grades: list[NotebookGrade]) -> list[dict[str, Any]]:
    """One row per task (and one per notebook that could not be graded), sorted by learner and chapter."""
    rows = []
    for g in grades:
        if g.problem is not None:
            rows.append(dict(learner=g.learner, chapter=g.chapter or "", task="(notebook)", points=0, max_points=0,
                             message=g.problem))
        for r in g.results:
            rows.append(dict(learner=g.learner, chapter=g.chapter, task=_task_name(r), points=r["points"],
                             max_points=r["max_points"], message=r["message"]))
    return sorted(rows, key=lambda r: (r["learner"], r["chapter"], r["task"]))


def _csv_text(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def _chapter_section(g: NotebookGrade) -> list[str]:
    got, top = sum(r["points"] for r in g.results), sum(r["max_points"] for r in g.results)
    src = f" — `{g.path.name}`" if g.path is not None else ""
    lines = [f"## Chapter {g.chapter}{src}: {got} / {top}", ""]
    if g.stopped:
        lines += [f"Your notebook stopped early: {g.stopped}. Tasks after that point score 0; fix it and run "
                  "the notebook top to bottom (Kernel → Restart and Run All) before you hand it in.", ""]
    if g.errors:
        lines += ["Cells that raised an error (the grader went on to the next cell; a check that fails right after "
                  "a task usually means that task is wrong):", ""] + [f"- {e}" for e in g.errors] + [""]
    for r in g.results:
        lines.append(f"### {_task_name(r)}: {r['points']} / {r['max_points']}")
        lines.append("")
        if r["checks"]:
            lines += [f"- {'✓' if c['passed'] else '✗'} {c['what']} ({c['points']} pt)"
                      + ("" if c["passed"] else f": {c['message']}") for c in r["checks"]]
        else:
            lines.append(f"- {r['message']}")
        lines.append("")
    return lines


def feedback_markdown(learner: str, grades: list[NotebookGrade], seed: int = 0) -> str:
    """The feedback file of one learner: total, then each chapter's tasks and their checks."""
    mine = sorted((g for g in grades if g.learner == learner), key=lambda g: (g.chapter or "", str(g.path)))
    got = sum(r["points"] for g in mine for r in g.results)
    top = sum(r["max_points"] for g in mine for r in g.results)
    lines = [f"# Lab feedback: {learner}", "", f"**Total: {got} / {top} points.** Each lab task was checked by "
             f"hidden tests on fresh random inputs (seed {seed}), against PyTorch / transformers references. A task "
             "answered by calling the reference itself scores 0.", ""]
    for g in mine:
        if g.problem is not None:
            lines += [f"## Not graded: {g.path.name if g.path else learner}", "", g.problem, ""]
        else:
            lines += _chapter_section(g)
    return "\n".join(lines).rstrip() + "\n"


def summary_table(grades: list[NotebookGrade]) -> str:
    """``learner  01  02 ... total`` with ``points/max`` per chapter."""
    score: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    for g in grades:
        for r in g.results:
            cell = score[g.learner][g.chapter]
            cell[0] += r["points"]
            cell[1] += r["max_points"]
        _ = score[g.learner]  # a learner with only problems still gets a row
    chapters = sorted({ch for per in score.values() for ch in per})
    w = max([len("learner")] + [len(name) for name in score])
    out = [f"{'learner':<{w}}" + "".join(f"  {ch:>7}" for ch in chapters) + "    total"]
    for learner in sorted(score):
        per = score[learner]
        cells = "".join(f"  {f'{per[ch][0]}/{per[ch][1]}' if ch in per else '-':>7}" for ch in chapters)
        total = f"{sum(v[0] for v in per.values())}/{sum(v[1] for v in per.values())}"
        out.append(f"{learner:<{w}}{cells}  {total:>7}")
    return "\n".join(out)


def write_reports(grades: list[NotebookGrade], out: Path, seed: int = 0) -> list[str]:
    """Write ``grades.csv`` and ``feedback/<learner>.md`` under ``out``, print the summary; return the
    problems (notebooks that could not be graded) for the caller to report."""
    out = Path(out)
    (out / "feedback").mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "grades.csv", _csv_text(csv_rows(grades)))
    for learner in sorted({g.learner for g in grades}):
        atomic_write_text(out / "feedback" / f"{learner}.md", feedback_markdown(learner, grades, seed))
    print(summary_table(grades))
    print(f"\nwrote {out / 'grades.csv'} and {len({g.learner for g in grades})} feedback file(s) in {out / 'feedback'}")
    return [f"{g.learner}: {g.problem}" for g in grades if g.problem is not None]
