"""The course website (`make site`): built from the stored outputs without executing anything; every chapter has
a page, in course order, with all its figures, in both editions (English, and 简体中文 under notebooks/zh/ with
README.zh-CN as its home); every page's language switch leads to the same page in the other edition; no internal
link is broken and nothing loads from another host. (tests/test_browser.py opens the same build in Chromium.)"""
import html as htmllib
import json
import re

import pytest

from labkit.core.paths import ROOT
from labkit.course.site import (
    REFERENCE_PAGES,
    UNTRANSLATED,
    ZH_HOME,
    build_site,
    chapter_notebooks,
    chapter_title,
    language_switch,
    link_chapter_table,
    main_site,
    page_language,
    stage_site,
    untranslated_page,
)
from labkit.course.site_check import LinkIndex, broken_links, notebook_figures, page_figures


def _text(fragment: str) -> str:
    return htmllib.unescape(re.sub(r"<[^>]+>", "", fragment)).replace("#", "").strip()


def _h1(page) -> str:
    m = re.search(r"<h1[^>]*>(.*?)</h1>", page.read_text(encoding="utf-8"), re.S)
    assert m, f"{page} has no <h1>"
    return _text(m.group(1))


def _lang(page) -> str:
    m = re.search(r'<html[^>]*\slang="([^"]+)"', page.read_text(encoding="utf-8"))
    assert m, f"{page} has no <html lang>"
    return m.group(1)


def _switch(page) -> str:
    """The href of the page's language switch."""
    m = re.search(r'<a id="lang-switch"[^>]*\shref="([^"]+)"', page.read_text(encoding="utf-8"))
    assert m, f"{page} has no language switch"
    return m.group(1)


def _pages(html):
    return sorted(p for p in html.rglob("*.html") if p.relative_to(html).parts[0] != "_static")


def _sidebar(page) -> list[str]:
    nav = page.read_text(encoding="utf-8").split('class="bd-links bd-docs-nav"', 1)[1].split("</nav>", 1)[0]
    return re.findall(r'href="([^"#]+)"', nav)


def _zh_chapters():
    english = {p.name for p in chapter_notebooks()}
    return [p for p in chapter_notebooks(ROOT / "notebooks" / "zh") if p.name in english]


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


def test_every_chinese_chapter_has_a_page_with_its_title_and_figures(site_html):
    """Each notebooks/zh/NN_topic.ipynb has its page notebooks/zh/NN_topic.html (lang zh-CN, its Chinese title, as
    many figures as it stores); a chapter without one has a page that says so and links the English page."""
    zh = _zh_chapters()
    assert len(zh) >= 20 and (ROOT / "README.zh-CN.md").exists()
    total = 0
    for nb in zh:
        page = site_html / "notebooks" / "zh" / f"{nb.stem}.html"
        assert page.exists(), f"no Chinese page for {nb.name}"
        assert _lang(page) == "zh-CN", nb.name
        assert _h1(page) == re.sub(r"[`*]", "", chapter_title(nb)) and re.search(r"[\u4e00-\u9fff]", _h1(page))
        want, shown = notebook_figures(nb), page_figures(page)
        assert len(shown) == want, (nb.name, want, shown)
        assert all((page.parent / src).exists() for src in shown), nb.name
        total += want
    assert total >= 40, "the Chinese chapters store dozens of figures; a build that dropped them must fail"
    for nb in chapter_notebooks():
        if nb.name not in {p.name for p in zh}:
            page = site_html / "notebooks" / "zh" / f"{nb.stem}.html"
            assert _h1(page).endswith(UNTRANSLATED) and f'href="../{nb.stem}.html"' in page.read_text("utf-8")


def test_every_page_has_a_language_switch_to_the_same_page_in_the_other_edition(site_html):
    """Chapters and home pages switch to their counterpart; pages in one language only (the reference pages,
    search, index) to the other edition's home. Each target exists and is in the other language."""
    pages = _pages(site_html)
    assert len(pages) >= 2 * len(chapter_notebooks()) + 4
    counterpart = {"README.html": f"{ZH_HOME}.html", f"{ZH_HOME}.html": "README.html"}
    for nb in chapter_notebooks():
        counterpart[f"notebooks/{nb.stem}.html"] = f"notebooks/zh/{nb.stem}.html"
        counterpart[f"notebooks/zh/{nb.stem}.html"] = f"notebooks/{nb.stem}.html"
    for page in pages:
        rel = page.relative_to(site_html).as_posix()
        if rel == "index.html":
            continue  # the redirect to README.html
        target = (page.parent / _switch(page)).resolve()
        assert target.is_file(), (rel, _switch(page))
        assert _lang(target) != _lang(page), (rel, target)
        home = "README.html" if _lang(page) == "zh-CN" else f"{ZH_HOME}.html"
        assert target == (site_html / counterpart.get(rel, home)).resolve(), (rel, target)


def test_the_chinese_edition_has_its_own_navigation_and_labels(site_html):
    """The Chinese pages list the Chinese chapters in course order under 章节, with the theme's labels in
    Chinese; the English pages list the English ones and the Chinese home; previous/next stay in an edition."""
    zh_home = (site_html / f"{ZH_HOME}.html").read_text(encoding="utf-8")
    want = [f"notebooks/zh/{p.stem}.html" for p in chapter_notebooks()]
    nav = _sidebar(site_html / f"{ZH_HOME}.html")
    assert [u for u in nav if u.startswith("notebooks/")] == want
    assert "章节" in zh_home and "搜索" in zh_home and "目录" in zh_home and "Search" not in zh_home
    assert 'href="notebooks/zh/03_attention.html"' in zh_home  # the chapter table is linked
    others = [f"{p.stem}.html" for p in chapter_notebooks() if p.stem != "03_attention"]  # the page itself: "#"
    en_nav = _sidebar(site_html / "notebooks" / "03_attention.html")
    assert [u for u in en_nav if re.match(r"\d\d_", u)] == others
    assert "../README.zh-CN.html" in en_nav and not any(u.startswith("zh/") for u in en_nav)
    zh_nav = _sidebar(site_html / "notebooks" / "zh" / "03_attention.html")
    assert [u for u in zh_nav if re.match(r"\d\d_", u)] == others
    assert "../../README.zh-CN.html" in zh_nav and not any("glossary" in u for u in zh_nav)
    last_en = site_html / REFERENCE_PAGES[-1].replace(".md", ".html")
    for page, edge in ((last_en, 'class="right-next"'), (site_html / f"{ZH_HOME}.html", 'class="left-prev"')):
        assert edge not in page.read_text(encoding="utf-8"), page


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


def _notebook(title: str, text: str, code: str, stored: str) -> str:
    meta = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            "language_info": {"name": "python", "pygments_lexer": "ipython3"}}
    cells = [{"cell_type": "markdown", "id": "a1", "metadata": {}, "source": f"# {title}\n\n{text}"}]
    if code:
        cells.append({"cell_type": "code", "id": "a2", "metadata": {}, "execution_count": 1, "source": code,
                      "outputs": [{"output_type": "stream", "name": "stdout", "text": stored}]})
    return json.dumps({"nbformat": 4, "nbformat_minor": 5, "metadata": meta, "cells": cells}, ensure_ascii=False)


def _tiny_course(root, link: str, code: str, stored: str) -> None:
    """Chapters 00 (English and Chinese) and 01 (English only), README and README.zh-CN."""
    (root / "notebooks" / "zh").mkdir(parents=True)
    table = "| # | notebook | what |\n|---|---|---|\n| 00 | intro | x |\n| 01 | more | y |\n"
    (root / "README.md").write_text(f"# Tiny course\n\n[简体中文](README.zh-CN.md)\n\n{table}", encoding="utf-8")
    (root / "README.zh-CN.md").write_text(f"# 小课程\n\n[English](README.md)\n\n{table}", encoding="utf-8")
    (root / "notebooks" / "00_intro.ipynb").write_text(_notebook("00 · Intro", f"Math $e^z$. {link}", code, stored))
    (root / "notebooks" / "01_more.ipynb").write_text(_notebook("01 · More (更多)", "[back](00_intro.ipynb)", "", ""))
    (root / "notebooks" / "zh" / "00_intro.ipynb").write_text(
        _notebook("00 · 简介（Intro）", "数学 $e^z$。[英文版](../00_intro.ipynb) [下一章](01_more.ipynb)",
                  code, stored),
        encoding="utf-8")


def test_site_shows_stored_outputs_without_executing_and_fails_on_a_broken_link(tmp_path):
    """One small course whose chapter links a chapter that does not exist: the build fails naming it (after
    writing every page, --keep-going), the page shows the stored output, and the code that would stop the
    build if it ran was not run. Its link to ../README.md (the home page) resolves. Its Chinese edition has
    chapter 00, so chapter 01 gets the page that says it is not translated yet, linked from 00 and switching
    to the English 01; the homes link each other and their chapter tables."""
    _tiny_course(tmp_path / "course", "[home](../README.md) [next](01_missing.ipynb)",
                 "raise SystemExit('executed!')", "stored output 4.2\n")
    with pytest.raises(RuntimeError, match="01_missing") as e:
        build_site(tmp_path / "out", root=tmp_path / "course")
    assert "README" not in str(e.value) and "zh/" not in str(e.value)
    html = tmp_path / "out" / "html"
    page = (html / "notebooks" / "00_intro.html").read_text(encoding="utf-8")
    assert "stored output 4.2" in page and "executed!" in page.split("stored output")[0]  # code shown, not run
    assert "SystemExit" not in page.split("stored output 4.2")[1]
    assert 'href="notebooks/00_intro.html"' in (html / "README.html").read_text(encoding="utf-8")
    zh00 = (html / "notebooks" / "zh" / "00_intro.html").read_text(encoding="utf-8")
    assert "stored output 4.2" in zh00 and "数学" in zh00 and 'href="01_more.html"' in zh00
    stub = html / "notebooks" / "zh" / "01_more.html"
    assert _h1(stub) == f"01 · More (更多){UNTRANSLATED}" and _lang(stub) == "zh-CN"
    assert 'href="../01_more.html"' in stub.read_text(encoding="utf-8") and _switch(stub) == "../01_more.html"
    assert _switch(html / "notebooks" / "01_more.html") == "zh/01_more.html"
    zh_home = (html / "README.zh-CN.html").read_text(encoding="utf-8")
    assert 'href="notebooks/zh/00_intro.html"' in zh_home and 'href="notebooks/zh/01_more.html"' in zh_home
    assert 'href="README.html"' in zh_home and 'href="README.zh-CN.html"' in (html / "README.html").read_text("utf-8")
    assert [p for p in broken_links(html) if "01_missing" not in p] == []  # the one broken on purpose


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
    assert link_chapter_table(readme, [ROOT / "notebooks" / "00_start_here.ipynb"], "notebooks/zh").startswith(
        "| 00 | [start_here](notebooks/zh/00_start_here.ipynb) |")


def test_language_switch_pairs_the_pages_of_the_two_editions():
    pages = ["README", "notebooks/00_a", "notebooks/01_b", "docs/glossary", ZH_HOME, "notebooks/zh/00_a",
             "notebooks/zh/02_c"]
    assert language_switch(pages) == {"README": ZH_HOME, ZH_HOME: "README", "notebooks/00_a": "notebooks/zh/00_a",
                                      "notebooks/zh/00_a": "notebooks/00_a"}
    assert [page_language(p) for p in pages] == ["en"] * 4 + ["zh-CN"] * 3
    with pytest.raises(ValueError, match="pages"):
        language_switch(["README", "notebooks/00_a"])


def test_untranslated_page_names_the_chapter_and_links_the_english_one():
    nb = json.loads(untranslated_page(ROOT / "notebooks" / "03_attention.ipynb"))
    text = nb["cells"][0]["source"]
    assert text.startswith(f"# {chapter_title(ROOT / 'notebooks' / '03_attention.ipynb')}{UNTRANSLATED}\n")
    assert "(../03_attention.ipynb)" in text and "(../../docs/translating.md)" in text
    assert "translating" not in untranslated_page(ROOT / "notebooks" / "03_attention.ipynb", guide=False)
    assert [c["cell_type"] for c in nb["cells"]] == ["markdown"] and nb["metadata"]["kernelspec"]


def test_make_site_builds_with_this_module():
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile.split("\nsite:", 1)[1].split("\n\n", 1)[0]
    assert "-m labkit.course.site" in recipe
