"""The order the suite runs its files in (tests/conftest.py): notebooks, then the longest files
longest first, then the rest as collected."""
from pathlib import Path
from types import SimpleNamespace

from conftest import LONGEST_FILES, run_order

TESTS = Path(__file__).resolve().parent


def test_every_longest_file_exists():
    """A renamed file would silently lose its place at the front."""
    assert [name for name in LONGEST_FILES if not (TESTS / name).is_file()] == []


def test_notebooks_then_the_longest_files_then_the_rest():
    paths = ["tests/test_boxes.py", "tests/test_checkpoints_dense.py", "book/intro.ipynb",
             "tests/test_checkpoints_region_based.py", "tests/test_ops.py"]
    items = [SimpleNamespace(path=Path(p)) for p in paths]
    assert [i.path.as_posix() for i in sorted(items, key=run_order)] == [
        "book/intro.ipynb", "tests/test_checkpoints_region_based.py", "tests/test_checkpoints_dense.py",
        "tests/test_boxes.py", "tests/test_ops.py"]
