"""The course website in a real browser (headless Chromium, `make browser` installs it with the CJK fonts):
every page of the English edition and the Chinese home loads with nothing failing (no request that fails or
answers >= 400, no JavaScript exception, no console error), and every formula on it is typeset by MathJax
without a TeX error. A Chinese chapter page does the same, its Chinese text is drawn with a CJK font, and its
language switch leads to the English page. (The other Chinese pages share the English pages' assets and
markup; tests/test_site.py checks their links and switches without a browser, which keeps this test short.)"""
import time

from cdp import Chromium, StaticServer, chromium_or_skip

from labkit.course.site import ZH_HOME, chapter_notebooks, page_language

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
                   if p.relative_to(site_html).parts[0] != "_static"
                   and page_language(p.relative_to(site_html).with_suffix("").as_posix()) == "en")
    pages.append(f"{ZH_HOME}.html")
    assert "README.html" in pages and len(pages) >= len(chapter_notebooks()) + 5
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


#: After MATH_READY: the page's language, its h1, and where its language switch leads.
PAGE_FACTS = """({lang: document.documentElement.lang, h1: document.querySelector('h1').textContent,
  han: (document.body.innerText.match(/[\\u4e00-\\u9fff]/g) || []).length,
  switch: document.getElementById('lang-switch').href,
  visible: document.getElementById('lang-switch').offsetWidth > 0})"""


def _fonts_of(browser: Chromium, selector: str) -> dict[str, int]:
    """The fonts Chromium drew an element's text with: family -> number of glyphs."""
    browser.send("DOM.enable")
    browser.send("CSS.enable")
    root = browser.send("DOM.getDocument", depth=-1)["root"]["nodeId"]
    node = browser.send("DOM.querySelector", nodeId=root, selector=selector)["nodeId"]
    fonts = browser.send("CSS.getPlatformFontsForNode", nodeId=node)["fonts"]
    glyphs: dict[str, int] = {}
    for f in fonts:  # one entry per face (regular, bold)
        glyphs[f["familyName"]] = glyphs.get(f["familyName"], 0) + f["glyphCount"]
    return glyphs


def test_a_chinese_chapter_renders_and_switches_to_english(site_html):
    """notebooks/zh/03_attention.html: loads cleanly, its math is typeset, it is lang zh-CN with Chinese text drawn
    in a CJK font (fonts-noto-cjk), and clicking its language switch opens the English chapter, which switches
    back."""
    exe = chromium_or_skip()
    with StaticServer(site_html) as base, Chromium(exe, timeout=60) as browser:
        report = browser.open(base + "notebooks/zh/03_attention.html", MATH_READY, timeout=60)
        assert report.problems() == []
        c = report.value
        assert c["math"] >= 20 and c["typeset"] >= c["math"] and c["errors"] == 0 and not c["raw"], c
        facts = browser.evaluate(PAGE_FACTS)
        assert facts["lang"] == "zh-CN" and "注意力" in facts["h1"] and facts["han"] > 2000, facts
        assert facts["visible"] and facts["switch"] == base + "notebooks/03_attention.html", facts
        fonts = _fonts_of(browser, "section p")  # the first paragraph, Chinese prose
        assert any("CJK" in family and n > 20 for family, n in fonts.items()), \
            f"Chinese drawn without a CJK font ({fonts}): install fonts-noto-cjk (`make browser`)"
        browser.evaluate("document.getElementById('lang-switch').click()")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                back = browser.evaluate("document.readyState === 'complete' && location.href.endsWith("
                                        "'/notebooks/03_attention.html') && document.documentElement.lang")
            except RuntimeError:
                back = None  # navigating
            if back:
                break
            time.sleep(0.1)
        assert back == "en"
        assert browser.evaluate(PAGE_FACTS)["switch"] == base + "notebooks/zh/03_attention.html"


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
