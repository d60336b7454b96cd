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

Claims in words. A phrase that puts a number in words, ranks, or gives a cause ("two orders of
magnitude", "a tenth", "twice", "most", "a few", "clearly", "far faster", "beats", "explains",
"the usual choice", "about a minute": ``CLAIMS`` lists the patterns) must be backed, in the
notebook's metadata ``backed_claims`` {quote: backing} (a markdown file: its front matter), where
the quote is the sentence's words around the phrase, as typed (spacing aside), and the backing
one of
  - ``"assert: <code>"``: a line of the notebook's code that asserts it contains <code>;
  - ``"source: <paper or document, with its table, section, figure or equation>"``;
  - ``"hypothesis: <why>"``: the sentence says it is one (may, might, we suspect, ...);
  - ``"not a measurement: <why>"``: the phrase states a definition, a setting or the code's
    shape, not a measured result (e.g. "half a pixel" of a coordinate convention).
A quote that no longer appears, that covers no flagged phrase, or whose code no longer asserts
it, is stale and fails. Computed prose (a remove-input cell rendering Markdown) is not checked.

    python tests/prose_figures.py book/X.ipynb      # one page: its unbacked figures and claims
    python tests/prose_figures.py --claims [PAGES]  # every flagged claim phrase: page, cell, phrase, sentence
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
    r"(?i)\b(?:sections?|§|tables?|figures?|fig\.|eq\.|equations?|appendix|chapter|algorithm)\s*[A-Z]?\d+(?:\.\d+)*",
    # a reference, not a figure: section 2.3, table 4, eq. 3
    r"\d+(?:\.\d+)?\s?×\s?\d+(?:\.\d+)?(?:\s?×\s?\d+(?:\.\d+)?)*",   # sizes "128 × 128"
)]


NUMBER_WORD = r"(?:two|three|four|five|six|seven|eight|nine|ten|a\s+hundred|a\s+thousand|several|many)"
CLAIMS = {  # name -> pattern (case-insensitive): phrases that put a number in words, rank, or give a cause
    "orders of magnitude": rf"\b(?:an?|one|{NUMBER_WORD})\s+orders?\s+of\s+magnitude\b",
    "a fraction in words": r"\b(?:a|one|two|three)\s+(?:half|halves|thirds?|quarters?|fifths?|tenths?|hundredths?)\b"
                           r"|\bhalf\s+(?:of|as|the|its|their|a|an)\b|\b(?:tenth|third|quarter)\s+or\s+so\b",
    "a multiple in words": rf"\b(?:twice|thrice|{NUMBER_WORD}\s+times|(?:two|three|four|five|ten|\d+)-?fold)\b",
    "most": r"(?<!\bat\s)\bmost\b",
    "a few, nearly all": r"\b(?:a\s+few|a\s+handful|nearly\s+all|almost\s+(?:all|every|none|no)|the\s+majority|"
                         r"a\s+minority|the\s+bulk|the\s+lion's\s+share)\b",
    "clearly": r"\bclearly\b",
    "an intensified comparison": r"\b(?:much|far|significantly|substantially|considerably|markedly|dramatically|"
                                 r"vastly|noticeably|slightly|barely)\s+(?:more|less|fewer|better|worse|"
                                 r"faster|slower|higher|lower|larger|smaller|longer|shorter|tighter|looser|"
                                 r"stronger|weaker|cheaper|closer)\b",
    "a ranking verb": r"\b(?:beats?|beaten|beating|outperforms?|outperformed|outperforming)\b",
    "a cause": r"\b(?:explains?|explained|this\s+is\s+why|that\s+is\s+why|which\s+is\s+why|the\s+reason\s+(?:is|why)|"
               r"(?:is|are|was|were)\s+due\s+to|thanks\s+to|because\s+of)\b",
    "the usual choice": r"\bthe\s+(?:usual|standard|common|typical|preferred|popular|go-to)\s+"
                        r"(?:choice|practice|way|setting|recipe)\b",
    "a time in words": r"\b(?:about|around|roughly|under|over|within|in|takes?|took|only)\s+(?:a|an|one|two|three|"
                       r"a\s+few|ten|twenty|thirty)\s+(?:seconds?|minutes?|hours?|days?)\b",
}
CLAIM = re.compile("|".join(f"(?P<c{i}>{p})" for i, p in enumerate(CLAIMS.values())), re.I)
HEDGES = re.compile(r"\b(?:may|might|could|hypothes[ie]s|suspect|presumably|perhaps|probably|likely|possibly|"
                    r"we\s+think|we\s+guess|plausibl[ey]|untested|not\s+tested)\b", re.I)
SOURCE_PART = re.compile(r"\b(?:table|section|sec\.|§|figure|fig\.|equation|eq\.|algorithm|appendix|issue|page|"
                         r"chapter|docs?|documentation)\b", re.I)
BACKINGS = ("assert:", "source:", "hypothesis:", "not a measurement:")


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


def visible_prose(markdown: str) -> str:
    """The text with code, math, comments and link targets blanked out, positions kept."""
    text = markdown
    for pattern in HIDDEN:
        text = pattern.sub(lambda m: re.sub(r"\S", " ", m.group(0)), text)
    return text


def typed_figures(markdown: str) -> list[tuple[str, str]]:
    """(figure, context) of every measured-looking figure in a markdown text."""
    text = visible_prose(markdown)
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


def sentence_at(text: str, start: int, end: int) -> str:
    """The sentence (or table row, or list item) around text[start:end], on one line."""
    left = max(text.rfind(". ", 0, start), text.rfind("\n\n", 0, start), text.rfind("\n|", 0, start),
               text.rfind("\n- ", 0, start))
    stops = [i for i in (text.find(". ", end), text.find("\n\n", end), text.find("\n|", end)) if i >= 0]
    right = min(stops) + 1 if stops else len(text)
    return " ".join(text[left + 1:right].split()).lstrip("|- ")


def claim_phrases(markdown: str) -> list[tuple[str, str, int, int]]:
    """(pattern name, phrase, start, end) of every flagged claim phrase of a markdown text."""
    names = list(CLAIMS)
    return [(names[int(next(k for k, v in m.groupdict().items() if v is not None)[1:])], m.group(0), m.start(),
             m.end()) for m in CLAIM.finditer(visible_prose(markdown))]


def _quote_pattern(quote: str) -> re.Pattern:
    return re.compile(r"\s+".join(re.escape(word) for word in quote.split()))


def _backing_problem(quote: str, backing: str, sentence: str, code: list[str]) -> str | None:
    """Why ``backing`` does not back the claim in ``sentence``; None when it does."""
    backing = str(backing or "").strip()
    kind = next((k for k in BACKINGS if backing.lower().startswith(k)), None)
    rest = backing[len(kind):].strip() if kind else ""
    if kind is None or not rest:
        return f"backing of {quote!r} must be one of {', '.join(k + ' ...' for k in BACKINGS)}, got {backing!r}"
    if kind == "assert:":
        lines = [" ".join(line.split()) for source in code for line in source.splitlines()]
        if not any("assert" in line and " ".join(rest.split()) in line for line in lines):
            return f"backing of {quote!r}: no line of the code asserts {rest!r} (stale?)"
    elif kind == "source:" and not SOURCE_PART.search(rest):
        return f"backing of {quote!r}: the source {rest!r} names no table, section, figure or equation"
    elif kind == "hypothesis:" and not HEDGES.search(sentence):
        return f"backing of {quote!r}: the sentence is not worded as a hypothesis: '{sentence}'"
    return None


def unbacked_claims(markdown_cells: list[tuple[str, str]], code: list[str], backed: dict) -> list[str]:
    """Problems: flagged claim phrases that no ``backed_claims`` entry covers, and entries that are
    stale (quote gone, covering no phrase) or whose backing does not hold."""
    problems, used = [], set()
    for where, text in markdown_cells:
        spans = [(quote, m.start(), m.end()) for quote in backed for m in _quote_pattern(quote).finditer(text)]
        for name, phrase, start, end in claim_phrases(text):
            covering = [quote for quote, a, b in spans if a <= start and end <= b]
            sentence = sentence_at(text, start, end)
            if not covering:
                problems.append(f"{where}: unbacked claim ({name}) {phrase!r} in '{sentence}'")
                continue
            for quote in covering:
                used.add(quote)
                problem = _backing_problem(quote, backed[quote], sentence, code)
                if problem:
                    problems.append(f"{where}: {problem}")
    for quote in backed:
        if quote not in used:
            problems.append(f"backed claim {quote!r} covers no flagged phrase of the prose (stale entry)")
    return problems


def _notebook_parts(path: Path):
    nb = nbformat.read(path, as_version=4)
    cells = [(f"{path.name} cell {i}", c.source) for i, c in enumerate(nb.cells) if c.cell_type == "markdown"]
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    return nb, cells, code


def notebook_problems(path: Path) -> list[str]:
    nb, cells, code = _notebook_parts(path)
    return (unbacked(cells, code, dict(nb.metadata.get("quoted_figures", {})))
            + unbacked_claims(cells, code, dict(nb.metadata.get("backed_claims", {}))))


def markdown_file_problems(path: Path) -> list[str]:
    text = path.read_text()
    quoted = {}
    if text.startswith("---\n"):
        front, text = text[4:].split("\n---\n", 1)
        meta = yaml.safe_load(front) or {}
        quoted = meta.get("quoted_figures", {}) or {}
        backed = meta.get("backed_claims", {}) or {}
    else:
        backed = {}
    return unbacked([(path.name, text)], [], quoted) + unbacked_claims([(path.name, text)], [], backed)


def book_pages() -> list[Path]:
    """Every page of _toc.yml: its notebook, or its markdown file."""
    sys.path.insert(0, str(Path(__file__).parent))
    from notebook_tools import toc_documents

    pages = []
    for document in toc_documents():
        base = ROOT / document
        for suffix in (".ipynb", ".md"):
            if base.with_suffix(suffix).exists():
                pages.append(base.with_suffix(suffix))
                break
    return pages


def page_problems(path: Path) -> list[str]:
    path = Path(path)
    return notebook_problems(path) if path.suffix == ".ipynb" else markdown_file_problems(path)


def book_problems() -> list[str]:
    return [problem for page in book_pages() for problem in page_problems(page)]


def claim_hits(path: Path) -> list[tuple[str, str, str, bool]]:
    """(where, phrase, sentence, backed) of every flagged claim phrase of a page."""
    path = Path(path)
    if path.suffix == ".ipynb":
        nb, cells, _ = _notebook_parts(path)
        backed = dict(nb.metadata.get("backed_claims", {}))
    else:
        text = path.read_text()
        backed = {}
        if text.startswith("---\n"):
            front, text = text[4:].split("\n---\n", 1)
            backed = (yaml.safe_load(front) or {}).get("backed_claims", {}) or {}
        cells = [(path.name, text)]
    hits = []
    for where, text in cells:
        spans = [(m.start(), m.end()) for quote in backed for m in _quote_pattern(quote).finditer(text)]
        for _, phrase, start, end in claim_phrases(text):
            hits.append((where, phrase, sentence_at(text, start, end), any(a <= start and end <= b for a, b in spans)))
    return hits


if __name__ == "__main__":
    args = sys.argv[1:]
    if args and args[0] == "--claims":
        for page in [Path(a) for a in args[1:]] or book_pages():
            for where, phrase, sentence, backed in claim_hits(page):
                print(f"{where}\t{phrase!r}\t{'backed' if backed else 'UNBACKED'}\t{sentence}")
        sys.exit(0)
    found = [problem for page in args for problem in page_problems(Path(page))] if args else book_problems()
    print("\n".join(found) or "no unbacked hand-typed figure or claim")
    sys.exit(1 if found else 0)
