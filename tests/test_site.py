"""The course website (`make site`): built from the stored outputs without executing anything; every chapter has
a page, in course order, with all its figures; no internal link is broken and nothing loads from another host.
(tests/test_browser.py opens the same build in Chromium.)"""
import html as htmllib
import json
import re

import pytest

from labkit.core.paths import ROOT
from labkit.course.site import (
    REFERENCE_PAGES,
    build_site,
    chapter_notebooks,
    chapter_title,
    link_chapter_table,
    main_site,
    stage_site,
)
from labkit.course.site_check import LinkIndex, broken_links, notebook_figures, page_figures


def _text(fragment: str) -> str:
    return htmllib.unescape(re.sub(r"<[^>]+>", "", fragment)).replace("#", "").strip()


def _h1(page) -> str:
    m = re.search(r"<h1[^>]*>(.*?)</h1>", page.read_text(encoding="utf-8"), re.S)
    assert m, f"{page} has no <h1>"
    return _text(m.group(1))


def test_every_chapter_has_a_page_with_its_title_and_figures(site_html):
    chapters = chapter_notebooks()
    assert len(chapters) >= 20
    total = 0
    for nb in chapters:
        page = site_html / "notebooks" / f"{nb.stem}.html"
        assert page.exists(), f"no page for {nb.name}"
        assert _h1(page) == re.sub(r"[`*]", "", chapter_title(nb)), nb.name
        want, shown = notebook_figures(nb), page_figures(page)
        assert len(shown) == want, (nb.name, want, shown)
        assert all((page.parent / src).exists() for src in shown), nb.name
        total += want
    assert total >= 40, "the chapters store dozens of figures; a build that dropped them must fail"


def test_navigation_lists_the_chapters_in_course_order_then_the_reference_pages(site_html):
    hrefs = [u for tag, _, u, _ in LinkIndex.of(site_html / "README.html").urls if tag == "a"]
    chapters = list(dict.fromkeys(re.sub(r"[#?].*", "", u) for u in hrefs if re.match(r"notebooks/\d\d_\w+\.html", u)))
    assert chapters == [f"notebooks/{p.stem}.html" for p in chapter_notebooks()]
    for ref in REFERENCE_PAGES:
        if (ROOT / ref).exists():
            assert (site_html / ref.replace(".md", ".html")).exists(), ref
            assert ref.replace(".md", ".html") in hrefs, ref


def test_home_page_has_the_results_tables_and_links_the_chapter_table(site_html):
    assert 'url=README.html' in (site_html / "index.html").read_text(encoding="utf-8")  # index.html leads home
    index = (site_html / "README.html").read_text(encoding="utf-8")
    assert "从零实现大模型" in index  # Chinese survives the build
    assert "Results measured here" in index and index.count("<table") >= 5
    # the README's chapter table links each chapter to its page
    assert re.search(r'<a class="reference internal" href="notebooks/03_attention.html">\s*<span[^>]*>attention',
                     index), "chapter table row 03 is not linked"
    glossary = (site_html / "docs" / "glossary.html").read_text(encoding="utf-8")
    assert "术语表" in glossary and glossary.count("<table") >= 10


def test_math_is_marked_for_mathjax_which_ships_inside_the_site(site_html):
    page = (site_html / "notebooks" / "01_softmax_and_losses.html").read_text(encoding="utf-8")
    assert page.count('class="math notranslate nohighlight"') >= 20
    assert '<script defer="defer" src="../_static/mathjax/tex-chtml.js"></script>' in page
    assert (site_html / "_static" / "mathjax" / "tex-chtml.js").stat().st_size > 500_000
    assert list((site_html / "_static" / "mathjax" / "output" / "chtml" / "fonts" / "woff-v2").glob("*.woff"))


def test_no_broken_internal_link_and_nothing_from_another_host(site_html):
    assert broken_links(site_html) == []


def test_link_checker_finds_what_is_broken(tmp_path):
    (tmp_path / "index.html").write_text(
        '<a href="page.html#yes">ok</a> <a href="page.html#nope">bad anchor</a> <a href="missing.html">gone</a>'
        '<a href="https://example.org/">external link: fine</a> <link rel="canonical" href="https://example.org/">'
        '<script src="https://cdn.example.org/x.js"></script> <img src="_images/a.png"> <a href="#top">self</a>'
        '<span id="top"></span> <link rel="stylesheet" href="//cdn.example.org/s.css">')
    (tmp_path / "page.html").write_text('<h1 id="yes">page</h1>')
    problems = broken_links(tmp_path)
    assert len(problems) == 5, problems
    for needle in ("'nope'", "missing.html does not exist", "x.js from another host", "_images/a.png does not exist",
                   "s.css from another host"):
        assert any(needle in p for p in problems), (needle, problems)
    with pytest.raises(ValueError, match="html_dir"):
        broken_links(tmp_path / "nowhere")


def _tiny_course(root, link: str, code: str, stored: str) -> None:
    (root / "notebooks").mkdir(parents=True)
    (root / "README.md").write_text("# Tiny course\n\n| # | notebook | what |\n|---|---|---|\n| 00 | intro | x |\n")
    meta = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            "language_info": {"name": "python", "pygments_lexer": "ipython3"}}
    nb = {"nbformat": 4, "nbformat_minor": 5, "metadata": meta, "cells": [
        {"cell_type": "markdown", "id": "a1", "metadata": {}, "source": f"# 00 · Intro\n\nMath $e^z$. {link}"},
        {"cell_type": "code", "id": "a2", "metadata": {}, "execution_count": 1, "source": code,
         "outputs": [{"output_type": "stream", "name": "stdout", "text": stored}]}]}
    (root / "notebooks" / "00_intro.ipynb").write_text(json.dumps(nb))


def test_site_shows_stored_outputs_without_executing_and_fails_on_a_broken_link(tmp_path):
    """One small course whose chapter links a chapter that does not exist: the build fails naming it (after
    writing every page, --keep-going), the page shows the stored output, and the code that would stop the
    build if it ran was not run. Its link to ../README.md (the home page) resolves."""
    _tiny_course(tmp_path / "course", "[home](../README.md) [next](01_missing.ipynb)",
                 "raise SystemExit('executed!')", "stored output 4.2\n")
    with pytest.raises(RuntimeError, match="01_missing") as e:
        build_site(tmp_path / "out", root=tmp_path / "course")
    assert "README" not in str(e.value)
    page = (tmp_path / "out" / "html" / "notebooks" / "00_intro.html").read_text(encoding="utf-8")
    assert "stored output 4.2" in page and "executed!" in page.split("stored output")[0]  # code shown, not run
    assert "SystemExit" not in page.split("stored output 4.2")[1]
    assert 'href="notebooks/00_intro.html"' in (tmp_path / "out" / "html" / "README.html").read_text(encoding="utf-8")


def test_helpers_and_usage_errors(tmp_path, capsys):
    readme = "| 00 | start_here | a |\n| 09 | serving | in preparation |\n"
    linked = link_chapter_table(readme, [ROOT / "notebooks" / "00_start_here.ipynb"])
    assert linked.splitlines() == ["| 00 | [start_here](notebooks/00_start_here.ipynb) | a |",
                                   "| 09 | serving | in preparation |"]
    assert chapter_title(ROOT / "notebooks" / "00_start_here.ipynb").startswith("00 · Start here")
    (tmp_path / "x.ipynb").write_text(json.dumps({"cells": [{"cell_type": "markdown", "source": "no heading"}]}))
    with pytest.raises(ValueError, match="path"):
        chapter_title(tmp_path / "x.ipynb")
    with pytest.raises(ValueError, match="root"):
        stage_site(tmp_path / "src", root=tmp_path)
    assert main_site(["--out"]) == 2 and main_site(["--nope"]) == 2
    assert "usage" in capsys.readouterr().err


def test_make_site_builds_with_this_module():
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile.split("\nsite:", 1)[1].split("\n\n", 1)[0]
    assert "-m labkit.course.site" in recipe
