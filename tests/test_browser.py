"""The course website in a real browser (headless Chromium, `make browser` installs it): every page loads with
nothing failing (no request that fails or answers >= 400, no JavaScript exception, no console error), and
every formula on it is typeset by MathJax without a TeX error."""
import time

from cdp import Chromium, StaticServer, chromium_or_skip

from labkit.course.site import chapter_notebooks

#: Ready when MathJax has typeset the page (or the page has no math); returns the counts to check.
MATH_READY = """(() => {
  const n = document.querySelectorAll('.math').length;
  if (document.readyState !== 'complete') return null;
  if (!n) return {math: 0, typeset: 0, errors: 0};
  if (!(window.MathJax && MathJax.startup && MathJax.startup.promise)) return null;
  return MathJax.startup.promise.then(() => ({math: n, typeset: document.querySelectorAll('mjx-container').length,
      errors: document.querySelectorAll('mjx-merror').length,
      raw: Array.from(document.querySelectorAll('.math')).filter(e => !e.querySelector('mjx-container'))
                .slice(0, 3).map(e => e.textContent.slice(0, 60))}));
})()"""


def test_every_page_loads_cleanly_and_its_math_is_typeset(site_html):
    exe = chromium_or_skip()
    pages = sorted(p.relative_to(site_html).as_posix() for p in site_html.rglob("*.html")
                   if p.relative_to(site_html).parts[0] != "_static")
    assert "README.html" in pages and len(pages) >= len(chapter_notebooks()) + 4
    problems, math_pages, t0 = {}, {}, time.perf_counter()
    with StaticServer(site_html) as base, Chromium(exe, timeout=60) as browser:
        for page in pages:
            report = browser.open(base + page, MATH_READY, timeout=60)
            if report.problems():
                problems[page] = report.problems()
            counts = report.value or {}
            if counts.get("math"):
                math_pages[page] = counts
    assert problems == {}
    assert len(math_pages) >= 10, f"math on only {sorted(math_pages)}"
    for page, c in math_pages.items():
        assert c["typeset"] >= c["math"] and c["errors"] == 0 and not c["raw"], (page, c)
    assert time.perf_counter() - t0 < 120


def test_the_browser_check_notices_a_broken_page(tmp_path):
    """A page with a missing script, a missing image, an exception and bad TeX: each is reported."""
    exe = chromium_or_skip()
    (tmp_path / "index.html").write_text(
        '<html><head><script src="missing.js"></script></head><body><img src="nope.png">'
        '<script>throw new Error("boom")</script></body></html>')
    with StaticServer(tmp_path) as base, Chromium(exe) as browser:
        report = browser.open(base + "index.html", settle=0.5)
    text = " ".join(report.problems())
    assert "missing.js (HTTP 404)" in text and "nope.png (HTTP 404)" in text and "boom" in text
