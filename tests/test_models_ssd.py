"""SSD: default boxes, matching, loss and post-processing against torchvision's; the focal and
random-negative variants; the whole model's prior, losses, empty targets, bad inputs and an
overfit of four images (its eval contract, as every recipe's model's: tests/test_recipes.py)."""
import math
from types import SimpleNamespace

import pytest
import torch
import torchvision
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection import ssd as tv_ssd

from overfit import overfit
from lessons_pkg import boxes as box_ops
from lessons_pkg import data, metrics, train
from lessons_pkg.matching import NEGATIVE
from lessons_pkg.models import ssd

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE = (128, 128)
C = 4
BACKBONE = "data/pretrained/backbone.pt"


def default_boxes(size=SIZE, device="cpu", **settings):
    return ssd.SSD(C, **settings).default_boxes(size, device)


def some_targets(device="cpu"):
    """Two objects in image 0, none in image 1, five in image 2 (boxes off the integer grid)."""
    torch.manual_seed(3)
    xy = torch.rand(5, 2) * 90
    many = torch.cat([xy, xy + 12 + torch.rand(5, 2) * 36], dim=1)
    return [{"boxes": torch.tensor([[10.3, 20.1, 50.7, 44.2], [60.5, 61.2, 100.9, 120.3]], device=device),
             "labels": torch.tensor([1, 3], device=device)},
            {"boxes": torch.zeros(0, 4, device=device), "labels": torch.zeros(0, dtype=torch.int64, device=device)},
            {"boxes": many.to(device), "labels": torch.tensor([4, 2, 2, 1, 3], device=device)}]


def head_outputs(batch=3, num_boxes=None, seed=0, scale=2.0, device="cpu", requires_grad=False):
    """Random logits Tensor[B, D, C + 1] and deltas Tensor[B, D, 4]."""
    d = num_boxes if num_boxes is not None else len(default_boxes())
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(batch, d, C + 1, generator=g) * scale).to(device).requires_grad_(requires_grad)
    deltas = torch.randn(batch, d, 4, generator=g).to(device).requires_grad_(requires_grad)
    return logits, deltas


# ----------------------------------------------------------------------------- default boxes
@pytest.mark.parametrize("size", [(128, 128), (256, 128)])
def test_default_boxes_count_clipped_and_cached(device, size):
    model = ssd.SSD(C)
    boxes = model.default_boxes(size, device)
    sizes = ssd.feature_sizes(size)
    assert sizes[0] == (size[0] // 8, size[1] // 8) and sizes[-1] == (size[0] // 128, size[1] // 128)
    expected = sum(h * w * a for (h, w), a in zip(sizes, model.config.boxes_per_location))
    assert boxes.shape == (expected, 4) and boxes.device.type == device.type
    if size == SIZE:
        assert expected == 16 * 16 * 4 + 8 * 8 * 6 + 4 * 4 * 6 + 2 * 2 * 4 + 1 * 1 * 4 == 1524
    assert (boxes >= 0).all() and (boxes[:, 0::2] <= size[1]).all() and (boxes[:, 1::2] <= size[0]).all()
    assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
    assert model.default_boxes(size, device) is boxes                          # cached
    # the finest level's first square box: s_1 = 0.12 of the side, centred on cell (0, 0)
    h, w = size
    s = 0.12 * torch.tensor([w, h, w, h])
    centre = torch.tensor([4.0, 4.0, 4.0, 4.0])
    torch.testing.assert_close(boxes[0].cpu(), (centre + s * torch.tensor([-0.5, -0.5, 0.5, 0.5])).clamp(min=0))


def test_feature_sizes_need_multiples_of_128():
    assert ssd.feature_sizes((128, 384)) == [(16, 48), (8, 24), (4, 12), (2, 6), (1, 3)]
    for bad in [(100, 128), (128, 192), (64, 64)]:
        with pytest.raises(ValueError, match="multiple of 128"):
            ssd.feature_sizes(bad)


def test_head_rows_follow_default_boxes_and_torchvision_layout():
    """Our head equals torchvision's SSDHead with the same weights, and row r of its outputs
    belongs to default box r: the logit planted at (level k, cell (i, j), box a) lands on the
    row whose default box is centred on that cell."""
    torch.manual_seed(0)
    model = ssd.SSD(C).eval()
    a_k = model.config.boxes_per_location
    tv_head = tv_ssd.SSDHead(model.features.out_channels, a_k, C + 1)
    for ours, theirs in ((model.head.cls_logits, tv_head.classification_head.module_list),
                         (model.head.bbox_pred, tv_head.regression_head.module_list)):
        for a, b in zip(ours, theirs):
            b.load_state_dict(a.state_dict())
    maps = model.features(torch.rand(2, 3, *SIZE))
    logits, deltas = model.head(maps)
    expected = tv_head(maps)
    torch.testing.assert_close(logits, expected["cls_logits"])
    torch.testing.assert_close(deltas, expected["bbox_regression"])

    k, i, j, a, c = 1, 5, 2, 3, 2                      # level 1 is 8 x 8, stride 16
    x = torch.zeros(1, a_k[k] * (C + 1), 8, 8)
    x[0, a * (C + 1) + c, i, j] = 1.0
    rows = model.head._flatten(x, C + 1)[0]               # the rows of level k only
    row = int(rows[:, c].argmax())
    assert row == (i * 8 + j) * a_k[k] + a
    box = model.default_boxes(SIZE)[16 * 16 * a_k[0] + row]
    torch.testing.assert_close((box[0::2].mean(), box[1::2].mean()), (torch.tensor(16 * (j + 0.5)),
                                                                      torch.tensor(16 * (i + 0.5))))


def test_prior_initialization():
    """On a zero feature map the logits are the biases: P(background) = 1 - prior everywhere,
    the rest shared equally by the C classes; prior None leaves torchvision's zero biases."""
    maps = [torch.zeros(1, c, 4, 4) for c in (64, 128, 128, 128, 128)]
    for prior, background in ((0.01, 0.99), (0.2, 0.8), (None, 1 / (C + 1))):
        head = ssd.SSD(C, prior=prior).head
        probabilities = head(maps)[0].softmax(dim=-1)
        torch.testing.assert_close(probabilities[..., 0], torch.full(probabilities.shape[:2], background))
        torch.testing.assert_close(probabilities[..., 1:], torch.full((*probabilities.shape[:2], C),
                                                                      (1 - background) / C))


# ----------------------------------------------------------------------------- matching
def random_boxes(n, generator, size=128.0):
    xy = torch.rand(n, 2, generator=generator) * size * 0.8
    wh = 4 + torch.rand(n, 2, generator=generator) * size * 0.4
    return torch.cat([xy, xy + wh], dim=1)


@pytest.mark.parametrize("seed", range(5))
def test_matching_equals_ssd_matcher(seed):
    g = torch.Generator().manual_seed(seed)
    anchors = default_boxes()
    for num_gt in (1, 3, 12):
        gt = random_boxes(num_gt, g)
        if num_gt == 12:
            gt[6:] = gt[:6]                          # duplicates share their best default box
        ours = ssd.match_default_boxes(gt, anchors, 0.5)
        theirs = det_utils.SSDMatcher(0.5)(torchvision.ops.box_iou(gt, anchors))
        torch.testing.assert_close(ours, theirs)
        assert ours.dtype == torch.int64
        best = torchvision.ops.box_iou(gt, anchors).argmax(dim=1)
        assert (ours[best] >= 0).all()             # every object has a positive
    assert (ssd.match_default_boxes(torch.zeros(0, 4), anchors) == NEGATIVE).all()


def test_matching_rule_by_hand():
    """IoU exactly 0.5 is positive; an object whose best IoU is 0.2 still gets that box; a box
    that is the best of two objects goes to the later one."""
    anchors = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 20], [50, 50, 60, 60], [100, 100, 110, 110]])
    gt = torch.tensor([[0.0, 0, 10, 20],                # IoU 0.5 with box 0, 1 with box 1
                       [50.0, 50, 60, 75]])             # IoU 0.4 with box 2 only
    torch.testing.assert_close(ssd.match_default_boxes(gt, anchors, 0.5), torch.tensor([0, 0, 1, NEGATIVE]))
    torch.testing.assert_close(ssd.match_default_boxes(gt, anchors, 0.6), torch.tensor([NEGATIVE, 0, 1, NEGATIVE]))
    twins = torch.tensor([[100.0, 100, 110, 110], [100.0, 100, 110, 110]])
    torch.testing.assert_close(ssd.match_default_boxes(twins, anchors), torch.tensor([NEGATIVE, NEGATIVE, NEGATIVE, 1]))


# ----------------------------------------------------------------------------- the loss
def torchvision_loss(logits, deltas, anchors, targets):
    """torchvision's SSD.compute_loss (SSDMatcher(0.5), BoxCoder (10, 10, 5, 5), 3:1 mining) on a
    stub: the method reads only ``box_coder`` and ``neg_to_pos_ratio``."""
    stub = SimpleNamespace(box_coder=det_utils.BoxCoder((10.0, 10.0, 5.0, 5.0)), neg_to_pos_ratio=3)
    matched = []
    for t in targets:                                # as in torchvision's SSD.forward
        if t["boxes"].numel() == 0:
            matched.append(torch.full((len(anchors),), -1, dtype=torch.int64))
        else:
            matched.append(det_utils.SSDMatcher(0.5)(torchvision.ops.box_iou(t["boxes"], anchors)))
    return tv_ssd.SSD.compute_loss(stub, targets, {"bbox_regression": deltas, "cls_logits": logits},
                                   [anchors] * len(targets), matched)


@pytest.mark.parametrize("seed", range(3))
def test_hard_loss_equals_torchvision(seed):
    anchors, targets = default_boxes(), some_targets()
    logits, deltas = head_outputs(seed=seed, requires_grad=True)
    ours = ssd.ssd_loss(logits, deltas, anchors, targets, ssd.SSDConfig(negatives="hard"))
    theirs = torchvision_loss(logits, deltas, anchors, targets)
    torch.testing.assert_close(ours["loss_box"], theirs["bbox_regression"])
    torch.testing.assert_close(ours["loss_cls"], theirs["classification"])
    ours_grad = torch.autograd.grad(sum(ours.values()), (logits, deltas))
    theirs_grad = torch.autograd.grad(sum(theirs.values()), (logits, deltas))
    for a, b in zip(ours_grad, theirs_grad):
        torch.testing.assert_close(a, b)


def test_perfect_deltas_decode_to_the_objects():
    """encode -> decode: the encoded offsets of the matched default boxes are a perfect box
    head (zero box loss), decode back to the objects, and, with confident class logits, come
    out of postprocess as exactly the objects."""
    anchors, targets = default_boxes(), some_targets()
    targets = [targets[0], targets[2]]
    logits = torch.full((2, len(anchors), C + 1), -10.0)
    logits[..., 0] = 10.0
    deltas = torch.zeros(2, len(anchors), 4)
    for b, t in enumerate(targets):
        matches = ssd.match_default_boxes(t["boxes"], anchors)
        pos = torch.nonzero(matches >= 0).flatten()
        deltas[b, pos] = box_ops.encode_boxes(t["boxes"][matches[pos]], anchors[pos], ssd.BOX_WEIGHTS)
        torch.testing.assert_close(box_ops.decode_boxes(deltas[b, pos], anchors[pos], ssd.BOX_WEIGHTS),
                                   t["boxes"][matches[pos]])
        logits[b, pos, 0] = -10.0
        logits[b, pos, t["labels"][matches[pos]]] = 10.0
    losses = ssd.ssd_loss(logits, deltas, anchors, targets)
    assert losses["loss_box"].item() < 1e-10 and losses["loss_cls"].item() < 1e-6
    detections = ssd.postprocess(logits, deltas, anchors, SIZE)
    for d, t in zip(detections, targets):
        order = d["boxes"][:, 0].argsort()
        truth = t["boxes"][:, 0].argsort()
        torch.testing.assert_close(d["boxes"][order], t["boxes"][truth])
        torch.testing.assert_close(d["labels"][order], t["labels"][truth])


def test_focal_loss_by_hand():
    """Three default boxes, one object matched to box 0: -alpha_t (1 - p_t)^2 log p_t summed / 1."""
    anchors = torch.tensor([[0.0, 0, 10, 10], [20, 20, 40, 40], [60, 60, 100, 100]])
    targets = [{"boxes": torch.tensor([[1.0, 1, 11, 11]]), "labels": torch.tensor([2])}]
    logits = torch.tensor([[[0.5, -1.0, 2.0], [1.5, 0.2, -0.3], [-0.4, 0.9, 0.1]]])
    deltas = torch.zeros(1, 3, 4)
    config = ssd.SSDConfig(negatives="focal", focal_alpha=0.25, focal_gamma=2.0)
    losses = ssd.ssd_loss(logits, deltas, anchors, targets, config)
    expected = 0.0
    for row, true, alpha in ((logits[0, 0], 2, 0.25), (logits[0, 1], 0, 0.75), (logits[0, 2], 0, 0.75)):
        p = math.exp(row[true]) / sum(math.exp(v) for v in row.tolist())
        expected += -alpha * (1 - p) ** 2 * math.log(p)
    assert losses["loss_cls"].item() == pytest.approx(expected, rel=1e-5)
    # gamma 0, alpha 0.5: half the cross-entropy summed over all boxes
    half_ce = ssd.ssd_loss(logits, deltas, anchors, targets, ssd.SSDConfig(negatives="focal", focal_gamma=0.0,
                                                                            focal_alpha=0.5))["loss_cls"]
    ce = torch.nn.functional.cross_entropy(logits[0], torch.tensor([2, 0, 0]), reduction="sum")
    torch.testing.assert_close(half_ce, 0.5 * ce)
    # focal_alpha None: no α weighting (Lin et al.'s eq. 4), every box weighs 1
    unweighted = ssd.ssd_loss(logits, deltas, anchors, targets, ssd.SSDConfig(negatives="focal", focal_gamma=2.0,
                                                                              focal_alpha=None))["loss_cls"]
    expected = 0.0
    for row, true in ((logits[0, 0], 2), (logits[0, 1], 0), (logits[0, 2], 0)):
        p = math.exp(row[true]) / sum(math.exp(v) for v in row.tolist())
        expected += -(1 - p) ** 2 * math.log(p)
    assert unweighted.item() == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="focal_alpha"):
        ssd.SSDConfig(focal_alpha=1.5)
    box = box_ops.encode_boxes(targets[0]["boxes"], anchors[:1], ssd.BOX_WEIGHTS)
    torch.testing.assert_close(losses["loss_box"], torch.nn.functional.smooth_l1_loss(
        torch.zeros(1, 4), box, beta=1.0, reduction="sum"))


def test_hard_negatives_by_hand():
    """One positive: the three negatives of highest cross-entropy count; with a ratio larger
    than the negatives, each negative counts once (a positive never counts twice)."""
    anchors = torch.tensor([[0.0, 0, 10, 10], [20, 20, 40, 40], [60, 60, 100, 100], [0, 60, 30, 90],
                            [90, 0, 120, 30]])
    targets = [{"boxes": torch.tensor([[0.0, 0, 10, 10]]), "labels": torch.tensor([1])}]
    logits = torch.tensor([[[0.0, 1.0], [0.0, 3.0], [0.0, -2.0], [0.0, 1.0], [0.0, 2.0]]])
    deltas = torch.zeros(1, 5, 4)
    ce = torch.nn.functional.cross_entropy(logits[0], torch.tensor([1, 0, 0, 0, 0]), reduction="none")
    hard = ssd.ssd_loss(logits, deltas, anchors, targets)["loss_cls"]
    torch.testing.assert_close(hard, ce[[0, 1, 3, 4]].sum())
    everything = ssd.ssd_loss(logits, deltas, anchors, targets, ssd.SSDConfig(neg_pos_ratio=10))["loss_cls"]
    torch.testing.assert_close(everything, ce.sum())


@pytest.mark.parametrize("negatives", ["hard", "focal", "random"])
def test_variants_finite_positive_with_gradients(device, negatives):
    anchors, targets = default_boxes(device=device), some_targets(device)
    logits, deltas = head_outputs(device=device)
    logits.requires_grad_(True)
    deltas.requires_grad_(True)
    config = ssd.SSDConfig(negatives=negatives)
    generator = torch.Generator(device=device).manual_seed(0)
    losses = ssd.ssd_loss(logits, deltas, anchors, targets, config, generator)
    assert set(losses) == {"loss_box", "loss_cls"}
    for value in losses.values():
        assert value.dim() == 0 and math.isfinite(value.item()) and value.item() > 0
    sum(losses.values()).backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    assert deltas.grad.abs().sum() > 0
    assert deltas.grad[1].abs().sum() == 0                        # image 1 has no objects


def test_random_negatives_are_reproducible_and_counted():
    anchors, targets = default_boxes(), some_targets()
    logits, deltas = head_outputs()
    config = ssd.SSDConfig(negatives="random")

    def loss(seed, cfg=config):
        return ssd.ssd_loss(logits, deltas, anchors, targets, cfg, torch.Generator().manual_seed(seed))["loss_cls"]

    torch.testing.assert_close(loss(0), loss(0))
    assert loss(0) != loss(1)
    assert loss(0) < ssd.ssd_loss(logits, deltas, anchors, targets)["loss_cls"]   # hard ones are harder
    # a ratio larger than the negatives: random and hard both take every negative
    everything = ssd.SSDConfig(negatives="random", neg_pos_ratio=10**6)
    torch.testing.assert_close(loss(0, everything), ssd.ssd_loss(
        logits, deltas, anchors, targets, ssd.SSDConfig(neg_pos_ratio=10**6))["loss_cls"])
    # through the model: the same seed gives the same stream
    images, targets = data.collate_detection([data.make_split("train", 2)[i] for i in range(2)])
    torch.manual_seed(0)
    a = ssd.SSD(C, negatives="random", seed=5).train()
    b = ssd.SSD(C, negatives="random", seed=5).train()
    b.load_state_dict(a.state_dict())
    first = a(images, targets)["loss_cls"]
    torch.testing.assert_close(first, b(images, targets)["loss_cls"])
    assert a(images, targets)["loss_cls"] != first                 # the stream moves on


@pytest.mark.parametrize("negatives", ["hard", "focal", "random"])
def test_no_objects(device, negatives):
    anchors = default_boxes(device=device)
    empty = [{"boxes": torch.zeros(0, 4, device=device), "labels": torch.zeros(0, dtype=torch.int64, device=device)}
             for _ in range(2)]
    logits, deltas = head_outputs(batch=2, device=device, requires_grad=True)
    for min_negatives in (0, 3):
        config = ssd.SSDConfig(negatives=negatives, min_negatives=min_negatives)
        losses = ssd.ssd_loss(logits, deltas, anchors, empty, config)
        assert all(math.isfinite(v.item()) for v in losses.values())
        assert losses["loss_box"].item() == 0.0
        if negatives == "focal" or min_negatives > 0:
            assert losses["loss_cls"].item() > 0                   # the background is trained
        else:
            assert losses["loss_cls"].item() == 0.0                # torchvision's choice: 0 negatives
        grads = torch.autograd.grad(sum(losses.values()), (logits, deltas))
        assert all(torch.isfinite(g).all() for g in grads)
    if negatives == "hard":
        cpu = [x.detach().cpu() for x in (logits, deltas, anchors)]
        empty = train.move_to(empty, "cpu")
        theirs = torchvision_loss(*cpu, empty)["classification"]
        torch.testing.assert_close(ssd.ssd_loss(*cpu, empty)["loss_cls"], theirs)


# ----------------------------------------------------------------------------- post-processing
def torchvision_postprocess(logits, deltas, anchors, config):
    stub = SimpleNamespace(box_coder=det_utils.BoxCoder((10.0, 10.0, 5.0, 5.0)), score_thresh=config.score_threshold,
                           topk_candidates=config.topk_candidates, nms_thresh=config.nms_threshold,
                           detections_per_img=config.detections_per_image)
    return tv_ssd.SSD.postprocess_detections(stub, {"bbox_regression": deltas, "cls_logits": logits},
                                             [anchors] * len(logits), [SIZE] * len(logits))


def canonical(d):
    """Detections sorted by (score desc, label, box): the order of equal scores is free."""
    rows = sorted(zip(d["scores"].tolist(), d["labels"].tolist(), d["boxes"].tolist()),
                  key=lambda r: (-r[0], r[1], r[2]))
    return rows


@pytest.mark.parametrize("settings", [{}, {"score_threshold": 0.2, "topk_candidates": 10, "detections_per_image": 5},
                                      {"nms_threshold": 0.2, "detections_per_image": 300},
                                      {"score_threshold": 0.3, "nms_threshold": 1.0, "detections_per_image": 5000},
                                      {"score_threshold": 0.05, "topk_candidates": 50, "nms_threshold": 1.0,
                                       "detections_per_image": 5000}])
def test_postprocess_equals_torchvision(settings):
    config = ssd.SSDConfig(**settings)
    anchors = default_boxes()
    logits, deltas = head_outputs(seed=4, scale=3.0)
    deltas = deltas * 0.5
    ours = ssd.postprocess(logits, deltas, anchors, SIZE, config)
    theirs = torchvision_postprocess(logits, deltas, anchors, config)
    assert len(ours) == len(theirs) == 3
    for a, b in zip(ours, theirs):
        assert a["labels"].dtype == torch.int64 and len(a["boxes"]) > 0
        assert (a["scores"][:-1] >= a["scores"][1:]).all()
        ra, rb = canonical(a), canonical(b)
        assert len(ra) == len(rb)
        torch.testing.assert_close(torch.tensor([r[0] for r in ra]), torch.tensor([r[0] for r in rb]))
        assert [r[1] for r in ra] == [r[1] for r in rb]
        torch.testing.assert_close(torch.tensor([r[2] for r in ra]), torch.tensor([r[2] for r in rb]))


# ----------------------------------------------------------------------------- settings and inputs
def test_bad_settings():
    with pytest.raises(ValueError, match="negatives must be one of"):
        ssd.SSDConfig(negatives="soft")
    with pytest.raises(ValueError, match="scales needs 6 values"):
        ssd.SSDConfig(scales=(0.1, 0.2, 0.3))
    with pytest.raises(ValueError, match="one list per level"):
        ssd.SSDConfig(aspect_ratios=((2,),))
    with pytest.raises(ValueError, match="iou_threshold"):
        ssd.SSDConfig(iou_threshold=1.5)
    with pytest.raises(ValueError, match="prior"):
        ssd.SSDConfig(prior=1.0)
    with pytest.raises(ValueError, match="either"):
        ssd.SSD(C, config=ssd.SSDConfig(), negatives="focal")
    with pytest.raises(ValueError, match="num_classes"):
        ssd.SSD(0)
    logits, deltas = head_outputs(batch=1)
    anchors = default_boxes()
    with pytest.raises(ValueError, match=r"box_deltas must be a Tensor\[B, D, 4\]"):
        ssd.ssd_loss(logits, deltas[:, :-1], anchors, some_targets()[:1])
    with pytest.raises(ValueError, match=r"default_boxes must be a Tensor\[D, 4\]"):
        ssd.postprocess(logits, deltas, anchors[:-1], SIZE)
    with pytest.raises(ValueError, match="targets must be a list of 1"):
        ssd.ssd_loss(logits, deltas, anchors, some_targets())


@pytest.fixture(scope="module")
def batch():
    return data.collate_detection([data.make_split("train", 2)[i] for i in range(2)])


def test_bad_inputs(device, batch):
    images, targets = train.move_to(batch, device)
    model = ssd.SSD(C).to(device).train()
    with pytest.raises(ValueError, match="needs targets"):
        model(images)
    with pytest.raises(ValueError, match=r"target 1.*'labels'"):
        model(images, [targets[0], {"boxes": targets[1]["boxes"]}])
    with pytest.raises(ValueError, match=r"target 0 'boxes'.*\[2, 5\]"):
        model(images, [{**targets[0], "boxes": torch.zeros(2, 5, device=device)}, targets[1]])
    with pytest.raises(ValueError, match=r"target 1 'labels'"):
        model(images, [targets[0], {**targets[1], "labels": targets[1]["labels"][:-1]}])
    with pytest.raises(ValueError, match="targets must be a list of 2"):
        model(images, targets[:1])
    with pytest.raises(ValueError, match="images"):
        model(images[:, :2], targets)
    with pytest.raises(ValueError, match="multiple of 128"):   # the layer below the padding still says so
        ssd.feature_sizes((96, 96))
    with torch.no_grad():                                 # padded to 128 and cropped back
        small = model.eval()(images[..., :96, :80])
    assert all(len(p["boxes"]) == 0 or (p["boxes"][:, 2].max() <= 80 and p["boxes"][:, 3].max() <= 96) for p in small)
    model.train()
    if device.type == "cpu":                              # values are checked on the CPU only
        with pytest.raises(ValueError, match=r"labels.*1\.\.4"):
            model(images, [targets[0], {**targets[1], "labels": torch.full_like(targets[1]["labels"], 5)}])


# ----------------------------------------------------------------------------- the whole model
@pytest.mark.parametrize("prior", [None, 0.01])
def test_untrained_detections_follow_the_prior_at_any_size(device, batch, prior):
    """Untrained: with zero biases (prior None) there are detections above the score threshold;
    with the default prior every score starts near 0.0025 < 0.01, and each image gets empty
    outputs. A list of images gives what the batch gives, and a 256 x 128 image (padded to
    multiples of 128) keeps its boxes inside it. (The contract itself: tests/test_recipes.py.)"""
    images, _ = batch
    torch.manual_seed(0)
    model = ssd.SSD(num_classes=C, prior=prior).to(device).eval()
    with torch.no_grad():
        out = model(images.to(device))
        as_list = model([im.to(device) for im in images])
    for d, e in zip(out, as_list):
        m = len(d["boxes"])
        assert (0 < m <= model.config.detections_per_image) if prior is None else m == 0
        assert (d["scores"] > model.config.score_threshold).all()
        torch.testing.assert_close(d["boxes"], e["boxes"])
    with torch.no_grad():
        big = model(torch.rand(1, 3, 256, 128, device=device))[0]
    assert (big["boxes"][:, 1::2] <= 256).all() and (big["boxes"][:, 0::2] <= 128).all()
    assert (len(big["boxes"]) > 0) == (prior is None)


def test_train_losses_and_empty_targets(device, batch):
    images, targets = train.move_to(batch, device)
    torch.manual_seed(0)
    model = ssd.SSD(num_classes=C).to(device).train()
    losses = model(images, targets)
    assert set(losses) == {"loss_box", "loss_cls"}
    assert all(math.isfinite(v.item()) and v.item() > 0 for v in losses.values())
    sum(losses.values()).backward()
    for part in (model.features.backbone.stem, model.features.backbone.blocks, model.features.extras, model.head):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters())
    empty = [{"boxes": torch.zeros(0, 4, device=device), "labels": torch.zeros(0, dtype=torch.int64, device=device)}
             for _ in range(len(images))]
    losses = model(images, empty)
    assert all(math.isfinite(v.item()) for v in losses.values())
    assert losses["loss_box"].item() == 0.0
    sum(losses.values()).backward()


@pytest.mark.slow   # trains until it overfits
def test_overfits_four_images():
    torch.manual_seed(0)
    model = ssd.SSD(num_classes=C, pretrained_backbone=BACKBONE)
    preds, targets, seconds = overfit(model, steps=60)
    scores = metrics.mean_average_precision(preds, targets)
    print(f"overfit: mAP@0.5 {scores['map_50']:.3f}, mAP {scores['map']:.3f}, {seconds:.1f} s")
    assert scores["map_50"] >= 0.9
