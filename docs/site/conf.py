# Sphinx configuration of the course website (`make site`; labkit/course/site.py stages the sources and runs
# Sphinx with this folder as its configuration directory). MyST-NB renders the notebooks with their stored
# outputs: nothing is executed. MathJax is copied into the site (the files of the sphinx-mathjax-offline
# package), so pages load nothing from elsewhere and the site works offline.
#
# Two editions in one project (labkit/course/site.py stages them): English (README, notebooks/...) and 简体中文
# (README.zh-CN, notebooks/zh/...). `_editions.json` in the sources lists the Chinese pages and pairs each
# page that exists in both editions with its counterpart; `_page_context` below gives every page its language
# switch (templates/lang-switch.html, in the article header: the counterpart, else the other edition's home),
# and each Chinese page lang="zh-CN", the Chinese home as its home, its own navigation
# (templates/sbt-sidebar-nav.html) and the Chinese translations of Sphinx's and the themes' labels.
import gettext
import hashlib
import importlib.util
import json
import os
import shutil
from pathlib import Path

import pydata_sphinx_theme
import sphinx
import sphinx_book_theme
from sphinx.search.en import SearchEnglish

project = "LLM Internals, From Scratch (从零实现大模型)"
author = "the course authors"
copyright = "the course authors, MIT License"
language = "en"

extensions = ["myst_nb"]
# The README is the home page, under its own name, so links to it (../README.md) resolve; index.html sends
# a browser there.
root_doc = "README"
html_extra_path = ["extra"]
templates_path = ["templates"]
html_static_path = ["static"]
html_css_files = ["course.css"]

# Notebooks: stored outputs only (nbval keeps them honest), stderr shown as it was stored.
nb_execution_mode = "off"
nb_output_stderr = "show"
nb_merge_streams = True
nb_ipywidgets_js = {}  # no widget state in the course; never pull require.js from a CDN

myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist", "html_image"]
myst_heading_anchors = 3
myst_dmath_double_inline = True

exclude_patterns = ["_build", "**.ipynb_checkpoints"]
# Heading-level style (an H1 followed by an H3) is not a broken page; every other warning fails the build.
suppress_warnings = ["myst.header"]

html_theme = "sphinx_book_theme"
html_title = "LLM Internals, From Scratch"
html_favicon = "favicon.svg"
html_last_updated_fmt = None
html_context = {"default_mode": "auto"}  # light or dark, as the reader's system says
html_theme_options = {
    "home_page_in_toc": True,
    "show_navbar_depth": 1,
    "collapse_navbar": True,  # only the current edition's chapters in the sidebar (and a faster build)
    "use_download_button": True,
    "show_toc_level": 2,
    "navigation_with_keys": False,
    "article_header_end": ["lang-switch.html", "article-header-buttons.html"],
}

# MathJax 3 from the sphinx-mathjax-offline package's files (its extension is not marked parallel-safe, so the
# copy is done here): the TeX -> HTML component, its fonts and the extensions it loads on demand.
_MATHJAX = Path(importlib.util.find_spec("sphinx-mathjax-offline").origin).parent / "static" / "mathjax"
_MATHJAX_SKIP = {p.name for p in _MATHJAX.glob("*.js")} - {"tex-chtml.js"}
mathjax_path = "mathjax/tex-chtml.js"


def _skip(folder, names):
    return [n for n in names if Path(folder) == _MATHJAX and n in _MATHJAX_SKIP]


def _copy_mathjax(app, exc):
    if exc is None and app.builder.format == "html":
        shutil.copytree(_MATHJAX, Path(app.outdir) / "_static" / "mathjax", dirs_exist_ok=True, ignore=_skip)


def _zh_catalogs():
    """Chinese message catalogs: Sphinx's and the PyData theme's labels (for ``_()`` in templates) and the book
    theme's (its ``translate()``)."""
    theme = gettext.translation("sphinx", Path(pydata_sphinx_theme.__file__).parent / "locale", ["zh_CN", "zh"],
                                fallback=True)
    theme.add_fallback(gettext.translation("sphinx", Path(sphinx.__file__).parent / "locale", ["zh_CN"],
                                           fallback=True))
    book = gettext.translation("booktheme", Path(sphinx_book_theme.__file__).parent / "theme" / "sphinx_book_theme"
                               / "static" / "locales", ["zh_CN"], fallback=True)
    return theme, book


_EDITIONS = {}


def _read_editions(app):
    path = Path(app.srcdir) / "_editions.json"
    _EDITIONS.clear()
    if path.exists():  # a course without a Chinese edition has none: no switch
        _EDITIONS.update(json.loads(path.read_text(encoding="utf-8")))
        _EDITIONS["zh_pages"] = set(_EDITIONS["zh_pages"])
        _EDITIONS["catalogs"] = _zh_catalogs()


def _page_context(app, pagename, templatename, context, doctree):
    """Before the themes' handlers (they drop header items that render empty, and the book theme names the
    home page from ``root_doc``): the language switch; on a Chinese page its language, home, title and
    labels. Previous/next links stop at the edge of an edition."""
    if not _EDITIONS:
        return
    zh = pagename in _EDITIONS["zh_pages"]
    same = pagename in _EDITIONS["switch"]
    target = _EDITIONS["switch"].get(pagename, _EDITIONS["en_home"] if zh else _EDITIONS["zh_home"])
    context["lang_switch"] = {
        "href": context["pathto"](target), "lang": "en" if zh else "zh-CN",
        "label": "English" if zh else "简体中文",
        "title": ("English version of this page" if zh else "本页的中文版") if same else
                 ("This page is in Chinese only: English home" if zh else "本页暂无中文版：前往中文版首页")}
    templates = app.builder.templates.environment
    if zh:
        templates.install_gettext_translations(_EDITIONS["catalogs"][0])
        context.update(language="zh-CN", root_doc=_EDITIONS["zh_home"], docstitle="从零实现大模型",
                       course_edition="zh")
    else:
        templates.install_gettext_translations(app.translator)
    relations = app.builder.relations.get(pagename)
    if relations:
        for key, doc in (("prev", relations[1]), ("next", relations[2])):
            if doc and (doc in _EDITIONS["zh_pages"]) != zh:
                context[key] = None


def _page_labels(app, pagename, templatename, context, doctree):
    """After the book theme's handler: its labels (``translate``, the search box's text) in Chinese on a
    Chinese page."""
    if _EDITIONS and pagename in _EDITIONS["zh_pages"]:
        context["translate"] = _EDITIONS["catalogs"][1].gettext
        context["theme_search_bar_text"] = "搜索……"


# Build time (the two editions share their code and outputs; the site is built in every test run):
class _SearchEnglishMemo(SearchEnglish):
    """Sphinx's English search index with each distinct word stemmed once rather than at every occurrence:
    the same index, built in a fraction of the time."""

    _stems: dict = {}

    def stem(self, word):
        stem = self._stems.get(word)
        if stem is None:
            stem = self._stems[word] = super().stem(word)
        return stem


def _share_highlighting(app):
    """Highlight each distinct code or output block once per build: the Chinese page of a chapter shows the
    English page's code and outputs, and Sphinx writes the pages in forked processes, so the HTML of each
    block is kept on disk (doctrees/highlight, emptied at the start of every build, so a block's warnings
    come again in the next one) and reused."""
    bridge = getattr(app.builder, "highlighter", None)
    if bridge is None:
        return
    folder = Path(app.doctreedir) / "highlight"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    highlight = bridge.highlight_block

    def highlight_block(source, lang, opts=None, force=False, location=None, **kwargs):
        key = repr((source, lang, sorted((opts or {}).items()), force, sorted(kwargs.items())))
        path = folder / (hashlib.sha1(key.encode("utf-8")).hexdigest() + ".html")
        if path.exists():
            return path.read_text(encoding="utf-8")
        html = highlight(source, lang, opts, force, location, **kwargs)
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp")
        tmp.write_text(html, encoding="utf-8")
        os.replace(tmp, path)
        return html

    bridge.highlight_block = highlight_block


def setup(app):
    app.add_search_language(_SearchEnglishMemo)
    app.connect("builder-inited", _share_highlighting)
    app.connect("build-finished", _copy_mathjax)
    app.connect("builder-inited", _read_editions)
    app.connect("html-page-context", _page_context, priority=400)
    app.connect("html-page-context", _page_labels, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
