"""Command line: ``python -m labkit {doctor, student, execute, manifest}`` (``labkit/__main__.py`` calls
:func:`main`). Each command is one function of the course layer or of ``labkit.core.manifest``.
"""
from __future__ import annotations

import sys

from labkit.core.manifest import write_manifest
from labkit.course.doctor import run_doctor
from labkit.course.execute import main_execute
from labkit.course.student import write_student_copies

__all__ = ["main", "USAGE"]

USAGE = """usage: python -m labkit COMMAND

  doctor                 check Python, the pinned packages, the offline models and data/
  student SRC OUT        write learner copies of a notebook (or every notebook in a folder) to OUT
  execute [--inplace] [NB ...]
                         run notebooks headless in fresh kernels; print wall time and peak memory;
                         --inplace stores the outputs (default: every notebooks/NN_*.ipynb)
  manifest               rewrite data/MANIFEST from the files in data/
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
        print(f"wrote {write_manifest()}")
        return 0
    print(f"unknown command {cmd!r}\n\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
