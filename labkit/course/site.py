"""The course website: ``make site`` (``python -m labkit.course.site [--out DIR]``).

A static site of the whole course, built by Sphinx + MyST-NB (pinned in pyproject.toml's ``site`` extra, set up
in ``docs/site/conf.py``) from the notebooks' *stored* outputs: nothing is executed, so it takes seconds, and
what it shows is what nbval checks. Both editions are in it, laid out as in the repository:

* English: the README is the home page (setup, chapter table linked to the chapters, the results tables;
  ``README.html``, where ``index.html`` leads), then the chapters in course order, then the glossary, the
  teaching guide, the translation guide, the data sheet and the contributor guide.
* 简体中文: ``README.zh-CN.html`` (README.zh-CN.md, its chapter table linked to the Chinese chapters) and
  ``notebooks/zh/NN_topic.html``, one page per chapter in course order: the Chinese notebook where it exists,
  else a short page that says the chapter is not translated yet and links the English one. These pages carry
  ``lang="zh-CN"``, Chinese theme labels and their own navigation (``docs/site/conf.py``).

Every page has a language switch (``#lang-switch``) to the same page in the other edition (the other home
for pages that exist in one language only); the pairs come from :func:`language_switch`, written to
``_editions.json`` next to the sources. MathJax ships inside the site, so it reads offline
(``build/site/html/index.html``).

The sources are staged in ``<out>/src`` (copies with their timestamps kept, so Sphinx rebuilds only what
changed) with a generated navigation; the site lands in ``<out>/html``. One Sphinx project holds both editions,
so the code, outputs and figures the two share are read once per page and nothing is built twice.
tests/test_site.py builds it and checks every chapter page of both editions, figure, internal link and
language switch; tests/test_browser.py opens it in headless Chromium.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from labkit.core.io import atomic_write_text
from labkit.core.paths import NOTEBOOKS, ROOT
from labkit.course.site_check import broken_links

__all__ = ["SITE_CONF", "SITE_OUT", "REFERENCE_PAGES", "ZH_HOME", "ZH_NOTEBOOKS", "EDITIONS_FILE", "UNTRANSLATED",
           "chapter_notebooks", "chapter_title", "link_chapter_table", "untranslated_page", "page_language",
           "language_switch", "stage_site", "build_site", "main_site"]

SITE_CONF = ROOT / "docs" / "site"
SITE_OUT = ROOT / "build" / "site"
#: Pages after the chapters, in this order (repository-relative; those that exist are published).
REFERENCE_PAGES = ("docs/glossary.md", "docs/teaching.md", "docs/translating.md", "data/README.md", "CONTRIBUTING.md")
#: Their names on the Chinese home page (they are English pages; the glossary is bilingual).
REFERENCE_TITLES_ZH = {"docs/glossary.md": "术语表（英中对照）", "docs/teaching.md": "教学指南",
                       "docs/translating.md": "翻译指南", "data/README.md": "数据说明", "CONTRIBUTING.md": "贡献指南"}
ZH_HOME = "README.zh-CN"        #: the Chinese home page (README.zh-CN.md)
ZH_NOTEBOOKS = "notebooks/zh"   #: the Chinese chapters
EDITIONS_FILE = "_editions.json"  #: staged next to the sources; docs/site/conf.py reads it
#: Ends the title of a chapter's page in the Chinese edition while the chapter has no translation.
UNTRANSLATED = "（尚未翻译）"
#: Copied so that links to them resolve (served as downloads), not pages.
PLAIN_FILES = ("LICENSE",)
_ROW = re.compile(r"^\| (\d\d) \| (\w+) \|", re.MULTILINE)


def chapter_notebooks(notebooks: Path = NOTEBOOKS) -> list[Path]:
    """The chapters in course order: ``NN_topic.ipynb`` sorted by NN."""
    return sorted(notebooks.glob("[0-9][0-9]_*.ipynb"))


def chapter_title(path: Path) -> str:
    """The first Markdown heading of a notebook (``00 · Start here (从这里开始)``); ValueError when none."""
    for cell in json.loads(Path(path).read_text(encoding="utf-8"))["cells"]:
        if cell["cell_type"] == "markdown":
            m = re.search(r"^#\s+(.+?)\s*$", "".join(cell["source"]), re.MULTILINE)
            if m:
                return m.group(1)
    raise ValueError(f"path {path}: no Markdown heading; a chapter starts with '# NN · Title (中文)'")


def link_chapter_table(readme: str, chapters: list[Path], folder: str = "notebooks") -> str:
    """The README with each chapter-table row's notebook name linked to its page (``| 03 | attention |`` →
    ``| 03 | [attention](notebooks/03_attention.ipynb) |``, ``folder`` = ``notebooks/zh`` for the Chinese
    README); rows without a notebook stay as they are."""
    names = {p.stem for p in chapters}

    def link(m: re.Match) -> str:
        stem = f"{m.group(1)}_{m.group(2)}"
        return f"| {m.group(1)} | [{m.group(2)}]({folder}/{stem}.ipynb) |" if stem in names else m.group(0)

    return _ROW.sub(link, readme)


def _copy(src: Path, dst: Path) -> None:
    """Copy with the timestamp, and only when the bytes changed (Sphinx then rebuilds only changed pages); a
    copy that replaces an older staged file (say a chapter's untranslated page by its translation) is made
    newer than what it replaces, so that Sphinx reads it again."""
    if dst.exists() and dst.read_bytes() == src.read_bytes():
        return
    before = dst.stat().st_mtime if dst.exists() else None
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dst)
    if before is not None and dst.stat().st_mtime <= before:
        os.utime(dst)


def _write(path: Path, text: str) -> None:
    """Write a generated source only when its text changed (its timestamp then says what Sphinx must rebuild)."""
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        atomic_write_text(path, text)


def _toctree(caption: str, entries: list[str]) -> str:
    return "\n".join(["```{toctree}", ":hidden:", f":caption: {caption}", ":maxdepth: 1", "", *entries, "```", ""])


def untranslated_page(english: Path, guide: bool = True) -> str:
    """The Chinese edition's page (notebook JSON) for a chapter with no Chinese notebook yet: its English title
    marked ``（尚未翻译）`` and a link to the English page (and, when ``guide``, to the translation guide)."""
    english = Path(english)
    title = chapter_title(english)
    text = (f"# {title}{UNTRANSLATED}\n\n本章还没有中文版，请先阅读英文版：[{title}](../{english.name})。"
            + ("\n\n欢迎参与翻译，方法见[翻译指南](../../docs/translating.md)。" if guide else ""))
    meta = json.loads(english.read_text(encoding="utf-8")).get("metadata", {})
    cell = {"cell_type": "markdown", "id": "untranslated", "metadata": {}, "source": text}
    return json.dumps({"nbformat": 4, "nbformat_minor": 5, "metadata": meta, "cells": [cell]},
                      ensure_ascii=False, indent=1) + "\n"


def page_language(docname: str) -> str:
    """``"zh-CN"`` for a page of the Chinese edition (``README.zh-CN``, ``notebooks/zh/...``), else ``"en"``."""
    return "zh-CN" if docname == ZH_HOME or docname.startswith(f"{ZH_NOTEBOOKS}/") else "en"


def language_switch(pages: list[str]) -> dict[str, str]:
    """The pages that exist in both editions, each mapped to its counterpart: ``README`` ↔ ``README.zh-CN``,
    ``notebooks/NN_x`` ↔ ``notebooks/zh/NN_x``. Every other page (the reference pages, Sphinx's search and index
    pages) switches to the other edition's home. ValueError when ``pages`` lacks either home page."""
    if "README" not in pages or ZH_HOME not in pages:
        raise ValueError(f"pages must hold both home pages, README and {ZH_HOME}; got {pages[:3]}...")
    known = set(pages)
    pairs = {"README": ZH_HOME, ZH_HOME: "README"}
    for page in pages:
        if page.startswith(f"{ZH_NOTEBOOKS}/") and "notebooks/" + page.removeprefix(f"{ZH_NOTEBOOKS}/") in known:
            english = "notebooks/" + page.removeprefix(f"{ZH_NOTEBOOKS}/")
            pairs[page], pairs[english] = english, page
    return pairs


def _zh_home(root: Path, chapters: list[Path], refs: list[str]) -> str:
    """The Chinese home page: README.zh-CN (chapter table linked to notebooks/zh/), the English reference
    pages named in Chinese, and the Chinese navigation."""
    readme = link_chapter_table((root / f"{ZH_HOME}.md").read_text(encoding="utf-8"), chapters, ZH_NOTEBOOKS)
    links = " · ".join(f"[{REFERENCE_TITLES_ZH.get(r, r)}]({r})" for r in refs)
    parts = [readme.rstrip(), ""]
    if links:
        parts += ["---", "", f"**参考资料**（英文页面）：{links}", ""]
    return "\n".join([*parts, _toctree("章节", [f"{ZH_NOTEBOOKS}/{p.stem}" for p in chapters])])


def stage_site(src: Path, root: Path = ROOT) -> list[str]:
    """Write the site's sources into ``src``: the chapters, the reference pages, the home page ``README.md``
    (the README, its chapter table linked, plus the navigation) and, when the course at ``root`` has
    README.zh-CN.md and notebooks/zh/NN_*.ipynb, the Chinese edition (see the module docstring) and
    ``_editions.json``. Returns the page names in navigation order, English then Chinese."""
    src = Path(src)
    chapters = chapter_notebooks(root / "notebooks")
    if not chapters:
        raise ValueError(f"root {root} has no notebooks/NN_*.ipynb; pass the repository root")
    refs = [p for p in REFERENCE_PAGES if (root / p).exists()]
    names = {p.name for p in chapters}
    zh_done = [p.name for p in chapter_notebooks(root / ZH_NOTEBOOKS) if p.name in names]
    zh = bool(zh_done) and (root / f"{ZH_HOME}.md").exists()
    copies = [f"notebooks/{nb.name}" for nb in chapters] + [f"{ZH_NOTEBOOKS}/{n}" for n in zh_done if zh]
    copies += refs + [f for f in PLAIN_FILES if (root / f).exists()]
    for rel in copies:
        _copy(root / rel, src / rel)
    pages = ["README", *(f"notebooks/{p.stem}" for p in chapters), *(r.removesuffix(".md") for r in refs)]
    home = link_chapter_table((root / "README.md").read_text(encoding="utf-8"), chapters)
    home = "\n".join([home.rstrip(), "", _toctree("Chapters", pages[1:1 + len(chapters)]),
                      _toctree("Reference", pages[1 + len(chapters):])])
    generated = {}
    if zh:
        home += "\n" + _toctree("简体中文 (Chinese edition)", [ZH_HOME])
        generated[f"{ZH_HOME}.md"] = _zh_home(root, chapters, refs)
        guide = "docs/translating.md" in refs
        generated |= {f"{ZH_NOTEBOOKS}/{nb.name}": untranslated_page(nb, guide) for nb in chapters
                      if nb.name not in zh_done}
        pages += [ZH_HOME, *(f"{ZH_NOTEBOOKS}/{p.stem}" for p in chapters)]
        editions = {"en_home": "README", "zh_home": ZH_HOME, "switch": language_switch(pages),
                    "zh_pages": [p for p in pages if page_language(p) == "zh-CN"]}
        generated[EDITIONS_FILE] = json.dumps(editions, ensure_ascii=False, indent=1) + "\n"
    generated["README.md"] = home
    for old in [p for p in src.rglob("*") if p.is_file()]:  # a page renamed or removed since the last build
        if old.relative_to(src).as_posix() not in {*copies, *generated}:
            old.unlink()
    for rel, text in generated.items():
        _write(src / rel, text)
    return pages


def build_site(out: Path = SITE_OUT, *, root: Path = ROOT, fresh: bool = False) -> Path:
    """Stage the sources of the course at ``root`` in ``out/src`` and build the HTML site into ``out/html`` with
    the configuration in ``docs/site``; returns the html folder.

    Sphinx runs with ``-W --keep-going``: any warning (a broken cross-reference, a missing image, a notebook
    MyST cannot read) fails the build, after listing all of them. ``fresh`` rebuilds every page.
    Raises RuntimeError with Sphinx's output when the build fails.
    """
    out = Path(out)
    if fresh:
        shutil.rmtree(out, ignore_errors=True)
    stage_site(out / "src", root)
    cmd = [sys.executable, "-m", "sphinx", "-b", "html", "-q", "-W", "--keep-going", "-j", "auto",
           "-c", str(SITE_CONF), "-d", str(out / "doctrees"), str(out / "src"), str(out / "html")]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"sphinx failed (exit {r.returncode}):\n{r.stdout[-3000:]}{r.stderr[-6000:]}")
    return out / "html"


def main_site(argv: list[str] | None = None) -> int:
    """``python -m labkit.course.site [--out DIR] [--fresh]``: build the site, check its links, print where it
    is; 1 when the build fails or a link is broken."""
    args = list(sys.argv[1:] if argv is None else argv)
    out = SITE_OUT
    if "--out" in args:
        i = args.index("--out")
        if i + 1 >= len(args):
            print("usage: python -m labkit.course.site [--out DIR] [--fresh]", file=sys.stderr)
            return 2
        out = Path(args.pop(i + 1))
        args.pop(i)
    if set(args) - {"--fresh"}:
        print("usage: python -m labkit.course.site [--out DIR] [--fresh]", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    try:
        html = build_site(out, fresh="--fresh" in args)
    except RuntimeError as e:
        print(e, file=sys.stderr)
        return 1
    broken = broken_links(html)
    for line in broken:
        print(f"broken: {line}", file=sys.stderr)
    print(f"site built in {time.perf_counter() - t0:.0f} s: {html / 'index.html'}"
          + (f" ({len(broken)} broken links)" if broken else ""))
    print(f"read it offline, or serve it: python -m http.server -d {html} 8000")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main_site())
