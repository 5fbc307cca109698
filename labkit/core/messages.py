"""Learner-facing messages in both editions of the course (English, 中文): one table, one lookup.

The lines a learner sees while working (an exercise check's verdict, a lab task falling back to labkit's version,
the header of a stubbed cell) come from :data:`MESSAGES`, in the language of :func:`language`: the environment
variable ``LABKIT_LANG`` (``en``, the default, or ``zh``). The Chinese learner copies made by
``python -m labkit student notebooks/zh student/zh`` set it in their first code cell; the instructor notebooks never
do, so their stored outputs stay the English ones.

    message("check.passed", label="Exercise 01.1")              # '✓ Exercise 01.1: passed'
    message("check.passed", "zh", label="Exercise 01.1")        # '✓ 练习 01.1：通过'
"""
from __future__ import annotations

import os
import re

__all__ = ["LANG_ENV", "LANGUAGES", "MESSAGES", "language", "message", "localize_label"]

LANG_ENV = "LABKIT_LANG"
LANGUAGES = ("en", "zh")

#: key -> {language: template}; both languages take the same ``{placeholders}`` (a test checks).
MESSAGES: dict[str, dict[str, str]] = {
    "check.passed": {"en": "✓ {label}: passed", "zh": "✓ {label}：通过"},
    "check.not_implemented": {"en": "✗ {label}: not implemented yet{hint}", "zh": "✗ {label}：尚未实现{hint}"},
    "check.hint": {"en": " (hint: {hint})", "zh": "（提示：{hint}）"},
    "check.failed": {"en": "✗ {label}: {failure}", "zh": "✗ {label}：{failure}"},
    "lab.fallback": {
        "en": "⚠ {name}: your version is not written yet — using labkit's for the rest of the notebook",
        "zh": "⚠ {name}：你的版本还没有写好，本笔记本后面的部分改用 labkit 的版本",
    },
    "student.exercise": {
        "en": "# Exercise: fill in the function(s) below; each raises NotImplementedError with its hint.",
        "zh": "# 练习：补全下面的函数；写好之前，每个函数都会抛出带有提示的 NotImplementedError。",
    },
    "student.task": {
        "en": "# Lab task: write the function(s) below. Until you do, the cells after this one use labkit's "
              "version (they say so).",
        "zh": "# 实验任务：实现下面的函数。在你写好之前，本单元格之后的单元格会改用 labkit 的版本（并会提示这一点）。",
    },
    "student.your_code": {"en": "# Your code here.", "zh": "# 在这里写你的代码。"},
    "student.language": {
        "en": "",
        "zh": "import os\nos.environ[\"LABKIT_LANG\"] = \"zh\"  # 中文学员版：labkit 的提示信息用中文显示\n",
    },
}
_LABELS = {"zh": ((re.compile(r"^Exercise\b\s*"), "练习 "), (re.compile(r"^Lab task\b\s*"), "实验任务 "))}


def language() -> str:
    """The learners' language: ``$LABKIT_LANG`` when it is one of :data:`LANGUAGES`, else ``"en"``."""
    lang = os.environ.get(LANG_ENV, "en").strip().lower()
    return lang if lang in LANGUAGES else "en"


def localize_label(label: str, lang: str | None = None) -> str:
    """``"Exercise 01.1"`` → ``"练习 01.1"`` in Chinese; other labels and English unchanged."""
    for pattern, repl in _LABELS.get(lang or language(), ()):
        label = pattern.sub(repl, label, count=1)
    return label


def message(key: str, lang: str | None = None, **fields: object) -> str:
    """The template ``MESSAGES[key][lang]`` (default :func:`language`) filled with ``fields``."""
    if key not in MESSAGES:
        raise ValueError(f"message key {key!r} is unknown; add it to labkit.core.messages.MESSAGES "
                         f"(known: {', '.join(sorted(MESSAGES))})")
    lang = language() if lang is None else lang
    if lang not in LANGUAGES:
        raise ValueError(f"lang must be one of {LANGUAGES}, got {lang!r}")
    return MESSAGES[key][lang].format(**fields)
