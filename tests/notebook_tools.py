"""The book's notebooks: list them from _toc.yml, execute them in place, check what they store.

    python tests/notebook_tools.py list               # notebooks in _toc.yml, one per line
    python tests/notebook_tools.py execute [NB ...]   # re-run in place (all by default), print times;
                                                      # exit 1 if one ran over BUDGET_SECONDS
    python tests/notebook_tools.py check              # stored outputs complete, no errors, all in TOC

Executing strips the saved ipywidgets state and widget views (progress bars keep their text):
the rendered book then needs no widget JavaScript from a CDN, and each widget has a static
twin figure in its chapter anyway.

The budget (BUDGET_SECONDS) is for a notebook executed alone, with one torch thread, as `make test`
runs it (`OMP_NUM_THREADS=1`, one notebook per core): each time is printed with the thread count
that the kernel ran with, so that a time measured with more threads is not taken for the budget's.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import nbformat
import yaml

ROOT = Path(__file__).resolve().parents[1]
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
STRAY_REPRS = ("Text(", "[<matplotlib", "<matplotlib", "Line2D(", "<Axes", "(<Figure")  # a plot call's return value
BUDGET_SECONDS = 90  # ARCHITECTURE.md: every notebook executes alone in at most 90 s, one thread


def toc_documents(toc_file: Path = ROOT / "_toc.yml") -> list[str]:
    """Every document path in _toc.yml (without suffix, relative to the root), in book order."""
    toc = yaml.safe_load(toc_file.read_text())
    found: list[str] = []

    def walk(node):
        if isinstance(node, dict):
            for key in ("root", "file"):
                if key in node:
                    found.append(str(node[key]))
            for value in node.values():
                if isinstance(value, (list, dict)):
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(toc)
    return found


def toc_notebooks() -> list[Path]:
    """The notebooks of the book, in TOC order (paths relative to the root)."""
    documents = [Path(d) for d in toc_documents()]
    return [d.with_suffix(".ipynb") for d in documents if (ROOT / d.with_suffix(".ipynb")).exists()]


def book_notebooks() -> list[Path]:
    """Every notebook under book/ (checkpoints excluded), relative to the root."""
    return sorted(p.relative_to(ROOT) for p in (ROOT / "book").rglob("*.ipynb")
                  if ".ipynb_checkpoints" not in p.parts)


def strip_widgets(nb: nbformat.NotebookNode) -> None:
    """Remove saved widget state and widget views, keeping each output's text fallback."""
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        for output in cell.get("outputs", []):
            output.get("data", {}).pop(WIDGET_VIEW, None)
        cell.outputs = [o for o in cell.get("outputs", []) if o.get("output_type") != "display_data" or o.get("data")]


def widget_cell_timeout(cell, default: int) -> int:
    """A short timeout for cells that create ipywidgets: nbclient sometimes waits for a shell
    reply of such a cell until the timeout although the kernel has long answered (nbclient
    issue #312; measured here: ~600 s stalls after an `interact` cell that ran in 1 s)."""
    return 10 if "ipywidgets" in cell.source else default


def execute(path: Path, timeout: int = 600) -> float:
    """Execute a notebook in place (working directory: its folder). Returns the seconds taken."""
    from nbclient import NotebookClient

    path = ROOT / path
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, startup_timeout=180, kernel_name="python3",
                            timeout_func=lambda cell: widget_cell_timeout(cell, timeout),
                            resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - start
    strip_widgets(nb)
    nbformat.write(nb, path)
    return seconds


def kernel_threads() -> int:
    """The torch threads a kernel started from this process computes with: it inherits this
    process's environment (OMP_NUM_THREADS), and torch's default is read from it the same way
    here. (No chapter calls torch.set_num_threads outside a block that restores it.)"""
    import torch

    return torch.get_num_threads()


def stored_output_problems(path: Path) -> list[str]:
    """What is wrong with a notebook's stored outputs: unexecuted code cells, stored errors, a
    traceback printed to stderr (a caught exception or a child process's), stray plot reprs."""
    nb = nbformat.read(ROOT / path, as_version=4)
    problems = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or not cell.source.strip():
            continue
        if cell.get("execution_count") is None:
            problems.append(f"{path}: code cell {i} has no stored output (run `make execute`)")
        tags = cell.metadata.get("tags", [])
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error" and "raises-exception" not in tags:
                problems.append(f"{path}: code cell {i} stores an error: {output.get('ename')}: {output.get('evalue')}")
            if output.get("output_type") == "stream" and output.get("name") == "stderr" and \
                    "Traceback (most recent call last)" in output.get("text", ""):
                problems.append(f"{path}: code cell {i} stores a traceback on stderr")
            shown = output.get("data", {}).get("text/plain", "") if output.get("output_type") == "execute_result" else ""
            if shown.startswith(STRAY_REPRS):
                problems.append(f"{path}: code cell {i} shows a stray repr {shown[:40]!r} (end the line with ';')")
    return problems


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "list"
    if command == "list":
        print("\n".join(str(p) for p in toc_notebooks()))
        return 0
    if command == "execute":
        paths = [Path(p) for p in argv[1:]] or toc_notebooks()
        threads = kernel_threads()
        unit = "thread" if threads == 1 else "threads"
        slow = []
        for path in paths:
            seconds = execute(path)
            over = seconds > BUDGET_SECONDS
            verdict = f"OVER the {BUDGET_SECONDS} s budget" if over else "within budget"
            print(f"{seconds:6.1f} s  {threads} {unit}  {verdict}  {path}", flush=True)
            if over:
                slow.append(f"{path} ({seconds:.1f} s)")
        if threads != 1:
            print(f"note: the budget is for one thread; these ran with {threads} "
                  "(set OMP_NUM_THREADS=1 to time what `make test` runs)", file=sys.stderr)
        if slow:
            print(f"over the {BUDGET_SECONDS} s budget with {threads} {unit}: {', '.join(slow)}",
                  file=sys.stderr)
            return 1
        return 0
    if command == "check":
        problems = [p for nb in toc_notebooks() for p in stored_output_problems(nb)]
        listed = set(toc_notebooks())
        problems += [f"{nb}: not listed in _toc.yml" for nb in book_notebooks() if nb not in listed]
        print("\n".join(problems) or "notebooks: stored outputs complete, no errors, all in the TOC")
        return 1 if problems else 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
