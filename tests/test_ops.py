"""Tests of lessons_pkg.ops (NMS, RoI Pool, RoI Align) against torchvision.ops."""
import math

import pytest
import torch
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st

from lessons_pkg import boxes, ops
from lessons_pkg.bench import clustered_boxes


def scored_boxes(n, seed=0, classes=20, device="cpu", dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    b = clustered_boxes(n, image_size=200.0, generator=g).to(device=device, dtype=dtype)
    scores = torch.rand(n, generator=g).to(device=device, dtype=dtype)
    return b, scores, torch.randint(classes, (n,), generator=g).to(device)


def tv_nms(boxes, scores, iou_threshold):
    """torchvision's CPU kernel is the oracle on every device: its CUDA kernel compares in
    float32 and sorts equal scores unstably, ours behaves the same on every device."""
    return torchvision.ops.nms(boxes.cpu(), scores.cpu(), iou_threshold).to(boxes.device)


def tv_batched_nms(boxes, scores, idxs, iou_threshold):
    return torchvision.ops.batched_nms(boxes.cpu(), scores.cpu(), idxs.cpu(),
                                       iou_threshold).to(boxes.device)


def same_set_same_scores(got, want, scores):
    """batched_nms: torchvision orders equal scores with an unstable sort on large inputs."""
    assert torch.equal(got.sort()[0], want.sort()[0])
    assert torch.equal(scores[got], scores[want])


# ============================================================================= NMS
@pytest.mark.parametrize("n", [1, 7, 300, 1500])          # below and above the block sizes
@pytest.mark.parametrize("iou_threshold", [0.0, 0.2, 0.5, 0.8, 1.0])
def test_nms_matches_torchvision(n, iou_threshold, device):
    b, s, _ = scored_boxes(n, seed=n, device=device)
    assert torch.equal(ops.nms(b, s, iou_threshold), tv_nms(b, s, iou_threshold))


def test_nms_float64_and_degenerate_boxes(device):
    b, s, _ = scored_boxes(400, seed=1, device=device, dtype=torch.float64)
    b[:100, 2] = b[:100, 0]                                  # zero width
    b[100:110] = b[100]                                      # identical boxes
    b[110:120] = torch.tensor([5.0, 5, 5, 5], dtype=torch.float64)   # identical points
    assert torch.equal(ops.nms(b, s, 0.5), tv_nms(b, s, 0.5))


def test_nms_equal_scores_follow_torchvision(device):
    b, _, _ = scored_boxes(600, seed=2, device=device)
    s = torch.randint(0, 4, (600,), generator=torch.Generator().manual_seed(0)).float()
    s = s.to(device)
    assert torch.equal(ops.nms(b, s, 0.3), tv_nms(b, s, 0.3))
    flat = torch.ones(600, device=device)
    assert torch.equal(ops.nms(b, flat, 0.5), tv_nms(b, flat, 0.5))


def test_nms_iou_exactly_at_threshold_is_kept(device):
    # IoU of these two is 100 / 200 = 0.5, exactly representable.
    b = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 20]], device=device)
    s = torch.tensor([0.9, 0.8], device=device)
    assert ops.nms(b, s, 0.5).tolist() == [0, 1]
    assert ops.nms(b, s, math.nextafter(0.5, 0)).tolist() == [0]
    assert tv_nms(b, s, 0.5).tolist() == [0, 1]


def test_nms_threshold_rounding_like_torchvision(device):
    # float32 IoU 1 / 10 is 0.1f = 0.10000000149 > 0.1: torchvision (float64 threshold)
    # suppresses; comparing with float32(0.1) would not.
    b = torch.tensor([[0.0, 0, 10, 1], [0, 0, 1, 1]], device=device)
    s = torch.tensor([0.9, 0.8], device=device)
    assert tv_nms(b, s, 0.1).tolist() == [0]
    assert ops.nms(b, s, 0.1).tolist() == [0]


@pytest.mark.parametrize("iou_threshold", [0.3, 0.5, 0.9])
def test_nms_sliding_windows_across_blocks(iou_threshold, device):
    """A chain of windows 1 px apart: every decision depends on the previous ones, across
    block borders, and with mixed class sizes in batched_nms (packed and partial blocks)."""
    x = torch.arange(700.0, device=device)
    b = torch.stack((x, torch.zeros_like(x), x + 10, torch.full_like(x, 10)), 1)
    c = torch.cat((torch.zeros(450), torch.arange(250) // 7 + 1)).long().to(device)
    for s in (torch.linspace(1, 0, 700), torch.rand(700, generator=torch.Generator()
                                                    .manual_seed(5))):
        s = s.to(device)
        assert torch.equal(ops.nms(b, s, iou_threshold),
                           tv_nms(b, s, iou_threshold))
        same_set_same_scores(ops.batched_nms(b, s, c, iou_threshold),
                             tv_batched_nms(b, s, c, iou_threshold), s)


def test_nms_empty_and_single(device):
    empty = ops.nms(torch.zeros(0, 4, device=device), torch.zeros(0, device=device), 0.5)
    assert empty.dtype == torch.int64 and empty.shape == (0,) and empty.device.type == device.type
    one = ops.nms(torch.tensor([[0.0, 0, 1, 1]], device=device), torch.ones(1, device=device), 0.5)
    assert one.tolist() == [0]
    e = ops.batched_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long), 0.5)
    assert e.dtype == torch.int64 and e.shape == (0,)


@pytest.mark.parametrize("n, classes", [(50, 1), (300, 3), (900, 20), (3000, 20), (3000, 300)])
def test_batched_nms_matches_torchvision(n, classes, device):
    # n <= 1000 exercises torchvision's coordinate-offset path, larger n its per-class path.
    b, s, c = scored_boxes(n, seed=3, classes=classes, device=device)
    got, want = ops.batched_nms(b, s, c, 0.5), tv_batched_nms(b, s, c, 0.5)
    same_set_same_scores(got, want, s)
    if len(s.unique()) == n:                                  # no ties: the same order too
        assert torch.equal(got, want)


def test_batched_nms_equal_scores_and_negative_class_ids(device):
    b, _, c = scored_boxes(500, seed=4, classes=5, device=device)
    s = torch.randint(0, 3, (500,), generator=torch.Generator().manual_seed(1)).float().to(device)
    got = ops.batched_nms(b, s, c - 2, 0.5)
    same_set_same_scores(got, tv_batched_nms(b, s, c - 2, 0.5), s)
    # Decreasing scores; equal scores in ascending index (a stable order).
    for i, j in zip(got[:-1].tolist(), got[1:].tolist()):
        assert s[i] > s[j] or (s[i] == s[j] and i < j)


boxes_st = st.lists(
    st.tuples(st.integers(0, 40), st.integers(0, 40), st.integers(0, 20), st.integers(0, 20),
              st.integers(0, 5), st.integers(0, 3)), min_size=0, max_size=40)


@settings(max_examples=60, deadline=None)
@given(boxes_st, st.sampled_from([0.0, 0.25, 0.5, 0.7]))
def test_nms_properties(rows, iou_threshold):
    """Integer coordinates and scores: many ties and IoUs exactly at the threshold."""
    t = torch.tensor(rows, dtype=torch.float32).reshape(-1, 6)
    b = torch.cat((t[:, :2], t[:, :2] + t[:, 2:4]), 1)
    s, c = t[:, 4], t[:, 5].long()
    keep = ops.nms(b, s, iou_threshold)
    assert torch.equal(keep, tv_nms(b, s, iou_threshold))
    assert len(set(keep.tolist())) == len(keep)
    assert (s[keep][:-1] >= s[keep][1:]).all()               # decreasing scores
    iou = boxes.box_iou(b[keep], b[keep]).nan_to_num(0).fill_diagonal_(0)
    assert not (iou > iou_threshold).any()                   # no kept pair overlaps too much
    # batched_nms is the union of per-class NMS.
    union = torch.cat([torch.nonzero(c == k).squeeze(1)[ops.nms(b[c == k], s[c == k],
                                                                 iou_threshold)]
                       for k in c.unique().tolist()] + [torch.zeros(0, dtype=torch.long)])
    assert torch.equal(ops.batched_nms(b, s, c, iou_threshold).sort()[0], union.sort()[0])


def test_nms_validation():
    b, s, c = scored_boxes(5)
    with pytest.raises(ValueError, match=r"boxes must have shape \[N, 4\], got \[5, 3\]"):
        ops.nms(b[:, :3], s, 0.5)
    with pytest.raises(ValueError, match=r"scores must have shape \[N\] = \[5\] .* got \[4\]"):
        ops.nms(b, s[:4], 0.5)
    with pytest.raises(ValueError, match=r"idxs must have shape \[N\] = \[5\] .* got \[6\]"):
        ops.batched_nms(b, s, torch.zeros(6, dtype=torch.long), 0.5)
    with pytest.raises(ValueError, match="idxs must hold integer class ids"):
        ops.batched_nms(b, s, c.float(), 0.5)
    with pytest.raises(ValueError, match="iou_threshold must be a number >= 0, got -0.1"):
        ops.nms(b, s, -0.1)
    with pytest.raises(ValueError, match="iou_threshold must be a number >= 0, got nan"):
        ops.nms(b, s, math.nan)
    b[2, 1] = math.nan
    with pytest.raises(ValueError, match="boxes must be finite"):
        ops.batched_nms(b, s, c, 0.5)


# ============================================================================= RoI ops
def feature_map(dtype=torch.float32, device="cpu", batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, 11, 14, generator=g, dtype=dtype).to(device)


def random_rois(k, batch=2, dtype=torch.float32, device="cpu", seed=0):
    """Tensor[k, 5] in image pixels of a 4x larger image: partly or wholly outside the map,
    and zero-size RoIs (an eighth)."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(k, 2, generator=g, dtype=torch.float64) * 80 - 12
    wh = torch.rand(k, 2, generator=g, dtype=torch.float64) * 40
    wh[: k // 8] = 0
    idx = torch.randint(batch, (k, 1), generator=g).double()
    return torch.cat((idx, xy, xy + wh), 1).to(dtype=dtype, device=device)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [-1, 0, 1, 2])
@pytest.mark.parametrize("output_size", [(7, 7), (3, 2), 1])
def test_roi_align_matches_torchvision(dtype, aligned, sampling_ratio, output_size, device):
    x, rois = feature_map(dtype, device), random_rois(60, dtype=dtype, device=device)
    for scale in (0.25, 1.0):
        torch.testing.assert_close(
            ops.roi_align(x, rois, output_size, scale, sampling_ratio, aligned),
            torchvision.ops.roi_align(x, rois, output_size, scale, sampling_ratio, aligned),
            rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("output_size", [(7, 7), (3, 2), (1, 5)])
@pytest.mark.parametrize("scale", [0.25, 0.5, 1.0])
@pytest.mark.parametrize("grad", [False, True])   # two paths: with a gradient to route, and without
def test_roi_pool_matches_torchvision(output_size, scale, grad, device):
    x, rois = feature_map(device=device).requires_grad_(grad), random_rois(60, device=device)
    torch.testing.assert_close(ops.roi_pool(x, rois, output_size, scale),
                               torchvision.ops.roi_pool(x, rois, output_size, scale))


def test_roi_pool_rounds_half_away_from_zero():
    x = torch.arange(2 * 1 * 6 * 6.0).reshape(2, 1, 6, 6)
    rois = torch.tensor([[0, 0.5, 1.5, 2.5, 3.5], [1, -0.5, -2.5, 4.5, 2.5]])
    torch.testing.assert_close(ops.roi_pool(x, rois, 2), torchvision.ops.roi_pool(x, rois, 2))


@pytest.mark.parametrize("op", ["roi_align", "roi_pool"])
def test_roi_ops_accept_a_list_of_boxes_and_modules(op, device):
    x, rois = feature_map(device=device), random_rois(20, device=device)
    per_image = [rois[rois[:, 0] == i, 1:] for i in range(2)]
    ordered = torch.cat([rois[rois[:, 0] == i] for i in range(2)])
    extra = (2,) if op == "roi_align" else ()                 # sampling_ratio
    want = getattr(torchvision.ops, op)(x, ordered, (2, 3), 0.5, *extra)
    torch.testing.assert_close(getattr(ops, op)(x, per_image, (2, 3), 0.5, *extra), want)
    module = ops.RoIAlign((2, 3), 0.5, 2) if op == "roi_align" else ops.RoIPool((2, 3), 0.5)
    torch.testing.assert_close(module(x, per_image), want)
    assert "output_size=(2, 3)" in repr(module)


@pytest.mark.parametrize("op", ["roi_align", "roi_pool"])
def test_roi_ops_empty(op, device):
    x = feature_map(device=device)
    fn = getattr(ops, op)
    assert fn(x, torch.zeros(0, 5, device=device), (2, 3)).shape == (0, 3, 2, 3)
    assert fn(x, [torch.zeros(0, 4, device=device)] * 2, 4).shape == (0, 3, 4, 4)


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [-1, 2])
def test_roi_align_gradient_matches_torchvision(aligned, sampling_ratio, device):
    x = feature_map(torch.float64, device).requires_grad_()
    rois = random_rois(40, dtype=torch.float64, device=device)
    g = torch.randn(40, 3, 4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    g = g.to(device)
    ours, = torch.autograd.grad(ops.roi_align(x, rois, (4, 5), 0.5, sampling_ratio, aligned),
                                x, g)
    ref, = torch.autograd.grad(torchvision.ops.roi_align(x, rois, (4, 5), 0.5, sampling_ratio,
                                                         aligned), x, g)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("constant", [False, True])     # constant: every bin is one big tie
def test_roi_pool_gradient_matches_torchvision(constant, device):
    x = feature_map(device=device)
    x = (torch.ones_like(x) if constant else x).requires_grad_()
    rois = random_rois(40, device=device)
    g = torch.randn(40, 3, 4, 5, generator=torch.Generator().manual_seed(2)).to(device)
    ours, = torch.autograd.grad(ops.roi_pool(x, rois, (4, 5), 0.5), x, g)
    ref, = torch.autograd.grad(torchvision.ops.roi_pool(x, rois, (4, 5), 0.5), x, g)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("grad", [False, True])
def test_roi_pool_ignores_nan_features_like_torchvision(grad):
    x = feature_map()
    x[0, :, 2:6, 3:9] = math.nan
    x[1, 1] = -math.inf
    x.requires_grad_(grad)
    rois = random_rois(30)
    torch.testing.assert_close(ops.roi_pool(x, rois, 3, 0.5),
                               torchvision.ops.roi_pool(x, rois, 3, 0.5), equal_nan=True)


def test_roi_op_validation():
    x, rois = feature_map(), random_rois(4)
    for bad in (0, (2, 0), (1, 2, 3), 2.5, (2, 2.0)):
        with pytest.raises(ValueError, match=r"output_size must be a positive int or a pair"):
            ops.roi_align(x, rois, bad)
    with pytest.raises(ValueError, match=r"boxes must have shape \[N, 5\], got \[4, 4\]"):
        ops.roi_pool(x, rois[:, 1:], 2)
    with pytest.raises(ValueError, match=r"boxes\[1\] must have shape \[N, 4\], got \[3, 5\]"):
        ops.roi_align(x, [rois[:, 1:], rois[:3]], 2)
    with pytest.raises(ValueError, match=r"input must have shape \[B, C, H, W\], got \[3, 11"):
        ops.roi_align(x[0], rois, 2)
    with pytest.raises(ValueError, match=r"batch indices in \[0, 1\]"):
        ops.roi_align(x, rois + torch.tensor([2.0, 0, 0, 0, 0]), 2)
    with pytest.raises(ValueError, match="boxes has 3 tensors but input has only 2 images"):
        ops.roi_pool(x, [rois[:, 1:]] * 3, 2)
    with pytest.raises(ValueError, match="spatial_scale must be a positive number"):
        ops.roi_pool(x, rois, 2, spatial_scale=0)
    with pytest.raises(ValueError, match="sampling_ratio must be an int"):
        ops.roi_align(x, rois, 2, sampling_ratio=2.0)
    rois[1, 3] = math.inf
    with pytest.raises(ValueError, match="boxes must be finite"):
        ops.roi_align(x, rois, 2)


def test_loops_run_on_one_thread_and_restore_the_thread_count():
    threads = torch.get_num_threads()
    b, s, _ = scored_boxes(300)
    ops.nms(b, s, 0.5)
    assert torch.get_num_threads() == threads
    with pytest.raises(RuntimeError, match="inside"):
        with ops._one_thread_on_cpu(torch.device("cpu")):
            assert torch.get_num_threads() == 1
            raise RuntimeError("inside")
    assert torch.get_num_threads() == threads


def test_roi_align_refuses_a_huge_adaptive_grid_instead_of_allocating_terabytes():
    feats = torch.rand(1, 4, 16, 16)
    huge = torch.tensor([[0.0, 0.0, 0.0, 1e9, 1e9]])
    with pytest.raises(ValueError, match=r"RoI 0 is 1e\+09 x 1e\+09 feature pixels.*fixed sampling_ratio"):
        ops.roi_align(feats, huge, 7, sampling_ratio=-1)
    assert ops.roi_align(feats, huge, 7, sampling_ratio=2).shape == (1, 4, 7, 7)   # a fixed grid is cheap


@pytest.mark.parametrize("aligned", [False, True])
def test_roi_align_crops_of_images_take_the_grid_sample_path(aligned, monkeypatch):
    """Few channels and a fixed sampling ratio (R-CNN's warped crops): RoIs whose samples stay in
    [-1, H] x [-1, W] never reach the bag-of-rows path, and still equal torchvision's."""
    x = torch.rand(2, 3, 40, 56, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)
    xy = torch.rand(50, 2, generator=g) * torch.tensor([40.0, 28.0])
    rois = torch.cat((torch.randint(2, (50, 1), generator=g).float(), xy,
                      xy + 1 + torch.rand(50, 2, generator=g) * 10), 1)
    expected = torchvision.ops.roi_align(x, rois, 8, 1.0, 2, aligned)

    def refused(*args):
        raise AssertionError("the bag-of-rows path ran")

    monkeypatch.setattr(ops, "_roi_align_bags", refused)
    torch.testing.assert_close(ops.roi_align(x, rois, 8, 1.0, 2, aligned), expected, rtol=1e-5, atol=1e-5)
