"""The speed/accuracy measurement: the Pareto front against a brute-force loop, the timing
helper's predictions against batched ones, one real measurement from a checkpoint."""
import matplotlib

matplotlib.use("Agg")

import pytest
import torch
from torch import nn

from lessons_pkg import detector_speed, metrics
from lessons_pkg.commands import detector_speed as detector_speed_command

pytestmark = pytest.mark.usefixtures("one_thread")


def brute_force_front(ms, acc):
    n = len(ms)
    keep = []
    for i in range(n):
        dominated = any(ms[j] <= ms[i] and acc[j] >= acc[i] and (ms[j] < ms[i] or acc[j] > acc[i])
                        for j in range(n) if j != i)
        keep.append(not dominated)
    return torch.tensor(keep, dtype=torch.bool)


@pytest.mark.parametrize("seed", range(5))
def test_pareto_front_equals_brute_force(seed):
    g = torch.Generator().manual_seed(seed)
    ms = torch.randint(1, 6, (15,), generator=g).float()       # many ties on purpose
    acc = torch.randint(0, 5, (15,), generator=g).float() / 4
    assert torch.equal(metrics.pareto_front(ms, acc), brute_force_front(ms.tolist(), acc.tolist()))


def test_pareto_front_edge_cases():
    assert metrics.pareto_front(torch.zeros(0), torch.zeros(0)).shape == (0,)
    assert metrics.pareto_front(torch.tensor([3.0, 3.0]), torch.tensor([0.5, 0.5])).all()
    with pytest.raises(ValueError, match="one length"):
        metrics.pareto_front(torch.ones(3), torch.ones(2))


class Echo(nn.Module):
    """A stand-in detector: one box per image, its score the image's mean."""

    def forward(self, images):
        s = images.mean(dim=(1, 2, 3))
        return [{"boxes": torch.tensor([[0.0, 0, 4, 4]]), "labels": torch.tensor([1]), "scores": v[None]} for v in s]


def test_time_detector_runs_each_image_alone():
    images = [torch.rand(3, 8, 8) for _ in range(5)]
    preds, times = detector_speed.time_detector(Echo(), images, "cpu", warmup=2)
    assert len(preds) == len(times) == 5 and all(t > 0 for t in times)
    batched = Echo()(torch.stack(images))
    for p, q in zip(preds, batched):
        torch.testing.assert_close(p["scores"], q["scores"])


def test_measure_one_checkpoint_and_plot():
    rows = detector_speed.measure(("ssd",), num_images=4, device="cpu", warmup=1)
    (row,) = rows
    assert row.name == "SSD" and row.family == "one-stage" and row.ms_per_image > 0
    assert 0 <= row.map <= row.map_50 <= 1 and row.parameters > 0
    assert row.ms_quartiles[0] <= row.ms_per_image <= row.ms_quartiles[1]
    from lessons_pkg import records
    test = records.load_record(records.default_path("ssd"))["test"]
    assert (row.test_map_50, row.test_map) == (test["map_50"], test["map"])
    table = detector_speed.format_table(rows)
    assert "SSD" in table and "mAP@0.5" in table
    ax = detector_speed.plot(rows)
    assert ax.get_xscale() == "log" and len(ax.collections) == 1


def test_rcnn_and_fast_rcnn_on_the_shared_search_detect_what_their_own_search_finds():
    """measure runs selective search once per image for both proposal detectors: their
    detections (and so their scores) on the shared proposals equal those of each model searching
    every image itself, and each image's time includes the search's."""
    from lessons_pkg import data, recipes

    rows = detector_speed.measure(("rcnn", "fast_rcnn"), num_images=3, device="cpu", warmup=0)
    dataset = data.make_split("val", 3)
    images, targets = [dataset[i][0] for i in range(3)], [dataset[i][1] for i in range(3)]
    searched = detector_speed.search_proposals(images)
    assert min(searched[1]) > 0
    for row in rows:
        model, _ = recipes.load(row.recipe)
        own, own_ms = detector_speed.time_detector(model, images, "cpu", warmup=0)
        shared, shared_ms = detector_speed.time_detector(model, images, "cpu", warmup=0, proposals=searched)
        for a, b in zip(own, shared):
            assert all(torch.equal(a[k], b[k]) for k in ("boxes", "labels", "scores")), row.recipe
        scores = metrics.mean_average_precision(own, targets)
        assert (row.map, row.map_50) == (scores["map"], scores["map_50"]), row.recipe
        assert all(t > s for t, s in zip(shared_ms, searched[1]))   # the search is in the time
    with pytest.raises(ValueError, match="proposals: got 2 images' proposals for 3 images"):
        detector_speed.time_detector(model, images, "cpu", proposals=(searched[0][:2], searched[1][:2]))


def test_measure_rejects_unknown_detectors():
    with pytest.raises(ValueError, match="unknown detector"):
        detector_speed.measure(("yolo9000",), num_images=1)


def test_time_to_quality_reads_every_detector_curve_from_its_record():
    """Every detector of the chart has a curve in its record: increasing seconds and steps, its last
    point the recipe's full training and within 0.03 of the committed weights' test mAP@0.5 (a
    --curve run trains the recipe again; other thread counts round differently)."""
    from lessons_pkg import recipes, records

    curves = detector_speed.time_to_quality()
    assert list(curves) == list(detector_speed.DETECTORS)
    for recipe, curve in curves.items():
        record = records.load_record(records.default_path(recipe))
        steps = [p["step"] for p in curve]
        assert steps == sorted(steps) and steps[-1] == recipes.RECIPES[recipe].steps, recipe
        seconds = [p["seconds"] for p in curve]
        assert seconds == sorted(seconds) and seconds[0] > 0, recipe
        assert abs(curve[-1]["map_50"] - record["test"]["map_50"]) <= 0.03, recipe
    ax = detector_speed.plot_time_to_quality(curves)
    assert len(ax.lines) == len(curves)


def test_seconds_to_reach_and_a_record_without_a_curve(tmp_path):
    curve = [{"seconds": 5.0, "map_50": 0.5}, {"seconds": 10.0, "map_50": 0.9}, {"seconds": 20.0, "map_50": 0.88}]
    assert detector_speed.seconds_to_reach(curve, 0.85) == 10.0
    assert detector_speed.seconds_to_reach(curve, 0.95) is None
    stepped = [{**p, "step": 100 * (i + 1)} for i, p in enumerate(curve)]
    assert detector_speed.steps_to_reach(stepped, 0.85) == (100, 200)
    assert detector_speed.steps_to_reach(stepped, 0.4) == (0, 100)
    assert detector_speed.steps_to_reach(stepped, 0.95) is None
    (tmp_path / "ssd.json").write_text('{"steps": 1}')
    with pytest.raises(ValueError, match="ssd.json has no time-to-quality curve.*--curve"):
        detector_speed.time_to_quality(["ssd"], tmp_path)


# ----------------------------------------------------------------------------- cost per step
class TinyDetector(nn.Module):
    """A stand-in for a recipe's model (the recipe's constructor signature, a dict of losses);
    ``pause`` seconds of sleep in every training forward make a step deliberately slower."""

    pause = 0.0

    def __init__(self, num_classes, pretrained_backbone=None):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, images, targets=None):
        if self.pause:
            import time
            time.sleep(self.pause)
        return {"loss": self.conv(images).square().mean()}


class SlowTinyDetector(TinyDetector):
    pause = 0.03


def test_cost_per_step_ranks_a_planted_slower_step_and_keeps_the_one_off_costs_apart():
    """The planted fault: a recipe whose every step sleeps 30 ms more must come out slower by
    about that much; a recipe with proposals pays selective search once per training image,
    not in its steps."""
    from lessons_pkg.recipes import Recipe

    recipes = {"fast": Recipe(TinyDetector, batch_size=2, num_train_images=500),
               "slow": Recipe(SlowTinyDetector, batch_size=2, num_train_images=500),
               "proposals": Recipe(TinyDetector, batch_size=2, num_train_images=500, proposals=True)}
    costs = detector_speed.cost_per_step(recipes, steps=3, warmup=0, num_images=2)
    assert list(costs) == ["fast", "slow", "proposals"]
    for c in costs.values():
        assert len(c.step_ms) == 3 and c.ms_per_step == sorted(c.step_ms)[1] and c.batch_size == 2
        assert c.threads == torch.get_num_threads() and c.one_off_ms_per_image["render"] > 0
    assert costs["slow"].ms_per_step - costs["fast"].ms_per_step > 25
    assert "proposals" not in costs["fast"].one_off_ms_per_image
    assert costs["proposals"].one_off_ms_per_image["proposals"] > 0
    assert costs["proposals"].one_off_seconds > costs["fast"].one_off_seconds
    assert max(costs["proposals"].step_ms) < min(costs["slow"].step_ms)   # the search is not in a step
    fast = costs["fast"]
    assert fast.seconds(100, one_off=False) == pytest.approx(100 * fast.ms_per_step / 1e3)
    assert fast.seconds(100) == pytest.approx(fast.seconds(100, one_off=False) + fast.one_off_seconds)
    assert fast.one_off_seconds == pytest.approx(fast.one_off_ms_per_image["render"] * 500 / 1e3)
    table = detector_speed.format_costs(costs)
    assert "slow" in table and "ms/step" in table


def test_cost_per_step_trains_the_recipes_own_model_and_refuses_unknown_names():
    costs = detector_speed.cost_per_step(("centernet",), steps=1, warmup=0, num_images=8)
    assert costs["centernet"].batch_size == 8 and costs["centernet"].ms_per_step > 0
    with pytest.raises(ValueError, match="unknown recipe 'yolo9000'"):
        detector_speed.cost_per_step(("yolo9000",))
    with pytest.raises(ValueError, match="steps >= 1"):
        detector_speed.cost_per_step(("ssd",), steps=0)


def test_the_command_prints_the_training_costs(capsys):
    costs = detector_speed_command.main(["--only", "centernet", "--train-cost", "1"])
    assert list(costs) == ["centernet"] and len(costs["centernet"].step_ms) == 1
    assert "centernet" in capsys.readouterr().out


def test_curves_in_measured_seconds_are_steps_times_the_cost():
    cost = detector_speed.StepCost("ssd", 8, 20.0, [20.0], {"render": 1.0}, 2000, 1)
    curves = {"ssd": [{"step": 150, "seconds": 99.0, "map_50": 0.5}, {"step": 300, "seconds": 7.0, "map_50": 0.8}]}
    out = detector_speed.in_measured_seconds(curves, {"ssd": cost})
    assert [p["seconds"] for p in out["ssd"]] == pytest.approx([3.0 + 2.0, 6.0 + 2.0])
    assert [p["recorded_seconds"] for p in out["ssd"]] == [99.0, 7.0]
    assert detector_speed.in_measured_seconds(curves, {"ssd": cost}, one_off=False)["ssd"][0]["seconds"] == 3.0
