"""Mask R-CNN: mask targets against torchvision's RoI Align, crop -> paste round trips (ours and
torchvision's paste), the mask loss, the matched objects of RoIHeads' samples, empty outputs,
its variants and bad inputs, and an overfit of four images (the contract of every recipe's
model: tests/test_recipes.py)."""
import math

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torchvision.models.detection import roi_heads as tv_roi_heads

from contract import check_detections
from overfit import overfit
from lessons_pkg import boxes as box_ops
from lessons_pkg import data, metrics, ops, train
from lessons_pkg.data import shapes
from lessons_pkg.models import mask_rcnn as mr
from lessons_pkg.models import rcnn

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE = (128, 128)
BACKBONE = "data/pretrained/backbone.pt"


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.bool(), b.bool()
    return ((a & b).sum() / (a | b).sum()).item()


# ----------------------------------------------------------------------------- mask_targets
@pytest.mark.parametrize("sampling_ratio", [2, -1])
def test_mask_targets_match_torchvision_roi_align(device, sampling_ratio):
    """Random masks and boxes, many partly outside the image: the same as torchvision's
    roi_align on the matched masks (aligned=True, spatial_scale 1)."""
    g = torch.Generator().manual_seed(0)
    masks = (torch.rand(5, 40, 50, generator=g) > 0.5).to(torch.uint8)
    xy = torch.rand(60, 2, generator=g) * torch.tensor([70.0, 60.0]) - 10        # -10 .. 60
    wh = torch.rand(60, 2, generator=g) * 30 + 0.5
    boxes = torch.cat([xy, xy + wh], 1)
    assert ((boxes[:, :2] < 0) | (boxes[:, 2:] > torch.tensor([50.0, 40.0]))).any(1).sum() > 10
    matched = torch.randint(0, 5, (60,), generator=g)
    masks, boxes, matched = masks.to(device), boxes.to(device), matched.to(device)
    ours = mr.mask_targets(masks, matched, boxes, 28, sampling_ratio=sampling_ratio)
    rois = torch.cat([matched[:, None].float(), boxes], 1)
    theirs = torchvision.ops.roi_align(masks[:, None].float(), rois, (28, 28), 1.0, sampling_ratio, aligned=True)[:, 0]
    assert ours.shape == (60, 28, 28) and ours.dtype == torch.float32
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    assert (ours >= 0).all() and (ours <= 1 + 1e-6).all()
    assert mr.mask_targets(masks, matched[:0], boxes[:0]).shape == (0, 28, 28)


def shape_masks() -> list[torch.Tensor]:
    """A few shapes of the data generator, small to large, some touching the image's border."""
    specs = [("circle", (30.0, 40.0), 10.0, 0.0), ("star", (70.0, 60.0), 24.0, 0.3),
             ("triangle", (100.0, 30.0), 15.0, 1.0), ("square", (60.0, 100.0), 30.0, 0.5),
             ("circle", (5.0, 64.0), 20.0, 0.0), ("star", (64.0, 64.0), 50.0, 0.1)]
    return [torch.from_numpy(shapes.shape_mask(s, c, r, rot, SIZE)) for s, c, r, rot in specs]


def tight_boxes(masks: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(shapes.masks_to_boxes_np(masks.numpy().astype("uint8")))


def test_crop_then_paste_is_near_identity(device):
    """A mask cropped to its tight box (28 x 28) and pasted back covers the same pixels."""
    masks = torch.stack(shape_masks()).to(torch.uint8)
    boxes = tight_boxes(masks)
    crops = mr.mask_targets(masks.to(device), torch.arange(len(masks), device=device), boxes.to(device))
    pasted = mr.paste_masks(crops, boxes.to(device), SIZE).cpu()
    assert pasted.shape == (len(masks), *SIZE)
    for m, p in zip(masks, pasted):
        assert mask_iou(p > 0.5, m) >= 0.95


def test_paste_matches_torchvision_paste_masks_in_image():
    """torchvision's paste (a ring of zero padding around the grid, boxes rounded to whole
    pixels with the legacy +1 width) sits within about half a pixel of ours: the binarized
    masks agree, though less exactly than ours agrees with the original."""
    masks = torch.stack(shape_masks()).to(torch.uint8)
    boxes = tight_boxes(masks)
    crops = mr.mask_targets(masks, torch.arange(len(masks)), boxes)
    ours = mr.paste_masks(crops, boxes, SIZE) > 0.5
    theirs = tv_roi_heads.paste_masks_in_image(crops[:, None], boxes, SIZE)[:, 0] > 0.5
    for m, o, t in zip(masks, ours, theirs):
        assert mask_iou(o, t) >= 0.9
        assert mask_iou(o, m) >= mask_iou(t, m) - 0.01


def test_paste_convention_on_a_constant_mask():
    """A mask of ones fills exactly the pixels whose centre lies in the box, and nothing else;
    a left-to-right ramp over bins 0..27 is read at each pixel centre, bin j sitting at the
    centre of bin j (clamped to the border bins)."""
    boxes = torch.tensor([[10.0, 20.0, 30.0, 25.0], [3.4, 7.6, 9.2, 12.5], [-5.0, 120.0, 8.0, 140.0]])
    pasted = mr.paste_masks(torch.ones(3, 28, 28), boxes, SIZE)
    centres = torch.arange(128.0) + 0.5
    for box, p in zip(boxes, pasted):
        cols = (centres >= box[0]) & (centres <= box[2])
        rows = (centres >= box[1]) & (centres <= box[3])
        torch.testing.assert_close(p, (rows[:, None] & cols[None, :]).float())
    ramp = torch.linspace(0, 1, 28).expand(1, 28, 28)
    row = mr.paste_masks(ramp, torch.tensor([[0.0, 0.0, 56.0, 56.0]]), SIZE)[0, 10, :56]
    position = (torch.arange(56.0) + 0.5) / 2 - 0.5          # pixel centres in bins (2 pixels per bin)
    torch.testing.assert_close(row, position.clamp(0, 27) / 27)
    assert mr.paste_masks(torch.ones(0, 28, 28), torch.zeros(0, 4), SIZE).shape == (0, *SIZE)


# ----------------------------------------------------------------------------- mask_loss
def test_mask_loss_uses_the_true_class_channel():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 4, 6, 6, generator=g)
    labels = torch.tensor([2, 4, 1])
    targets = torch.rand(3, 6, 6, generator=g)
    expected = F.binary_cross_entropy_with_logits(logits[[0, 1, 2], [1, 3, 0]], targets)
    torch.testing.assert_close(mr.mask_loss(logits, labels, targets), expected)
    wrong = F.binary_cross_entropy_with_logits(logits[[0, 1, 2], [2, 0, 1]], targets)
    assert not torch.allclose(expected, wrong)
    # class-agnostic: one channel, whatever the label
    torch.testing.assert_close(mr.mask_loss(logits[:, :1], labels, targets),
                               F.binary_cross_entropy_with_logits(logits[:, 0], targets))


def test_mask_loss_without_rois_is_zero_and_differentiable():
    logits = torch.zeros(0, 4, 28, 28, requires_grad=True)
    loss = mr.mask_loss(logits, torch.zeros(0, dtype=torch.int64), torch.zeros(0, 28, 28))
    assert loss.item() == 0.0 and math.isfinite(loss.item())
    loss.backward()
    assert logits.grad is not None and logits.grad.shape == logits.shape


# ----------------------------------------------------------------------------- RoIHeads' matched objects
def test_training_samples_return_their_matched_objects():
    g = torch.Generator().manual_seed(1)
    gt = torch.tensor([[10.0, 10, 40, 40], [60, 60, 100, 90], [20, 70, 50, 120]])
    xy = torch.rand(200, 2, generator=g) * 100
    random_boxes = torch.cat([xy, xy + torch.rand(200, 2, generator=g) * 40 + 2], 1)
    proposals = torch.cat([gt + torch.randn(3, 4, generator=g), random_boxes])
    target = {"boxes": gt, "labels": torch.tensor([3, 1, 2])}
    heads = rcnn.RoIHeads(None, None, 4, batch_size_per_image=64)
    sampled, labels, reg, matched = heads.select_training_samples([proposals], [target], return_matched=True)
    assert matched.shape == labels.shape and matched.dtype == torch.int64
    positive = labels > 0
    assert positive.sum() >= 3 and (matched[~positive] == -1).all()
    assert torch.equal(target["labels"][matched[positive]], labels[positive])
    iou = box_ops.box_iou(sampled[0][positive], gt)
    assert (iou[torch.arange(int(positive.sum())), matched[positive]] >= 0.5).all()
    assert len(heads.select_training_samples([proposals], [target])) == 3   # unchanged without the flag


# ----------------------------------------------------------------------------- the model
@pytest.fixture(scope="module")
def batch():
    return data.collate_detection([data.ShapesDataset(2, seed=5, config="easy")[i] for i in range(2)])


def empty_targets(n, device):
    return [{"boxes": torch.zeros(0, 4, device=device), "labels": torch.zeros(0, dtype=torch.int64, device=device),
             "masks": torch.zeros(0, *SIZE, dtype=torch.uint8, device=device)} for _ in range(n)]


def test_mask_rcnn_train_losses(device, batch):
    images, targets = train.move_to(batch, device)
    torch.manual_seed(0)
    model = mr.MaskRCNN(num_classes=4).to(device).train()
    losses = model(images, targets)
    assert set(losses) == {"loss_objectness", "loss_rpn_box", "loss_cls", "loss_box", "loss_mask"}
    assert all(math.isfinite(v.item()) for v in losses.values())
    assert 0.5 < losses["loss_mask"].item() < 1.0          # the predictor starts near p = 0.5
    sum(losses.values()).backward()
    for part in (model.backbone, model.rpn, model.roi_heads, model.roi_heads.mask_branch.head):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters())

    losses = model(images, empty_targets(len(images), device))
    assert all(math.isfinite(v.item()) for v in losses.values())
    assert losses["loss_box"].item() == 0.0 and losses["loss_mask"].item() == 0.0
    sum(losses.values()).backward()
    mixed = [targets[0], empty_targets(1, device)[0]]       # objects in one image only
    assert all(math.isfinite(v.item()) for v in model(images, mixed).values())


def test_mask_targets_of_training_come_from_the_matched_objects(monkeypatch):
    """In a batch, each positive RoI's mask target is cut from its own object's mask (the row
    of the batch's masks offset by the objects of the earlier images)."""
    images, targets = data.collate_detection([data.make_split("train", 3)[i] for i in range(3)])
    assert len({len(t["boxes"]) for t in targets}) > 1         # offsets matter
    seen, original = {}, mr.mask_targets

    def spy(gt_masks, matched_gt, boxes, size=28):
        seen.update(gt_masks=gt_masks, rows=matched_gt, boxes=boxes)
        return original(gt_masks, matched_gt, boxes, size)

    monkeypatch.setattr(mr, "mask_targets", spy)
    torch.manual_seed(0)
    model = mr.MaskRCNN(num_classes=4).train()
    model(images, targets)
    gt_boxes = torch.cat([t["boxes"] for t in targets])
    assert len(seen["rows"]) >= len(gt_boxes)                   # the true boxes are proposals too
    torch.testing.assert_close(seen["gt_masks"], torch.cat([t["masks"] for t in targets]))
    iou = box_ops.box_iou(seen["boxes"], gt_boxes[seen["rows"]]).diagonal()
    assert (iou >= 0.5).all()


def test_no_detection_gives_empty_masks_of_the_image_size(device, batch):
    """Every detection under the score threshold: each image still gets its dict, with masks
    Tensor[0, 128, 128] (the contract of every recipe's model otherwise: tests/test_recipes.py)."""
    images, _ = batch
    torch.manual_seed(0)
    model = mr.MaskRCNN(num_classes=4).to(device).eval()
    model.roi_heads.score_threshold = 1.0
    with torch.no_grad():
        out = model(images.to(device))
    check_detections(out, images.to(device), "instance")
    assert all(d["masks"].shape == (0, *SIZE) for d in out)


@pytest.mark.parametrize("class_agnostic", [False, True])
def test_eval_masks_take_the_channel_of_the_label(batch, class_agnostic):
    """A predictor that outputs the constant logit b_c on channel c: every detection's mask is
    sigmoid(b) of its label's channel (channel 0 when class-agnostic) inside its box, 0 outside."""
    images, _ = batch
    torch.manual_seed(0)
    model = mr.MaskRCNN(num_classes=4, class_agnostic=class_agnostic).eval()
    bias = torch.tensor([-3.0, -1.0, 1.0, 3.0])[:model.roi_heads.mask_branch.head.predictor.out_channels]
    torch.nn.init.zeros_(model.roi_heads.mask_branch.head.predictor.weight)
    model.roi_heads.mask_branch.head.predictor.bias.data.copy_(bias)
    with torch.no_grad():
        out = model(images)
    centres = torch.arange(128.0) + 0.5
    for d in out:
        expected = torch.sigmoid(bias[0] if class_agnostic else bias[d["labels"] - 1])
        b = d["boxes"][:, :, None]
        inside = (((centres >= b[:, 1]) & (centres <= b[:, 3]))[:, :, None]
                  & ((centres >= b[:, 0]) & (centres <= b[:, 2]))[:, None, :])
        torch.testing.assert_close(d["masks"], inside * expected.reshape(-1, 1, 1))
    assert len(set(torch.cat([d["labels"] for d in out]).tolist())) > 1


def test_mask_rcnn_bad_targets_and_settings(batch):
    images, targets = batch
    model = mr.MaskRCNN().train()
    no_masks = {k: v for k, v in targets[1].items() if k != "masks"}
    with pytest.raises(ValueError, match=r"target 1.*'masks'"):
        model(images, [targets[0], no_masks])
    n = len(targets[0]["boxes"])
    with pytest.raises(ValueError, match=rf"target 0 'masks'.*\[{n}, 128, 128\].*\[{n}, 64, 64\]"):
        model(images, [{**targets[0], "masks": targets[0]["masks"][:, :64, :64]}, targets[1]])
    with pytest.raises(ValueError, match=r"target 0 'masks'"):
        model(images, [{**targets[0], "masks": targets[0]["masks"][:-1]}, targets[1]])
    with pytest.raises(ValueError, match="needs targets"):
        model(images)
    with pytest.raises(ValueError, match="unknown pool 'roi_max'"):
        mr.MaskRCNN(pool="roi_max")
    with pytest.raises(ValueError, match="unknown mask_pool 'roi_max'"):
        mr.MaskRCNN(mask_pool="roi_max")
    with pytest.raises(ValueError, match="mask_size"):
        mr.MaskRCNN(mask_size=28, mask_pooled_size=7)


@pytest.mark.parametrize("pool,class_agnostic", [("roi_pool", False), ("roi_align", True)])
def test_mask_rcnn_variants_train_and_eval(batch, pool, class_agnostic):
    images, targets = batch
    torch.manual_seed(0)
    model = mr.MaskRCNN(num_classes=4, pool=pool, class_agnostic=class_agnostic, mask_width=16)
    pooler = ops.RoIPool if pool == "roi_pool" else ops.RoIAlign
    assert isinstance(model.roi_heads.pooler, pooler) and isinstance(model.roi_heads.mask_branch.pooler, pooler)
    assert model.roi_heads.mask_branch.head.predictor.out_channels == (1 if class_agnostic else 4)
    history = train.fit(model, [(images, targets)], steps=1, device="cpu", progress=False)
    assert math.isfinite(history.final("loss_mask"))
    with torch.no_grad():
        check_detections(model.eval()(images), images, "instance")


# ----------------------------------------------------------------------------- overfit
@pytest.mark.slow   # trains until it overfits
def test_mask_rcnn_overfits_four_images():
    torch.manual_seed(0)
    # 32 RoIs per image (at most 8 positives for the mask branch): a CPU step is mostly convs' backward.
    model = mr.MaskRCNN(num_classes=4, pretrained_backbone=BACKBONE, batch_size_per_image=32)
    # mask mAP@0.5 0.876 after these 60 steps, 0.835 after 40 (seed 0, one thread): it keeps 60.
    preds, targets, seconds = overfit(model, steps=60)
    segm = metrics.mean_average_precision(preds, targets, iou_type="segm")
    print(f"overfit: mask mAP@0.5 {segm['map_50']:.3f}, mask mAP {segm['map']:.3f}, {seconds:.1f} s")
    assert segm["map_50"] >= 0.8


def test_one_box_head_path_mask_rcnn_box_losses_equal_faster_rcnns(batch):
    """Mask R-CNN adds a branch to Fast R-CNN's RoI heads, it does not re-run them: with the same
    weights and sampler seed, its RPN and box losses are Faster R-CNN's, to the last bit, and
    so are its detections (for RoI Align and for RoI Pool)."""
    from lessons_pkg.models import faster_rcnn

    images, targets = batch
    for pool in ("roi_align", "roi_pool"):
        masks = mr.MaskRCNN(num_classes=4, pool=pool).train()
        boxes_only = faster_rcnn.FasterRCNN(num_classes=4, pool=pool).train()
        shared = {k: v for k, v in masks.state_dict().items() if "mask_branch" not in k}
        boxes_only.load_state_dict(shared)
        with_masks, without = masks(images, targets), boxes_only(images, targets)
        assert set(with_masks) == set(without) | {"loss_mask"}
        for key, value in without.items():
            assert torch.equal(with_masks[key], value), (pool, key)
        masks.eval(), boxes_only.eval()
        with torch.no_grad():
            for a, b in zip(masks(images), boxes_only(images)):
                assert a["masks"].shape[0] == len(a["boxes"])
                for key in ("boxes", "labels", "scores"):
                    assert torch.equal(a[key], b[key]), (pool, key)


@pytest.mark.parametrize("pool,mask_pool", [("roi_align", "roi_pool"), ("roi_pool", "roi_align")])
def test_mask_pool_changes_the_mask_branch_only(batch, pool, mask_pool):
    """``mask_pool`` swaps the mask branch's pooler and nothing else: the box head keeps
    ``pool``, so with the same weights the detections (boxes, labels, scores) are those of the
    model with one pooler for both, and only the masks differ."""
    images, _ = batch
    kind = {"roi_pool": ops.RoIPool, "roi_align": ops.RoIAlign}
    torch.manual_seed(0)
    mixed = mr.MaskRCNN(num_classes=4, pool=pool, mask_pool=mask_pool).eval()
    assert isinstance(mixed.roi_heads.pooler, kind[pool])
    assert isinstance(mixed.roi_heads.mask_branch.pooler, kind[mask_pool])
    same = mr.MaskRCNN(num_classes=4, pool=pool).eval()
    same.load_state_dict(mixed.state_dict())
    with torch.no_grad():
        pairs = list(zip(mixed(images), same(images)))
    assert sum(len(a["boxes"]) for a, _ in pairs) > 0
    for a, b in pairs:
        for key in ("boxes", "labels", "scores"):
            assert torch.equal(a[key], b[key]), key
    assert any(not torch.equal(a["masks"], b["masks"]) for a, b in pairs if len(a["boxes"]))
