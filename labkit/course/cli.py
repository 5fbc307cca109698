"""Command line: ``python -m labkit {doctor, student, execute, manifest}``."""
from __future__ import annotations

import sys

USAGE = """usage: python -m labkit COMMAND

  doctor                 check Python, the pinned packages, the offline models and data/
  student SRC OUT        write learner copies of a notebook (or every notebook in a folder) to OUT
  execute [--inplace] [NB ...]
                         run notebooks headless in fresh kernels; print wall time and peak memory;
                         --inplace stores the outputs (default: every notebooks/NN_*.ipynb)
  manifest               rewrite data/MANIFEST from the files in data/
"""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help", "help"}:
        print(USAGE)
        return 0 if argv else 2
    cmd, rest = argv[0], argv[1:]
    if cmd == "doctor":
        from labkit.course.doctor import run_doctor
        return 1 if run_doctor() else 0
    if cmd == "student":
        if len(rest) != 2:
            print("usage: python -m labkit student SRC OUT   (e.g. notebooks/ student/)", file=sys.stderr)
            return 2
        from labkit.course.notebooks import write_student_copies
        for t in write_student_copies(rest[0], rest[1]):
            print(f"wrote {t}")
        return 0
    if cmd == "execute":
        from labkit.course.notebooks import main_execute
        return main_execute(rest)
    if cmd == "manifest":
        from labkit.core.manifest import write_manifest
        print(f"wrote {write_manifest()}")
        return 0
    print(f"unknown command {cmd!r}\n\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
