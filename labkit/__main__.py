"""``python -m labkit``: the course command line (see :mod:`labkit.course.cli`)."""
from __future__ import annotations

import sys

from labkit.course.cli import main

if __name__ == "__main__":
    sys.exit(main())
