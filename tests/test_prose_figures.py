"""No measured figure typed by hand in the book's prose: the check over every chapter, and the
check's own test (planted figures must fail it)."""
import nbformat
import pytest

import prose_figures as pf


def test_every_chapter_types_no_unbacked_figure():
    problems = pf.book_problems()
    assert not problems, "\n".join(problems)


def notebook(tmp_path, markdown, code="x = 1", quoted=None):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(markdown), nbformat.v4.new_code_cell(code)])
    if quoted is not None:
        nb.metadata["quoted_figures"] = quoted
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
