"""Command line: ``python -m labkit {doctor, student, execute, manifest, grade, zh}`` (``labkit/__main__.py`` calls
:func:`main`). Each command is one function of the course layer or of ``labkit.core.manifest``.
"""
from __future__ import annotations

import sys

from labkit.core.manifest import WRITE_COMMAND, diff_manifest, read_manifest, write_manifest
from labkit.core.paths import DATA
from labkit.course.doctor import run_doctor
from labkit.course.execute import main_execute
from labkit.course.grade import main_grade
from labkit.course.student import write_student_copies
from labkit.course.zh import main_zh

__all__ = ["main", "main_manifest", "USAGE"]

USAGE = """usage: python -m labkit COMMAND

  doctor                 check Python, the pinned packages, the offline models and data/
  student SRC OUT        write learner copies of a notebook (or every notebook in a folder) to OUT
  execute [--inplace] [NB ...]
                         run notebooks headless in fresh kernels; print wall time and peak memory;
                         --inplace stores the outputs (default: every notebooks/NN_*.ipynb)
  manifest [--write]     check data/ against data/MANIFEST and list what differs (changed, missing,
                         unlisted; exit 1 on a mismatch); --write rewrites MANIFEST from the files on disk
  grade SUBMISSIONS --out DIR [--timeout S] [--jobs N] [--seed N]
                         run each learner's notebooks (SUBMISSIONS/<learner>/*.ipynb) and score their lab
                         tasks with hidden tests; write DIR/grades.csv and DIR/feedback/<learner>.md
  zh {status, sync, todo, accept, build, check} [NN ...]
                         the Chinese edition notebooks/zh/ from translation files (python -m labkit zh help)
"""


def main(argv: list[str] | None = None) -> int:
    """Run one command; return the exit status (0 ok, 1 a check or notebook failed, 2 usage error)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help", "help"}:
        print(USAGE)
        return 0 if argv else 2
    cmd, rest = argv[0], argv[1:]
    if cmd == "doctor":
        return 1 if run_doctor() else 0
    if cmd == "student":
        if len(rest) != 2:
            print("usage: python -m labkit student SRC OUT   (e.g. notebooks/ student/)", file=sys.stderr)
            return 2
        for t in write_student_copies(rest[0], rest[1]):
            print(f"wrote {t}")
        return 0
    if cmd == "execute":
        return main_execute(rest)
    if cmd == "manifest":
        return main_manifest(rest)
    if cmd == "grade":
        return main_grade(rest)
    if cmd == "zh":
        return main_zh(rest)
    print(f"unknown command {cmd!r}\n\n{USAGE}", file=sys.stderr)
    return 2


def main_manifest(rest: list[str]) -> int:
    """``manifest``: check data/ against data/MANIFEST (exit 1 on a mismatch); ``--write``: rewrite it,
    listing what changed. An unreadable MANIFEST is one clear message, not one line per file."""
    if rest not in ([], ["--write"]):
        print(f"usage: python -m labkit manifest [--write]   (got {' '.join(rest)!r})", file=sys.stderr)
        return 2
    try:
        want = read_manifest()
    except (FileNotFoundError, ValueError) as e:
        if not rest:
            print(f"error: {e}", file=sys.stderr)
            return 1
        want = None
    diff = diff_manifest(want=want) if want is not None else None
    if not rest:
        if not diff:
            print(f"{DATA / 'MANIFEST'}: all {len(diff.have)} files match")
            return 0
        print(f"{DATA / 'MANIFEST'} does not match data/:", *(f"  {line}" for line in diff.lines()), sep="\n")
        print(f"If these changes are intended, run `{WRITE_COMMAND}`; otherwise restore the files "
              "(`git checkout -- data/`) or regenerate them as data/README.md says.")
        return 1
    out = write_manifest()
    if diff is None:
        print(f"wrote {out} (the old one was missing or unreadable)")
    else:
        print(f"wrote {out}: " + ("no change" if not diff else f"{len(diff.lines())} change(s)"),
              *(f"  {line}" for line in diff.lines()), sep="\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
