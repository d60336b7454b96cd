"""python -m lessons_pkg.train: one process and torchrun (gloo on the CPU), resume, mixed sizes,
bad flags and bad data, and DDP's gradient equals one process's on the union batch."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lessons_pkg import recipes
from lessons_pkg.commands.train import main

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--steps", "4", "--batch-size", "2", "--num-train-images", "8", "--num-val-images", "4", "--quiet"]


def torchrun(args, nproc=2, timeout=600):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *args]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.usefixtures("one_thread")
def test_one_process_on_the_shapes_data_writes_loadable_files(tmp_path):
    assert main(["ssd", "--out", str(tmp_path), *TINY]) == 0
    model, record = recipes.load("ssd", tmp_path / "model.pt")
    assert record["steps"] == 4 and record["world_size"] == 1
    assert record["classes"] == ["circle", "square", "triangle", "star"]   # the shapes data's, in order
    assert record["command"].startswith("python -m lessons_pkg.train ssd --out")
    assert 0 <= record["val"]["map_50"] <= 1 and record["val"]["num_images"] == 4
    assert (tmp_path / "last.pt").is_file() and record["images_per_second"] > 0
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert state["step"] == 4 and len(state["processes"]) == 1


@pytest.mark.slow   # torchrun: two processes
def test_two_processes_under_torchrun_with_gloo(tmp_path, shapes_coco):
    """The issue's own command, on the committed COCO export, then checkpoints.load."""
    annotations = shapes_coco / "annotations.json"
    result = torchrun(["-m", "lessons_pkg.train", "ssd", "--images", str(shapes_coco), "--annotations",
                       str(annotations), "--val-images", str(shapes_coco), "--val-annotations",
                       str(annotations), "--steps", "6", "--batch-size", "2", "--out", str(tmp_path),
                       "--quiet", "--device", "cpu", "--eval-every", "3"])
    assert result.returncode == 0, result.stderr[-3000:]
    model, record = recipes.load("ssd", tmp_path / "model.pt")
    assert record["world_size"] == 2 and record["backend"] == "gloo" and record["num_classes"] == 4
    assert record["command"].startswith("torchrun --nproc_per_node=2 -m lessons_pkg.train ssd")
    assert record["val"]["num_images"] == 24 and [e["step"] for e in record["evaluations"]] == [3]
    assert len(torch.load(tmp_path / "last.pt", weights_only=True)["processes"]) == 2
    assert result.stdout.count("wrote ") == 1   # rank 0 alone writes and reports


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("model", ["ssd", "sliding_window"])   # the second owns a generator of its own
def test_resume_gives_the_uninterrupted_weights_bit_for_bit(tmp_path, model):
    args = [model, *TINY[:-1], "--steps", "6", "--save-every", "3", "--quiet"]
    assert main([*args, "--out", str(tmp_path / "whole")]) == 0
    assert main([*args, "--out", str(tmp_path / "split"), "--stop-after", "3"]) == 0
    assert not (tmp_path / "split" / "model.pt").exists()
    assert torch.load(tmp_path / "split" / "last.pt", weights_only=True)["step"] == 3
    assert main([*args, "--out", str(tmp_path / "split"), "--resume"]) == 0
    whole = torch.load(tmp_path / "whole" / "model.pt", weights_only=True)
    split = torch.load(tmp_path / "split" / "model.pt", weights_only=True)
    for key, value in whole.items():
        assert torch.equal(value, split[key]), key
    history = torch.load(tmp_path / "split" / "last.pt", weights_only=True)["history"]
    assert history["steps"][-1] == 6


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("model", ["faster_rcnn", "fcn"])
def test_images_of_mixed_sizes_train_and_evaluate(tmp_path, mixed_size_coco, model):
    root = mixed_size_coco
    coco = ["--images", str(root), "--annotations", str(root / "annotations.json"),
            "--val-images", str(root), "--val-annotations", str(root / "annotations.json")]
    assert main([model, "--out", str(tmp_path / "run"), *coco, "--steps", "2", "--batch-size", "4", "--quiet"]) == 0
    _, record = recipes.load(model, tmp_path / "run" / "model.pt")
    key = "miou" if model == "fcn" else "map_50"
    assert record["val"]["num_images"] == 8 and 0 <= record["val"][key] <= 1


@pytest.mark.parametrize("argv, message", [
    (["ssd", "--out", "{tmp}/a", "--images", "{coco}"], "--images and --annotations go together"),
    (["ssd", "--out", "{tmp}/a", "--steps", "0"], "argument --steps: expected a whole number >= 1, got 0"),
    (["ssd", "--out", "{tmp}/a", "--batch-size", "-2"], "argument --batch-size: expected a whole number >= 1, got -2"),
    (["ssd", "--out", "{tmp}/a", "--resume"], "--resume: .*last.pt does not exist"),
    (["ssd", "--out", "{tmp}/a", "--images", "{tmp}/nowhere", "--annotations", "{coco}/annotations.json"],
     "--images .*nowhere: not a folder"),
    (["ssd", "--out", "{tmp}/a", "--max-size", "300"], "--max-size needs --min-size"),
    (["yolo9000", "--out", "{tmp}/a"], "invalid choice: 'yolo9000'"),
    (["ssd", "--out", "{tmp}/a", "--amp", "--device", "cpu"], "--amp needs a CUDA device"),
])
def test_bad_flags_fail_at_once_naming_the_flag(tmp_path, shapes_coco, capsys, argv, message):
    argv = [a.replace("{tmp}", str(tmp_path)).replace("{coco}", str(shapes_coco)) for a in argv]
    start = time.perf_counter()
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2 and time.perf_counter() - start < 5
    assert __import__("re").search(message, capsys.readouterr().err)
    assert not (tmp_path / "a" / "model.pt").exists()


def test_a_finished_run_is_not_overwritten(tmp_path, capsys):
    (tmp_path / "model.pt").write_bytes(b"precious")
    with pytest.raises(SystemExit):
        main(["ssd", "--out", str(tmp_path), *TINY])
    assert "holds a run already" in capsys.readouterr().err
    assert (tmp_path / "model.pt").read_bytes() == b"precious"


@pytest.mark.parametrize("model, mutate, message", [
    ("ssd", lambda d: d["annotations"][0].update(bbox=[0, 0, -5, 3]), r"annotations\[0\] .* negative size"),
    ("fcn", lambda d: [a.pop("segmentation") for a in d["annotations"]], "needs a 'segmentation' in every annotation"),
    ("mask_rcnn", lambda d: [a.pop("segmentation") for a in d["annotations"]], "needs a 'segmentation'"),
])
def test_bad_data_fails_before_training_naming_the_file(tmp_path, shapes_coco, capsys, model, mutate, message):
    document = json.loads((shapes_coco / "annotations.json").read_text())
    mutate(document)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(document))
    code = main([model, "--out", str(tmp_path / "run"), "--images", str(shapes_coco), "--annotations", str(bad), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and __import__("re").search(message, err) and "bad.json" in err
    assert not (tmp_path / "run" / "model.pt").exists()


@pytest.mark.slow   # torchrun: two processes
def test_one_ddp_step_equals_one_step_on_the_union_batch(tmp_path):
    """2 processes x 4 images, gradients averaged by DDP, against 1 process x the same 8 images
    (BatchNorm frozen: in train mode each process would normalize with its own batch's
    statistics). FCN: its loss is a mean over pixels, so the union's mean is the mean of the
    two halves'."""
    result = torchrun([str(ROOT / "tests" / "ddp_step.py"), str(tmp_path)])
    assert result.returncode == 0, result.stderr[-3000:]
    ddp = torch.load(tmp_path / "ddp.pt", weights_only=True)
    single = torch.load(tmp_path / "single.pt", weights_only=True)
    start = torch.load(tmp_path / "start.pt", weights_only=True)
    moved = 0
    for key, value in single.items():
        torch.testing.assert_close(ddp[key], value, rtol=1e-5, atol=1e-5, msg=key)  # steps are ~0.05: summation order only
        moved += int(not torch.equal(value, start[key]))
    assert moved > 10   # the step changed the weights (the comparison is not of two untouched models)


@pytest.mark.slow   # torchrun: two processes
def test_with_per_process_batchnorm_the_ddp_step_is_not_the_union_step(tmp_path):
    """The condition of the equality above, tested: BatchNorm in train mode in each process (the
    planted fault: what the page's SSD does on the CPU, where SyncBatchNorm has no kernels)
    normalizes each process's 4 images with their own statistics, and the DDP step then
    differs from the union's by far more than float rounding."""
    result = torchrun([str(ROOT / "tests" / "ddp_step.py"), str(tmp_path), "per-process"])
    assert result.returncode == 0, result.stderr[-3000:]
    ddp = torch.load(tmp_path / "ddp.pt", weights_only=True)
    single = torch.load(tmp_path / "single.pt", weights_only=True)
    gap = max((ddp[k].float() - v.float()).abs().max().item() for k, v in single.items()
              if v.is_floating_point() and "running" not in k)
    assert gap > 1e-3, f"per-process BatchNorm changed the step by only {gap:.2e}"


@pytest.mark.cuda
def test_amp_on_cuda_trains_and_records_it(tmp_path):
    assert main(["ssd", "--out", str(tmp_path), *TINY, "--amp", "--device", "cuda"]) == 0
    _, record = recipes.load("ssd", tmp_path / "model.pt")
    assert record["amp"] and record["device"].startswith("cuda")


@pytest.mark.cuda
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs")
def test_two_gpus_under_torchrun_with_nccl(tmp_path):
    result = torchrun(["-m", "lessons_pkg.train", "mask_rcnn", *TINY, "--out", str(tmp_path), "--device", "cuda"])
    assert result.returncode == 0, result.stderr[-3000:]
    _, record = recipes.load("mask_rcnn", tmp_path / "model.pt")
    assert record["backend"] == "nccl" and record["world_size"] == 2


@pytest.mark.slow   # two runs of the train command in subprocesses, one of them under torchrun
def test_throughput_benchmark_writes_its_record_and_keeps_an_existing_one(tmp_path, capsys):
    """A smoke test of the benchmark (one step per run, one round, 2 processes only; the numbers
    are its business, not a test's): the 1 x 1 run first, then the two processes under torchrun
    sharing the cores, the record written once."""
    from lessons_pkg.commands import throughput

    out = tmp_path / "t.json"
    record = throughput.main(["--steps", "1", "--batch-size", "1", "--device", "cpu", "--out", str(out),
                              "--repeats", "1", "--processes", "2"])
    assert all(len(r["repeats"]) == len(r["speedups"]) == 1 and r["spread"] == 0 for r in record["runs"])
    cores = os.cpu_count()
    assert [(r["processes"], r["threads_per_process"]) for r in record["runs"]] == [(1, 1), (2, max(1, cores // 2))]
    assert all(r["images_per_second"] > 0 for r in record["runs"]) and record["runs"][0]["speedup"] == 1
    assert json.loads(out.read_text()) == record
    with pytest.raises(SystemExit):
        throughput.main(["--out", str(out)])
    assert "exists; pass --overwrite" in capsys.readouterr().err


def test_throughput_speedups_pair_each_round_with_that_rounds_single_thread_run():
    """Round 1 of a setting against round 1 of the 1 x 1 run, round 2 against round 2 (a slow
    spell of the machine falls on both): 30/20 and 50/25, not the ratio of the means (40/22.5)."""
    from lessons_pkg.commands import throughput

    def run(images_per_second):
        return {"processes": 2, "threads_per_process": 1, "images_per_second": images_per_second,
                "train_seconds": 16 / images_per_second, "images": 16}

    row = throughput.summarize([run(30.0), run(50.0)], baseline=[run(20.0), run(25.0)])
    assert row["speedups"] == [1.5, 2.0] and row["speedup"] == 1.75
    assert row["speedup_spread"] == 0.354                       # stdev(1.5, 2.0) = 0.3536
    assert row["images_per_second"] == 40.0 and row["spread"] == 14.142 and row["repeats"] == [30.0, 50.0]
    assert row["train_seconds"] == [16 / 30, 16 / 50] and (row["processes"], row["threads_per_process"]) == (2, 1)
    single = throughput.summarize([run(30.0)], baseline=[run(20.0)])
    assert single["spread"] == 0.0 and single["speedup_spread"] == 0.0   # one value: no spread, not an error
