"""Tests of lessons_pkg.anchors: exact anchor shapes, order, and torchvision's generators."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchvision.models.detection.anchor_utils import AnchorGenerator, DefaultBoxGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import clip_boxes_to_image

from lessons_pkg import anchors


def sides(a):
    return a[:, 2] - a[:, 0], a[:, 3] - a[:, 1]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(4, 600), min_size=1, max_size=4),
       st.lists(st.floats(0.1, 10), min_size=1, max_size=4),
       st.tuples(st.integers(1, 9), st.integers(1, 9)),
       st.one_of(st.integers(1, 64), st.tuples(st.floats(1, 64), st.floats(1, 64))))
def test_every_anchor_has_area_s2_and_ratio_r(sizes, ratios, feature_size, stride):
    """d2l-zh #1357: anchor sizes must not depend on the image's (or the map's) aspect."""
    a = anchors.anchor_grid(feature_size, stride, sizes, ratios, dtype=torch.float64)
    num = len(sizes) * len(ratios)
    assert a.shape == (feature_size[0] * feature_size[1] * num, 4)
    w, h = sides(a)
    s = torch.tensor(sizes, dtype=torch.float64).repeat(len(ratios)).repeat(a.shape[0] // num)
    r = torch.tensor(ratios, dtype=torch.float64).repeat_interleave(len(sizes)) \
        .repeat(a.shape[0] // num)
    torch.testing.assert_close(w * h, s ** 2, rtol=1e-9, atol=0)
    torch.testing.assert_close(h / w, r, rtol=1e-9, atol=0)


def test_float32_anchors_are_exact_within_float_tolerance():
    a = anchors.anchor_grid((50, 80), 16, (32, 64, 128, 256, 512), (0.5, 1.0, 2.0))
    w, h = sides(a)
    s = torch.tensor([32.0, 64, 128, 256, 512]).repeat(3).repeat(50 * 80)
    r = torch.tensor([0.5, 1.0, 2.0]).repeat_interleave(5).repeat(50 * 80)
    torch.testing.assert_close(w * h, s ** 2, rtol=1e-5, atol=0)
    torch.testing.assert_close(h / w, r, rtol=1e-5, atol=0)


def test_order_is_location_major_and_centred_on_cells():
    h, w, stride, num = 3, 5, (8, 16), 6
    a = anchors.anchor_grid((h, w), stride, (10, 20), (0.5, 1.0, 2.0)).reshape(h, w, num, 4)
    centres = (a[..., :2] + a[..., 2:]) / 2
    ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    want = torch.stack((xs * 16, ys * 8), -1)[:, :, None].expand(h, w, num, 2)
    torch.testing.assert_close(centres, want)
    # The same A shapes at every location, in the order of anchor_shapes.
    shapes = torch.stack(sides(a.reshape(-1, 4)), 1).reshape(h, w, num, 2)
    torch.testing.assert_close(shapes, anchors.anchor_shapes((10, 20), (0.5, 1.0, 2.0))
                               .expand(h, w, num, 2))


def test_anchor_shapes_do_not_depend_on_the_grid():
    a = anchors.anchor_grid((4, 9), 32, (64,), (0.5, 2.0))
    b = anchors.anchor_grid((9, 4), 32, (64,), (0.5, 2.0))
    torch.testing.assert_close(torch.stack(sides(a))[:, :2], torch.stack(sides(b))[:, :2])


def test_torchvision_convention_matches_anchor_generator(device):
    sizes, ratios = ((32, 64), (128,), (100, 300)), ((0.5, 1.0, 2.0), (1.0,), (0.4, 3.0))
    generator = AnchorGenerator(sizes, ratios)
    image = ImageList(torch.zeros(1, 3, 256, 320, device=device), [(256, 320)])
    maps = [torch.zeros(1, 1, 32, 40, device=device), torch.zeros(1, 1, 16, 20, device=device),
            torch.zeros(1, 1, 8, 10, device=device)]
    want = generator(image, maps)[0]
    got = torch.cat([anchors.anchor_grid(m.shape[-2:], 256 // m.shape[-2], s, r, device=device,
                                         convention="torchvision")
                     for m, s, r in zip(maps, sizes, ratios)])
    assert got.device.type == device.type
    torch.testing.assert_close(got, want, rtol=0, atol=0)


FEATURES = [(38, 38), (19, 19), (10, 10), (5, 5), (3, 3), (1, 1)]
RATIOS = [[2], [2, 3], [2, 3], [2, 3], [2], [2]]


@pytest.mark.parametrize("image_size", [(300, 300), (240, 320)])
def test_ssd_default_boxes_match_torchvision_then_clip(image_size):
    scales = anchors.ssd_scales(len(FEATURES))
    generator = DefaultBoxGenerator(RATIOS, scales=scales, clip=False)
    image = ImageList(torch.zeros(1, 3, *image_size), [image_size])
    want = generator(image, [torch.zeros(1, 1, *f) for f in FEATURES])[0]
    got = anchors.ssd_default_boxes(FEATURES, image_size, scales, RATIOS, clip=False)
    assert got.shape == (8732, 4)                  # SSD300's count
    torch.testing.assert_close(got, want)
    clipped = anchors.ssd_default_boxes(FEATURES, image_size, scales, RATIOS)
    torch.testing.assert_close(clipped, clip_boxes_to_image(want, image_size))


def test_ssd_default_boxes_are_clipped_normalized_and_shaped():
    """sgrvinod/a-PyTorch-Tutorial-to-Object-Detection #94: unclipped default boxes."""
    scales = anchors.ssd_scales(len(FEATURES), 0.2, 0.9)
    free = anchors.ssd_default_boxes(FEATURES, (300, 300), scales, RATIOS, clip=False,
                                     normalized=True, dtype=torch.float64)
    assert (free < 0).any() and (free > 1).any()             # what clipping is for
    norm = anchors.ssd_default_boxes(FEATURES, (300, 300), scales, RATIOS, normalized=True)
    assert (norm >= 0).all() and (norm <= 1).all()
    # Level 0, location 0: squares s_1 and sqrt(s_1 s_2), then w/h = 2 and h/w = 2, area s_1^2.
    w, h = sides(free[:4])
    s1, s2 = scales[0], scales[1]
    torch.testing.assert_close(w, torch.tensor([s1, math.sqrt(s1 * s2), s1 * math.sqrt(2),
                                                s1 / math.sqrt(2)], dtype=torch.float64))
    torch.testing.assert_close(w * h, torch.tensor([s1 ** 2, s1 * s2, s1 ** 2, s1 ** 2],
                                                   dtype=torch.float64))
    centres = (free[:4, :2] + free[:4, 2:]) / 2
    torch.testing.assert_close(centres, torch.full((4, 2), 0.5 / 38, dtype=torch.float64))


def test_ssd_scales():
    assert anchors.ssd_scales(6, 0.2, 0.9) == pytest.approx([0.2, 0.34, 0.48, 0.62, 0.76, 0.9,
                                                            1.0])
    assert anchors.ssd_scales(1, 0.3, 0.8) == [0.3, 0.8]


def test_anchor_validation():
    with pytest.raises(ValueError, match="sizes must be a non-empty list of positive numbers"):
        anchors.anchor_grid((2, 2), 16, [], (1.0,))
    with pytest.raises(ValueError, match="aspect_ratios must be a non-empty list of positive"):
        anchors.anchor_grid((2, 2), 16, (32,), (0.0,))
    with pytest.raises(ValueError, match=r"feature_size must be .* got \(2, 0\)"):
        anchors.anchor_grid((2, 0), 16, (32,), (1.0,))
    with pytest.raises(ValueError, match="stride must be"):
        anchors.anchor_grid((2, 2), -4, (32,), (1.0,))
    with pytest.raises(ValueError, match="convention must be"):
        anchors.anchor_grid((2, 2), 4, (32,), (1.0,), convention="d2l")
    with pytest.raises(ValueError, match=r"scales must have len\(feature_sizes\) \+ 1 = 3"):
        anchors.ssd_default_boxes([(2, 2), (1, 1)], (300, 300), [0.2, 0.5], [[2], [2]])
    with pytest.raises(ValueError, match="aspect_ratios must have one list per level"):
        anchors.ssd_default_boxes([(2, 2), (1, 1)], (300, 300), [0.2, 0.5, 1.0], [[2]])
