"""Layer 11, course: notebook tooling (execute, learner copies, lab tasks, grading), the doctor, the CLI.

    execute.py       run notebooks headless (``python -m labkit execute``); NOTEBOOK_ENV, KERNEL_METADATA
    student.py       learner copies: exercise solutions and lab tasks stubbed (``python -m labkit student SRC OUT``)
    lab.py           ``fn = lab.use(fn, labkit_version)``: Run All goes on while a lab task is unwritten
    fallbacks.py     labkit's version of each lab task, in the task's signature
    hidden/          the hidden tests of the lab tasks, one module per chapter
    grade.py         ``python -m labkit grade SUBMISSIONS --out DIR``; grade_report.py writes what it finds
    kernel.py        the course kernel ``llm-internals`` (pinned variables in its spec); install_kernel.py installs it
    site.py          ``make site``: the course website (Sphinx + MyST-NB); site_check.py finds broken links/figures
    doctor.py        is this machine ready for the course? (``python -m labkit doctor``)
    zh.py            the Chinese edition notebooks/zh/ (``python -m labkit zh build|check|sync|status``)
    zh_format.py     its translation files notebooks/zh/translations/NN_topic.yaml (cell id -> hash + 中文)
    cli.py           the ``python -m labkit`` command line
"""
from __future__ import annotations

from labkit.course.doctor import pinned_requirements, run_doctor  # noqa: F401
from labkit.course.execute import KERNEL_METADATA, NOTEBOOK_ENV, execute_notebook, main_execute  # noqa: F401
from labkit.course.grade import (  # noqa: F401
    DEFAULT_TIMEOUT,
    GradeError,
    check_notebook,
    find_submissions,
    grade_all,
    grade_notebook,
    main_grade,
)
from labkit.course.grade_report import CSV_COLUMNS, NotebookGrade, write_reports  # noqa: F401
from labkit.course.kernel import KERNEL_NAME, ensure_kernel, find_kernel, install_kernel, kernel_problems  # noqa: F401
from labkit.course.lab import FALLBACK_NOTICE, is_stub, use  # noqa: F401
from labkit.course.site import build_site, chapter_notebooks, main_site  # noqa: F401
from labkit.course.site_check import broken_links  # noqa: F401
from labkit.course.student import (  # noqa: F401
    CHECK_TAG,
    EXERCISE_TAG,
    HINT_RE,
    METADATA_KEY,
    SOLUTION_TAG,
    TASK_TAG,
    chapter_of,
    learner_metadata,
    stub_solution,
    student_copy,
    write_student_copies,
)
from labkit.course.zh import Layout, build_notebook, chapter_problems, main_zh, parity_problems  # noqa: F401
from labkit.course.zh_format import Entry, Translations, cell_hash, read_translations, write_translations  # noqa: F401

__all__ = ["pinned_requirements", "run_doctor", "execute_notebook", "main_execute", "NOTEBOOK_ENV", "KERNEL_METADATA",
           "student_copy", "stub_solution", "write_student_copies", "learner_metadata", "chapter_of", "SOLUTION_TAG",
           "CHECK_TAG", "TASK_TAG", "EXERCISE_TAG", "HINT_RE", "METADATA_KEY", "use", "is_stub", "FALLBACK_NOTICE",
           "grade_all", "grade_notebook", "main_grade", "find_submissions", "check_notebook", "GradeError",
           "DEFAULT_TIMEOUT", "NotebookGrade", "write_reports", "CSV_COLUMNS", "KERNEL_NAME", "ensure_kernel",
           "find_kernel", "install_kernel", "kernel_problems", "build_site", "chapter_notebooks", "main_site",
           "broken_links", "Layout", "build_notebook", "chapter_problems", "main_zh", "parity_problems", "Entry",
           "Translations", "cell_hash", "read_translations", "write_translations"]
