"""No measured figure typed by hand in the book's prose: the check over every chapter, and the
check's own test (planted figures must fail it)."""
import nbformat
import pytest

import prose_figures as pf


@pytest.mark.parametrize("page", pf.book_pages(), ids=lambda page: page.name)
def test_every_chapter_types_no_unbacked_figure_or_claim(page):
    problems = pf.page_problems(page)
    assert not problems, "\n".join(problems)


def notebook(tmp_path, markdown, code="x = 1", quoted=None, backed=None):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(markdown), nbformat.v4.new_code_cell(code)])
    if quoted is not None:
        nb.metadata["quoted_figures"] = quoted
    if backed is not None:
        nb.metadata["backed_claims"] = backed
    path = tmp_path / "chapter.ipynb"
    nbformat.write(nb, path)
    return pf.notebook_problems(path)


@pytest.mark.parametrize("planted", ["mAP@0.5 reached 0.93 after training", "it misses 1.4 % of the objects",
                                     "18.8× fewer multiply-adds", "27 times fewer boxes", "R-CNN takes 47 s per image",
                                     "a backbone of 31 M multiply-adds", "84 h of training"])
def test_a_planted_hand_typed_figure_fails(tmp_path, planted):
    problems = notebook(tmp_path, f"Some prose. {planted}, as measured.")
    assert len(problems) == 1 and "hand-typed figure" in problems[0] and "chapter.ipynb cell 0" in problems[0]


def test_what_backs_a_figure(tmp_path):
    # a setting or asserted bar of the notebook's own code
    assert notebook(tmp_path, "IoU ≥ 0.5 and a bar of mAP ≥ 0.85", "assert m >= 0.85 and iou(0.5)") == []
    assert notebook(tmp_path, "over 90 % of the objects", "assert share > 0.9") == []
    assert notebook(tmp_path, "about 31 M multiply-adds", "assert macs < 31_000_000") == []
    # quoted, with its source
    assert notebook(tmp_path, "R-CNN trains in 84 h", quoted={"84 h": "Fast R-CNN paper, table 4"}) == []
    # not figures: sizes, code, math, links
    assert notebook(tmp_path, "a 3 × 3 conv on a 128 × 128 image, `lr=0.003`, $p = 0.99$, "
                              "[link](https://x.org/v1.5)") == []
    # nor references to a paper's parts
    assert notebook(tmp_path, "Fast R-CNN (section 2.3, table 4.1, eq. 3.2) normalizes its targets") == []


def test_quoted_entries_need_a_source_and_must_still_be_used(tmp_path):
    assert any("lists no source" in p for p in notebook(tmp_path, "took 84 h", quoted={"84 h": ""}))
    problems = notebook(tmp_path, "no figure here", quoted={"84 h": "a paper"})
    assert problems == ["quoted figure '84 h' no longer appears in the prose (stale entry)"]


def test_a_markdown_page_lists_its_quoted_figures_in_front_matter(tmp_path):
    page = tmp_path / "intro.md"
    page.write_text("---\nquoted_figures:\n  47 s: Fast R-CNN paper, table 4\n---\n# Intro\nR-CNN: 47 s per image.\n")
    assert pf.markdown_file_problems(page) == []
    page.write_text("# Intro\nOur detector reaches 0.93.\n")
    assert len(pf.markdown_file_problems(page)) == 1


# ----------------------------------------------------------------------------- claims in words
PLANTED_CLAIMS = {  # pattern -> a planted sentence it must catch (the phrase it flags)
    "orders of magnitude": ("CenterNet is two orders of\nmagnitude faster than R-CNN.", "two orders of\nmagnitude"),
    "a fraction in words": ("The focal loss misses a tenth of the objects.", "a tenth"),
    "a multiple in words": ("SSD trains twice as fast as YOLO.", "twice"),
    "most": ("The focal loss finds the most objects.", "most"),
    "a few, nearly all": ("CenterNet makes a few more mistakes than SSD.", "a few"),
    "clearly": ("Bilinear upsampling scores clearly higher.", "clearly"),
    "an intensified comparison": ("Its boxes are far tighter and much faster to train.", "much faster"),
    "a ranking verb": ("SSDLite beats our SSD on accuracy.", "beats"),
    "a cause": ("Two differences explain it.", "explain"),
    "the usual choice": ("Sub-pixel convolution is the usual choice in modern decoders.", "the usual choice"),
    "a time in words": ("It trains to quality in about a minute.", "about a minute"),
}


def test_every_claim_pattern_is_proven_on_a_planted_sentence():
    assert set(PLANTED_CLAIMS) == set(pf.CLAIMS), "a pattern without its planted sentence"


@pytest.mark.parametrize("name", sorted(PLANTED_CLAIMS))
def test_a_planted_claim_in_words_fails(tmp_path, name):
    sentence, phrase = PLANTED_CLAIMS[name]
    problems = notebook(tmp_path, f"Some prose first. {sentence} More prose.")
    assert any(f"unbacked claim ({name}) {phrase!r}" in p for p in problems), problems
    assert all("chapter.ipynb cell 0" in p for p in problems)


def test_not_claims_in_words(tmp_path):
    # a bound, code, math, and words that only look like the patterns
    assert notebook(tmp_path, "At most 100 detections per image; `most_common()`; $\\frac{1}{2}$; "
                              "the [fastest](https://x.org/most) link; a box with half-open intervals.") == []


def test_what_backs_a_claim(tmp_path):
    sentence = "The focal loss finds the most objects at IoU 0.5."
    code = "iou = 0.5\nrecall = measure(iou)\nassert recall['focal'] == max(recall.values())"
    quote = "finds the most objects"
    # the code that asserts it
    assert notebook(tmp_path, sentence, code, backed={quote: "assert: recall['focal'] == max(recall.values())"}) == []
    # a source with its table or section
    assert notebook(tmp_path, "Deformable DETR trains ten times faster.",
                    backed={"trains ten times faster": "source: Zhu et al. 2021, section 1"}) == []
    # a hypothesis worded as one
    assert notebook(tmp_path, "We suspect this explains the looser boxes.",
                    backed={"this explains the looser boxes": "hypothesis: untested, said so"}) == []
    # a definition or a setting, not a measurement
    assert notebook(tmp_path, "With True, the grid is off by half of a pixel.",
                    backed={"half of a pixel": "not a measurement: the coordinate convention's definition"}) == []


def test_a_backing_that_does_not_hold_fails(tmp_path):
    sentence = "The focal loss finds the most objects."
    quote = "finds the most objects"
    problems = notebook(tmp_path, sentence, "recall = 1", backed={quote: "assert: recall['focal'] == 1"})
    assert any("no line of the code asserts" in p for p in problems)            # the assert is gone: stale
    problems = notebook(tmp_path, sentence, "# recall['focal'] == 1", backed={quote: "assert: recall['focal'] == 1"})
    assert any("no line of the code asserts" in p for p in problems)            # in the code, but not asserted
    problems = notebook(tmp_path, sentence, backed={quote: "source: a paper"})
    assert any("names no table, section" in p for p in problems)
    problems = notebook(tmp_path, sentence, backed={quote: "hypothesis: it is"})
    assert any("not worded as a hypothesis" in p for p in problems)
    problems = notebook(tmp_path, sentence, backed={quote: "because I say so"})
    assert any("must be one of" in p for p in problems)
    problems = notebook(tmp_path, sentence, backed={quote: "not a measurement:"})
    assert any("must be one of" in p for p in problems)                         # a kind without its reason


def test_a_stale_backed_claim_fails(tmp_path):
    problems = notebook(tmp_path, "The focal loss finds more objects.", backed={"finds the most objects": "source: x, table 1"})
    assert problems == ["backed claim 'finds the most objects' covers no flagged phrase of the prose (stale entry)"]
    problems = notebook(tmp_path, "The focal loss finds objects.", backed={"finds objects": "source: x, table 1"})
    assert problems == ["backed claim 'finds objects' covers no flagged phrase of the prose (stale entry)"]


def test_a_quote_backs_only_the_phrases_inside_it(tmp_path):
    problems = notebook(tmp_path, "Most boxes are small, and most of them are squares.",
                        backed={"Most boxes are small": "not a measurement: planted"})
    assert len(problems) == 1 and "unbacked claim (most) 'most'" in problems[0]


def test_a_markdown_page_lists_its_backed_claims_in_front_matter(tmp_path):
    page = tmp_path / "intro.md"
    page.write_text("---\nbacked_claims:\n  ten times faster: 'source: Zhu et al. 2021, section 1'\n---\n"
                    "# Intro\nIt trains ten times faster.\n")
    assert pf.markdown_file_problems(page) == []
    page.write_text("# Intro\nIt trains ten times faster.\n")
    assert len(pf.markdown_file_problems(page)) == 1


@pytest.mark.slow   # a subprocess that imports the package
def test_one_page_can_be_checked_from_the_command_line(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("It is clearly better.")])
    nbformat.write(nb, tmp_path / "page.ipynb")
    script = Path(pf.__file__)
    run = subprocess.run([sys.executable, str(script), str(tmp_path / "page.ipynb")], capture_output=True, text=True)
    assert run.returncode == 1 and "unbacked claim (clearly)" in run.stdout
