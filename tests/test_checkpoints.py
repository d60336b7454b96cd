"""The committed detector checkpoints: small, weights-only, and the command that made them is
the one in the record; the checkpoints command trains, records and rescores. The records' scores
are recomputed from the weights in tests/test_checkpoints_dense.py and
tests/test_checkpoints_region_based.py."""
import dataclasses
import json
import shlex
from pathlib import Path

import pytest
import torch

from lessons_pkg import evaluation, recipes, records, training
from lessons_pkg.commands import checkpoints as checkpoints_command

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = {name: ROOT / "data" / "pretrained" / f"{name}.pt" for name in recipes.RECIPES}
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
    model = recipes.RECIPES[name].build()
    assert set(state) == set(model.state_dict())


@pytest.mark.parametrize("name", sorted(COMMITTED))
def test_record_says_how_to_reproduce_it(name):
    """The record's command, read by the command's own parser, trains the recipe as it stands:
    ``python -m lessons_pkg.checkpoints NAME`` with no other flag remakes the committed file."""
    record = json.loads(COMMITTED[name].with_suffix(".json").read_text())
    recipe = recipes.RECIPES[name]
    words = shlex.split(record["command"])
    assert words[:4] == ["python", "-m", "lessons_pkg.checkpoints", name]
    args = checkpoints_command.parser().parse_args(words[3:])
    assert args.out is None or (ROOT / args.out).resolve() == records.default_path(name) == COMMITTED[name]
    assert args.steps in (None, recipe.steps) and args.seed in (None, recipe.seed)
    assert record["steps"] == recipe.steps and record["seed"] == recipe.seed
    assert record["recipe"] == name and record["torch"] and record["dtype"] in DTYPES
    for key, value in recipe.settings().items():
        assert record[key] == value, key
    assert record["val"]["num_images"] == evaluation.VAL_IMAGES


def test_missing_checkpoint_names_the_file_and_the_command(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing\.pt.*python -m lessons_pkg\.checkpoints sliding_window"):
        recipes.load("sliding_window", tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="unknown recipe 'yolo9000'"):
        recipes.load("yolo9000", tmp_path / "x.pt")


def test_the_command_trains_and_writes_a_record(tmp_path, monkeypatch):
    recipe = recipes.RECIPES["sliding_window"]
    monkeypatch.setitem(recipes.RECIPES, "sliding_window", dataclasses.replace(recipe, num_train_images=8))
    monkeypatch.setattr(evaluation, "VAL_IMAGES", 4)
    monkeypatch.setattr(evaluation, "TEST_IMAGES", 4)
    out = tmp_path / "sw.pt"
    assert checkpoints_command.main(["sliding_window", "--out", str(out), "--steps", "2", "--seed", "3"]) == 0
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["num_train_images"] == 8 and record["val"]["num_images"] == 4
    assert record["steps"] == 2 and record["seed"] == 3 and record["command"].endswith("--steps 2 --seed 3")
    model, _ = recipes.load("sliding_window", out)
    assert not model.training


@pytest.mark.slow   # three trainings and their scoring
def test_the_recipe_alone_sets_the_steps_and_seed_and_nothing_is_overwritten(tmp_path, monkeypatch):
    """No --steps, no --seed: the recipe's own (what makes the committed file); the record's
    command is then the shortest one; an existing checkpoint is replaced only with --overwrite."""
    recipe = recipes.RECIPES["sliding_window"]
    monkeypatch.setitem(recipes.RECIPES, "sliding_window",
                        dataclasses.replace(recipe, num_train_images=8, steps=3, seed=5))
    monkeypatch.setattr(evaluation, "VAL_IMAGES", 4)
    monkeypatch.setattr(evaluation, "TEST_IMAGES", 4)
    out = tmp_path / "sw.pt"
    assert checkpoints_command.main(["sliding_window", "--out", str(out)]) == 0
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["steps"] == 3 and record["seed"] == 5 and record["dtype"] == "float16"
    assert record["command"] == f"python -m lessons_pkg.checkpoints sliding_window --out {out}"
    state = torch.load(out, weights_only=True)
    assert {v.dtype for v in state.values()} <= {torch.float16, torch.int64}
    before = out.read_bytes()
    with pytest.raises(SystemExit):
        checkpoints_command.main(["sliding_window", "--out", str(out), "--steps", "1"])
    assert out.read_bytes() == before
    assert checkpoints_command.main(["sliding_window", "--out", str(out), "--steps", "1", "--overwrite"]) == 0
    assert json.loads(out.with_suffix(".json").read_text())["command"].endswith("--steps 1")
    with pytest.raises(SystemExit):
        checkpoints_command.main(["sliding_window", "--out", str(tmp_path / "x.pt"), "--steps", "0"])


def test_every_recipe_has_its_committed_checkpoint():
    missing = [name for name, path in COMMITTED.items()
               if not (path.is_file() and path.with_suffix(".json").is_file())]
    assert not missing, f"recipes without a committed checkpoint and record: {missing}"


def test_load_finds_the_committed_file_by_name():
    model, record = recipes.load("sliding_window")
    assert record == json.loads(COMMITTED["sliding_window"].with_suffix(".json").read_text())
    assert records.default_path("ssd") == COMMITTED["ssd"]


def test_the_record_scores_the_weights_as_saved(tmp_path):
    """save_checkpoint casts, saves and reloads before scoring: the scores see float16 weights."""
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    seen = {}

    def scores(saved):
        seen["weight"] = saved.weight.detach().clone()
        return {"score": 1.0}

    record = records.save_checkpoint(model, tmp_path / "m.pt", {"command": "x"}, dtype="float16", scores=scores)
    assert record["dtype"] == "float16" and record["score"] == 1.0 and record["parameters"] == 8
    stored = torch.load(tmp_path / "m.pt", weights_only=True)["weight"]
    assert stored.dtype == torch.float16
    torch.testing.assert_close(seen["weight"], stored.float(), rtol=0, atol=0)
    with pytest.raises(FileExistsError, match=r"m\.pt exists; pass --overwrite"):
        records.check_writable(tmp_path / "m.pt", overwrite=False)


def test_rescore_rewrites_the_scores_and_leaves_the_weights(tmp_path, monkeypatch):
    import shutil
    for suffix in (".pt", ".json"):
        shutil.copy(COMMITTED["sliding_window"].with_suffix(suffix), tmp_path / f"sw{suffix}")
    monkeypatch.setattr(evaluation, "VAL_IMAGES", 4)
    monkeypatch.setattr(evaluation, "TEST_IMAGES", 4)
    weights = (tmp_path / "sw.pt").read_bytes()
    assert checkpoints_command.main(["sliding_window", "--out", str(tmp_path / "sw.pt"), "--rescore"]) == 0
    record = json.loads((tmp_path / "sw.json").read_text())
    assert record["val"]["num_images"] == 4 and record["test"]["num_images"] == 4
    assert record["command"] == json.loads(COMMITTED["sliding_window"].with_suffix(".json").read_text())["command"]
    assert (tmp_path / "sw.pt").read_bytes() == weights


def _small_recipe(monkeypatch, name: str, **changes) -> None:
    recipe = recipes.RECIPES[name]
    monkeypatch.setitem(recipes.RECIPES, name, dataclasses.replace(recipe, num_train_images=8, **changes))
    monkeypatch.setattr(evaluation, "VAL_IMAGES", 4)
    monkeypatch.setattr(evaluation, "TEST_IMAGES", 4)


@pytest.mark.slow   # two trainings of Faster R-CNN
def test_the_record_keeps_a_time_to_quality_curve_and_the_curve_does_not_change_the_training(tmp_path, monkeypatch):
    """Every curve_every steps the test-split mAP and the training seconds so far; the last point
    is the saved weights' test score. Evaluating in the middle of a training must not change what
    it trains (Faster R-CNN samples its RoIs from the global generator, which a DataLoader over
    the test images draws from): the weights equal those of a run without intermediate points."""
    _small_recipe(monkeypatch, "faster_rcnn", curve_every=1)
    out = tmp_path / "with_curve.pt"
    record = training.make_checkpoint("faster_rcnn", out, steps=3)
    curve = record["curve"]
    assert [p["step"] for p in curve] == [1, 2, 3]
    assert all(set(p) == {"step", "seconds", "map_50", "map"} for p in curve)
    assert 0 < curve[0]["seconds"] < curve[1]["seconds"] < curve[2]["seconds"]
    assert curve[2]["seconds"] == record["train_seconds"]
    assert curve[2]["map_50"] == record["test"]["map_50"] and curve[2]["map"] == record["test"]["map"]
    assert json.loads(out.with_suffix(".json").read_text())["curve"] == curve

    _small_recipe(monkeypatch, "faster_rcnn", curve_every=100)
    plain = tmp_path / "without.pt"
    assert [p["step"] for p in training.make_checkpoint("faster_rcnn", plain, steps=3)["curve"]] == [3]
    a, b = torch.load(out, weights_only=True), torch.load(plain, weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_curve_only_retrains_and_fills_the_existing_record_without_touching_the_weights(tmp_path, monkeypatch):
    _small_recipe(monkeypatch, "ssd", curve_every=2)
    out = tmp_path / "ssd.pt"
    record = training.make_checkpoint("ssd", out, steps=4)
    weights = out.read_bytes()
    del record["curve"]
    records.write_record(out, record)
    assert checkpoints_command.main(["ssd", "--out", str(out), "--steps", "4", "--curve"]) == 0
    again = json.loads(out.with_suffix(".json").read_text())
    assert out.read_bytes() == weights
    assert [p["step"] for p in again["curve"]] == [2, 4] and "--curve" in again["curve_made_by"]
    assert again["curve_threads"] == torch.get_num_threads()
    assert again["curve"][-1]["map_50"] == pytest.approx(record["test"]["map_50"], abs=1e-6)  # the same run
    with pytest.raises(ValueError, match="trained for 4 steps"):
        training.make_checkpoint("ssd", out, steps=5, curve_only=True)
    with pytest.raises(FileNotFoundError):
        training.make_checkpoint("ssd", tmp_path / "none.pt", steps=4, curve_only=True)
