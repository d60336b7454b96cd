"""The committed detector checkpoints: small, weights-only, their recorded mAP reproduces, and
the command that made them is the one in the record."""
import dataclasses
import json
import shlex
from pathlib import Path

import pytest
import torch

from lessons_pkg import checkpoints, records

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = {name: ROOT / "data" / "pretrained" / f"{name}.pt"
             for name in ("sliding_window", "fcn", "rcnn", "fast_rcnn", "faster_rcnn", "yolo", "ssd", "ssd_focal",
                          "ssd_random", "mask_rcnn", "mask_rcnn_roi_pool", "mask_rcnn_agnostic",
                          "ssdlite")}
DTYPES = {"float32": torch.float32, "float16": torch.float16}

pytestmark = pytest.mark.usefixtures("one_thread")

# The course's detectors stay under 5 MiB each; torchvision's SSDLite (the outside reference,
# 2.2 M parameters) under 10 MiB. Newer checkpoints are float16 (their records score the float16
# weights), the older ones float32.
SIZE_LIMITS = {"ssdlite": 10 * 2**20}


@pytest.mark.parametrize("name", sorted(COMMITTED))
def test_checkpoint_is_small_and_weights_only(name):
    path = COMMITTED[name]
    assert path.stat().st_size < SIZE_LIMITS.get(name, 5 * 2**20)
    state = torch.load(path, map_location="cpu", weights_only=True)
    dtype = DTYPES[json.loads(path.with_suffix(".json").read_text())["dtype"]]
    assert all(v.dtype in (dtype, torch.int64) for v in state.values())  # int64: BN's counters
    model = checkpoints.RECIPES[name].build()
    assert set(state) == set(model.state_dict())


@pytest.mark.parametrize("name", sorted(COMMITTED))
def test_record_says_how_to_reproduce_it(name):
    """The record's command, read by the command's own parser, trains the recipe as it stands:
    ``python -m lessons_pkg.checkpoints NAME`` with no other flag remakes the committed file."""
    record = json.loads(COMMITTED[name].with_suffix(".json").read_text())
    recipe = checkpoints.RECIPES[name]
    words = shlex.split(record["command"])
    assert words[:4] == ["python", "-m", "lessons_pkg.checkpoints", name]
    args = checkpoints.parser().parse_args(words[3:])
    assert args.out is None or (ROOT / args.out).resolve() == records.default_path(name) == COMMITTED[name]
    assert args.steps in (None, recipe.steps) and args.seed in (None, recipe.seed)
    assert record["steps"] == recipe.steps and record["seed"] == recipe.seed
    assert record["recipe"] == name and record["torch"] and record["dtype"] in DTYPES
    for key, value in recipe.settings().items():
        assert record[key] == value, key
    assert record["val"]["num_images"] == checkpoints.VAL_IMAGES


@pytest.mark.parametrize("name", sorted(COMMITTED))
def test_recorded_map_reproduces(name):
    model, record = checkpoints.load(name, COMMITTED[name])
    val = record["val"]
    result = checkpoints.validation_record(record["task"], model, val["config"], val["num_images"],
                                           record["proposals"])
    # Float arithmetic differs a little across machines and thread counts: a detection may flip.
    keys = ["miou", "pixel_accuracy"] if record["task"] == "segmentation" else ["map_50", "map"]
    for key in keys:
        assert result[key] == pytest.approx(val[key], abs=0.01), key
    if record["task"] == "instance":
        for key in ("map_50", "map"):
            assert result["segm"][key] == pytest.approx(val["segm"][key], abs=0.01), f"segm {key}"


def test_missing_checkpoint_names_the_file_and_the_command(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing\.pt.*python -m lessons_pkg\.checkpoints sliding_window"):
        checkpoints.load("sliding_window", tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="unknown recipe 'yolo9000'"):
        checkpoints.load("yolo9000", tmp_path / "x.pt")


def test_the_command_trains_and_writes_a_record(tmp_path, monkeypatch):
    recipe = checkpoints.RECIPES["sliding_window"]
    monkeypatch.setitem(checkpoints.RECIPES, "sliding_window", dataclasses.replace(recipe, num_train_images=8))
    monkeypatch.setattr(checkpoints, "VAL_IMAGES", 4)
    out = tmp_path / "sw.pt"
    assert checkpoints.main(["sliding_window", "--out", str(out), "--steps", "2", "--seed", "3"]) == 0
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["num_train_images"] == 8 and record["val"]["num_images"] == 4
    assert record["steps"] == 2 and record["seed"] == 3 and record["command"].endswith("--steps 2 --seed 3")
    model, _ = checkpoints.load("sliding_window", out)
    assert not model.training
