"""Training throughput with 1 and N processes: ``python -m lessons_pkg.train.throughput``.

    python -m lessons_pkg.train.throughput                     # ssd, 1 and 2 processes, this machine
    python -m lessons_pkg.train.throughput --processes 1 2 4 --device cuda --out /tmp/t.json
    python -m lessons_pkg.train.throughput --repeats 5          # every setting measured 5 times

Runs ``python -m lessons_pkg.train`` (under ``torchrun`` for more than one process) for a fixed
number of steps on the shapes data, each process with ``--batch-size`` images per step, and
reads the images per second of the training loop from each run's record. The machine's cores
are shared out: every process gets ``cores // processes`` threads, so the runs compare the same
hardware used two ways; a run of one process on one thread comes first, and every speed-up is
relative to it. One measurement says little on a shared machine, so every setting is measured
``--repeats`` times (default 3), the settings taking turns (round 1 of every setting, then round
2, ...), so that a slow spell of the machine falls on all of them alike. Each row keeps every
repeat, their mean (``images_per_second``) and sample standard deviation (``spread``), and the
speed-up of each round over that round's 1 x 1 run (``speedups``, their mean and spread).
Writes a JSON record (default ``data/bench/train_throughput.json``, refused if it exists unless
``--overwrite``).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from ..cli import positive_int
from .. import records
from ..records import PRETRAINED_DIR

DEFAULT_OUT = PRETRAINED_DIR.parent / "bench" / "train_throughput.json"


def measure(model: str, processes: int, steps: int, batch_size: int, device: str, threads: int) -> dict:
    """One run of the command: {"processes", "threads_per_process", "images_per_second", ...}."""
    with tempfile.TemporaryDirectory() as tmp:
        command = ["-m", "lessons_pkg.train", model, "--out", tmp, "--steps", str(steps), "--batch-size",
                   str(batch_size), "--num-val-images", "1", "--save-every", str(steps), "--quiet",
                   "--device", device]
        launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
                    if processes > 1 else [sys.executable])
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        result = subprocess.run(launcher + command, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(launcher + command)} failed:\n{result.stderr[-3000:]}")
        record = json.loads((Path(tmp) / "model.json").read_text())
    return {"processes": processes, "threads_per_process": threads, "images_per_second": record["images_per_second"],
            "train_seconds": record["train_seconds"], "images": steps * batch_size * processes}


def spread(values: list[float]) -> float:
    """The sample standard deviation (0 for a single value)."""
    return round(statistics.stdev(values), 3) if len(values) > 1 else 0.0


def summarize(runs: list[dict], baseline: list[dict]) -> dict:
    """One setting's repeats -> its row: every repeat, the mean images per second and their
    spread, and the speed-up of each round over the same round's 1 x 1 run."""
    speeds = [r["images_per_second"] for r in runs]
    speedups = [r["images_per_second"] / b["images_per_second"] for r, b in zip(runs, baseline)]
    return {"processes": runs[0]["processes"], "threads_per_process": runs[0]["threads_per_process"],
            "images_per_second": round(statistics.fmean(speeds), 2), "spread": spread(speeds),
            "repeats": speeds, "train_seconds": [r["train_seconds"] for r in runs],
            "images": runs[0]["images"], "speedup": round(statistics.fmean(speedups), 3),
            "speedup_spread": spread(speedups), "speedups": [round(x, 3) for x in speedups]}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m lessons_pkg.train.throughput", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="ssd")
    p.add_argument("--processes", type=positive_int, nargs="+", default=[1, 2])
    p.add_argument("--steps", type=positive_int, default=100)
    p.add_argument("--batch-size", type=positive_int, default=8, help="images per step and process")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--repeats", type=positive_int, default=3, help="measurements of every setting")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    try:
        records.check_writable(args.out, args.overwrite)
    except FileExistsError as error:
        p.error(str(error))
    cores = os.cpu_count() or 1
    if args.device == "cuda" and max(args.processes) > torch.cuda.device_count():
        p.error(f"--processes {max(args.processes)}: this machine has {torch.cuda.device_count()} GPUs")
    # One process on one thread first: the unit the speed-ups are measured in, so that the
    # gain of threads inside one process and of processes side by side can be told apart.
    settings = [(1, 1)] + [(n, max(1, cores // n)) for n in args.processes if (n, max(1, cores // n)) != (1, 1)]
    measured = {setting: [] for setting in settings}
    for round_ in range(args.repeats):  # the settings take turns: a slow spell hits them all
        for n, threads in settings:     # the machine's cores shared out among the processes
            run = measure(args.model, n, args.steps, args.batch_size, args.device, threads)
            measured[(n, threads)].append(run)
            print(f"round {round_ + 1}: {n} process(es) x {threads} thread(s): "
                  f"{run['images_per_second']:.1f} images/s", flush=True)
    rows = [summarize(runs, measured[settings[0]]) for runs in measured.values()]
    record = {"command": "python -m lessons_pkg.train.throughput " + " ".join(argv if argv is not None else sys.argv[1:]),
              "model": args.model, "steps": args.steps, "batch_size_per_process": args.batch_size,
              "device": args.device, "repeats": args.repeats, "cpu_cores": cores, "machine": platform.processor() or platform.machine(),
              "gpu": torch.cuda.get_device_name(0) if args.device == "cuda" else None,
              "torch": torch.__version__, "runs": rows}
    records.write_json(args.out, record)
    print(f"wrote {args.out}")
    return record


if __name__ == "__main__":
    main()
