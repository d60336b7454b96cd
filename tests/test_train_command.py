"""python -m lessons_pkg.train: one process and torchrun (gloo on the CPU), resume, mixed sizes,
bad flags and bad data, and DDP's gradient equals one process's on the union batch."""
import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lessons_pkg import recipes, records
from lessons_pkg.commands.train import check_nodes, load_data_everywhere, main, parser
from lessons_pkg.train import distributed

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
                       "--quiet", "--device", "cpu", "--eval-every", "3", "--scale-lr", "sqrt"])
    assert result.returncode == 0, result.stderr[-3000:]
    model, record = recipes.load("ssd", tmp_path / "model.pt")
    assert record["world_size"] == 2 and record["backend"] == "gloo" and record["num_classes"] == 4
    # 2 processes x 2 images against the recipe's 8 on one process: k = 1/2, the rate x sqrt(1/2)
    recipe = recipes.RECIPES["ssd"]
    assert record["batch_size"] == 2 and record["effective_batch_size"] == 4
    assert record["lr"] == pytest.approx(recipe.lr * math.sqrt(0.5), rel=1e-12)
    assert record["lr_scaling"] == {"rule": "sqrt", "reference_lr": recipe.lr, "reference_batch_size": 8,
                                    "factor": pytest.approx(math.sqrt(0.5), rel=1e-12)}
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
    # the logged losses too: step 3 fell inside a logging interval, which the resumed run continues
    whole_history = torch.load(tmp_path / "whole" / "last.pt", weights_only=True)["history"]
    assert (history["steps"], history["losses"]) == (whole_history["steps"], whole_history["losses"])
    assert records.load_record(tmp_path / "split" / "model.pt")["final_loss"] == \
        records.load_record(tmp_path / "whole" / "model.pt")["final_loss"]


@pytest.mark.usefixtures("one_thread")
def test_lr_is_the_whole_steps_and_scale_lr_scales_it_from_the_recipes_batch(tmp_path, capsys):
    """--lr as given at any batch; --scale-lr linear at twice the recipe's batch doubles it, and
    the optimizer trained with the rate the record says (last.pt's optimizer keeps it)."""
    recipe = recipes.RECIPES["ssd"]
    args = ["ssd", "--steps", "2", "--num-train-images", "16", "--num-val-images", "4", "--quiet",
            "--batch-size", str(2 * recipe.batch_size), "--save-every", "1"]
    assert main([*args, "--out", str(tmp_path / "plain"), "--lr", "0.002"]) == 0
    assert main([*args, "--out", str(tmp_path / "scaled"), "--scale-lr", "linear", "--stop-after", "1"]) == 0
    plain = records.load_record(tmp_path / "plain" / "model.pt")
    assert plain["lr"] == 0.002 and "lr_scaling" not in plain and plain["effective_batch_size"] == 16
    state = torch.load(tmp_path / "scaled" / "last.pt", weights_only=True)
    assert [g["initial_lr"] for g in state["optimizer"]["param_groups"]] == [2 * recipe.lr]
    assert state["meta"]["lr"] == 2 * recipe.lr
    # resuming with another rate would train with the file's: refused, naming it
    assert main([*args, "--out", str(tmp_path / "scaled"), "--resume"]) == 2
    assert f"written with lr = {2 * recipe.lr!r}, this run has {recipe.lr!r}" in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "scaled"), "--resume", "--scale-lr", "linear"]) == 0
    scaled = records.load_record(tmp_path / "scaled" / "model.pt")
    assert scaled["lr"] == 2 * recipe.lr and scaled["lr_scaling"]["factor"] == 2.0


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
    (["ssd", "--out", "{tmp}/a", "--max-size", "300"], "--max-size needs --min-size"),
    (["yolo9000", "--out", "{tmp}/a"], "invalid choice: 'yolo9000'"),
    (["ssd", "--out", "{tmp}/a", "--amp", "--device", "cpu"], "--amp needs a CUDA device"),
    (["ssd", "--out", "{tmp}/a", "--scale-lr", "linear", "--warmup-steps", "0"], "--scale-lr needs a warm-up"),
    (["ssd", "--out", "{tmp}/a", "--scale-lr", "cubic"], "argument --scale-lr: invalid choice: 'cubic'"),
])
def test_bad_flags_fail_at_once_naming_the_flag(tmp_path, shapes_coco, capsys, argv, message):
    argv = [a.replace("{tmp}", str(tmp_path)).replace("{coco}", str(shapes_coco)) for a in argv]
    start = time.perf_counter()
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2 and time.perf_counter() - start < 5
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "a" / "model.pt").exists()


@pytest.mark.parametrize("argv, message", [
    (["ssd", "--out", "{tmp}/a", "--resume"],
     r"--resume: \S*a/last.pt \(/\S*a/last.pt\) does not exist on rank 0's node"),
    (["ssd", "--out", "{tmp}/a", "--images", "{tmp}/nowhere", "--annotations", "{coco}/annotations.json"],
     r"--images \S*nowhere: not a folder$"),
    (["ssd", "--out", "{tmp}/a", "--images", "{coco}", "--annotations", "{coco}/annotations.json",
      "--val-images", "{coco}", "--val-annotations", "{tmp}/none.json"],
     r"--val-annotations \S*none.json: no such file$"),
    (["ssd", "--out", "{tmp}/a", "--images", "{coco}", "--annotations", "{coco}"],
     "--annotations .*: no such file"),
    (["ssd", "--out", "{tmp}/file"], "--out .*file: exists and is not a folder"),
])
def test_a_nodes_files_are_checked_after_joining_the_group_naming_the_flag(tmp_path, shapes_coco, capsys, argv,
                                                                          message):
    """What a node's own files decide (the data, --out, last.pt) is checked by every process
    after the process group is joined (tests/test_multinode.py: with two nodes); one process
    names the flag and the path, no rank or host, before any data is read."""
    (tmp_path / "file").write_text("")
    argv = [a.replace("{tmp}", str(tmp_path)).replace("{coco}", str(shapes_coco)) for a in argv]
    start = time.perf_counter()
    assert main([*argv, "--quiet"]) == 2 and time.perf_counter() - start < 5
    err = capsys.readouterr().err.strip()
    assert err.startswith("python -m lessons_pkg.train: error: ") and "rank" not in err.replace("rank 0's", "")
    assert re.search(message, err, re.M), err
    assert not (tmp_path / "a").exists()


def fake_group(monkeypatch, others: dict[int, dict], world_size: int = 2) -> None:
    """all_gather as in a group of ``world_size`` processes whose other ranks reported ``others``
    (rank -> report): the test is the caller's rank."""
    def all_gather(obj, context):
        return [obj if rank == context.rank else others[rank] for rank in range(world_size)]
    monkeypatch.setattr(distributed, "all_gather", all_gather)


def test_a_problem_of_one_rank_stops_every_rank_and_rank_0_names_it(monkeypatch, tmp_path):
    args = parser().parse_args(["ssd", "--out", str(tmp_path / "run")])
    well = {"host": "node-a", "problems": [], "last": False}
    sick = {"host": "node-b", "problems": ["--images data: not a folder"], "last": False}
    fake_group(monkeypatch, {1: sick})
    with pytest.raises(ValueError) as rank0:
        check_nodes(args, distributed.Context(rank=0, world_size=2))
    assert str(rank0.value) == "--images data: not a folder (rank 1 on host node-b)"
    fake_group(monkeypatch, {0: well})
    check_nodes(args, distributed.Context(rank=1, world_size=2))   # nothing wrong anywhere: no error
    # rank 0 lacks last.pt, rank 1 holds one: rank 0 says so; rank 1 says rank 0 names the problem
    args = parser().parse_args(["ssd", "--out", str(tmp_path / "run"), "--resume"])
    fake_group(monkeypatch, {1: {**well, "last": True}})
    with pytest.raises(ValueError, match=r"(?s)rank 0's node.*run/last.pt is on rank 1 on host node-a"):
        check_nodes(args, distributed.Context(rank=0, world_size=2))
    fake_group(monkeypatch, {0: {**well, "problems": ["--resume: run/last.pt does not exist"]}})
    with pytest.raises(ValueError, match="^another process found a problem: rank 0's error names it$"):
        check_nodes(args, distributed.Context(rank=1, world_size=2))


def test_data_that_one_rank_reads_wrong_stops_every_rank(monkeypatch, tmp_path, shapes_coco):
    """Each node reads its own copy: a copy with a bad annotation on rank 1 stops it with the
    reader's message, its rank and host (and rank 0 with the same line)."""
    document = json.loads((shapes_coco / "annotations.json").read_text())
    document["annotations"][0]["bbox"] = [0, 0, -5, 3]
    (tmp_path / "bad.json").write_text(json.dumps(document))
    args = parser().parse_args(["ssd", "--out", str(tmp_path / "run"), "--images", str(shapes_coco),
                                "--annotations", str(tmp_path / "bad.json")])
    fake_group(monkeypatch, {0: {"host": "node-a", "problems": []}})
    with pytest.raises(ValueError, match=r"(?s)bad.json.*negative size.*\(rank 1 on host "):
        load_data_everywhere(args, recipes.RECIPES["ssd"], distributed.Context(rank=1, world_size=2))


def test_a_finished_run_is_not_overwritten(tmp_path, capsys):
    (tmp_path / "model.pt").write_bytes(b"precious")
    assert main(["ssd", "--out", str(tmp_path), *TINY]) == 2
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
    assert code == 2 and re.search(message, err) and "bad.json" in err
    assert not (tmp_path / "run" / "model.pt").exists()


@pytest.fixture(scope="module")
def ddp_steps(tmp_path_factory):
    """tests/ddp_step.py's two modes under one torchrun: {mode: its folder of start, ddp and single}."""
    out = tmp_path_factory.mktemp("ddp_step")
    result = torchrun([str(ROOT / "tests" / "ddp_step.py"), str(out)])
    assert result.returncode == 0, result.stderr[-3000:]
    return {mode: out / mode for mode in ("frozen", "per-process")}


@pytest.mark.slow   # torchrun: two processes
def test_one_ddp_step_equals_one_step_on_the_union_batch(ddp_steps):
    """2 processes x 4 images, gradients averaged by DDP, against 1 process x the same 8 images
    (BatchNorm frozen: in train mode each process would normalize with its own batch's
    statistics). FCN: its loss is a mean over pixels, so the union's mean is the mean of the
    two halves'."""
    folder = ddp_steps["frozen"]
    ddp = torch.load(folder / "ddp.pt", weights_only=True)
    single = torch.load(folder / "single.pt", weights_only=True)
    start = torch.load(folder / "start.pt", weights_only=True)
    moved = 0
    for key, value in single.items():
        torch.testing.assert_close(ddp[key], value, rtol=1e-5, atol=1e-5, msg=key)  # steps are ~0.05: summation order only
        moved += int(not torch.equal(value, start[key]))
    assert moved > 10   # the step changed the weights (the comparison is not of two untouched models)


@pytest.mark.slow   # torchrun: two processes
def test_with_per_process_batchnorm_the_ddp_step_is_not_the_union_step(ddp_steps):
    """The condition of the equality above, tested: BatchNorm in train mode in each process (the
    planted fault: what the page's SSD does on the CPU, where SyncBatchNorm has no kernels)
    normalizes each process's 4 images with their own statistics, and the DDP step then
    differs from the union's by far more than float rounding."""
    folder = ddp_steps["per-process"]
    ddp = torch.load(folder / "ddp.pt", weights_only=True)
    single = torch.load(folder / "single.pt", weights_only=True)
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
