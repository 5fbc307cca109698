"""Install the course kernel, or make notebooks name it (:mod:`labkit.course.kernel` says why)::

    python -m labkit.course.install_kernel                  into this environment (`make setup` runs this)
    python -m labkit.course.install_kernel --user           also for this user's other Jupyters (VS Code, a
                                                            system-wide jupyter lab)
    python -m labkit.course.install_kernel --notebooks NB   make notebooks name it: only metadata.kernelspec and
                                                            metadata.language_info change (`make execute` stores
                                                            the same when it re-runs a notebook)
"""
from __future__ import annotations

import sys

from labkit.course.kernel import DISPLAY_NAME, KERNEL_NAME, install_kernel, set_notebook_kernel

__all__ = ["main_install_kernel", "USAGE"]

USAGE = "usage: python -m labkit.course.install_kernel [--user] | --notebooks NB.ipynb ..."


def main_install_kernel(argv: list[str] | None = None) -> int:
    """Run the command; 0 ok, 2 usage error."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--notebooks"]:
        if len(args) == 1:
            print(USAGE, file=sys.stderr)
            return 2
        for p in args[1:]:
            print(f"{'updated' if set_notebook_kernel(p) else 'unchanged'} {p}")
        return 0
    if set(args) - {"--user"}:
        print(USAGE, file=sys.stderr)
        return 2
    dirs = [install_kernel()] + ([install_kernel(user=True)] if "--user" in args else [])
    for d in dirs:
        print(f"installed kernel {KERNEL_NAME!r} ({DISPLAY_NAME}) in {d}")
    return 0


if __name__ == "__main__":
    sys.exit(main_install_kernel())
