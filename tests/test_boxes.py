"""Tests of lessons_pkg.boxes against torchvision.ops (and torchvision's BoxCoder)."""
import math

import pytest
import torch
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st
from torchvision.models.detection._utils import BoxCoder

from lessons_pkg import boxes

FORMATS = ("xyxy", "xywh", "cxcywh")
EXACT = dict(rtol=0, atol=0, equal_nan=True)


def random_boxes(n, seed=0, dtype=torch.float32, device="cpu", degenerate=False):
    """Tensor[n, 4] xyxy in a 100 x 100 image; with ``degenerate`` a quarter has zero width
    or height and a few are identical."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g, dtype=torch.float64) * 100
    wh = torch.rand(n, 2, generator=g, dtype=torch.float64) * 50
    if degenerate and n:
        wh[: n // 4, torch.randint(2, (1,), generator=g)] = 0
        wh[n // 4: n // 2] = 0
        xy[-3:], wh[-3:] = xy[-1], wh[-1]
    return torch.cat((xy, xy + wh), 1).to(dtype=dtype, device=device)


# ----------------------------------------------------------------------------- formats
@pytest.mark.parametrize("in_fmt", FORMATS)
@pytest.mark.parametrize("out_fmt", FORMATS)
def test_box_convert_matches_torchvision(in_fmt, out_fmt, device):
    b = random_boxes(20, device=device).reshape(2, 10, 4)          # leading dims work too
    torch.testing.assert_close(boxes.box_convert(b, in_fmt, out_fmt),
                               torchvision.ops.box_convert(b, in_fmt, out_fmt))
    back = boxes.box_convert(boxes.box_convert(b, in_fmt, out_fmt), out_fmt, in_fmt)
    torch.testing.assert_close(back, b)


def test_box_convert_returns_a_new_tensor():
    b = random_boxes(3)
    assert boxes.box_convert(b, "xyxy", "xyxy").data_ptr() != b.data_ptr()


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.int64])
def test_box_area_matches_torchvision(fmt, dtype, device):
    b = random_boxes(30, degenerate=True, device=device).to(dtype)
    torch.testing.assert_close(boxes.box_area(b, fmt), torchvision.ops.box_area(b, fmt))


# ----------------------------------------------------------------------------- overlaps
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.int64])
def test_box_iou_matches_torchvision_bit_for_bit(dtype, device):
    a = random_boxes(40, seed=1, degenerate=True, device=device).to(dtype)
    b = random_boxes(30, seed=2, degenerate=True, device=device).to(dtype)
    torch.testing.assert_close(boxes.box_iou(a, b), torchvision.ops.box_iou(a, b), **EXACT)
    torch.testing.assert_close(boxes.generalized_box_iou(a, b),
                               torchvision.ops.generalized_box_iou(a, b), equal_nan=True)


@pytest.mark.parametrize("name", ["box_iou", "generalized_box_iou"])
def test_iou_gradients_match_torchvision(name, device):
    """IoU and GIoU losses backpropagate through these (the in-place ops must not break it)."""
    a = random_boxes(20, seed=8, dtype=torch.float64, device=device) + 1
    b = random_boxes(15, seed=9, dtype=torch.float64, device=device) + 1
    w = torch.randn(20, 15, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    grads = []
    for fn in (getattr(boxes, name), getattr(torchvision.ops, name)):
        x, y = a.clone().requires_grad_(), b.clone().requires_grad_()
        grads.append(torch.autograd.grad((fn(x, y) * w.to(device)).sum(), (x, y)))
    for ours, ref in zip(*grads):
        torch.testing.assert_close(ours, ref)


@pytest.mark.parametrize("fmt", FORMATS)
def test_box_iou_formats_and_batch_dims(fmt):
    a = boxes.box_convert(random_boxes(24, seed=3).reshape(2, 12, 4), "xyxy", fmt)
    b = boxes.box_convert(random_boxes(10, seed=4).reshape(2, 5, 4), "xyxy", fmt)
    got = boxes.box_iou(a, b, fmt=fmt)
    assert got.shape == (2, 12, 5)
    torch.testing.assert_close(got, torchvision.ops.box_iou(a, b, fmt=fmt))


def test_box_iou_empty_inputs(device):
    a, e = random_boxes(5, device=device), random_boxes(0, device=device)
    assert boxes.box_iou(a, e).shape == (5, 0)
    assert boxes.box_iou(e, a).shape == (0, 5)
    assert boxes.generalized_box_iou(e, e).shape == (0, 0)
    assert boxes.box_area(e).shape == (0,)


def test_box_iou_known_values():
    a = torch.tensor([[0.0, 0, 10, 10]])
    b = torch.tensor([[0.0, 0, 10, 20], [10, 10, 20, 20], [20, 20, 30, 30], [0, 0, 10, 10]])
    assert boxes.box_iou(a, b).tolist() == [[0.5, 0.0, 0.0, 1.0]]
    # Touching corners: IoU 0; far apart: GIoU -> -1 + (union / hull).
    assert boxes.generalized_box_iou(a, b)[0, 2].item() == pytest.approx(200 / 900 - 1)


def box_strategy(min_size=0.5, max_size=60.0):
    """xyxy boxes in a 160 x 160 image with sides in [min_size, max_size]."""
    return st.tuples(*[st.floats(0, 100, width=32)] * 2,
                     *[st.floats(min_size, max_size, width=32)] * 2) \
        .map(lambda t: [t[0], t[1], t[0] + t[2], t[1] + t[3]])


@settings(max_examples=40, deadline=None)
@given(st.lists(box_strategy(), min_size=1, max_size=12),
       st.lists(box_strategy(), min_size=1, max_size=12))
def test_iou_is_symmetric_and_in_unit_interval(list1, list2):
    a, b = torch.tensor(list1, dtype=torch.float64), torch.tensor(list2, dtype=torch.float64)
    iou = boxes.box_iou(a, b)
    assert torch.equal(iou, boxes.box_iou(b, a).T)
    assert (iou >= 0).all() and (iou <= 1).all()
    torch.testing.assert_close(torch.diagonal(boxes.box_iou(a, a)), torch.ones(len(a),
                                                                              dtype=a.dtype))
    giou = boxes.generalized_box_iou(a, b)
    assert (giou <= iou + 1e-12).all() and (giou >= -1).all()


# ----------------------------------------------------------------------------- image bounds
def test_clip_and_remove_small_match_torchvision(device):
    b = random_boxes(50, seed=5, degenerate=True, device=device) * 1.5 - 20
    torch.testing.assert_close(boxes.clip_boxes_to_image(b, (90, 120)),
                               torchvision.ops.clip_boxes_to_image(b, (90, 120)))
    for min_size in (0.0, 1e-3, 10.0):
        assert torch.equal(boxes.remove_small_boxes(b, min_size),
                           torchvision.ops.remove_small_boxes(b, min_size))


# ----------------------------------------------------------------------------- deltas
@pytest.mark.parametrize("weights", [(10.0, 10.0, 5.0, 5.0), (1.0, 1.0, 1.0, 1.0)])
def test_encode_decode_match_box_coder(weights, device):
    coder = BoxCoder(weights)
    gt = random_boxes(64, seed=6, device=device) + torch.tensor([0, 0, 1, 1.0], device=device)
    anchors = random_boxes(64, seed=7, device=device) + torch.tensor([0, 0, 1, 1.0],
                                                                     device=device)
    deltas = boxes.encode_boxes(gt, anchors, weights)
    torch.testing.assert_close(deltas, coder.encode_single(gt, anchors))
    torch.testing.assert_close(boxes.decode_boxes(deltas, anchors, weights),
                               coder.decode_single(deltas, anchors))
    torch.testing.assert_close(boxes.decode_boxes(deltas, anchors, weights), gt,
                               rtol=1e-5, atol=1e-4)


def test_decode_clamps_huge_size_deltas_like_box_coder():
    anchors = torch.tensor([[10.0, 10, 30, 40]] * 3)
    deltas = torch.tensor([[0.0, 0, 100, 100], [0, 0, -100, 3], [1e3, -1e3, 40, -40]])
    got = boxes.decode_boxes(deltas, anchors)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, BoxCoder((10.0, 10.0, 5.0, 5.0)).decode_single(deltas,
                                                                                   anchors))
    # A box at most 1000 / 16 times its anchor.
    assert (got[0, 2] - got[0, 0]).item() == pytest.approx(20 * 1000 / 16, rel=1e-5)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(box_strategy(1.0), box_strategy(1.0)), min_size=1, max_size=8),
       st.sampled_from([(10.0, 10.0, 5.0, 5.0), (1.0, 2.0, 3.0, 4.0)]))
def test_decode_inverts_encode(pairs, weights):
    gt = torch.tensor([p[0] for p in pairs], dtype=torch.float64)
    anchors = torch.tensor([p[1] for p in pairs], dtype=torch.float64)
    # Size ratios up to 60: inside bbox_xform_clip (1000 / 16), so nothing is clamped.
    back = boxes.decode_boxes(boxes.encode_boxes(gt, anchors, weights), anchors, weights)
    torch.testing.assert_close(back, gt, rtol=1e-9, atol=1e-9)


# ----------------------------------------------------------------------------- validation
@pytest.mark.parametrize("call", [
    lambda b: boxes.box_iou(b, random_boxes(2)),
    lambda b: boxes.box_area(b),
    lambda b: boxes.box_convert(b, "xyxy", "cxcywh"),
    lambda b: boxes.clip_boxes_to_image(b, (10, 10)),
    lambda b: boxes.encode_boxes(b, b),
])
def test_wrong_box_shape_names_argument_and_shapes(call):
    with pytest.raises(ValueError, match=r"must have shape \[\.\.\., N, 4\], got \[5, 3\]"):
        call(torch.zeros(5, 3))


def test_validation_messages():
    with pytest.raises(ValueError, match="boxes2 must have shape"):
        boxes.box_iou(random_boxes(2), torch.zeros(2, 5))
    with pytest.raises(ValueError, match=r"in_fmt must be one of .* got 'xxyy'"):
        boxes.box_convert(random_boxes(2), "xxyy", "xyxy")
    with pytest.raises(ValueError, match="out_fmt must be one of"):
        boxes.box_convert(random_boxes(2), "xyxy", "yxyx")
    with pytest.raises(ValueError, match="fmt must be one of"):
        boxes.box_iou(random_boxes(2), random_boxes(2), fmt="cxcywhr")
    bad = random_boxes(4)
    bad[1, 2] = math.nan
    with pytest.raises(ValueError, match="boxes1 must be finite"):
        boxes.box_iou(bad, random_boxes(2))
    bad[1, 2] = math.inf
    with pytest.raises(ValueError, match="anchors must be finite"):
        boxes.decode_boxes(torch.zeros(4, 4), bad)
    with pytest.raises(ValueError, match="gt and anchors must have the same shape"):
        boxes.encode_boxes(random_boxes(3), random_boxes(4))
    with pytest.raises(ValueError, match="weights must have 4 entries"):
        boxes.encode_boxes(random_boxes(3), random_boxes(3), weights=(1.0, 1.0))
    with pytest.raises(ValueError, match=r"size must be \(height, width\)"):
        boxes.clip_boxes_to_image(random_boxes(3), (10, 10, 3))


def test_box_ioa_is_the_share_of_the_first_box_inside_the_second():
    a = torch.tensor([[0., 0, 10, 10], [5, 5, 15, 15], [20, 20, 30, 30]])
    b = torch.tensor([[0., 0, 10, 10], [0, 0, 100, 100]])
    ioa = boxes.box_ioa(a, b)
    torch.testing.assert_close(ioa, torch.tensor([[1.0, 1.0], [0.25, 1.0], [0.0, 1.0]]))
    # intersection over the first box's area = IoU x union / area, against torchvision's IoU
    inter_over_union = torchvision.ops.box_iou(a, b)
    union = boxes.box_area(a)[:, None] + boxes.box_area(b)[None] - ioa * boxes.box_area(a)[:, None]
    torch.testing.assert_close(ioa * boxes.box_area(a)[:, None], inter_over_union * union)
