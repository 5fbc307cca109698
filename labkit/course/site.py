"""The course website: ``make site`` (``python -m labkit.course.site [--out DIR]``).

A static site of the whole course, built by Sphinx + MyST-NB (pinned in pyproject.toml's ``site`` extra, set up
in ``docs/site/conf.py``) from the notebooks' *stored* outputs: nothing is executed, so it takes seconds, and
what it shows is what nbval checks. The README is the home page (setup, chapter table linked to the chapters,
the results tables; ``README.html``, where ``index.html`` leads), then the chapters in course order, then the
glossary, the teaching guide, the data sheet and the contributor guide. MathJax ships inside the site, so it
reads offline (``build/site/html/index.html``).

The sources are staged in ``<out>/src`` (copies with their timestamps kept, so Sphinx rebuilds only what
changed) with a generated navigation; the site lands in ``<out>/html``. tests/test_site.py builds it and checks
every chapter page, figure and internal link; tests/test_browser.py opens it in headless Chromium.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from labkit.core.io import atomic_write_text
from labkit.core.paths import NOTEBOOKS, ROOT
from labkit.course.site_check import broken_links

__all__ = ["SITE_CONF", "SITE_OUT", "REFERENCE_PAGES", "chapter_notebooks", "chapter_title", "link_chapter_table",
           "stage_site", "build_site", "main_site"]

SITE_CONF = ROOT / "docs" / "site"
SITE_OUT = ROOT / "build" / "site"
#: Pages after the chapters, in this order (repository-relative; those that exist are published).
REFERENCE_PAGES = ("docs/glossary.md", "docs/teaching.md", "docs/translating.md", "data/README.md", "CONTRIBUTING.md",
                   "README.zh-CN.md")
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


def link_chapter_table(readme: str, chapters: list[Path]) -> str:
    """The README with each chapter-table row's notebook name linked to its page (``| 03 | attention |`` →
    ``| 03 | [attention](notebooks/03_attention.ipynb) |``); rows without a notebook stay as they are."""
    names = {p.stem for p in chapters}

    def link(m: re.Match) -> str:
        stem = f"{m.group(1)}_{m.group(2)}"
        return f"| {m.group(1)} | [{m.group(2)}](notebooks/{stem}.ipynb) |" if stem in names else m.group(0)

    return _ROW.sub(link, readme)


def _copy(src: Path, dst: Path) -> None:
    """Copy with the timestamp, and only when the bytes changed (Sphinx then rebuilds only changed pages)."""
    if dst.exists() and dst.read_bytes() == src.read_bytes():
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dst)


def _toctree(caption: str, entries: list[str]) -> str:
    return "\n".join(["```{toctree}", ":hidden:", f":caption: {caption}", ":maxdepth: 1", "", *entries, "```", ""])


def stage_site(src: Path, root: Path = ROOT) -> list[str]:
    """Write the site's sources into ``src``: the chapters, the reference pages, and the home page ``README.md``
    (the README, its chapter table linked, plus the navigation). Returns the page names in navigation order."""
    src = Path(src)
    chapters = chapter_notebooks(root / "notebooks")
    if not chapters:
        raise ValueError(f"root {root} has no notebooks/NN_*.ipynb; pass the repository root")
    refs = [p for p in REFERENCE_PAGES if (root / p).exists()]
    copies = [f"notebooks/{nb.name}" for nb in chapters] + refs + [f for f in PLAIN_FILES if (root / f).exists()]
    for rel in copies:
        _copy(root / rel, src / rel)
    for old in [p for p in src.rglob("*") if p.is_file()]:  # a page renamed or removed since the last build
        if old.relative_to(src).as_posix() not in {*copies, "README.md"}:
            old.unlink()
    pages = ["README", *(f"notebooks/{p.stem}" for p in chapters), *(r.removesuffix(".md") for r in refs)]
    readme = link_chapter_table((root / "README.md").read_text(encoding="utf-8"), chapters)
    home = "\n".join([readme.rstrip(), "", _toctree("Chapters", pages[1:1 + len(chapters)]),
                      _toctree("Reference", pages[1 + len(chapters):])])
    if not (src / "README.md").exists() or (src / "README.md").read_text(encoding="utf-8") != home:
        atomic_write_text(src / "README.md", home)
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
