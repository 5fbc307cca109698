"""Checks of a built course website (:mod:`labkit.course.site`), without a browser.

* :func:`broken_links`: every ``href``/``src`` inside the site points at a file that exists, and every
  ``#fragment`` at an element with that id; nothing (script, style, image, font) is loaded from another host.
* :func:`notebook_figures` / :func:`page_figures`: a chapter page shows as many figures as its notebook stores.

``make site`` runs them after building; tests/test_site.py asserts them.
"""
from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

__all__ = ["LinkIndex", "broken_links", "notebook_figures", "page_figures", "FIGURE_MIMES"]

FIGURE_MIMES = ("image/png", "image/jpeg", "image/svg+xml", "image/gif")
_URL_ATTRS = {"href", "src"}
#: ``<link rel=...>`` values that make the browser fetch the URL (others, like ``canonical``, only name it).
_LOADING_RELS = {"stylesheet", "icon", "shortcut", "preload", "modulepreload", "prefetch", "manifest",
                 "apple-touch-icon"}


def _loads(tag: str, rel: str) -> bool:
    """Does the browser fetch this tag's URL when it shows the page (rather than when a reader clicks it)?"""
    if tag == "link":
        return bool(set(rel.lower().split()) & _LOADING_RELS)
    return tag in ("script", "img", "source", "iframe", "video", "audio", "embed")


class LinkIndex(HTMLParser):
    """One page's URLs (with the tag that holds them) and element ids."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.urls: list[tuple[str, str, str, str]] = []  # (tag, attribute, url, rel)
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        rel = dict(attrs).get("rel") or ""
        for name, value in attrs:
            if value is None:
                continue
            if name == "id" or (name == "name" and tag == "a"):
                self.ids.add(value)
            elif name in _URL_ATTRS:
                self.urls.append((tag, name, value, rel))

    @classmethod
    def of(cls, path: Path) -> "LinkIndex":
        idx = cls()
        idx.feed(path.read_text(encoding="utf-8", errors="replace"))
        return idx


def _check_url(page: Path, html_dir: Path, tag: str, url: str, rel: str,
               ids_of: dict[Path, set[str]]) -> str | None:
    """Why ``url`` on ``page`` is broken, or None when it is fine."""
    parts = urlsplit(url)
    if parts.scheme in ("mailto", "javascript", "data", "tel"):
        return None
    if parts.scheme or parts.netloc:
        return f"loads {url} from another host (the site must work offline)" if _loads(tag, rel) else None
    target = (page.parent / unquote(parts.path)).resolve() if parts.path else page.resolve()
    if parts.path and not target.is_relative_to(html_dir.resolve()):
        return f"{url} points outside the site"
    if target.is_dir():
        target = target / "index.html"
    if not target.exists():
        return f"{url} does not exist"
    frag = unquote(parts.fragment)
    if frag and target.suffix == ".html":
        if target not in ids_of:
            ids_of[target] = LinkIndex.of(target).ids
        if frag not in ids_of[target]:
            return f"{url}: no element with id {frag!r} in {target.name}"
    return None


def broken_links(html_dir: str | Path) -> list[str]:
    """``"page: problem"`` for every broken internal link or fragment and every resource from another host,
    over all pages under ``html_dir`` (``_static/`` holds assets, not pages); empty when the site is whole."""
    html_dir = Path(html_dir)
    if not (html_dir / "index.html").exists():
        raise ValueError(f"html_dir {html_dir} has no index.html; pass the built site (build/site/html)")
    ids_of: dict[Path, set[str]] = {}
    problems = []
    for page in sorted(html_dir.rglob("*.html")):
        if page.relative_to(html_dir).parts[0] == "_static":
            continue  # the theme's template fragments, not pages
        idx = LinkIndex.of(page)
        ids_of[page.resolve()] = idx.ids
        for tag, attr, url, rel in idx.urls:
            why = _check_url(page, html_dir, tag, url, rel, ids_of)
            if why:
                problems.append(f"{page.relative_to(html_dir)}: <{tag} {attr}> {why}")
    return problems


def notebook_figures(path: str | Path) -> int:
    """Number of figures a notebook stores: outputs that carry an image (one per output, whatever its formats)."""
    nb = json.loads(Path(path).read_text(encoding="utf-8"))
    return sum(1 for cell in nb["cells"] if cell["cell_type"] == "code" for out in cell.get("outputs", [])
               if any(m in out.get("data", {}) for m in FIGURE_MIMES))


def page_figures(page: str | Path) -> list[str]:
    """The output images a built page shows (``<img>`` sources under ``_images/``, where MyST-NB puts them)."""
    return [url for tag, _, url, _ in LinkIndex.of(Path(page)).urls if tag == "img" and "_images/" in url]
