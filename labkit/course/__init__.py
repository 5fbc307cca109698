"""Layer 11, course: notebook tooling (execute, learner copies), the doctor, the command line.

    execute.py   run notebooks headless (``python -m labkit execute``); NOTEBOOK_ENV, KERNEL_METADATA
    student.py   learner copies with stubbed solutions (``python -m labkit student SRC OUT``)
    doctor.py    is this machine ready for the course? (``python -m labkit doctor``)
    cli.py       the ``python -m labkit`` command line
"""
from __future__ import annotations

from labkit.course.doctor import pinned_requirements, run_doctor  # noqa: F401
from labkit.course.execute import KERNEL_METADATA, NOTEBOOK_ENV, execute_notebook, main_execute  # noqa: F401
from labkit.course.student import (  # noqa: F401
    CHECK_TAG,
    HINT_RE,
    SOLUTION_TAG,
    stub_solution,
    student_copy,
    write_student_copies,
)

__all__ = ["pinned_requirements", "run_doctor", "execute_notebook", "main_execute", "NOTEBOOK_ENV", "KERNEL_METADATA",
           "student_copy", "stub_solution", "write_student_copies", "SOLUTION_TAG", "CHECK_TAG", "HINT_RE"]
