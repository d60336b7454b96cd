"""The one contract check: what prepare_batch checks for each task, and as_pair."""
import subprocess
import sys

import pytest
import torch

from lessons_pkg import inputs


def detection_targets(n=2, masks=False, size=(32, 32)):
    targets = []
    for _ in range(n):
        t = {"boxes": torch.tensor([[1.0, 2, 10, 12]]), "labels": torch.tensor([1])}
        if masks:
            t["masks"] = torch.zeros(1, *size, dtype=torch.uint8)
        targets.append(t)
    return targets


def test_eval_mode_checks_images_only_and_returns_no_targets():
    images, targets = inputs.prepare_batch([torch.rand(3, 32, 32)] * 2, "anything", False, 4)
    assert images.shape == (2, 3, 32, 32) and targets is None


@pytest.mark.parametrize("task, keys", [("detection", "'boxes', 'labels'"), ("instance", "'boxes', 'labels', 'masks'"),
                                        ("single_object", "'boxes', 'labels'"), ("semantic", "'semantic'")])
def test_train_mode_without_targets_names_the_keys_the_task_needs(task, keys):
    with pytest.raises(ValueError, match=f"in train mode the model needs targets \\(a list of dicts with {keys}"):
        inputs.prepare_batch(torch.rand(2, 3, 32, 32), None, True, 4, task)


def test_each_task_checks_what_it_needs():
    images = torch.rand(2, 3, 32, 32)
    _, targets = inputs.prepare_batch(images, detection_targets(), True, 4)
    assert len(targets) == 2
    with pytest.raises(ValueError, match="target 0: Mask R-CNN needs 'masks'"):
        inputs.prepare_batch(images, detection_targets(), True, 4, "instance")
    inputs.prepare_batch(images, detection_targets(masks=True), True, 4, "instance")
    with pytest.raises(ValueError, match=r"target 1 'masks': expected a Tensor\[1, 32, 32\]"):
        bad = detection_targets(masks=True)
        bad[1]["masks"] = torch.zeros(1, 16, 16, dtype=torch.uint8)
        inputs.prepare_batch(images, bad, True, 4, "instance")
    two = detection_targets()
    two[0] = {"boxes": torch.tensor([[1.0, 2, 10, 12], [3, 3, 9, 9]]), "labels": torch.tensor([1, 2])}
    inputs.prepare_batch(images, two, True, 4, "detection")
    with pytest.raises(ValueError, match="exactly one object"):
        inputs.prepare_batch(images, two, True, 4, "single_object")
    semantic = [{"semantic": torch.zeros(32, 32, dtype=torch.int64)} for _ in range(2)]
    inputs.prepare_batch(images, semantic, True, 4, "semantic")
    semantic[1]["semantic"][0, 0] = 7
    with pytest.raises(ValueError, match=r"target 1 'semantic': expected classes 0\.\.4 \(or 255, ignored\), got 7"):
        inputs.prepare_batch(images, semantic, True, 4, "semantic")
    with pytest.raises(ValueError, match="unknown task 'panoptic'"):
        inputs.prepare_batch(images, semantic, True, 4, "panoptic")


@pytest.mark.parametrize("key, value, message", [
    ("boxes", torch.tensor([[1.0, float("nan"), 10, 12]]), r"'boxes': expected finite values, got \[\[1.0, nan"),
    ("boxes", torch.zeros(1, 5), r"'boxes': expected a float Tensor\[(N|1), 4\] \(xyxy pixels\)"),
    ("labels", torch.tensor([0]), r"'labels': expected values in 1\.\.(4|K) \(0 is the background, never a class\), "
                                  r"got \[0\]"),
])
def test_models_and_metrics_check_a_target_with_the_same_checks(key, value, message):
    """One place for target validation: a model's batch and the metrics' targets fail the same
    check, each naming its own image ("target 0" and "targets[0]")."""
    from lessons_pkg import metrics

    bad = {**detection_targets(1)[0], key: value}
    with pytest.raises(ValueError, match="target 0 " + message):
        inputs.prepare_batch(torch.rand(1, 3, 32, 32), [bad], True, 4)
    prediction = {"boxes": torch.tensor([[1.0, 2, 10, 12]]), "labels": torch.tensor([1]), "scores": torch.ones(1)}
    with pytest.raises(ValueError, match=r"targets\[0\] " + message):
        metrics.mean_average_precision([prediction], [bad])


def test_as_pair():
    assert inputs.as_pair(3, "k") == (3, 3) and inputs.as_pair((2, 5), "k") == (2, 5)
    assert inputs.as_pair(0, "padding") == (0, 0)
    assert inputs.as_pair((2.5, 4), "stride", positive=True, kind=(int, float)) == (2.5, 4)
    for bad, message in [((1, 2, 3), "k must be an int or a pair of ints"), (True, "k must be an int"),
                         (2.5, "k must be an int")]:
        with pytest.raises(ValueError, match=message):
            inputs.as_pair(bad, "k")
    with pytest.raises(ValueError, match="k must be a positive int or a pair \\(height, width\\) of positive ints"):
        inputs.as_pair((0, 2), "k", positive=True)


@pytest.mark.slow   # a subprocess that imports the package
def test_a_chapter_checker_does_not_import_every_model():
    code = ("import sys, lessons_pkg.exercises.boxes; from lessons_pkg import exercises; exercises.check_diou; "
            "assert 'lessons_pkg.models' not in sys.modules and 'matplotlib' not in sys.modules, "
            "sorted(m for m in sys.modules if m.startswith('lessons_pkg'))")
    subprocess.run([sys.executable, "-c", code], check=True)


# ----------------------------------------------------------------------------- bad images given to every model
def _families():
    from lessons_pkg.models import faster_rcnn, fcn, localizer, mask_rcnn, rcnn, sliding_window, ssd, yolo
    return {
        "localizer": (lambda: localizer.Localizer(4), "single_object"),
        "sliding_window": (lambda: sliding_window.SlidingWindowDetector(4), "detection"),
        "fast_rcnn": (lambda: rcnn.FastRCNN(4), "detection"),
        "faster_rcnn": (lambda: faster_rcnn.FasterRCNN(4), "detection"),
        "mask_rcnn": (lambda: mask_rcnn.MaskRCNN(4), "instance"),
        "ssd": (lambda: ssd.SSD(4), "detection"),
        "yolo": (lambda: yolo.YOLO(4), "detection"),
        "fcn": (lambda: fcn.BackboneFCN(4), "semantic"),
    }


def _targets(task, b=2, size=(128, 128)):
    out = []
    for _ in range(b):
        t = {"boxes": torch.tensor([[10.0, 20.0, 60.0, 70.0]]), "labels": torch.tensor([2]),
             "proposals": torch.tensor([[8.0, 18.0, 62.0, 72.0], [0.0, 0.0, 40.0, 40.0]])}
        if task == "instance":
            t["masks"] = torch.zeros(1, *size, dtype=torch.uint8)
            t["masks"][0, 20:70, 10:60] = 1
        if task == "semantic":
            t = {"semantic": torch.zeros(size, dtype=torch.int64)}
        out.append(t)
    return out


@pytest.mark.parametrize("family", list(_families()))
def test_every_model_refuses_a_nan_pixel_before_batchnorm_changes(family):
    build, task = _families()[family]
    torch.manual_seed(0)
    model = build().train()
    images = torch.rand(2, 3, 128, 128)
    images[1, 0, 64, 64] = float("nan")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="image 1 holds 1 non-finite value"):
        model(images, _targets(task))
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


@pytest.mark.parametrize("family", list(_families()))
def test_every_model_refuses_0_to_255_floats_and_empty_batches(family):
    build, task = _families()[family]
    model = build()
    for mode in (True, False):
        model.train(mode)
        targets = _targets(task) if mode else None
        with pytest.raises(ValueError, match=r"in \[0, 1\]; image 0 has values in \[0\.?\d*, 2\d\d.*divide by 255"):
            model(torch.rand(2, 3, 128, 128) * 255, targets)
        with pytest.raises(ValueError, match="an empty batch"):
            model(torch.rand(0, 3, 128, 128), [] if mode else None)


@pytest.mark.parametrize("family", list(_families()))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
def test_every_model_takes_float64_and_float16_images(family, dtype):
    build, task = _families()[family]
    torch.manual_seed(0)
    model = build().train()
    losses = model(torch.rand(2, 3, 128, 128).to(dtype), _targets(task))
    assert torch.isfinite(sum(losses.values()))
    model.eval()
    with torch.no_grad():
        assert len(model(torch.rand(1, 3, 128, 128).to(dtype))) == 1


# ----------------------------------------------------------------------------- properties
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

SPECIAL = st.sampled_from([0.0, 1.0, 0.5, -0.2, 1.5, 255.0, float("nan"), float("inf"), -float("inf"), 1e30])


@st.composite
def image_batches(draw):
    dtype = draw(st.sampled_from([torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.uint8,
                                  torch.int64, torch.bool]))
    shape = draw(st.lists(st.integers(0, 5), min_size=1, max_size=5))
    images = torch.rand(*shape).to(dtype) if dtype.is_floating_point else torch.zeros(*shape, dtype=dtype)
    if images.numel() and dtype.is_floating_point and draw(st.booleans()):
        flat = images.view(-1)
        flat[draw(st.integers(0, images.numel() - 1))] = draw(SPECIAL)
    return images


@settings(max_examples=300, deadline=None)
@given(images=image_batches(), task=st.sampled_from(sorted(inputs.TASKS)))
def test_any_tensor_gives_a_named_error_or_a_checked_float32_batch(images, task):
    try:
        out, _ = inputs.prepare_batch(images, None, False, 4, task)
    except ValueError as error:
        assert "image" in str(error)
        return
    assert out.dtype == torch.float32 and out.dim() == 4 and out.shape[1] == 3 and len(out) >= 1
    assert torch.isfinite(out).all() and out.min() >= -inputs.RANGE_TOLERANCE
    assert out.max() <= 1 + inputs.RANGE_TOLERANCE


@settings(max_examples=200, deadline=None)
@given(boxes=st.lists(st.lists(SPECIAL | st.floats(-50, 50), min_size=4, max_size=4), max_size=3),
       labels=st.lists(st.integers(-2, 6), max_size=3))
def test_any_detection_target_gives_a_named_error_or_passes_in_contract(boxes, labels):
    target = {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), "labels": torch.tensor(labels)}
    try:
        inputs.prepare_batch(torch.rand(1, 3, 8, 8), [target], True, 4, "detection")
    except ValueError as error:
        assert "target 0" in str(error)
        return
    b = target["boxes"]
    assert torch.isfinite(b).all() and (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all()
    assert len(labels) == len(b) and all(1 <= x <= 4 for x in labels)
