"""The one training path (lessons_pkg.training.run_training): both commands train the same way,
a flag else the recipe's value, the record of the weights as saved."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from lessons_pkg import evaluation, recipes, records, training
from lessons_pkg.commands.train import main as train_command

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def small_evaluation(monkeypatch):
    monkeypatch.setattr(evaluation, "VAL_IMAGES", 4)
    monkeypatch.setattr(evaluation, "TEST_IMAGES", 4)


@pytest.mark.parametrize("name", ["ssd", "fcn"])
def test_both_commands_train_the_same_weights(tmp_path, monkeypatch, small_evaluation, name):
    """python -m lessons_pkg.checkpoints (float16 file) and python -m lessons_pkg.train (float32)
    on the shapes data, same recipe, steps and seed: the same weights, up to the file's cast."""
    recipe = recipes.RECIPES[name]
    monkeypatch.setitem(recipes.RECIPES, name, dataclasses.replace(recipe, num_train_images=16))
    record = training.make_checkpoint(name, tmp_path / "c.pt", steps=3)
    assert train_command([name, "--out", str(tmp_path / "run"), "--steps", "3", "--num-val-images", "4",
                          "--quiet", "--device", "cpu"]) == 0
    half = records.load_weights(tmp_path / "c.pt")
    full = records.load_weights(tmp_path / "run" / "model.pt")
    assert half.keys() == full.keys()
    for key in half:
        assert torch.equal(half[key], full[key].to(half[key].dtype)), key
    # the record of the checkpoint scores its float16 weights on val and test; the run's its val set
    run_record = records.load_record(tmp_path / "run" / "model.pt")
    assert record["dtype"] == "float16" and run_record["dtype"] == "float32"
    assert record["final_loss"] == run_record["final_loss"] and record["seed"] == run_record["seed"] == recipe.seed
    assert set(record) >= {"val", "test", "curve"} and "test" not in run_record and "val" in run_record


def test_a_flag_else_the_recipes_value():
    recipe = recipes.RECIPES["ssd"]
    s = training.Settings.of(recipe, steps=7, lr=None, seed=None)
    assert (s.steps, s.lr, s.seed, s.batch_size, s.warmup_steps) == (7, recipe.lr, recipe.seed, recipe.batch_size,
                                                                    recipe.warmup_steps)
    assert training.Settings.of(recipe, seed=0, warmup_steps=0).warmup_steps == 0   # 0 is a value, not "unset"


def test_the_scores_are_those_of_the_file_not_of_the_float32_model(tmp_path, monkeypatch, small_evaluation):
    recipe = recipes.RECIPES["ssd"]
    monkeypatch.setitem(recipes.RECIPES, "ssd", dataclasses.replace(recipe, num_train_images=8))
    record = training.make_checkpoint("ssd", tmp_path / "s.pt", steps=2)
    model, loaded = recipes.load("ssd", tmp_path / "s.pt")
    assert loaded == record
    assert evaluation.record_scores(recipes.RECIPES["ssd"], model) == {"val": record["val"], "test": record["test"]}


@pytest.mark.parametrize("rule, batch, world_size, factor", [
    ("linear", 8, 4, 4.0), ("linear", 4, 1, 0.5), ("sqrt", 8, 4, 2.0), ("sqrt", 2, 1, 0.5), ("linear", 8, 1, 1.0)])
def test_scaled_lr_from_the_recipes_batch_on_one_process(rule, batch, world_size, factor):
    """k = (batch x world size) / the reference batch (8 here): linear x k, sqrt x sqrt(k)."""
    lr, scaling = training.scaled_lr(rule, 0.003, batch * world_size, reference_batch_size=8)
    assert lr == pytest.approx(0.003 * factor, rel=1e-12)
    assert scaling == {"rule": rule, "reference_lr": 0.003, "reference_batch_size": 8,
                       "factor": pytest.approx(factor, rel=1e-12)}


def test_an_unknown_scaling_rule_is_named():
    with pytest.raises(ValueError, match="--scale-lr must be one of linear, sqrt, got 'cubic'"):
        training.scaled_lr("cubic", 0.003, 16, 8)
