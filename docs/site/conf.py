# Sphinx configuration of the course website (`make site`; labkit/course/site.py stages the sources and runs
# Sphinx with this folder as its configuration directory). MyST-NB renders the notebooks with their stored
# outputs: nothing is executed. MathJax is copied into the site (the files of the sphinx-mathjax-offline
# package), so pages load nothing from elsewhere and the site works offline.
import importlib.util
import shutil
from pathlib import Path

project = "LLM Internals, From Scratch (从零实现大模型)"
author = "the course authors"
copyright = "the course authors, MIT License"
language = "en"

extensions = ["myst_nb"]
# The README is the home page, under its own name, so links to it (../README.md) resolve; index.html sends
# a browser there.
root_doc = "README"
html_extra_path = ["extra"]

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
    "use_download_button": True,
    "show_toc_level": 2,
    "navigation_with_keys": False,
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


def setup(app):
    app.connect("build-finished", _copy_mathjax)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
