"""The book's notebooks: listed in the TOC, executed with stored outputs, no stored errors.

nbval then re-runs each of them (see `make test`)."""
from pathlib import Path

import nbformat
import pytest

from notebook_tools import ROOT, book_notebooks, stored_output_problems, toc_documents, toc_notebooks


def test_every_toc_entry_exists():
    for document in toc_documents():
        assert any((ROOT / document).with_suffix(s).is_file() for s in (".md", ".ipynb")), document


def test_every_book_notebook_is_in_the_toc():
    missing = set(book_notebooks()) - set(toc_notebooks())
    assert not missing, f"notebooks missing from _toc.yml: {sorted(map(str, missing))}"


@pytest.mark.parametrize("notebook", toc_notebooks(), ids=str)
def test_stored_outputs(notebook):
    assert not stored_output_problems(notebook)


def asserts(source: str) -> bool:
    """Whether a code cell holds an assert statement (not the word in a comment or a string);
    IPython's magics and shell lines are left out before parsing."""
    import ast
    lines = [line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))]
    try:
        tree = ast.parse("\n".join(lines))
    except SyntaxError:
        return False
    return any(isinstance(node, ast.Assert) for node in ast.walk(tree))


def test_an_assert_in_a_comment_or_string_is_not_an_assert():
    assert asserts("x = 1\nassert x == 1")
    assert asserts("%matplotlib inline\nfor i in range(2):\n    assert i < 2")
    assert not asserts("x = 1  # assert that x is one")
    assert not asserts('print("we assert nothing")')


@pytest.mark.parametrize("notebook", toc_notebooks(), ids=str)
def test_notebook_rules(notebook):
    nb = nbformat.read(ROOT / notebook, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert any(asserts(c.source) for c in code), "a chapter asserts the numbers it claims"
    assert not any("# NBVAL_" in c.source for c in code), "use cell tags, not # NBVAL_ comments"
    assert "widgets" not in nb.metadata, "saved widget state needs CDN JavaScript: run `make execute`"
    assert any("nbval-check-output" in c.metadata.get("tags", []) for c in code)


def test_stored_output_check_catches_problems(tmp_path, monkeypatch):
    import notebook_tools
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1/0"), nbformat.v4.new_code_cell("x = 1"),
                                         nbformat.v4.new_code_cell("plt.title('t')"),
                                         nbformat.v4.new_code_cell("subprocess.run(...)")])
    nb.cells[3].execution_count = 3
    nb.cells[3].outputs = [nbformat.v4.new_output("stream", name="stderr",
                                                  text="Traceback (most recent call last):\n  ...\nValueError: x\n")]
    nb.cells[0].execution_count = 1
    nb.cells[0].outputs = [nbformat.v4.new_output("error", ename="ZeroDivisionError", evalue="division by zero")]
    nb.cells[2].execution_count = 2
    nb.cells[2].outputs = [nbformat.v4.new_output("execute_result", data={"text/plain": "Text(0.5, 1.0, 't')"},
                                                  execution_count=2)]
    nbformat.write(nb, tmp_path / "nb.ipynb")
    monkeypatch.setattr(notebook_tools, "ROOT", tmp_path)
    problems = notebook_tools.stored_output_problems(Path("nb.ipynb"))
    assert any("stores an error: ZeroDivisionError" in p for p in problems)
    assert any("cell 1 has no stored output" in p for p in problems)
    assert any("cell 2 shows a stray repr" in p for p in problems)
    assert any("cell 3 stores a traceback on stderr" in p for p in problems)


CLOSING_PAGES = {"book/what_came_after.ipynb"}   # text and figures only: no exercise


@pytest.mark.parametrize("notebook", [n for n in toc_notebooks() if str(n) not in CLOSING_PAGES], ids=str)
def test_every_chapter_has_an_exercise_to_write_and_no_solution_after_it(notebook):
    """A write-it exercise: a stub that raises NotImplementedError, handed to a checker. A cell that
    asserts a checker passes is a solution; solutions sit only at the chapter's end, folded
    (``exercises.show_solution``)."""
    nb = nbformat.read(ROOT / notebook, as_version=4)
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    assert any("raise NotImplementedError" in s and "exercises.check_" in s for s in code), \
        "no exercise where the reader writes a function from a stub"
    shown = [s for s in code if "assert exercises.check_" in s]
    assert not shown, f"a solution in the chapter's flow: {shown[0][:80]!r}"
    solutions = [i for i, s in enumerate(code) if "exercises.show_solution(" in s]
    exercises = [i for i, s in enumerate(code) if "exercises.check_" in s]
    assert solutions and min(solutions) > max(exercises), "worked solutions belong at the chapter's end"


@pytest.mark.parametrize("notebook", toc_notebooks(), ids=str)
def test_every_widget_has_an_in_page_twin(notebook):
    """An ipywidgets slider needs a kernel; the rendered book has none. A chapter with one also
    shows an interactive.frame_slider, which the browser check drives."""
    nb = nbformat.read(ROOT / notebook, as_version=4)
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    if any("widgets.interact" in s for s in code):
        assert any("interactive.frame_slider(" in s for s in code), "a widget without its in-page twin"


HIDDEN_INPUT_TAGS = {"remove-input", "hide-input", "remove-cell"}
COLUMN = 88   # ruff's line length: the width the rendered code blocks show without scrolling


def lines_past_the_column(nb: nbformat.NotebookNode) -> list[str]:
    """'cell I (N chars): LINE' for each line longer than COLUMN in a code cell the reader sees."""
    return [f"cell {i} ({len(line)} chars): {line}"
            for i, cell in enumerate(nb.cells)
            if cell.cell_type == "code" and not HIDDEN_INPUT_TAGS & set(cell.metadata.get("tags", []))
            for line in cell.source.splitlines() if len(line) > COLUMN]


@pytest.mark.parametrize("notebook", toc_notebooks(), ids=str)
def test_visible_teaching_code_fits_the_column(notebook):
    """Teaching code wraps at 88 characters, so the reader never scrolls sideways to read it."""
    long = lines_past_the_column(nbformat.read(ROOT / notebook, as_version=4))
    assert not long, f"{notebook}: visible code lines over {COLUMN} characters:\n" + "\n".join(long)


def test_fits_the_column_check_flags_a_planted_line():
    planted = "x = " + "1" * 96   # 100 characters
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("y = 1"),
                                         nbformat.v4.new_code_cell("z = 2\n" + planted),
                                         nbformat.v4.new_markdown_cell(planted),
                                         nbformat.v4.new_code_cell(planted, metadata={"tags": ["remove-input"]}),
                                         nbformat.v4.new_code_cell("w = " + "1" * 84)])   # exactly 88: fits
    assert lines_past_the_column(nb) == [f"cell 1 (100 chars): {planted}"]
