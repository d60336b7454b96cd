"""Hand-typed figures in the book's prose: every measured-looking number in a markdown cell must
come from the code or be listed as quoted, with its source.

    python tests/prose_figures.py            # every chapter's typed figures that nothing backs

What counts as a measured-looking figure (in markdown, outside code, math and links):
a decimal (0.898), a percentage (95 %), a ratio (18.8×, 10x, 27 times), a time (47 s, 84 h, 35 ms) and a
count with a magnitude (31 M multiply-adds, 4 G).
Sizes written as "3 × 3" are dimensions, not ratios, and metric names such as mAP@0.5 are names:
neither is a figure.

A figure is backed when
  - it equals a number literal of the notebook's own code (a setting such as ``iou=0.5`` or an
    asserted bar such as ``assert map50 >= 0.85``; a percentage p also matches p / 100), or
  - the notebook's metadata lists it under ``quoted_figures`` with its source, e.g.
    ``{"quoted_figures": {"84 h": "Fast R-CNN paper, table 1 (R-CNN training time, VGG16)"}}``
    (a figure from a paper, a table or a slide, or a design budget; an entry whose figure no
    longer appears in the prose is stale and fails too).
Measured results reach the prose from the code instead: a hidden-input code cell that renders
Markdown (``IPython.display.Markdown``) or a myst-nb ``glue``.
A markdown file (``intro.md``) lists its quoted figures in a YAML front matter block.
"""
from __future__ import annotations

import io
import re
import sys
import tokenize
from pathlib import Path

import nbformat
import yaml

ROOT = Path(__file__).resolve().parents[1]

NUMBER = r"\d+(?:\.\d+)?"
FIGURE = re.compile(
    rf"(?<![\w.])(?:"
    rf"{NUMBER}\s?%"                                   # a percentage
    rf"|{NUMBER}\s?[×x](?!\s?\d)(?![\w])"              # a ratio, not a size "3 × 3"
    rf"|{NUMBER}\s(?:times)\b"                         # a ratio in words: 27 times fewer
    rf"|{NUMBER}\s?(?:ms|s|h|min|minutes?|seconds?|hours?)\b"   # a time
    rf"|{NUMBER}\s?[kMG]\b(?!-)"                      # a count: 31 M multiply-adds, 4 G
    rf"|\d+\.\d+"                                      # a decimal
    rf")(?![\w.]*\d)")
HIDDEN = [re.compile(p, re.S) for p in (
    r"```.*?```", r"~~~.*?~~~",                        # fenced code
    r"`[^`\n]*`",                                      # inline code
    r"\$\$.*?\$\$", r"\$[^$\n]+\$",                    # math
    r"<!--.*?-->",                                     # comments
    r"\]\([^)]*\)", r"https?://\S+",                   # link targets
    r"\{[a-z:-]+\}`[^`]*`",                            # roles
    r"@\[?[\d.:]+\]?",                                  # metric names: mAP@0.5, mAP@[.5:.95], recall@100
    r"\d+(?:\.\d+)?\s?×\s?\d+(?:\.\d+)?(?:\s?×\s?\d+(?:\.\d+)?)*",   # sizes "128 × 128"
)]


def value(figure: str) -> float:
    return float(re.match(NUMBER, figure).group(0))


def code_literals(sources: list[str]) -> set[float]:
    """Every number literal of the code cells (Python tokens; regex where a cell won't tokenize)."""
    found: set[float] = set()
    for source in sources:
        try:
            for tok in tokenize.generate_tokens(io.StringIO(source).readline):
                if tok.type == tokenize.NUMBER:
                    try:
                        found.add(float(tok.string.replace("_", "")))
                    except ValueError:
                        pass
        except (tokenize.TokenError, IndentationError, SyntaxError):
            found.update(float(m) for m in re.findall(NUMBER, source))
    return found


def typed_figures(markdown: str) -> list[tuple[str, str]]:
    """(figure, context) of every measured-looking figure in a markdown text."""
    text = markdown
    for pattern in HIDDEN:
        text = pattern.sub(" ", text)
    return [(m.group(0), " ".join(text[max(0, m.start() - 50):m.end() + 20].split())) for m in FIGURE.finditer(text)]


def unbacked(markdown_cells: list[tuple[str, str]], code: list[str], quoted: dict) -> list[str]:
    """Problems: figures neither in the code nor quoted; quoted entries without a source or stale.

    markdown_cells: (where, text) pairs; code: the code cells' sources; quoted: figure -> source.
    """
    literals = code_literals(code)
    literals |= {v * m for v in literals for m in (1e3, 1e6, 1e9)}   # 31_000_000 backs "31 M"
    problems, seen = [], set()
    for where, text in markdown_cells:
        for figure, context in typed_figures(text):
            key = " ".join(figure.split())
            seen.add(key)
            if key in quoted:
                continue
            v = value(figure) * {"k": 1e3, "M": 1e6, "G": 1e9}.get(figure.rstrip()[-1], 1)
            if v in literals or (figure.rstrip().endswith("%") and round(v / 100, 6) in literals):
                continue
            problems.append(f"{where}: hand-typed figure {figure!r} in '... {context} ...'")
    for key, source in quoted.items():
        if not str(source or "").strip():
            problems.append(f"quoted figure {key!r} lists no source")
        if key not in seen:
            problems.append(f"quoted figure {key!r} no longer appears in the prose (stale entry)")
    return problems


def notebook_problems(path: Path) -> list[str]:
    nb = nbformat.read(path, as_version=4)
    cells = [(f"{path.name} cell {i}", c.source) for i, c in enumerate(nb.cells) if c.cell_type == "markdown"]
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    return unbacked(cells, code, dict(nb.metadata.get("quoted_figures", {})))


def markdown_file_problems(path: Path) -> list[str]:
    text = path.read_text()
    quoted = {}
    if text.startswith("---\n"):
        front, text = text[4:].split("\n---\n", 1)
        quoted = (yaml.safe_load(front) or {}).get("quoted_figures", {}) or {}
    return unbacked([(path.name, text)], [], quoted)


def book_problems() -> list[str]:
    sys.path.insert(0, str(Path(__file__).parent))
    from notebook_tools import toc_documents

    problems = []
    for document in toc_documents():
        base = ROOT / document
        if base.with_suffix(".ipynb").exists():
            problems += notebook_problems(base.with_suffix(".ipynb"))
        elif base.with_suffix(".md").exists():
            problems += markdown_file_problems(base.with_suffix(".md"))
    return problems


if __name__ == "__main__":
    found = book_problems()
    print("\n".join(found) or "no unbacked hand-typed figure")
    sys.exit(1 if found else 0)
