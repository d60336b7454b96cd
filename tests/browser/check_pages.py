"""Open every page of the built book in headless Chromium and check what a reader would see.

    python tests/browser/check_pages.py [_build/html] [--screenshots DIR]

For each document in _toc.yml the page must exist; Chromium loads it (JavaScript runs, MathJax
typesets) and the rendered DOM must have a non-empty article, every image must point at a
local file that decodes as an image, no script, stylesheet or image may come from the network
(the book must read offline), and a page with math must show typeset formulas. Exit code 1 on
any problem, with one line per problem.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlparse

from bs4 import BeautifulSoup
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from notebook_tools import toc_documents  # noqa: E402

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--virtual-time-budget=15000"]
MIN_ARTICLE_CHARS = 200


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    raise SystemExit("Chromium not found: install it (Debian: apt-get install -y chromium)")


def render(page: Path, screenshot: Path | None = None) -> str:
    """The DOM of ``page`` after Chromium ran its scripts (and optionally a full-page screenshot)."""
    with tempfile.TemporaryDirectory() as profile:
        args = [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}"]
        result = subprocess.run(args + ["--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"Chromium failed on {page}: {result.stderr[-500:]}")
        if screenshot is not None:
            subprocess.run(args + [f"--screenshot={screenshot}", "--window-size=1280,2400", page.as_uri()],
                           capture_output=True, timeout=120)
    return result.stdout


def check_page(page: Path, dom: str) -> list[str]:
    problems = []
    soup = BeautifulSoup(dom, "html.parser")
    article = soup.select_one("article") or soup.select_one("main")
    text = article.get_text(" ", strip=True) if article else ""
    if len(text) < MIN_ARTICLE_CHARS:
        problems.append(f"{page}: the article is empty or nearly so ({len(text)} characters)")
    for tag, attr in (("img", "src"), ("script", "src"), ("link", "href")):
        for node in soup.find_all(tag):
            url = node.get(attr)
            if not url or url.startswith("data:"):
                continue
            parsed = urlparse(url)
            if parsed.scheme in ("http", "https") or url.startswith("//"):
                if tag != "link" or "stylesheet" in (node.get("rel") or []) or "preload" in (node.get("rel") or []):
                    problems.append(f"{page}: <{tag}> loads {url} from the network (the book must read offline)")
                continue
            if tag != "img":
                continue
            target = (page.parent / unquote(parsed.path)).resolve()
            if not target.is_file():
                problems.append(f"{page}: image {url} is missing")
                continue
            try:
                with Image.open(target) as im:
                    im.verify()
            except Exception as e:
                problems.append(f"{page}: image {url} does not decode: {e}")
    has_math = bool(soup.select(".math"))
    if has_math and not soup.find("mjx-container"):
        problems.append(f"{page}: has math but MathJax typeset none of it (is mathjax/tex-svg.js served?)")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("html_dir", nargs="?", default=str(ROOT / "_build" / "html"))
    parser.add_argument("--screenshots", help="also save a screenshot of each page into this folder")
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
        problems += check_page(page, render(page, shot))
        print(f"checked {page.relative_to(html_dir)}", flush=True)
    if problems:
        print("\n".join(problems))
        return 1
    print(f"browser check: {len(pages)} pages render with their images, articles and math, offline")
    return 0


if __name__ == "__main__":
    sys.exit(main())
