"""The committed detector checkpoints: small, weights-only, their recorded mAP reproduces, and
the command that made them is the one in the record."""
import dataclasses
import json
from pathlib import Path

import pytest
import torch

from lessons_pkg import checkpoints

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = {name: ROOT / "data" / "pretrained" / f"{name}.pt"
             for name in ("sliding_window", "fcn", "rcnn", "fast_rcnn", "faster_rcnn", "yolo", "ssd", "ssd_focal",
                          "ssd_random", "mask_rcnn", "mask_rcnn_roi_pool", "mask_rcnn_agnostic",
                          "ssdlite")}

pytestmark = pytest.mark.usefixtures("one_thread")

# float32 weights: the course's detectors stay under 5 MiB each; torchvision's SSDLite (the
# outside reference, 2.2 M parameters) under 10 MiB.
SIZE_LIMITS = {"ssdlite": 10 * 2**20}


@pytest.mark.parametrize("name", sorted(COMMITTED))
def test_checkpoint_is_small_and_weights_only(name):
    path = COMMITTED[name]
    assert path.stat().st_size < SIZE_LIMITS.get(name, 5 * 2**20)
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert all(v.dtype in (torch.float32, torch.int64) for v in state.values())  # int64: BN's counters
    model = checkpoints.RECIPES[name].build()
    assert set(state) == set(model.state_dict())


@pytest.mark.parametrize("name", sorted(COMMITTED))
def test_record_says_how_to_reproduce_it(name):
    record = json.loads(COMMITTED[name].with_suffix(".json").read_text())
    assert record["command"] == (f"python -m lessons_pkg.checkpoints {name} --out data/pretrained/{name}.pt "
                                 f"--steps {record['steps']} --seed {record['seed']}")
    assert record["recipe"] == name and record["torch"] and record["dtype"] == "float32"
    for key, value in checkpoints.RECIPES[name].settings().items():
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
