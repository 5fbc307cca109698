"""Learner copies in both editions: labkit's learner-facing messages (labkit/core/messages.py) exist in English and
Chinese with the same placeholders; ``LABKIT_LANG=zh`` switches the exercise checks and the lab-task notices to
Chinese; a learner copy of a Chinese notebook has Chinese stub headers and hints and sets the language itself, while
its code is otherwise the English learner copy's. The English learner copies are unchanged (tests/test_student.py).
"""
from __future__ import annotations

import string

import nbformat
import pytest

from labkit.core import numerics
from labkit.core.check import exercise
from labkit.core.messages import LANG_ENV, LANGUAGES, MESSAGES, language, localize_label, message
from labkit.course import lab
from labkit.course.student import edition_of, stub_solution, student_copy
from labkit.course.zh import ZH_DIR, english_hints
from labsupport import module_from_source

ZH_CHAPTER = ZH_DIR / "01_softmax_and_losses.ipynb"


def _fields(template: str) -> set[str]:
    return {f for _, f, _, _ in string.Formatter().parse(template) if f}


@pytest.mark.parametrize("key", sorted(MESSAGES))
def test_every_message_has_both_languages_with_the_same_placeholders(key):
    assert set(MESSAGES[key]) == set(LANGUAGES)
    assert _fields(MESSAGES[key]["zh"]) == _fields(MESSAGES[key]["en"])


def test_english_messages_are_the_stored_ones():
    """The instructor notebooks' stored outputs and tests/test_student.py rely on these exact English lines."""
    assert message("check.passed", "en", label="E1") == "✓ E1: passed"
    assert message("check.not_implemented", "en", label="E2", hint=message("check.hint", "en", hint="use max")) \
        == "✗ E2: not implemented yet (hint: use max)"
    assert lab.FALLBACK_NOTICE.format(name="f") == \
        "⚠ f: your version is not written yet — using labkit's for the rest of the notebook"
    assert stub_solution("def f(x):\n    # HINT: h\n    return x\n", "task").startswith("# Lab task:")


def test_language_comes_from_the_environment(monkeypatch, capsys):
    monkeypatch.delenv(LANG_ENV, raising=False)
    assert language() == "en"
    monkeypatch.setenv(LANG_ENV, "fr")
    assert language() == "en"  # unknown: English
    monkeypatch.setenv(LANG_ENV, "zh")
    assert language() == "zh" and localize_label("Exercise 01.2 (x)") == "练习 01.2 (x)"

    def stub():
        raise NotImplementedError("提示文字")
    assert exercise("Exercise 01.1", stub) is False
    assert exercise("Exercise 01.1", lambda: None) is True
    assert exercise("Exercise 01.3", lambda: 1 / 0) is False
    out = capsys.readouterr().out.splitlines()
    assert out[:2] == ["✗ 练习 01.1：尚未实现（提示：提示文字）", "✓ 练习 01.1：通过"]
    assert out[2].startswith("✗ 练习 01.3：")


def test_bad_message_arguments():
    with pytest.raises(ValueError, match="message key 'nope' is unknown"):
        message("nope")
    with pytest.raises(ValueError, match="lang must be one of"):
        message("check.passed", "fr", label="x")


def test_chinese_learner_copy_has_chinese_headers_hints_and_language(monkeypatch):
    zh = nbformat.read(ZH_CHAPTER, as_version=4)
    en = nbformat.read(ZH_CHAPTER.parent.parent / ZH_CHAPTER.name, as_version=4)
    lang, hints = edition_of(zh)
    assert lang == "zh" and edition_of(en) == ("en", {})
    assert set(hints) == set(english_hints(en).values()) and all(hints.values())
    zcopy, ecopy = student_copy(zh, ZH_CHAPTER.name), student_copy(en, ZH_CHAPTER.name)
    assert zcopy.metadata["labkit"] == ecopy.metadata["labkit"]  # same chapter and task functions for the grader
    first = next(i for i, c in enumerate(zcopy.cells) if c.cell_type == "code")
    assert zcopy.cells[first].source == message("student.language", "zh") + ecopy.cells[first].source
    stubs = [(z.source, e.source) for z, e in zip(zcopy.cells, ecopy.cells)
             if {"task", "exercise"} & set(z.metadata.get("tags", []))]
    assert len(stubs) == 5
    for zsrc, esrc in stubs:
        assert zsrc.splitlines()[0] in (message("student.task", "zh"), message("student.exercise", "zh"))
        translated = esrc.split("\n", 1)[1].replace(message("student.your_code", "en"),
                                                     message("student.your_code", "zh"))
        for en_hint, zh_hint in hints.items():
            translated = translated.replace(repr(en_hint), repr(zh_hint))
        assert zsrc.split("\n", 1)[1] == translated and translated != esrc.split("\n", 1)[1]


def test_chinese_learner_copy_prints_chinese_when_run(tmp_path, monkeypatch, capsys):
    """The learner copy's own first line sets the language; its task stub then falls back with a Chinese notice
    and its exercise check reports in Chinese, with the Chinese hint."""
    monkeypatch.setenv(LANG_ENV, "en")  # restored afterwards; the copy's first cell sets zh
    copy = student_copy(nbformat.read(ZH_CHAPTER, as_version=4), ZH_CHAPTER.name)
    setup = message("student.language", "zh")
    task = next(c.source for c in copy.cells if "task" in c.metadata.get("tags", []))
    i = next(i for i, c in enumerate(copy.cells) if "exercise" in c.metadata.get("tags", []))
    check = next(c.source for c in copy.cells[i + 1:] if c.cell_type == "code")
    mod = module_from_source(tmp_path, "zh_learner", setup + "import torch\nimport labkit\nfrom labkit.core.check "
                             "import close\n" + task + "\n" + copy.cells[i].source + "\n" + check)
    assert language() == "zh"
    assert lab.use(mod.stable_softmax, numerics.stable_softmax) is numerics.stable_softmax
    out = capsys.readouterr().out
    assert "✗ 练习 01.1" in out and "尚未实现（提示：写成 p_i = exp(z_i) / S" in out
    assert out.rstrip().endswith("⚠ stable_softmax：你的版本还没有写好，本笔记本后面的部分改用 labkit 的版本")
