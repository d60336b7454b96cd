"""YOLO: the grid encoding and its inverse, the layout of the decoded predictors, the loss against
a hand computation (the responsible predictor and its IoU target), empty targets, the grid of
the whole model, bad inputs and an overfit of four images (its eval contract, as every recipe's
model's: tests/test_recipes.py)."""
import math

import pytest
import torch

from overfit import overfit
from lessons_pkg import data, metrics, train
from lessons_pkg.models import yolo

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE = (128, 128)
GRID = (8, 8)
BACKBONE = "data/pretrained/backbone.pt"


def target(boxes, labels, device="cpu"):
    return {"boxes": torch.tensor(boxes, dtype=torch.float32, device=device).reshape(-1, 4),
            "labels": torch.tensor(labels, dtype=torch.int64, device=device)}


def hand_targets(device="cpu"):
    """Image 0: three objects, the second (small) sharing the first's cell (1, 3): dropped.
    Image 1: none. Image 2: two boxes of equal area in one cell: the first listed is kept."""
    return [target([[38.0, 10.0, 70.0, 40.0], [50.0, 20.0, 62.0, 32.0], [90.5, 81.2, 121.7, 126.9]],
                   [1, 2, 4], device),
            target([], [], device),
            target([[2.0, 3.0, 20.0, 21.0], [4.0, 1.0, 22.0, 19.0]], [3, 2], device)]


@pytest.fixture(scope="module")
def batch():
    """Four images of the training split (objects of 12-48 px, sometimes clustered)."""
    return data.collate_detection([data.make_split("train", 4)[i] for i in range(4)])


# ----------------------------------------------------------------------------- the encoding
def test_encode_targets_by_hand():
    enc = yolo.encode_targets(hand_targets(), GRID, SIZE)
    assert enc["mask"].shape == (3, 8, 8) and enc["mask"].dtype == torch.bool
    assert enc["target"].shape == (3, 8, 8, 4) and enc["boxes"].shape == (3, 8, 8, 4)
    assert enc["classes"].shape == (3, 8, 8) and enc["classes"].dtype == torch.int64
    assert enc["num_dropped"].tolist() == [1, 0, 1]
    assert torch.nonzero(enc["mask"]).tolist() == [[0, 1, 3], [0, 6, 6], [2, 0, 0]]
    # Object 0 of image 0: centre (54, 25) -> column 54/16 = 3.375, row 25/16 = 1.5625.
    torch.testing.assert_close(enc["target"][0, 1, 3],
                               torch.tensor([0.375, 0.5625, math.sqrt(32 / 128), math.sqrt(30 / 128)]))
    torch.testing.assert_close(enc["boxes"][0, 1, 3], torch.tensor([38.0, 10.0, 70.0, 40.0]))
    assert enc["classes"][0, 1, 3] == 0 and enc["classes"][0, 6, 6] == 3 and enc["classes"][2, 0, 0] == 2
    torch.testing.assert_close(enc["boxes"][2, 0, 0], torch.tensor([2.0, 3.0, 20.0, 21.0]))   # first of a tie
    empty = ~enc["mask"]
    assert (enc["classes"][empty] == -1).all() and (enc["target"][empty] == 0).all()
    dropped = yolo.dropped_objects(hand_targets(), GRID, SIZE)
    assert [d.tolist() for d in dropped] == [[False, True, False], [], [False, True]]


def test_larger_object_wins_whatever_the_order():
    small, large = [50.0, 20.0, 62.0, 32.0], [38.0, 10.0, 70.0, 40.0]
    for boxes, labels in (([small, large], [2, 1]), ([large, small], [1, 2])):
        enc = yolo.encode_targets([target(boxes, labels)], GRID, SIZE)
        torch.testing.assert_close(enc["boxes"][0, 1, 3], torch.tensor(large))
        assert enc["classes"][0, 1, 3] == 0 and enc["num_dropped"].tolist() == [1]


def test_decoded_layout_and_parametrization():
    """All-zero outputs: every box is centred in its cell, 32 px wide (sigmoid(0)² x 128),
    confidence 0.5, uniform classes. One changed logit moves predictor k of cell (i, j), found at
    index (i S_w + j) K + k."""
    raw = torch.zeros(1, 8, 8, 2 * 5 + 4)
    i, j, k = 2, 5, 1
    raw[0, i, j, 5 * k + 2] = math.log(3)             # sqrt(w / W) = 0.75: w = 72 px
    raw[0, i, j, 5 * k + 4] = 2.0
    boxes, conf, probs = yolo.decode_predictions(raw, SIZE)
    assert boxes.shape == (1, 128, 4) and conf.shape == (1, 128) and probs.shape == (1, 128, 4)
    n = torch.arange(128)
    cx, cy = ((n // 2) % 8 + 0.5) * 16, (n // 16 + 0.5) * 16
    expected = torch.stack([cx - 16, cy - 16, cx + 16, cy + 16], dim=1)
    index = (i * 8 + j) * 2 + k
    expected[index] = torch.tensor([88 - 36, 40 - 16, 88 + 36, 40 + 16])
    torch.testing.assert_close(boxes[0], expected)
    assert conf[0, index] == torch.sigmoid(torch.tensor(2.0)) and (conf[0, n != index] == 0.5).all()
    torch.testing.assert_close(probs, torch.full((1, 128, 4), 0.25))


@pytest.mark.parametrize("source", ["hand", "dataset"])
def test_perfect_outputs_give_back_the_kept_objects(source, batch):
    """encode -> a perfect network's outputs -> postprocess returns every object that kept its
    cell, box and label, and exactly the dropped ones are missing."""
    targets = hand_targets() if source == "hand" else batch[1]
    enc = yolo.encode_targets(targets, GRID, SIZE)
    detections = yolo.postprocess(yolo.raw_from_encoding(enc, num_classes=4), SIZE)
    dropped = yolo.dropped_objects(targets, GRID, SIZE)
    assert len(detections) == len(targets)
    for det, t, d in zip(detections, targets, dropped):
        kept_boxes, kept_labels = t["boxes"][~d], t["labels"][~d]
        assert len(det["boxes"]) == len(kept_boxes)
        if not len(kept_boxes):
            continue
        nearest = torch.cdist(kept_boxes, det["boxes"]).argmin(dim=1)
        assert sorted(nearest.tolist()) == list(range(len(kept_boxes)))
        torch.testing.assert_close(det["boxes"][nearest], kept_boxes, atol=1e-4, rtol=0)
        assert det["labels"][nearest].tolist() == kept_labels.tolist()
        assert (det["scores"] > 0.99).all()
    if source == "hand":
        assert [int(d.sum()) for d in dropped] == [1, 0, 1]


# ----------------------------------------------------------------------------- the loss
@pytest.mark.parametrize("swap", [False, True])
def test_loss_by_hand(swap):
    """A 32-px image, a 2 x 2 grid, K = 2, C = 2. One object [16, 0, 32, 16] (class 2) in cell
    (0, 1); its predictors keep the object's centre with sides 8 px (IoU 64/256) and 18 px
    (IoU 256/324). The 18-px one is responsible, whichever its index, and its confidence's
    target is its own IoU. Image 1 has no object and all-zero outputs."""
    config = yolo.YOLOConfig(boxes_per_cell=2)
    raw = torch.zeros(2, 2, 2, 12)
    small, big = (1, 0) if swap else (0, 1)
    raw[0, 0, 1, 5 * small + 2: 5 * small + 4] = 0.0                 # sqrt(w / 32) = 0.5: 8 px
    raw[0, 0, 1, 5 * big + 2: 5 * big + 4] = math.log(3)             # sqrt(w / 32) = 0.75: 18 px
    raw[0, 0, 1, 5 * small + 4], raw[0, 0, 1, 5 * big + 4] = 1.0, -0.5
    raw[0, 0, 1, 10:] = torch.tensor([0.3, -0.2])
    raw.requires_grad_(True)
    targets = [target([[16.0, 0.0, 32.0, 16.0]], [2]), target([], [])]
    losses = yolo.yolo_loss(raw, yolo.encode_targets(targets, (2, 2), (32, 32)), (32, 32), config)

    sig = torch.sigmoid
    iou_big = 256 / 324
    expected_obj = (sig(torch.tensor(-0.5)) - iou_big) ** 2 / 2      # not (conf - 1)², not IoU 0.25
    expected_noobj = 0.5 * (sig(torch.tensor(1.0)) ** 2 + 6 * 0.25 + 8 * 0.25) / 2
    expected_box = 5.0 * 2 * (0.75 - math.sqrt(0.5)) ** 2 / 2
    p = torch.softmax(torch.tensor([0.3, -0.2]), 0)
    expected_cls = (p[0] ** 2 + (p[1] - 1) ** 2) / 2
    torch.testing.assert_close(losses["loss_obj"], expected_obj)
    torch.testing.assert_close(losses["loss_noobj"], expected_noobj)
    torch.testing.assert_close(losses["loss_box"], torch.tensor(expected_box))
    torch.testing.assert_close(losses["loss_cls"], expected_cls)

    # The IoU target is detached: loss_obj moves only the responsible confidence.
    losses["loss_obj"].backward()
    grad = raw.grad[0, 0, 1]
    assert grad[5 * big + 4] != 0
    assert (grad[[i for i in range(12) if i != 5 * big + 4]] == 0).all()
    assert (raw.grad[1] == 0).all() and (raw.grad[0, 1] == 0).all()


def test_loss_without_objects(device):
    torch.manual_seed(0)
    raw = torch.randn(2, 8, 8, 14, device=device, requires_grad=True)
    empty = [target([], [], device)] * 2
    losses = yolo.yolo_loss(raw, yolo.encode_targets(empty, GRID, SIZE), SIZE)
    assert set(losses) == {"loss_box", "loss_obj", "loss_noobj", "loss_cls"}
    for name in ("loss_box", "loss_obj", "loss_cls"):
        assert losses[name].item() == 0.0, name
    assert math.isfinite(losses["loss_noobj"].item()) and losses["loss_noobj"].item() > 0
    sum(losses.values()).backward()
    assert torch.isfinite(raw.grad).all() and raw.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- the model
def test_train_losses_and_gradients(device, batch):
    images, targets = batch
    torch.manual_seed(0)
    model = yolo.YOLO(num_classes=4).to(device).train()
    losses = model(images.to(device), train.move_to(targets, device))
    assert set(losses) == {"loss_box", "loss_obj", "loss_noobj", "loss_cls"}
    assert all(v.dim() == 0 and math.isfinite(v.item()) and v.item() > 0 for v in losses.values())
    sum(losses.values()).backward()
    for part in (model.backbone, model.head):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters())
        assert all(torch.isfinite(p.grad).all() for p in part.parameters() if p.grad is not None)

    empty = [target([], [], device) for _ in range(len(images))]
    losses = model(images.to(device), empty)
    assert losses["loss_box"].item() == 0.0 and losses["loss_obj"].item() == 0.0
    assert losses["loss_cls"].item() == 0.0 and losses["loss_noobj"].item() > 0
    model.zero_grad()
    sum(losses.values()).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("size", [(128, 128), (96, 160)])
def test_one_grid_cell_per_16_pixels_and_at_most_100_detections_above_the_threshold(device, batch, size):
    """The head's map has one cell per 16 x 16 pixels (2 boxes of 5 numbers and 4 class
    scores each); a list of images is taken too; an untrained YOLO keeps between 1 and 100
    detections per image, each above the score threshold. (The contract itself:
    tests/test_recipes.py.)"""
    images = torch.nn.functional.interpolate(batch[0], size=size) if size != SIZE else batch[0]
    torch.manual_seed(0)
    model = yolo.YOLO(num_classes=4).to(device).eval()
    with torch.no_grad():
        out = model(list(images.to(device)))
        raw = model.head(model.backbone(images.to(device)))
    assert raw.shape == (len(images), size[0] // 16, size[1] // 16, 2 * 5 + 4)
    assert len(out) == len(images)
    for d in out:
        assert 0 < len(d["boxes"]) <= 100
        assert (d["scores"] > model.config.score_threshold).all()
        assert (d["boxes"][:, 0::2] <= size[1]).all() and (d["boxes"][:, 1::2] <= size[0]).all()


def test_bad_inputs(batch):
    images, targets = batch
    model = yolo.YOLO().train()
    with pytest.raises(ValueError, match=r"multiples of the stride 16.*120x128"):
        model(images[:, :, :120], targets)
    with pytest.raises(ValueError, match=r"multiples of the stride 16"):
        model.eval()(images[:, :, :, :100])
    model.train()
    with pytest.raises(ValueError, match="needs targets"):
        model(images)
    bad = [dict(t) for t in targets]
    bad[2]["labels"] = bad[2]["labels"].clone()
    bad[2]["labels"][0] = 5
    with pytest.raises(ValueError, match=r"target 2 'labels'.*1\.\.4"):
        model(images, bad)
    bad[2]["labels"][0] = 0
    with pytest.raises(ValueError, match=r"target 2 'labels'.*1\.\.4"):
        model(images, bad)
    with pytest.raises(ValueError, match=r"target 1: expected a dict with 'boxes' and 'labels'"):
        model(images, [targets[0], {"boxes": targets[1]["boxes"]}, *targets[2:]])
    with pytest.raises(ValueError, match="images"):
        model(images[:, :2], targets)
    with pytest.raises(ValueError, match="stride"):
        yolo.YOLO(stride=8)
    with pytest.raises(ValueError, match="either"):
        yolo.YOLO(config=yolo.YOLOConfig(), lambda_coord=1.0)
    with pytest.raises(ValueError, match="boxes_per_cell"):
        yolo.YOLOConfig(boxes_per_cell=0)
    with pytest.raises(ValueError, match="nms_threshold"):
        yolo.YOLOConfig(nms_threshold=1.5)
    with pytest.raises(ValueError, match=r"K \* 5 \+ C"):
        yolo.decode_predictions(torch.zeros(1, 8, 8, 10), SIZE)


@pytest.mark.slow   # trains until it overfits
def test_overfits_four_images():
    torch.manual_seed(0)
    model = yolo.YOLO(num_classes=4, pretrained_backbone=BACKBONE)
    preds, targets, seconds = overfit(model, steps=80)
    scores = metrics.mean_average_precision(preds, targets)
    print(f"overfit: mAP@0.5 {scores['map_50']:.3f}, mAP {scores['map']:.3f}, {seconds:.1f} s")
    assert scores["map_50"] >= 0.9


def test_a_cell_sees_its_receptive_field_not_the_whole_image():
    """The docstring's claim: unlike the paper's fully connected head, a cell's outputs depend on
    a 151-pixel window only (after the per-image mean colour is subtracted): the corner cell reads
    a 76 x 76 corner of a 128-pixel image, the centre cell (4, 4) every pixel, cell (3, 3) not."""
    from lessons_pkg.models.backbone import normalize
    torch.manual_seed(0)
    model = yolo.YOLO(num_classes=4).eval()
    x = normalize(torch.rand(1, 3, 128, 128)).requires_grad_(True)
    raw = model.head(model.backbone.blocks(model.backbone.stem(x)))

    def reach(i, j):
        (grad,) = torch.autograd.grad(raw[0, i, j].sum(), x, retain_graph=True)
        return grad[0].abs().sum(0) > 0

    corner = reach(0, 0)
    assert (int(corner.any(0).sum()), int(corner.any(1).sum())) == (76, 76)
    assert corner[:76, :76].all()
    assert reach(4, 4).all() and not reach(3, 3).all()
