"""The localizer: shapes and the loss dict, the loss against references, overfitting 8 images,
freezing, and clear errors on bad input."""
import math

import pytest
import torch
import torchvision

from lessons_pkg import data, exercises, metrics, train
from lessons_pkg.models import localizer as L


def make_targets(boxes, labels):
    return [{"boxes": torch.tensor([b], dtype=torch.float32), "labels": torch.tensor([lab])}
            for b, lab in zip(boxes, labels)]


@pytest.fixture(scope="module")
def eight():
    """8 single-object scenes as a batch: images [8, 3, 128, 128] and their targets."""
    ds = data.make_split("train", 8, config="single")
    images = torch.stack([ds[i][0] for i in range(8)])
    targets = [{"boxes": ds[i][1]["boxes"], "labels": ds[i][1]["labels"]} for i in range(8)]
    return images, targets


def test_train_mode_returns_the_named_losses_and_eval_mode_the_contract(eight, device):
    images, targets = eight
    torch.manual_seed(0)
    model = L.Localizer(box_weight=2.0).to(device).train()
    losses = model(images[:4].to(device), train.move_to(targets[:4], device))
    assert set(losses) == {"loss_cls", "loss_box"}
    assert all(v.dim() == 0 and torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in model.parameters())

    model.eval()
    with torch.no_grad():
        predictions = model(images[:4].to(device))
        logits, boxes, weights = model.heads(images[:4].to(device))
    assert logits.shape == (4, 4) and boxes.shape == (4, 4) and weights.shape == (4, 8, 8)
    torch.testing.assert_close(weights.sum(dim=(1, 2)), torch.ones(4, device=device))
    assert len(predictions) == 4
    for p in predictions:
        assert p["boxes"].shape == (1, 4) and p["boxes"].dtype == torch.float32
        assert p["labels"].shape == (1,) and p["labels"].dtype == torch.int64
        assert p["scores"].shape == (1,) and 0 < float(p["scores"]) <= 1
        assert 1 <= int(p["labels"]) <= 4
        assert (p["boxes"] >= 0).all() and (p["boxes"] <= 128).all()
        assert p["boxes"].device.type == device.type


def test_the_box_term_is_weighted_by_lambda():
    logits, labels = torch.randn(5, 4), torch.tensor([1, 2, 3, 4, 1])
    pred = torch.rand(5, 2).repeat(1, 2) + torch.tensor([0, 0, 0.2, 0.3])
    gt = torch.rand(5, 2).repeat(1, 2) + torch.tensor([0, 0, 0.3, 0.1])
    one = L.multitask_loss(logits, pred, labels, gt, box_weight=1.0)
    ten = L.multitask_loss(logits, pred, labels, gt, box_weight=10.0)
    torch.testing.assert_close(one["loss_cls"], torch.nn.functional.cross_entropy(logits, labels - 1))
    torch.testing.assert_close(ten["loss_cls"], one["loss_cls"])
    torch.testing.assert_close(ten["loss_box"], 10 * one["loss_box"])
    sl1 = L.multitask_loss(logits, pred, labels, gt, box_weight=2.0, box_loss="smooth_l1")
    torch.testing.assert_close(sl1["loss_box"], 2 * torch.nn.functional.smooth_l1_loss(pred, gt, beta=0.02))


def test_giou_loss_matches_torchvision():
    a = torch.tensor([[0.1, 0.1, 0.5, 0.6], [0.2, 0.3, 0.4, 0.5], [0.0, 0.0, 0.1, 0.1]])
    b = torch.tensor([[0.2, 0.1, 0.6, 0.7], [0.2, 0.3, 0.4, 0.5], [0.5, 0.5, 0.9, 0.9]])
    expected = 1 - torchvision.ops.generalized_box_iou(a, b).diagonal()
    pred = a.clone().requires_grad_()
    loss = L.multitask_loss(torch.zeros(3, 4), pred, torch.tensor([1, 1, 1]), b, box_weight=3.0)["loss_box"]
    torch.testing.assert_close(loss, 3 * expected.mean())
    loss.backward()
    assert torch.isfinite(pred.grad).all() and pred.grad[2].abs().sum() > 0  # a gradient without overlap


def test_box_head_with_equal_scores_averages_every_cells_box():
    """Equal scores at every cell: each of the 4 x 4 cells weighs 1/16, and the box is the mean
    cell centre (0.5, 0.5) minus and plus the four distances, here sigmoid of the biases:
    left 0.25, top 0.5, right 0.1, bottom 0.25 (in units of the image size)."""
    torch.manual_seed(0)
    head = L.BoxHead(8, hidden=4)
    last = head.conv[2]                   # 1x1: hidden -> (score, left, top, right, bottom)
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.tensor([0.0, math.log(1 / 3), 0.0, math.log(1 / 9), math.log(1 / 3)]))
    boxes, weights = head(torch.randn(2, 8, 4, 4))
    torch.testing.assert_close(weights, torch.full((2, 4, 4), 1 / 16))
    torch.testing.assert_close(boxes, torch.tensor([[0.25, 0.0, 0.6, 0.75]] * 2))


@pytest.mark.parametrize("row, col", [(1, 2), (3, 0)])
def test_box_head_takes_the_box_of_the_cell_whose_score_dominates(row, col):
    """A spike at one cell of a 4 x 4 map, scored 50 there and 0 elsewhere: that cell weighs
    ~1, and the box is its own, centred on the cell's centre ((col + 0.5) / 4, (row + 0.5) / 4)
    with every distance sigmoid(0) = 0.5; moving the spike moves the box by the cells' pitch."""
    head = L.BoxHead(8, hidden=4)
    first, last = head.conv[0], head.conv[2]
    with torch.no_grad():
        for p in (*first.parameters(), *last.parameters()):
            p.zero_()
        first.weight[0, 0, 1, 1] = 1.0    # hidden channel 0 = feature channel 0 at the same cell
        last.weight[0, 0, 0, 0] = 50.0    # the score = 50 x hidden channel 0
    features = torch.zeros(1, 8, 4, 4)
    features[0, 0, row, col] = 1.0
    boxes, weights = head(features)
    assert weights[0, row, col] > 0.999
    cx, cy = (col + 0.5) / 4, (row + 0.5) / 4
    torch.testing.assert_close(boxes[0], torch.tensor([cx - 0.5, cy - 0.5, cx + 0.5, cy + 0.5]))


@pytest.mark.slow   # trains until it overfits
def test_overfits_eight_images():
    # 64-pixel scenes (a 4x4 feature map): the same model, a quarter of the compute.
    config = data.preset("single").replace(image_size=(64, 64), size_range=(16.0, 40.0))
    images, targets = data.collate_detection([data.ShapesDataset(8, seed=5, config=config)[i] for i in range(8)])
    targets = [{"boxes": t["boxes"], "labels": t["labels"]} for t in targets]
    torch.manual_seed(0)
    model = L.Localizer()
    loader = [(images, targets)]  # one batch of 8, repeated: fit cycles the loader
    history = train.fit(model, loader, steps=80, lr=3e-3, warmup_steps=5, progress=False, device="cpu")
    assert history.final() < 0.1 * history.losses["total"][0]
    scores = metrics.localization_metrics(train.predict(model, images), targets)
    assert scores["accuracy"] == 1.0 and scores["mean_iou"] > 0.75, scores


def test_frozen_backbone_keeps_weights_and_batchnorm_statistics(eight):
    images, targets = eight
    model = L.Localizer().freeze_backbone()
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    head_before = model.box_head.conv[0].weight.clone()
    train.fit(model, [(images, targets)], steps=3, progress=False, device="cpu")
    after = model.backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # running stats included
    assert not torch.equal(head_before, model.box_head.conv[0].weight)
    model.train()
    assert not model.backbone.training and model.class_head.training
    model.freeze_backbone(False).train()
    assert model.backbone.training and all(p.requires_grad for p in model.backbone.parameters())


def test_localization_metrics():
    preds = [{"boxes": torch.tensor([[0.0, 0, 10, 10]]), "labels": torch.tensor([1]), "scores": torch.tensor([0.9])},
             {"boxes": torch.tensor([[0.0, 0, 10, 10]]), "labels": torch.tensor([2]), "scores": torch.tensor([0.8])},
             {"boxes": torch.tensor([[0.0, 0, 10, 10]]), "labels": torch.tensor([3]), "scores": torch.tensor([0.7])}]
    targets = make_targets([[0, 0, 10, 10], [0, 0, 10, 20], [0, 0, 10, 10]], [1, 2, 1])
    scores = metrics.localization_metrics(preds, targets)
    assert scores["accuracy"] == pytest.approx(2 / 3)
    assert scores["mean_iou"] == pytest.approx((1 + 0.5 + 1) / 3)
    assert scores["acc_at_iou"] == pytest.approx(2 / 3)  # IoU exactly 0.5 counts
    assert metrics.localization_metrics(preds, targets, iou_threshold=0.6)["acc_at_iou"] == pytest.approx(1 / 3)


BAD_TARGETS = [
    ("no box", lambda t: t[1].update(boxes=torch.zeros(0, 4), labels=torch.zeros(0, dtype=torch.int64)),
     r"target 1 'boxes'.*exactly one object.*got 0 boxes"),
    ("two boxes", lambda t: t[0].update(boxes=torch.tensor([[1.0, 1, 5, 5], [2, 2, 6, 6]]), labels=torch.tensor([1, 2])),
     r"target 0 'boxes'.*exactly one object.*got 2 boxes"),
    ("outside", lambda t: t[1].update(boxes=torch.tensor([[10.0, 10, 140, 50]])),
     r"target 1 'boxes': expected xyxy inside the 128x128 image.*got \[10.0, 10.0, 140.0, 50.0\]"),
    ("negative", lambda t: t[0].update(boxes=torch.tensor([[-3.0, 10, 40, 50]])), r"target 0 'boxes'.*inside"),
    ("x2 < x1", lambda t: t[0].update(boxes=torch.tensor([[40.0, 10, 20, 50]])), r"target 0 'boxes'.*x1 < x2"),
    ("int boxes", lambda t: t[1].update(boxes=torch.tensor([[1, 2, 30, 40]])),
     r"target 1 'boxes': expected a float Tensor\[1, 4\], got torch.int64"),
    ("int32 labels", lambda t: t[0].update(labels=torch.tensor([1], dtype=torch.int32)),
     r"target 0 'labels': expected an int64 Tensor\[1\], got torch.int32"),
    ("background label", lambda t: t[1].update(labels=torch.tensor([0])), r"target 1 'labels'.*1\.\.4.*got \[0\]"),
    ("label too big", lambda t: t[1].update(labels=torch.tensor([5])), r"target 1 'labels'.*1\.\.4.*got \[5\]"),
    ("missing key", lambda t: t[1].pop("labels"), r"target 1: expected a dict with 'boxes' and 'labels'"),
    ("a list of lists", lambda t: t.__setitem__(0, [[1.0, 2, 3, 4]]), r"target 0: expected a dict"),
]


@pytest.mark.parametrize("name, corrupt, message", BAD_TARGETS, ids=[b[0] for b in BAD_TARGETS])
def test_bad_targets_get_a_clear_error(name, corrupt, message):
    model = L.Localizer().train()
    targets = make_targets([[10, 10, 50, 50], [20, 30, 60, 90]], [1, 2])
    corrupt(targets)
    with pytest.raises(ValueError, match=message):
        model(torch.rand(2, 3, 128, 128), targets)


def test_bad_images_and_batches_get_a_clear_error():
    model = L.Localizer().train()
    targets = make_targets([[10, 10, 50, 50], [20, 30, 60, 90]], [1, 2])
    with pytest.raises(ValueError, match=r"floating point.*got dtype torch.uint8"):
        model(torch.zeros(2, 3, 128, 128, dtype=torch.uint8), targets)
    with pytest.raises(ValueError, match=r"Tensor\[B, 3, H, W\], got \(3, 128, 128\)"):
        model(torch.rand(3, 128, 128), targets)
    with pytest.raises(ValueError, match="a list of 2 dicts .* got 1 targets"):
        model(torch.rand(2, 3, 128, 128), targets[:1])
    with pytest.raises(ValueError, match="needs targets"):
        model(torch.rand(2, 3, 128, 128))
    mixed = make_targets([[10, 10, 50, 50], [20, 30, 60, 60]], [1, 2])
    assert set(model([torch.rand(3, 128, 128), torch.rand(3, 64, 64)], mixed)) == {"loss_cls", "loss_box"}
    assert set(model([torch.rand(3, 128, 128)] * 2, targets)) == {"loss_cls", "loss_box"}  # a list works
    with pytest.raises(ValueError, match="unknown box_loss 'l2'"):
        L.Localizer(box_loss="l2")
    with pytest.raises(ValueError, match="box_weight"):
        L.LocalizerConfig(box_weight=-1.0)


def test_multitask_loss_checker(capsys):
    assert exercises.check_multitask_loss(lambda *a: L.multitask_loss(*a))
    assert "all 6 cases pass" in capsys.readouterr().out

    def no_shift(logits, pred, labels, gt, weight):
        return {"loss_cls": torch.nn.functional.cross_entropy(logits, labels),
                "loss_box": weight * (1 - torchvision.ops.generalized_box_iou(pred, gt).diagonal()).mean()}

    assert not exercises.check_multitask_loss(no_shift)
    assert "raised IndexError: Target 4 is out of bounds" in capsys.readouterr().out

    def no_weight(logits, pred, labels, gt, weight):
        return L.multitask_loss(logits, pred, labels, gt, box_weight=1.0)

    assert not exercises.check_multitask_loss(no_weight)
    assert "λ = 10: the box term is multiplied by λ: 'loss_box' expected" in capsys.readouterr().out

    def detached(logits, pred, labels, gt, weight):
        return {k: torch.tensor(v.item()) for k, v in L.multitask_loss(logits, pred, labels, gt, weight).items()}

    assert not exercises.check_multitask_loss(detached)
    assert "no gradient would flow" in capsys.readouterr().out


def test_multitask_loss_checker_wants_a_gradient_into_the_boxes(capsys):
    """A box term computed without a graph (here under no_grad) equals the right number and would
    never train the box head: the checker says so."""
    def box_term_without_gradient(logits, pred, labels, gt, weight):
        losses = L.multitask_loss(logits, pred, labels, gt, box_weight=weight)
        with torch.no_grad():
            losses["loss_box"] = L.multitask_loss(logits, pred, labels, gt, box_weight=weight)["loss_box"]
        return losses

    assert not exercises.check_multitask_loss(box_term_without_gradient)
    assert "'loss_box' does not depend on the predicted boxes" in capsys.readouterr().out
