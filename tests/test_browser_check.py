"""The browser check (tests/browser/check_pages.py) on planted pages: each class of fault a reader
would see is reported, and a clean page passes. Needs Chromium (skipped without it)."""
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("check_pages", ROOT / "tests" / "browser" / "check_pages.py")
check_pages = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check_pages)

pytestmark = pytest.mark.slow   # every test renders a page in a headless Chromium

MATHJAX = (ROOT / "book" / "_vendor" / "mathjax" / "tex-svg.js").as_uri()
TEXT = "A paragraph a reader reads. " * 12


@pytest.fixture(scope="module", autouse=True)
def needs_chromium():
    try:
        check_pages.chromium()
    except SystemExit:
        pytest.skip("no Chromium on this machine")


def problems_of(tmp_path: Path, body: str, head: str = "", name: str = "page.html") -> list[str]:
    page = tmp_path / name
    page.write_text(f"<!doctype html><html><head>{head}</head><body><article><p>{TEXT}</p>{body}"
                    "</article></body></html>")
    return check_pages.check_page(page, check_pages.render(page))


def test_a_clean_page_with_math_links_and_an_image_passes(tmp_path):
    from PIL import Image

    Image.new("RGB", (4, 4), "white").save(tmp_path / "ok.png")
    (tmp_path / "other.html").write_text('<html><body><h2 id="there">there</h2></body></html>')
    head = ('<script>window.MathJax = {"options": {"processHtmlClass": "math"}}</script>'
            f'<script defer src="{MATHJAX}"></script>')
    body = ('<span class="math notranslate nohighlight">\\(x^2 + \\frac{1}{2}\\)</span>'
            '<img src="ok.png"><a href="other.html#there">there</a><a href="#top">top</a><h3 id="top">t</h3>')
    assert problems_of(tmp_path, body, head) == []


@pytest.mark.parametrize("body, expected", [
    ("<script>notDefinedAnywhere();</script>", "JavaScript console: Uncaught ReferenceError"),
    ('<script>fetch("https://example.invalid/data.json")</script>', "JavaScript console:"),
    ('<div style="background: url(https://example.invalid/a.png)">x</div>', "CSS url() on <div> points at the network"),
    ('<img srcset="https://example.invalid/a.png 2x" alt="">', "<img srcset> loads https://example.invalid/a.png"),
    ('<iframe src="https://example.invalid/"></iframe>', "<iframe src> loads https://example.invalid/"),
    ('<link rel="stylesheet" href="https://example.invalid/a.css">', "<link> loads https://example.invalid/a.css"),
    ('<div class="output traceback"><pre>ZeroDivisionError: division by zero</pre></div>',
     "a rendered traceback block"),
    ('<div class="output stderr"><pre>UserWarning: careful</pre></div>', "a rendered stderr block"),
    ('<a href="missing.html">gone</a>', "link missing.html points at a missing file"),
    ('<a href="#nowhere">here</a>', "link #nowhere points at an anchor that page.html does not have"),
    ('<img src="missing.png">', "image missing.png is missing"),
], ids=["js-error", "fetch", "css-url", "srcset", "iframe", "stylesheet", "traceback", "stderr", "missing-page",
        "missing-anchor", "missing-image"])
def test_each_planted_fault_is_reported(tmp_path, body, expected):
    problems = problems_of(tmp_path, body)
    assert any(expected in p for p in problems), problems


def test_an_image_that_does_not_decode_and_an_anchor_on_another_page(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    (tmp_path / "other.html").write_text('<html><body><h2 id="there">there</h2></body></html>')
    problems = problems_of(tmp_path, '<img src="broken.png"><a href="other.html#elsewhere">x</a>')
    assert any("image broken.png does not decode" in p for p in problems), problems
    assert any("other.html#elsewhere points at an anchor that other.html does not have" in p for p in problems)


def test_math_that_mathjax_cannot_typeset_is_reported(tmp_path):
    head = ('<script>window.MathJax = {"options": {"processHtmlClass": "math"}}</script>'
            f'<script defer src="{MATHJAX}"></script>')
    body = ('<span class="math notranslate nohighlight">\\(x^2\\)</span>'
            '<span class="math notranslate nohighlight">\\(\\frac{1}{\\)</span>')
    problems = problems_of(tmp_path, body, head)
    assert any("MathJax error" in p or "not typeset" in p for p in problems), problems


def test_math_without_mathjax_is_reported(tmp_path):
    problems = problems_of(tmp_path, '<span class="math">\\(x^2\\)</span>')
    assert any("MathJax typeset none of it" in p for p in problems), problems


PROBE = (ROOT / "book" / "_static" / "layout_probe.js").as_uri()


def layout_problems(tmp_path: Path, body: str, head: str = "") -> tuple[list[str], str]:
    """The check's problems with a page that loads the layout probe, opened as the check opens
    the book's pages (a 1280 px window, the probe's fragment)."""
    page = tmp_path / "layout.html"
    page.write_text(f'<!doctype html><html><head>{head}<script src="{PROBE}"></script></head><body><article>'
                    f'<p>{TEXT}</p><div style="width: 600px">{body}</div></article></body></html>')
    dom = check_pages.render(page, fragment=check_pages.LAYOUT_FRAGMENT)
    return check_pages.check_page(page, dom), dom


def test_a_code_block_wider_than_the_column_and_an_unreadably_shrunk_figure_are_reported(tmp_path):
    from PIL import Image

    Image.new("RGB", (1200, 100), "white").save(tmp_path / "wide.png")    # 2x its 600 px column
    problems, dom = layout_problems(tmp_path, f"<pre>{'x = 1  # ' + 'y' * 150}</pre>"
                                              '<img src="wide.png" style="max-width: 100%">')
    assert 'data-layout-probe="1 code blocks, 0 formulas, 1 figures"' in dom
    assert any("a code block is" in p and "px wider than the column: 'x = 1" in p for p in problems), problems
    assert any("figure wide.png is shrunk 2.00x" in p for p in problems), problems


def test_code_that_fits_and_a_figure_shrunk_a_little_pass_and_folded_code_is_not_measured(tmp_path):
    from PIL import Image

    Image.new("RGB", (840, 100), "white").save(tmp_path / "fits.png")    # 1.4x
    folded = f"<div class='cell tag_hide-input'><div class='cell_input'><pre>{'z' * 200}</pre></div></div>"
    problems, dom = layout_problems(tmp_path, f"<pre>x = 1</pre>{folded}<img src='fits.png' style='max-width: 100%'>")
    assert 'data-layout-probe="1 code blocks, 0 formulas, 1 figures"' in dom
    assert problems == []


def test_a_page_heavier_than_the_limit_is_reported(tmp_path, monkeypatch):
    from PIL import Image

    Image.new("RGB", (64, 64), "white").save(tmp_path / "a.png")
    body = '<img src="a.png"><img src="a.png">'
    assert not any("the page weighs" in p for p in problems_of(tmp_path, body))
    page_bytes = check_pages.page_weight(tmp_path / "page.html")
    assert page_bytes == (tmp_path / "page.html").stat().st_size + (tmp_path / "a.png").stat().st_size  # once
    monkeypatch.setattr(check_pages, "MAX_PAGE_BYTES", page_bytes - 1)
    assert any("the page weighs" in p for p in problems_of(tmp_path, body))


def test_a_displayed_formula_wider_than_the_column_is_reported_and_a_short_one_passes(tmp_path):
    head = ('<script>window.MathJax = {"options": {"processHtmlClass": "math"}}</script>'
            f'<script defer src="{MATHJAX}"></script>')
    long = " + ".join(f"x_{{{i}}}^2" for i in range(60))
    problems, dom = layout_problems(tmp_path, f'<div class="math notranslate nohighlight">\\[{long}\\]</div>'
                                              '<div class="math notranslate nohighlight">\\[a + b\\]</div>', head)
    assert 'data-layout-probe="0 code blocks, 2 formulas, 0 figures"' in dom
    overflowing = [p for p in problems if "a displayed formula is" in p]
    assert len(overflowing) == 1 and "x 0 2 + x 1 2" in overflowing[0], problems   # its text, as typeset
