"""The package's structure: which way imports go (ARCHITECTURE.md, "Which way imports go").

Every ``import`` in ``lessons_pkg`` is read from the source (module level and inside functions
alike: a lazy import is still a dependency), except the hand-over of an old command name to its
command (``if __name__ == "__main__":``). Then:

- no module imports a module of a higher layer (primitives < backbone < models < experiment
  layer < commands);
- there is no import circle, of any length.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lessons_pkg"

# (layer, module-name prefixes), lowest first. A module belongs to the last layer whose prefix it
# starts with; the names that only keep an old command line (checkpoints, pretrain, figures,
# train.__main__, train.throughput, data.__main__) are entry points, listed apart.
LAYERS = [
    ("primitives", ["lessons_pkg", "lessons_pkg.boxes", "lessons_pkg.ops", "lessons_pkg.anchors",
                    "lessons_pkg.matching", "lessons_pkg.crowd", "lessons_pkg.inputs", "lessons_pkg.batching", "lessons_pkg.metrics",
                    "lessons_pkg.upsampling", "lessons_pkg.data", "lessons_pkg.train", "lessons_pkg.viz",
                    "lessons_pkg.interactive", "lessons_pkg.records", "lessons_pkg.cli"]),
    ("backbone", ["lessons_pkg.models", "lessons_pkg.models.backbone", "lessons_pkg.models.configs"]),
    ("models", ["lessons_pkg.models."]),
    ("experiment", ["lessons_pkg.recipes", "lessons_pkg.evaluation", "lessons_pkg.training",
                    "lessons_pkg.fine_tuning", "lessons_pkg.ablations", "lessons_pkg.challenges",
                    "lessons_pkg.detector_speed", "lessons_pkg.bench", "lessons_pkg.exercises"]),
    ("commands", ["lessons_pkg.commands"]),
]
ENTRY_POINTS = {"lessons_pkg.checkpoints", "lessons_pkg.pretrain", "lessons_pkg.figures", "lessons_pkg.evaluate",
                "lessons_pkg.train.__main__", "lessons_pkg.train.throughput", "lessons_pkg.data.__main__"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def layer(name: str) -> int:
    found = None
    for rank, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if name == prefix or (name.startswith(prefix + ".") if not prefix.endswith(".")
                                  else name.startswith(prefix)):
                found = rank
    if found is None:
        raise AssertionError(f"{name} is in no layer of tests/test_architecture.py: add it where it belongs")
    return found


def _is_main_guard(node: ast.AST) -> bool:
    return (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
            and isinstance(node.test.left, ast.Name) and node.test.left.id == "__name__")


def imports(name: str, source: str | None = None) -> set[str]:
    """The lessons_pkg modules that module ``name`` imports (resolved: ``from . import boxes``
    is lessons_pkg.boxes; ``from .train import fit`` is lessons_pkg.train)."""
    path = MODULES.get(name)
    tree = ast.parse(source if source is not None else path.read_text())
    package = name if path is not None and path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()

    def visit(node):
        for child in ast.iter_child_nodes(node):
            if _is_main_guard(child):
                continue
            if isinstance(child, ast.Import):
                found.update(a.name for a in child.names if a.name.startswith("lessons_pkg"))
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")
                    anchor = anchor[:len(anchor) - child.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                if not base.startswith("lessons_pkg"):
                    continue
                for alias in child.names:
                    sub = f"{base}.{alias.name}"
                    found.add(sub if sub in MODULES else base)
            visit(child)
    visit(tree)
    found.discard(name)
    return found


GRAPH = {name: imports(name) for name in MODULES if name not in ENTRY_POINTS}


@pytest.mark.parametrize("name", sorted(GRAPH))
def test_no_module_imports_a_higher_layer(name):
    mine = layer(name)
    upward = sorted(other for other in GRAPH[name] if other not in ENTRY_POINTS and layer(other) > mine)
    assert not upward, (f"{name} ({LAYERS[mine][0]}) imports {upward} from a higher layer "
                        f"({[LAYERS[layer(u)][0] for u in upward]})")
    entry = sorted(GRAPH[name] & ENTRY_POINTS)
    assert not entry, f"{name} imports {entry}, names kept only for the command line"


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of ``graph`` (a list of modules, the first repeated at the end) or None."""
    state: dict[str, int] = {}   # 1: on the current path, 2: done
    path: list[str] = []

    def walk(node):
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = walk(nxt)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = walk(node)
            if cycle:
                return cycle
    return None


def test_there_is_no_import_circle():
    # A package's __init__ importing its own modules is how a package exports names, not a
    # circle: those edges are left out (a module importing its package's __init__ still counts).
    graph = {name: {o for o in deps if not (MODULES[name].name == "__init__.py" and o.startswith(name + "."))}
             for name, deps in GRAPH.items()}
    assert find_cycle(graph) is None, f"import circle: {' -> '.join(find_cycle(graph))}"


def test_the_entry_points_only_hand_over_to_their_command():
    for name in ENTRY_POINTS:
        deps = imports(name)
        assert all(d.startswith("lessons_pkg.commands") for d in deps), f"{name} imports {deps}"


# ----------------------------------------------------------------------------- the checks can fail
def test_an_upward_import_is_found():
    """A planted import of a command from a primitive, and of the experiment layer from a model."""
    planted = imports("lessons_pkg.boxes", "import torch\nfrom .commands import train\n")
    assert "lessons_pkg.commands.train" in planted and layer("lessons_pkg.commands.train") > layer("lessons_pkg.boxes")
    planted = imports("lessons_pkg.models.ssd", "def f():\n    from ..recipes import RECIPES\n")
    assert planted == {"lessons_pkg.recipes"} and layer("lessons_pkg.recipes") > layer("lessons_pkg.models.ssd")
    # the hand-over block is not a dependency
    assert imports("lessons_pkg.ablations", "if __name__ == '__main__':\n    from .commands import ablations\n") == set()


def test_a_circle_is_found():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    planted = dict(GRAPH, **{"lessons_pkg.records": GRAPH["lessons_pkg.records"] | {"lessons_pkg.training"}})
    assert find_cycle(planted) is not None


OLD_COMMAND_NAMES = ["checkpoints", "train", "evaluate", "pretrain", "ablations", "detector_speed", "bench",
                     "train.throughput", "data"]


@pytest.mark.parametrize("name", OLD_COMMAND_NAMES)
def test_every_old_command_name_still_runs_its_command(name, capsys, monkeypatch):
    """``python -m lessons_pkg.NAME --help``, as the README and the book write it, reaches the
    command's own parser (its usage line names the command). Run as ``-m`` runs it (``runpy``,
    ``__main__``), in this process: a Python started per name would cost seconds each."""
    import runpy
    import warnings
    monkeypatch.setattr(sys, "argv", [f"lessons_pkg.{name}", "--help"])
    with warnings.catch_warnings(), pytest.raises(SystemExit) as done:
        warnings.simplefilter("ignore", RuntimeWarning)   # "found in sys.modules": imported by other tests
        runpy.run_module(f"lessons_pkg.{name}", run_name="__main__", alter_sys=True)
    out = capsys.readouterr().out
    assert done.value.code in (0, None)
    assert out.startswith(f"usage: python -m lessons_pkg.{name}"), out[:200]


@pytest.mark.slow   # starts a Python
def test_python_dash_m_reaches_the_command():
    """The same, once, through a real ``python -m``."""
    import subprocess
    done = subprocess.run([sys.executable, "-m", "lessons_pkg.train", "--help"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("usage: python -m lessons_pkg.train"), done.stdout[:200]
