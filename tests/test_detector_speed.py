"""The speed/accuracy measurement: the Pareto front against a brute-force loop, the timing
helper's predictions against batched ones, one real measurement from a checkpoint."""
import matplotlib

matplotlib.use("Agg")

import pytest
import torch
from torch import nn

from lessons_pkg import detector_speed, metrics

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
    table = detector_speed.format_table(rows)
    assert "SSD" in table and "mAP@0.5" in table
    ax = detector_speed.plot(rows)
    assert ax.get_xscale() == "log" and len(ax.collections) == 1


def test_measure_rejects_unknown_detectors():
    with pytest.raises(ValueError, match="unknown detector"):
        detector_speed.measure(("yolo9000",), num_images=1)


def test_time_to_quality_reads_every_detector_curve_from_its_record():
    """Every detector of the chart has a curve in its record: increasing seconds and steps, its last
    point the recipe's full training and within 0.03 of the committed weights' test mAP@0.5 (a
    --curve run trains the recipe again; other thread counts round differently)."""
    from lessons_pkg import checkpoints, records

    curves = detector_speed.time_to_quality()
    assert list(curves) == list(detector_speed.DETECTORS)
    for recipe, curve in curves.items():
        record = records.load_record(records.default_path(recipe))
        steps = [p["step"] for p in curve]
        assert steps == sorted(steps) and steps[-1] == checkpoints.RECIPES[recipe].steps, recipe
        seconds = [p["seconds"] for p in curve]
        assert seconds == sorted(seconds) and seconds[0] > 0, recipe
        assert abs(curve[-1]["map_50"] - record["test"]["map_50"]) <= 0.03, recipe
    ax = detector_speed.plot_time_to_quality(curves)
    assert len(ax.lines) == len(curves)


def test_seconds_to_reach_and_a_record_without_a_curve(tmp_path):
    curve = [{"seconds": 5.0, "map_50": 0.5}, {"seconds": 10.0, "map_50": 0.9}, {"seconds": 20.0, "map_50": 0.88}]
    assert detector_speed.seconds_to_reach(curve, 0.85) == 10.0
    assert detector_speed.seconds_to_reach(curve, 0.95) is None
    (tmp_path / "ssd.json").write_text('{"steps": 1}')
    with pytest.raises(ValueError, match="ssd.json has no time-to-quality curve.*--curve"):
        detector_speed.time_to_quality(["ssd"], tmp_path)
