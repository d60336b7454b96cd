"""Ablations over seeds: the committed records hold what their seeds measured, seed 0 is the
committed checkpoint, and the command trains the missing seeds and keeps only their scores (and,
for a chapter that loads them, the seed-0 weights of the variants an ablation names)."""
import dataclasses
import json
import statistics

import pytest
import torch

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


@pytest.mark.slow   # renders the chapter's splits and scores two localizers on them
@pytest.mark.usefixtures("one_thread")
def test_the_kept_weights_score_what_the_record_says_of_seed_0():
    """The chapter loads λ = 0.1 and 10 instead of training them: each file is the one the record
    pins (SHA-256), and scores on the val and test splits what the record's seed 0 says."""
    name = "localizer_box_weight"
    record = ablations.load(name)
    assert set(record["weights"]) == set(ablations.ABLATIONS[name].keep_weights) == {"0.1", "10.0"}
    sets = ablations.localizer_data()
    for variant, kept in record["weights"].items():
        path = ablations.weights_path(name, variant)
        assert kept["path"] == records.display_path(path) and kept["sha256"] == records.sha256(path)
        model = ablations.kept_model(name, variant)
        assert model.config.box_weight == float(variant)
        for split in ("val", "test"):
            again = evaluation.score(model, sets[split], "localization")
            assert again == pytest.approx(record["recipes"][variant]["runs"]["0"][split], abs=1e-6), (variant, split)
    with pytest.raises(ValueError, match="keeps the weights of"):
        ablations.kept_model(name, "1.0")


def test_an_ablation_keeps_seed_0_weights_of_the_variants_it_names(tmp_path, monkeypatch):
    """A live ablation with ``keep_weights``: seed 0 of the named variant is saved in float16 and
    scored as saved; no other seed or variant leaves weights; nothing is overwritten unasked."""
    monkeypatch.setattr(ablations, "ABLATIONS_DIR", tmp_path)
    calls = []

    def run(variant, seed, weights_out=None):
        calls.append((variant, seed, weights_out))
        torch.manual_seed(seed)
        model = torch.nn.Linear(3, 1)
        if weights_out is not None:
            records.save_weights(model, weights_out)
        score = float(model.weight.double().sum())   # float16 cannot hold most float32 weights
        return {"val": {"accuracy": score}, "test": {"accuracy": score + seed}}

    monkeypatch.setitem(ablations.ABLATIONS, "tiny", ablations.Ablation(
        ("a", "b"), seeds=(0, 1), run=run, keep_weights=("a",), model=lambda variant: torch.nn.Linear(3, 1)))
    assert ablations_command.main(["tiny"]) == 0
    kept = tmp_path / "tiny" / "a.pt"
    assert [c[2] for c in calls] == [kept, None, None, None]
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.*")) == ["tiny.json", "tiny/a.pt"]
    record = json.loads((tmp_path / "tiny.json").read_text())
    assert record["weights"] == {"a": {"path": str(kept), "sha256": records.sha256(kept)}}
    model = ablations.kept_model("tiny", "a")
    assert all(v.dtype == torch.float16 for v in torch.load(kept, weights_only=True).values())
    # the record's seed 0 is what the file holds, not the float32 model before the cast
    assert record["recipes"]["a"]["runs"]["0"]["val"]["accuracy"] == float(model.weight.double().sum())
    with pytest.raises(SystemExit):
        ablations_command.main(["tiny"])
    assert kept.stat().st_size > 0


def test_keep_weights_needs_a_live_run_and_a_model():
    with pytest.raises(ValueError, match="needs a live run"):
        ablations.Ablation(("a",), keep_weights=("a",))
    with pytest.raises(ValueError, match="not in recipes"):
        ablations.Ablation(("a",), run=lambda v, s: {}, keep_weights=("b",), model=lambda v: None)
