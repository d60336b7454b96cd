"""Checkpoint files: weights beside a JSON record, written and read in one place.

A checkpoint of the course is two files: ``NAME.pt``, a ``state_dict`` read back with
``torch.load(..., weights_only=True)`` (tensors only, no pickled code runs), and ``NAME.json``,
its record: the command that made it, the settings, the torch version, the dtype of the
weights, the training time and the scores measured *on the weights as saved*. Both commands that
make checkpoints (``python -m lessons_pkg.pretrain`` and ``python -m lessons_pkg.checkpoints``)
write them with :func:`save_checkpoint`; the tests recompute the scores from the files.

The committed checkpoints live in ``data/pretrained/`` (:data:`PRETRAINED_DIR`).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor, nn

PRETRAINED_DIR = Path(__file__).resolve().parents[1] / "data" / "pretrained"
DTYPES = {"float32": torch.float32, "float16": torch.float16}


def default_path(name: str) -> Path:
    """``data/pretrained/NAME.pt``, where the committed checkpoint ``name`` lives."""
    return PRETRAINED_DIR / f"{name}.pt"


def cast_state(state: dict[str, Tensor], dtype: torch.dtype) -> dict[str, Tensor]:
    """The state_dict with its floating tensors in ``dtype`` (integers, e.g. BatchNorm's
    counters, unchanged), on the CPU."""
    return {k: (v.detach().to("cpu", dtype) if v.is_floating_point() else v.detach().cpu()) for k, v in state.items()}


def why_unreadable(error: Exception) -> str:
    """Why ``torch.load(..., weights_only=True)`` failed, in the course's words. torch's own text
    is never relayed: it advises loading the file again with ``weights_only`` off, which on a
    file from elsewhere runs whatever code it holds."""
    text = str(error)
    if "Weights only load failed" in text or type(error).__name__ == "UnpicklingError":
        return ("it holds Python objects besides tensors, or is not a torch file at all (refused unread: "
                "loading such objects can run code)")
    if "zip archive" in text or isinstance(error, EOFError):
        return "it is truncated or not a torch file (its archive cannot be read)"
    return f"torch could not read it ({type(error).__name__})"


def load_weights(path: str | Path, map_location="cpu") -> dict[str, Tensor]:
    """A state_dict read with ``weights_only=True`` (tensors only: no pickled code runs).

    FileNotFoundError or ValueError naming the file when it is missing, empty, truncated, not a
    checkpoint or holds anything but tensors (never the advice to turn ``weights_only`` off).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: the checkpoint file is empty (an interrupted save?); make it again with the "
                         "command in its record (the .json beside it)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # UnpicklingError, RuntimeError, EOFError...
        raise ValueError(f"{path}: not a readable checkpoint of weights: {why_unreadable(error)}; it is not "
                         "loaded. Make it again with the command in its record (the .json beside it)") from None
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in state.items()):
        raise ValueError(f"{path}: expected a state_dict (names -> tensors), got {type(state).__name__}")
    return state


def read_json(path: Path):
    """The JSON value in the file at ``path``: ValueError naming the file when it is not UTF-8,
    not JSON, nested too deep or holds a number too long to read (never a bare decoder error)."""
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON (line {error.lineno}, column {error.colno}: {error.msg})") from None
    except (RecursionError, ValueError) as error:  # nesting too deep; an integer too long to convert
        raise ValueError(f"{path}: not readable as JSON ({str(error)[:120]})") from None


def load_record(path: str | Path) -> dict:
    """The JSON record beside the weights at ``path`` (``NAME.json`` for ``NAME.pt``);
    FileNotFoundError / ValueError naming the file when it is missing or not a JSON object."""
    record_path = Path(path).with_suffix(".json")
    if not record_path.is_file():
        raise FileNotFoundError(f"checkpoint record not found: {record_path}")
    record = read_json(record_path)
    if not isinstance(record, dict):
        raise ValueError(f"{record_path}: a record must be a JSON object, got {type(record).__name__}")
    return record


def write_json(path: str | Path, value) -> Path:
    """The one writer of the course's JSON records (checkpoints, ablations, benchmarks): ``value``
    as indented JSON at ``path`` (its folder made); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2) + "\n")
    return path


def write_record(path: str | Path, record: dict) -> Path:
    """Write ``record`` as the JSON beside the weights at ``path``; returns the JSON's path."""
    return write_json(Path(path).with_suffix(".json"), record)


def save_weights(model: nn.Module, out: str | Path, dtype: str = "float16") -> None:
    """Write ``model``'s weights in ``dtype`` to ``out`` (on the CPU, in eval mode) and load them
    back into ``model``, so that whatever is scored next is what the file holds."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    model.cpu().eval()
    torch.save(cast_state(model.state_dict(), DTYPES[dtype]), out)
    model.load_state_dict(load_weights(out))


def save_checkpoint(model: nn.Module, out: str | Path, record: dict, dtype: str = "float16",
                    scores: Callable[[nn.Module], dict] | None = None) -> dict:
    """Write ``model``'s weights in ``dtype`` to ``out`` and the record to ``out``'s ``.json``.

    The weights are cast, saved and loaded back into ``model`` before ``scores(model)`` runs, so
    the record's scores are those of the file (a float16 file scores what it holds, not what the
    float32 model scored). The record gets ``"dtype"``, ``"torch"`` and ``"parameters"`` and the
    scores' keys. Returns the record as written.
    """
    out = Path(out)
    save_weights(model, out, dtype)
    record = {**record, "torch": torch.__version__, "dtype": dtype,
              "parameters": sum(p.numel() for p in model.parameters())}
    if scores is not None:
        record.update(scores(model))
    write_record(out, record)
    return record


def sha256(path: str | Path) -> str:
    """The SHA-256 of the file at ``path``, in hex (what a record keeps to pin a data file)."""
    import hashlib
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def display_path(path: str | Path) -> str:
    """``path`` as a command line shows it: relative to the repository when inside it."""
    path = Path(path).resolve()
    root = PRETRAINED_DIR.parents[1]
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def refuse_overwrite(paths, overwrite: bool, advice: str = "pass --overwrite to replace it, or --out another path") -> None:
    """The one overwrite check of the course: FileExistsError naming the first of ``paths`` that
    exists, with ``advice``, unless ``overwrite``. Nothing is replaced without being asked."""
    existing = [Path(p) for p in paths if Path(p).exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{existing[0]} exists; {advice}")


def check_writable(out: str | Path, overwrite: bool) -> Path:
    """``out`` as a Path, if it may be written: :func:`refuse_overwrite` of the file and the
    record beside it (``NAME.json``; a JSON record is its own)."""
    out = Path(out)
    refuse_overwrite(dict.fromkeys((out, out.with_suffix(".json"))), overwrite)
    return out
