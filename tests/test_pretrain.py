"""The committed pretrained backbone: small, weights-only, its recorded accuracy reproduces,
and the command that made it runs."""
import json
from pathlib import Path

import pytest
import torch

from lessons_pkg import data
from lessons_pkg.commands import pretrain
from lessons_pkg.models import localizer as L

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINT = ROOT / "data" / "pretrained" / "backbone.pt"


@pytest.fixture(scope="module")
def record():
    return json.loads(CHECKPOINT.with_suffix(".json").read_text())


def test_checkpoint_is_small_weights_only_float32(record):
    assert CHECKPOINT.stat().st_size < 4 * 2**20  # a few MB at most
    state = torch.load(CHECKPOINT, map_location="cpu", weights_only=True)
    assert all(v.dtype in (torch.float32, torch.int64) for v in state.values())  # int64: BN's counters
    assert {k.split(".")[0] for k in state} == {"backbone", "head"}
    assert sum(v.numel() for k, v in state.items() if v.is_floating_point() and "running" not in k) == record["parameters"]


def test_record_says_how_to_reproduce_it(record):
    assert record["command"].startswith("python -m lessons_pkg.pretrain --out data/pretrained/backbone.pt")
    assert f"--steps {record['steps']} --seed {record['seed']}" in record["command"]
    assert record["torch"] and record["dtype"] == "float32"
    assert record["classes"] == list(data.preset("pretrain").classes)
    # Pretraining never sees the chapter's images: its own seeds, another preset.
    assert {record["train_seed"], record["heldout"]["seed"]}.isdisjoint(data.SPLIT_SEEDS.values())
    assert record["heldout"]["exact_match"] >= 0.5 and record["heldout"]["mean_label_accuracy"] >= 0.9


@pytest.mark.slow   # rescores the committed backbone
def test_recorded_accuracy_reproduces(record):
    model, _ = pretrain.load(CHECKPOINT)
    check = pretrain.MultiLabelScenes(record["check"]["num_images"], record["check"]["seed"])
    measured = pretrain.multilabel_accuracy(model, check)
    # Float arithmetic differs a little across machines: allow about two images (of 256) to flip.
    assert measured["exact_match"] == pytest.approx(record["check"]["exact_match"], abs=0.01)
    assert measured["mean_label_accuracy"] == pytest.approx(record["check"]["mean_label_accuracy"], abs=0.002)


def test_localizer_loads_the_backbone_only():
    model = L.Localizer().load_backbone(CHECKPOINT)
    state = torch.load(CHECKPOINT, map_location="cpu", weights_only=True)
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(value, state["backbone." + key]), key


def test_command_runs_end_to_end(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(pretrain, "HELDOUT_IMAGES", 8)
    monkeypatch.setattr(pretrain, "CHECK_IMAGES", 4)
    out = tmp_path / "b.pt"
    assert pretrain.main(["--out", str(out), "--steps", "2", "--num-images", "8", "--batch-size", "4", "--quiet"]) == 0
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["steps"] == 2 and record["heldout"]["num_images"] == 8
    assert record["command"] == (f"python -m lessons_pkg.pretrain --out {out} --steps 2 --seed 0 --num-images 8 "
                                 "--batch-size 4 --lr 0.002")
    L.Localizer().load_backbone(out)
    assert "wrote" in capsys.readouterr().out
