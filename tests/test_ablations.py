"""Ablations over seeds: the committed records hold what their seeds measured, seed 0 is the
committed checkpoint, and the command trains the missing seeds and keeps only their scores."""
import dataclasses
import json
import statistics

import pytest

from lessons_pkg import ablations, evaluation, recipes, records
from lessons_pkg.commands import ablations as ablations_command


@pytest.mark.parametrize("name", sorted(ablations.ABLATIONS))
def test_committed_ablation_records(name):
    record = ablations.load(name)
    ablation = ablations.ABLATIONS[name]
    assert record["seeds"] == list(ablation.seeds) and set(record["recipes"]) == set(ablation.recipes)
    for recipe, r in record["recipes"].items():
        assert set(r["runs"]) == {str(s) for s in ablation.seeds}
        if ablation.run is None:
            committed = records.load_record(records.default_path(recipe))
            seed0 = r["runs"]["0"]["test"]
            assert {k: seed0[k] for k in committed["test"]} == committed["test"]   # seed 0: the committed file
            if ablation.extra is None:                              # and what the extra scoring adds
                assert seed0 == committed["test"]
            else:
                assert all(set(run[split]) > set(committed[split]) for run in r["runs"].values()
                           for split in ("val", "test"))
        for split in ("val", "test"):
            for key, summary in r[split].items():
                values = [run[split][key] for run in r["runs"].values()]
                assert summary["values"] == values
                assert summary["mean"] == pytest.approx(statistics.fmean(values), abs=1e-6)
                assert summary["spread"] == pytest.approx(statistics.stdev(values), abs=1e-6)
        first = next(iter(r["test"]))
        assert len({run["test"][first] for run in r["runs"].values()}) > 1     # the seeds differ


@pytest.mark.slow   # rescores a committed checkpoint on the test images
@pytest.mark.usefixtures("one_thread")
def test_the_extra_scores_of_seed_0_are_those_of_the_committed_weights():
    """The recall@0.5 and box count that ssd_negatives adds for seed 0 come from the committed
    checkpoint's weights: rescored here, they agree (another recipe's weights would not)."""
    ablation = ablations.ABLATIONS["ssd_negatives"]
    runs = ablations.load("ssd_negatives")["recipes"]
    model, _ = recipes.load("ssd_focal_no_alpha")
    again = ablation.extra("ssd_focal_no_alpha", model, "test")
    seed0 = runs["ssd_focal_no_alpha"]["runs"]["0"]["test"]
    assert again["recall_50"] == pytest.approx(seed0["recall_50"], abs=1e-4)
    assert again["boxes_50"] == seed0["boxes_50"]
    assert again["boxes_50"] != runs["ssd_focal"]["runs"]["0"]["test"]["boxes_50"]   # the check can tell them apart


@pytest.mark.slow   # trains a localizer (about 20 s)
def test_a_live_run_of_a_chapter_reproduces_its_record():
    """Seed 1 of the cheapest live variant, trained again, scores what the record says."""
    record = ablations.load("localizer_workflows")["recipes"]["frozen"]["runs"]["1"]
    again = ablations.localizer_run("frozen", 1.0, seed=1)
    for split in ("val", "test"):
        assert again[split] == pytest.approx(record[split], abs=0.02), split   # another CPU may round differently


def test_the_command_trains_the_other_seeds_and_keeps_their_scores(tmp_path, monkeypatch):
    recipe = recipes.RECIPES["sliding_window"]
    monkeypatch.setitem(recipes.RECIPES, "sliding_window", dataclasses.replace(recipe, num_train_images=8, steps=2))
    monkeypatch.setattr(evaluation, "VAL_IMAGES", 4)
    monkeypatch.setattr(evaluation, "TEST_IMAGES", 4)
    monkeypatch.setattr(ablations, "ABLATIONS_DIR", tmp_path)
    seen = []

    def extra(recipe, model, split):            # each seed's own weights, each split
        seen.append((recipe, split))
        return {"recall_50": float(sum(p.sum() for p in model.parameters()))}

    monkeypatch.setitem(ablations.ABLATIONS, "tiny", ablations.Ablation(("sliding_window",), seeds=(0, 1),
                                                                        extra=extra))
    assert ablations_command.main(["tiny"]) == 0
    record = json.loads((tmp_path / "tiny.json").read_text())
    runs = record["recipes"]["sliding_window"]["runs"]
    assert runs["1"]["command"] == "python -m lessons_pkg.checkpoints sliding_window --out /tmp/sliding_window_seed1.pt --seed 1"
    assert runs["1"]["test"]["num_images"] == 4
    assert seen == [("sliding_window", "val"), ("sliding_window", "test")] * 2
    assert runs["0"]["test"]["recall_50"] != runs["1"]["test"]["recall_50"]   # seed 1's weights, not seed 0's
    summary = record["recipes"]["sliding_window"]["test"]["recall_50"]
    assert summary["values"] == [runs["0"]["test"]["recall_50"], runs["1"]["test"]["recall_50"]]
    assert list(tmp_path.iterdir()) == [tmp_path / "tiny.json"]            # no weights kept
    with pytest.raises(SystemExit):                                           # never overwritten unasked
        ablations_command.main(["tiny"])


def test_apart_claims_only_gaps_beyond_both_spreads():
    assert ablations.apart({"mean": 0.9, "spread": 0.01}, {"mean": 0.87, "spread": 0.01})
    assert not ablations.apart({"mean": 0.9, "spread": 0.02}, {"mean": 0.87, "spread": 0.02})
    assert not ablations.apart({"mean": 0.87, "spread": 0.0}, {"mean": 0.9, "spread": 0.0})
