"""Tests of lessons_pkg.models.sliding_window: the convolutional shortcut equals brute force,
window bookkeeping, training windows, other window sizes, bad input, overfitting (the contract
of every recipe's model: tests/test_recipes.py)."""
import pytest
import torch
from torch import nn

from contract import check_detections
from lessons_pkg import boxes, data, metrics, train
from lessons_pkg.models import sliding_window as sw

pytestmark = pytest.mark.usefixtures("one_thread")


def classifier_with_random_statistics(seed=0) -> sw.PatchClassifier:
    """An untrained classifier whose batch-norm statistics are not the identity (so eval-mode
    BN really runs on the whole image in the convolutional version)."""
    torch.manual_seed(seed)
    clf = sw.PatchClassifier(num_classes=3, widths=(8, 12, 16), hidden=24)
    for m in clf.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.3, 0.3)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return clf.eval()


@pytest.mark.parametrize("size", [(64, 64), (97, 131), (30, 45)])
@pytest.mark.parametrize("window_sizes", [(30,), (16, 23.5, 30), (12, 30)])
def test_convolutional_scores_equal_brute_force(size, window_sizes, device):
    clf = classifier_with_random_statistics().to(device)
    image = torch.rand(3, *size, generator=torch.Generator().manual_seed(1)).to(device)
    b1, p1 = sw.window_scores(image, clf, window_sizes, method="brute_force", chunk=50)
    b2, p2 = sw.window_scores(image, clf, window_sizes, method="convolutional")
    assert torch.equal(b1, b2)
    assert p1.shape == (sw.count_windows(size, window_sizes, sw.STRIDE), 4)
    torch.testing.assert_close(p2, p1, atol=1e-5, rtol=1e-4)
    assert not clf.training  # the classifier's mode is left as it was


def test_score_map_entry_is_the_classifier_on_that_patch():
    clf = classifier_with_random_statistics()
    image = torch.rand(2, 3, 70, 54, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        scores = clf.score_map(image)
        assert scores.shape == (2, 4, (70 - 30) // 8 + 1, (54 - 30) // 8 + 1)
        for i, j in [(0, 0), (5, 3), (2, 1)]:
            patch = image[:, :, 8 * i:8 * i + 30, 8 * j:8 * j + 30]
            torch.testing.assert_close(scores[:, :, i, j], clf(patch), atol=1e-5, rtol=1e-5)


def test_fully_convolutional_copy_equals_score_map():
    clf = classifier_with_random_statistics()
    fcn = sw.fully_convolutional(clf)
    assert not any(isinstance(m, nn.Linear) for m in fcn.modules())
    image = torch.rand(1, 3, 77, 61)
    with torch.no_grad():
        torch.testing.assert_close(fcn(image), clf.score_map(image))
    # a copy: changing it leaves the classifier alone
    with torch.no_grad():
        fcn[2].weight.zero_()
    assert clf.fc1.weight.abs().sum() > 0


def test_linear_to_conv_runs_the_linear_layer_on_every_block():
    torch.manual_seed(0)
    linear = nn.Linear(5 * 3 * 3, 7)
    conv = sw.linear_to_conv(linear, 5, 3)
    x = torch.randn(2, 5, 6, 8)
    out = conv(x)
    assert out.shape == (2, 7, 4, 6)
    blocks = x.unfold(2, 3, 1).unfold(3, 3, 1)  # [2, 5, 4, 6, 3, 3]
    expected = linear(blocks.permute(0, 2, 3, 1, 4, 5).reshape(2, 4, 6, -1)).permute(0, 3, 1, 2)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="cannot read a 4 x 3 x 3 block"):
        sw.linear_to_conv(linear, 4, 3)


@pytest.mark.parametrize("stride", [3, 8, 16])
def test_count_windows_matches_the_windows_scored(stride):
    clf = classifier_with_random_statistics()
    image = torch.rand(3, 90, 120)
    b, p = sw.window_scores(image, clf, (20, 33, 90), stride=stride, method="brute_force")
    assert len(b) == len(p) == sw.count_windows((90, 120), (20, 33, 90), stride)
    # windows lie inside the image and are squares of the requested sides (up to rounding)
    assert (b[:, :2] >= 0).all() and (b[:, 2] <= 120 + 1e-4).all() and (b[:, 3] <= 90 + 1e-4).all()
    sides = (b[:, 2] - b[:, 0])
    for s in (20, 33, 90):
        assert ((sides - s).abs() < 0.03 * s).any()
    torch.testing.assert_close(p.sum(1), torch.ones(len(p)))


def test_pyramid_level_makes_the_window_one_patch():
    image = torch.rand(1, 3, 128, 100)
    level, (sy, sx) = sw.pyramid_level(image, 16)
    assert level.shape[-2:] == (240, 188) and sy == 240 / 128 and sx == 188 / 100
    same, scale = sw.pyramid_level(image, 30)
    assert same is image and scale == (1.0, 1.0)


@pytest.mark.parametrize("kwargs, match", [
    (dict(window_sizes=(16, 200)), "window size 200 is larger than the image"),
    (dict(stride=0), "stride must be a positive integer"),
    (dict(stride=2.5), "stride must be a positive integer"),
    (dict(window_sizes=()), "window_sizes is empty"),
    (dict(window_sizes=(-4,)), "window sizes must be positive"),
    (dict(method="fast"), "unknown method"),
    (dict(stride=4), "convolutional shortcut steps by the network's stride"),
])
def test_bad_arguments_are_named(kwargs, match):
    args = dict(window_sizes=(16, 30), stride=8, method="convolutional") | kwargs
    with pytest.raises(ValueError, match=match):
        sw.window_scores(torch.rand(3, 64, 80), classifier_with_random_statistics(), **args)


def test_bad_images_are_named():
    clf = classifier_with_random_statistics()
    with pytest.raises(ValueError, match="the image is empty|height and width >= 1"):
        sw.window_scores(torch.rand(3, 0, 40), clf, (16,))
    with pytest.raises(ValueError, match=r"Tensor\[B, 3, H, W\]"):
        sw.window_scores(torch.rand(1, 64, 64), clf, (16,))
    with pytest.raises(ValueError, match="floating point"):
        sw.window_scores(torch.zeros(3, 64, 64, dtype=torch.uint8), clf, (16,))
    with pytest.raises(ValueError, match="patches must be"):
        clf(torch.rand(2, 3, 32, 32))


def test_detections_from_scores_thresholds_and_suppresses():
    windows = torch.tensor([[0.0, 0, 20, 20], [2, 0, 22, 20], [50, 50, 70, 70], [0, 0, 20, 20]])
    probs = torch.tensor([[0.1, 0.9, 0.0], [0.2, 0.8, 0.0], [0.6, 0.2, 0.2], [0.3, 0.0, 0.7]])
    det = sw.detections_from_scores(windows, probs, (64, 64), score_threshold=0.5, nms_threshold=0.3)
    # window 1 is suppressed by window 0 (same class, IoU 0.82); window 3 is another class;
    # window 2 is background; window 2 is clipped to the image
    assert det["labels"].tolist() == [1, 2]
    torch.testing.assert_close(det["scores"], torch.tensor([0.9, 0.7]))
    torch.testing.assert_close(det["boxes"], windows[[0, 3]])
    clipped = sw.detections_from_scores(windows[2:3], torch.tensor([[0.0, 1.0, 0.0]]), (60, 64))
    torch.testing.assert_close(clipped["boxes"], torch.tensor([[50.0, 50, 64, 60]]))


def test_sampled_windows_are_labelled_by_iou():
    target = {"boxes": torch.tensor([[10.0, 10, 40, 40], [60, 70, 80, 100]]), "labels": torch.tensor([2, 3])}
    g = torch.Generator().manual_seed(0)
    windows, labels = sw.sample_windows(target, (128, 128), (16, 52), generator=g)
    assert windows.shape == (2 * 6 + 2 * 6 + 16, 4) and labels.shape == (len(windows),)
    sides = windows[:, 2:] - windows[:, :2]
    torch.testing.assert_close(sides[:, 0], sides[:, 1])  # squares
    best, idx = boxes.box_iou(windows, target["boxes"]).max(1)
    assert torch.equal(labels[best >= 0.5], target["labels"][idx[best >= 0.5]])
    assert (labels[best < 0.3] == 0).all()
    assert (labels[(best >= 0.3) & (best < 0.5)] == -1).all()
    assert (labels > 0).sum() >= 6  # windows around the objects are mostly positives
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    windows, labels = sw.sample_windows(empty, (64, 64), (16, 52), generator=g)
    assert len(windows) == 16 and (labels == 0).all()
    assert (windows >= 0).all() and (windows <= 64).all()


def test_other_window_sizes_one_loss_an_image_without_objects_and_train_mode_needs_targets(device):
    """Windows of 20 and 40 pixels (the recipe's are the defaults, tests/test_recipes.py): one
    classification loss over the sampled windows, finite when an image has no object; the
    detections in the contract; train mode refuses images without targets."""
    torch.manual_seed(0)
    model = sw.SlidingWindowDetector(num_classes=4, window_sizes=(20, 40)).to(device)
    ds = data.make_split("val", 2)
    images, targets = train.move_to(data.collate_detection([ds[0], ds[1]]), device)
    targets[1] = {"boxes": torch.zeros(0, 4, device=device), "labels": torch.zeros(0, dtype=torch.int64, device=device)}
    losses = model(images, targets)
    assert set(losses) == {"loss_cls"} and torch.isfinite(losses["loss_cls"])
    only_empty = model(images[1:], targets[1:])
    assert torch.isfinite(only_empty["loss_cls"]) and only_empty["loss_cls"].item() > 0
    model.eval()
    model.config.score_threshold = 0.0  # an untrained model: keep everything to see the output
    with torch.no_grad():
        out = model(images)
    check_detections(out, images, "detection")
    assert all(0 < len(d["boxes"]) <= 100 for d in out)
    with pytest.raises(ValueError, match="train mode the model needs targets"):
        model.train()(images)


@pytest.mark.slow   # trains until it overfits
def test_overfits_a_few_images():
    """A few easy images, seen over and over, are detected almost perfectly."""
    ds = data.ShapesDataset(2, seed=5, config="easy")
    loader = train.make_loader(ds, batch_size=2, shuffle=False)
    # Seeded (the weights came from whatever ran before). Two images: mAP@0.5 1.0 after these 200
    # steps with one thread and with two, 0.897 after 150; four images needed 300 steps (38 s).
    torch.manual_seed(0)
    model = sw.SlidingWindowDetector(num_classes=4)
    train.fit(model, loader, steps=200, lr=5e-3, progress=False, device="cpu")
    result = train.evaluate(model, loader, device="cpu", metric=metrics.mean_average_precision)
    assert result["map_50"] >= 0.9, result
