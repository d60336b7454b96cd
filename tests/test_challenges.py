"""The open challenges: bars read from the committed records, and scores that refuse what breaks
a challenge's rules (an inexact NMS, a model too large) and say "not yet" below the bar."""
import json

import pytest
import torch
import torchvision

from lessons_pkg import ablations, challenges, recipes

pytestmark = pytest.mark.usefixtures("one_thread")


def test_every_challenge_has_a_bar_from_the_records():
    assert set(challenges.CHALLENGES) == {"nms", "localizer", "detector", "instance", "segmentation", "throughput"}
    # Today's numbers of the committed records (nothing is retrained): the hard-preset SSD's test
    # mAP@0.5 (not its mAP, 0.547), Mask R-CNN's test mask mAP (not its box mAP, 0.810, nor the
    # masks' mAP@0.5, 0.951), the FCN's test mIoU (not the val split's, 0.925).
    assert challenges.bar("detector") == pytest.approx(0.820519, abs=1e-6)
    assert challenges.bar("instance") == pytest.approx(0.768703, abs=1e-6)
    assert challenges.bar("segmentation") == pytest.approx(0.90146, abs=1e-6)
    # no seed of any of the chapter's runs (every λ, every workflow) reaches the localizer's bar
    for name in ("localizer_box_weight", "localizer_workflows"):
        for variant, r in ablations.load(name)["recipes"].items():
            assert challenges.bar("localizer") >= r["test"]["mean_iou"]["mean"] + r["test"]["mean_iou"]["spread"] - 1e-9
    assert challenges.bar("localizer") == pytest.approx(0.861 + 0.010, abs=0.002)   # 'pretrained, unfrozen' today
    with pytest.raises(ValueError, match="unknown challenge 'fastest'"):
        challenges.bar("fastest")


def test_the_nms_challenge_scores_only_an_exact_nms(capsys):
    exact = challenges.score_nms(torchvision.ops.nms, num_boxes=500, repeats=1)
    assert exact["value"] > 0 and "speed-up over the course's NMS" in capsys.readouterr().out

    def top_half(boxes, scores, t):               # fast, and wrong
        return scores.argsort(descending=True)[: len(scores) // 2]

    wrong = challenges.score_nms(top_half, num_boxes=500, repeats=1)
    assert wrong == {"challenge": "nms", "value": 0.0, "bar": 1.0, "beaten": False}
    assert "not exact, so not scored" in capsys.readouterr().out


@pytest.mark.slow   # rescores a committed checkpoint on the test images
def test_the_detector_challenge_scores_on_the_hard_preset():
    """SSD's own hard-preset checkpoint scores its record's number: it ties the bar, it does not beat it."""
    model, record = recipes.load("ssd_hard")
    result = challenges.score_detector(model)
    assert result["value"] == pytest.approx(record["test"]["map_50"], abs=0.01)


@pytest.mark.slow   # scores a localizer on the test images
def test_the_localizer_challenge_says_not_yet_for_an_untrained_model(capsys):
    from lessons_pkg.models import localizer

    torch.manual_seed(0)
    result = challenges.score_localizer(localizer.Localizer(num_classes=4).eval())
    assert not result["beaten"] and result["value"] < result["bar"]
    assert "not yet" in capsys.readouterr().out


def test_the_segmentation_challenge_refuses_a_model_over_half_the_parameters(capsys):
    model, _ = recipes.load("fcn")
    result = challenges.score_segmentation(model)
    assert result["value"] == 0.0 and not result["beaten"]
    assert "over the limit" in capsys.readouterr().out


def test_the_throughput_challenge_reads_a_benchmark_record(tmp_path, capsys):
    committed = challenges.score_throughput()
    runs = json.loads((challenges.BENCH_DIR / "train_throughput.json").read_text())["runs"]
    assert committed["value"] == pytest.approx(runs[2]["images_per_second"] / runs[0]["images_per_second"])
    assert not committed["beaten"]                # the committed record's speed-up is below the 1.8 bar
    fast = tmp_path / "fast.json"
    fast.write_text(json.dumps({"runs": [{"processes": 1, "threads_per_process": 1, "images_per_second": 50.0},
                                         {"processes": 2, "threads_per_process": 1, "images_per_second": 95.0}]}))
    assert challenges.score_throughput(fast)["beaten"]
    fast.write_text(json.dumps({"runs": [{"processes": 1, "threads_per_process": 2, "images_per_second": 50.0}]}))
    with pytest.raises(ValueError, match="fast.json: needs a run of 1 process x 1 thread"):
        challenges.score_throughput(fast)
