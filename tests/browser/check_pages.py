"""Open every page of the built book in headless Chromium and check what a reader would see.

    python tests/browser/check_pages.py [_build/html] [--screenshots DIR]   # (make screenshots)

For each document in _toc.yml the page must exist, and Chromium loads it (JavaScript runs,
MathJax typesets) with every request to the network blocked (the book must read offline). A page
fails on:

- a JavaScript error (an uncaught exception) or a resource that failed to load, from Chromium's
  console log; a request to the network is one of those, whatever made it (a script, a
  stylesheet, a font in a CSS ``url()``, an ``srcset``, an iframe, fetch or XHR);
- a reference to the network in the DOM (``src``, ``href`` of a stylesheet, ``srcset``, an
  inline ``url()``), named even where the browser did not get to load it;
- an empty article, a rendered traceback or stderr block (a stored error or warning);
- math that MathJax did not typeset, or typeset as an error;
- a local image that is missing or does not decode;
- an internal link to a missing page or to an anchor that the page does not have;
- at the width of a laptop's window (1280 px), a code block or a displayed formula wider than the
  text column (the reader would scroll sideways, or lose its end) or a figure shrunk more than ``MAX_SHRINK`` times to fit it (its
  labels too small to read), as measured in the page by book/_static/layout_probe.js;
- a page heavier than ``MAX_PAGE_BYTES`` with its local images;
- an in-page interactive figure (``lessons_pkg.interactive.frame_slider``) whose self-test, run
  with its URL fragment, does not report that moving each control changed what it draws.

Exit code 1 on any problem, with one line per problem. tests/test_browser_check.py plants each
fault in a small page and checks that it is reported.
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from functools import lru_cache
from pathlib import Path
from urllib.parse import unquote, urlparse

from bs4 import BeautifulSoup
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from notebook_tools import toc_documents  # noqa: E402

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--virtual-time-budget=15000", "--window-size=1280,2400",
                  # every host name fails to resolve: a request to the network cannot succeed, and
                  # Chromium logs it as a failed resource
                  "--host-resolver-rules=MAP * ~NOTFOUND",
                  "--enable-logging=stderr", "--v=0"]
MIN_ARTICLE_CHARS = 200
SELFTEST_FRAGMENT = "frame-slider-selftest"  # lessons_pkg.interactive.SELFTEST_FRAGMENT
LAYOUT_FRAGMENT = "layout-probe"              # book/_static/layout_probe.js
# Matplotlib's 10-point text is 14 px at the notebooks' 100 dpi: shrunk more than 1.6 times it is
# under 9 px on the page, too small to read. A wider figure is split in two, or drawn narrower,
# or its cell tagged full-width (the column and the right margin, 1.36 times the column).
MAX_SHRINK = 1.6
# A page with its images stays light enough to open on a slow connection (the interactive figures
# carry their frames inside the page).
MAX_PAGE_BYTES = 4 * 2**20
CONSOLE = re.compile(r':CONSOLE[^\]]*\] "(?P<message>.*)", source: (?P<source>\S*)')
CONSOLE_ERRORS = ("Uncaught", "Failed to load resource", "net::ERR_")
NETWORK_URL = re.compile(r"""url\(\s*['"]?\s*(?:https?:)?//""", re.IGNORECASE)


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    raise SystemExit("Chromium not found: install it (Debian: apt-get install -y chromium)")


class Rendered(str):
    """The DOM Chromium serialized, with ``console_errors``: the error lines of its console log."""
    console_errors: list[str]


def render(page: Path, screenshot: Path | None = None, fragment: str = "") -> Rendered:
    """The DOM of ``page`` after Chromium ran its scripts, and its console errors (and optionally
    full-page screenshots in the light and the dark theme)."""
    with tempfile.TemporaryDirectory() as profile:
        args = [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}"]
        url = page.as_uri() + (f"#{fragment}" if fragment else "")
        result = subprocess.run(args + ["--dump-dom", url], capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"Chromium failed on {page}: {result.stderr[-500:]}")
        if screenshot is not None:   # both themes: the book follows the reader's colour scheme
            for theme, flags in (("light", []), ("dark", ["--force-dark-mode"])):
                shot = screenshot.with_name(f"{screenshot.stem}-{theme}.png")
                subprocess.run(args + flags + [f"--screenshot={shot}", page.as_uri()],
                               capture_output=True, timeout=120)
    dom = Rendered(result.stdout)
    dom.console_errors = [f"{m['message']} ({m['source']})" for m in CONSOLE.finditer(result.stderr)
                          if m["message"].startswith(CONSOLE_ERRORS)]
    return dom


def is_network(url: str) -> bool:
    return urlparse(url).scheme in ("http", "https") or url.startswith("//")


@lru_cache(maxsize=None)
def anchors_of(page: Path) -> frozenset[str]:
    """The ids (and old-style names) a built page defines, from its file."""
    soup = BeautifulSoup(page.read_text(errors="replace"), "html.parser")
    return frozenset([n["id"] for n in soup.find_all(id=True)] + [n["name"] for n in soup.find_all("a", attrs={"name": True})])


def check_page(page: Path, dom: str) -> list[str]:
    problems = [f"{page}: JavaScript console: {e}" for e in getattr(dom, "console_errors", [])]
    soup = BeautifulSoup(dom, "html.parser")
    article = soup.select_one("article") or soup.select_one("main")
    text = article.get_text(" ", strip=True) if article else ""
    if len(text) < MIN_ARTICLE_CHARS:
        problems.append(f"{page}: the article is empty or nearly so ({len(text)} characters)")
    for block in soup.select(".output.traceback, .output.error, .output.stderr"):
        kind = "stderr" if "stderr" in block.get("class", []) else "traceback"
        problems.append(f"{page}: a rendered {kind} block: {block.get_text(' ', strip=True)[:120]!r}")
    # the network: every attribute that loads something, and inline CSS
    for node in soup.find_all(True):
        for attr in ("src", "srcset", "data", "poster"):
            value = node.get(attr)
            if not value:
                continue
            urls = [part.strip().split(" ")[0] for part in value.split(",")] if attr == "srcset" else [value]
            for url in urls:
                if is_network(url):
                    problems.append(f"{page}: <{node.name} {attr}> loads {url} from the network (the book must read offline)")
        if node.name == "link" and is_network(node.get("href", "")) and \
                set(node.get("rel") or []) & {"stylesheet", "preload", "modulepreload", "icon"}:
            problems.append(f"{page}: <link> loads {node['href']} from the network (the book must read offline)")
        style = node.get("style", "") + (node.string or "" if node.name == "style" else "")
        if NETWORK_URL.search(style):
            problems.append(f"{page}: CSS url() on <{node.name}> points at the network")
    for img in soup.find_all("img"):
        url = img.get("src")
        if not url or url.startswith("data:") or is_network(url):
            continue
        target = (page.parent / unquote(urlparse(url).path)).resolve()
        if not target.is_file():
            problems.append(f"{page}: image {url} is missing")
            continue
        try:
            with Image.open(target) as im:
                im.verify()
        except Exception as e:
            problems.append(f"{page}: image {url} does not decode: {e}")
    weight = page_weight(page)
    if weight > MAX_PAGE_BYTES:
        problems.append(f"{page}: the page weighs {weight / 2**20:.1f} MB with its images (at most "
                        f"{MAX_PAGE_BYTES / 2**20:.0f} MB)")
    # internal links and their anchors
    for a in soup.find_all("a", href=True):
        href = a["href"]
        parsed = urlparse(href)
        if parsed.scheme or href.startswith(("//", "mailto:", "javascript:")):
            continue
        target = page if not parsed.path else (page.parent / unquote(parsed.path)).resolve()
        if not target.exists():
            problems.append(f"{page}: link {href} points at a missing file")
        elif parsed.fragment and target.suffix == ".html" and not parsed.fragment.startswith(SELFTEST_FRAGMENT):
            ids = anchors_of(target) | ({n["id"] for n in soup.find_all(id=True)} if target == page else set())
            if unquote(parsed.fragment) not in ids:
                problems.append(f"{page}: link {href} points at an anchor that {target.name} does not have")
    # math: every formula typeset, none as an error
    formulas = soup.select(".math")
    if formulas and not soup.find("mjx-container"):
        problems.append(f"{page}: has math but MathJax typeset none of it (is mathjax/tex-svg.js served?)")
    else:
        untypeset = [f for f in formulas if not f.find("mjx-container") and f.name != "mjx-container"]
        if untypeset:
            problems.append(f"{page}: {len(untypeset)} formula(s) not typeset, the first: "
                            f"{untypeset[0].get_text(strip=True)[:80]!r}")
    for error in soup.select("mjx-merror, [data-mjx-error]"):
        problems.append(f"{page}: MathJax error: {error.get('data-mjx-error') or error.get_text(strip=True)[:80]}")
    # the layout, as the probe measured it (only when the page was opened with its fragment)
    for block in soup.select("pre[data-overflow]"):
        first = block.get_text().strip().splitlines()[0][:60] if block.get_text().strip() else ""
        problems.append(f"{page}: a code block is {block['data-overflow']} px wider than the column: {first!r}")
    for math in soup.select("mjx-container[data-overflow]"):
        source = math.find_parent(class_="math")
        text = source.get_text(" ", strip=True)[:60] if source else ""
        problems.append(f"{page}: a displayed formula is {math['data-overflow']} px wider than the column (break "
                        f"it with aligned): {text!r}")
    for img in soup.select("img[data-shrink]"):
        if float(img["data-shrink"]) > MAX_SHRINK:
            name = img.get("src", "")[:60] if not img.get("src", "").startswith("data:") else "an inline image"
            problems.append(f"{page}: figure {name} is shrunk {img['data-shrink']}x to fit the column (at most "
                            f"{MAX_SHRINK}x keeps its text readable): split it, draw it narrower or tag it full-width")
    for figure in soup.select(".frame-slider"):
        if figure.get("data-selftest") is not None and figure.get("data-selftest") != "ok":
            problems.append(f"{page}: interactive figure {figure.get('id')}: moving a control did not change "
                            f"what it draws ({figure.get('data-selftest')})")
    return problems


@lru_cache(maxsize=None)
def page_weight(page: Path) -> int:
    """Bytes of the page's HTML and of the local images it shows (each once); read once per
    page (the check and its progress line both ask)."""
    soup = BeautifulSoup(page.read_text(errors="replace"), "html.parser")
    images = {(page.parent / unquote(urlparse(img["src"]).path)).resolve() for img in soup.find_all("img", src=True)
              if not img["src"].startswith("data:") and not is_network(img["src"])}
    return page.stat().st_size + sum(i.stat().st_size for i in images if i.is_file())


def check_interactive(page: Path, dom: str) -> list[str]:
    """Load ``page`` again with the self-test fragment: every interactive figure moves each of its
    controls and reports whether what it draws changed."""
    figures = BeautifulSoup(dom, "html.parser").select(".frame-slider")
    if not figures:
        return []
    tested_dom = render(page, fragment=SELFTEST_FRAGMENT)
    tested = BeautifulSoup(tested_dom, "html.parser").select(".frame-slider")
    silent = [f.get("id") for f in tested if f.get("data-selftest") is None]
    problems = []
    if len(tested) != len(figures) or silent:
        problems.append(f"{page}: {len(silent) or len(figures)} interactive figure(s) ran no self-test")
    return problems + [p for p in check_page(page, tested_dom) if "interactive figure" in p]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("html_dir", nargs="?", default=str(ROOT / "_build" / "html"))
    parser.add_argument("--screenshots", help="also save a screenshot of each page, light and dark theme, "
                                              "into this folder (PAGE-light.png, PAGE-dark.png)")
    args = parser.parse_args()
    html_dir = Path(args.html_dir).resolve()
    shots = Path(args.screenshots) if args.screenshots else None
    if shots:
        shots.mkdir(parents=True, exist_ok=True)

    problems = []
    pages = [html_dir / f"{doc}.html" for doc in toc_documents()]
    for page in pages:
        if not page.is_file():
            problems.append(f"{page}: not built")
            continue
        shot = shots / (page.stem + ".png") if shots else None
        dom = render(page, shot, fragment=LAYOUT_FRAGMENT)
        if 'data-layout-probe="' not in dom:
            problems.append(f"{page}: the layout probe (book/_static/layout_probe.js) did not run")
        problems += check_page(page, dom) + check_interactive(page, dom)
        print(f"checked {page.relative_to(html_dir)} ({page_weight(page) / 2**20:.2f} MB with its images)",
              flush=True)
    if problems:
        print("\n".join(problems))
        return 1
    print(f"browser check: {len(pages)} pages render offline, without errors, with their images, links, math "
          "and interactive figures")
    return 0


if __name__ == "__main__":
    sys.exit(main())
