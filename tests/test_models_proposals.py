"""Tests of lessons_pkg.models.proposals: selective search's similarities, grouping, ranking,
proposals on easy and shapes images (their recall by metrics.proposal_recall), bad input.
proposal_recall itself is tested in test_metrics.py."""
import numpy as np
import pytest
import torch

from lessons_pkg import data, metrics
from lessons_pkg.models import proposals as P

pytestmark = pytest.mark.usefixtures("one_thread")


def square_image(size=64) -> np.ndarray:
    """uint8[size, size, 3]: a blue rectangle (x 16..43, y 20..39) on a flat grey background."""
    image = np.full((size, size, 3), 200, np.uint8)
    image[20:40, 16:44] = (30, 60, 220)
    return image


SQUARE_BOX = torch.tensor([[16.0, 20.0, 44.0, 40.0]])


@pytest.fixture(scope="module")
def shapes():
    ds = data.make_split("val", 8)
    return [ds[i] for i in range(len(ds))]


def grid_segments(rows=3, cols=4, cell=5) -> np.ndarray:
    """int[rows * cell, cols * cell]: a grid of square segments labelled row by row."""
    return np.kron(np.arange(rows * cols).reshape(rows, cols), np.ones((cell, cell), np.int64))


# ----------------------------------------------------------------------------- similarities
def test_histogram_intersection_of_identical_and_disjoint_histograms():
    rng = np.random.default_rng(0)
    h = rng.random(75)
    h /= h.sum()
    a, b = np.zeros(75), np.zeros(75)
    a[:30], b[30:] = 1 / 30, 1 / 45
    for sim in (P.colour_similarity, P.texture_similarity):
        assert sim(h, h) == pytest.approx(1.0)
        assert sim(a, b) == 0.0
        assert sim(a, a) == pytest.approx(1.0)
        # batched: rows against rows
        np.testing.assert_allclose(sim(np.stack([h, a]), np.stack([h, b])), [1.0, 0.0])


def test_size_and_fill_similarity_on_hand_boxes():
    # two 10 x 10 regions side by side in a 100 x 100 image fill their 20 x 10 union box
    assert P.size_similarity(100, 100, 10_000) == pytest.approx(0.98)
    box_i, box_j = np.array([0, 0, 10, 10]), np.array([10, 0, 20, 10])
    assert P.fill_similarity(box_i, box_j, 100, 100, 10_000) == pytest.approx(1.0)
    # diagonal corners: the union box (20 x 20 = 400 pixels) is half empty
    box_j = np.array([10, 10, 20, 20])
    assert P.fill_similarity(box_i, box_j, 100, 100, 10_000) == pytest.approx(1 - 200 / 10_000)
    # a region inside the other's box fits it
    assert P.fill_similarity(np.array([0, 0, 20, 20]), np.array([5, 5, 10, 10]), 375, 25, 10_000) == 1.0


def test_region_similarity_sums_the_named_similarities():
    segments = grid_segments()
    rng = np.random.default_rng(1)
    f = P.region_features(segments, rng.random(segments.shape + (3,)).astype(np.float32))
    i, j = f.pairs[:, 0], f.pairs[:, 1]
    expected = (P.colour_similarity(f.colour[i], f.colour[j]) + P.size_similarity(f.size[i], f.size[j], f.image_size)
                + P.fill_similarity(f.boxes[i], f.boxes[j], f.size[i], f.size[j], f.image_size))
    np.testing.assert_allclose(P.region_similarity(f, i, j, ("colour", "size", "fill")), expected)
    assert P.region_similarity(f, 0, 1, ("texture",)) == P.texture_similarity(f.texture[0], f.texture[1])


# ----------------------------------------------------------------------------- features, grouping
def test_region_features_on_a_grid():
    segments = grid_segments(rows=3, cols=4, cell=5)
    image = np.zeros(segments.shape + (3,), np.float32)
    f = P.region_features(segments, image)
    assert f.colour.shape == (12, 75) and f.texture.shape == (12, 240)
    np.testing.assert_allclose(f.colour.sum(1), 1.0)
    np.testing.assert_allclose(f.texture.sum(1), 1.0)
    assert (f.size == 25).all() and f.image_size == 300
    assert f.boxes[0].tolist() == [0, 0, 5, 5] and f.boxes[6].tolist() == [10, 5, 15, 10]
    # 3 x 3 horizontal + 2 x 4 vertical neighbour pairs, each once, i < j
    assert len(f.pairs) == 17 and (f.pairs[:, 0] < f.pairs[:, 1]).all()
    assert {tuple(p) for p in f.pairs.tolist()} >= {(0, 1), (0, 4), (6, 7), (6, 10)}
    assert (0, 5) not in {tuple(p) for p in f.pairs.tolist()}  # diagonal: not neighbours


@pytest.mark.parametrize("similarity", [("colour", "texture", "size", "fill"), ("size",), ("fill", "texture")])
def test_hierarchical_grouping_makes_n_minus_1_merges_up_to_the_whole(similarity):
    rng = np.random.default_rng(2)
    segments = grid_segments(rows=4, cols=5, cell=4)[1:-2, 2:]  # 13 x 18, cells cut at the border
    segments = np.unique(segments, return_inverse=True)[1].reshape(segments.shape)
    n = int(segments.max()) + 1
    f = P.region_features(segments, rng.random(segments.shape + (3,)).astype(np.float32))
    h = P.hierarchical_grouping(segments, f, similarity)
    assert h.merges.shape == (n - 1, 2) and h.boxes.shape == (2 * n - 1, 4) and h.scores.shape == (n - 1,)
    h_, w_ = segments.shape
    assert h.boxes[-1].tolist() == [0, 0, w_, h_] and h.sizes[-1] == segments.size
    # every region is merged away exactly once, except the last one
    assert sorted(h.merges.ravel().tolist()) == list(range(2 * n - 2))
    # a merged region's box is the union of its parts' boxes; parts exist before it
    for t, (i, j) in enumerate(h.merges.tolist(), start=n):
        assert i < t and j < t
        union = [*np.minimum(h.boxes[i, :2], h.boxes[j, :2]), *np.maximum(h.boxes[i, 2:], h.boxes[j, 2:])]
        assert h.boxes[t].tolist() == union
        assert h.sizes[t] == h.sizes[i] + h.sizes[j]


def test_grouping_merges_the_most_similar_pair_first():
    # three columns: 0 and 1 share a colour, 2 differs: 0 and 1 merge first on colour alone
    segments = np.repeat(np.array([[0, 0, 1, 1, 2, 2]]), 4, axis=0)
    image = np.zeros(segments.shape + (3,), np.float32)
    image[:, 4:] = 0.9
    f = P.region_features(segments, image)
    h = P.hierarchical_grouping(segments, f, ("colour",))
    assert h.merges.tolist() == [[0, 1], [2, 3]]
    assert h.scores[0] == pytest.approx(1.0)


def test_grouping_of_one_segment():
    segments = np.zeros((4, 6), np.int64)
    h = P.hierarchical_grouping(segments, P.region_features(segments, np.ones((4, 6, 3), np.float32)))
    assert h.boxes.tolist() == [[0, 0, 6, 4]] and h.merges.shape == (0, 2)


# ----------------------------------------------------------------------------- selective search
def check_proposals(b: torch.Tensor, priority: torch.Tensor, height: int, width: int):
    assert b.dtype == torch.float32 and b.dim() == 2 and b.shape[1] == 4 and len(b) > 0
    assert priority.shape == (len(b),)
    assert (b[:, 0] < b[:, 2]).all() and (b[:, 1] < b[:, 3]).all()
    assert (b[:, :2] >= 0).all() and (b[:, 2] <= width).all() and (b[:, 3] <= height).all()
    assert torch.equal(b, b.round())  # pixel edges are integers
    assert len(torch.unique(b, dim=0)) == len(b)  # no duplicates
    assert (priority[1:] >= priority[:-1]).all()  # best (lowest priority value) first


def test_proposals_are_valid_sorted_and_unique(shapes):
    image, _ = shapes[0]
    b, priority = P.selective_search(image)
    check_proposals(b, priority, *image.shape[1:])
    assert [0.0, 0.0, 128.0, 128.0] in b.tolist()  # the whole image is a region of every hierarchy


def test_rectangular_image_and_strategies(shapes):
    image = shapes[1][0][:, 10:90, :]  # 80 x 128
    config = P.SelectiveSearchConfig(scales=(100.0,), colour_spaces=("lab",), similarities=(("size", "fill"),))
    check_proposals(*P.selective_search(image, config), 80, 128)


def test_seed_determinism(shapes):
    image, _ = shapes[2]
    b1, p1 = P.selective_search(image, seed=3)
    b2, p2 = P.selective_search(image, seed=3)
    assert torch.equal(b1, b2) and torch.equal(p1, p2)
    b3, _ = P.selective_search(image, seed=4)
    assert not torch.equal(b1, b3)  # another RND, another order of the same set of boxes
    assert {tuple(x) for x in b1.tolist()} == {tuple(x) for x in b3.tolist()}


def test_max_proposals_and_min_box_size(shapes):
    image, _ = shapes[0]
    b_all, _ = P.selective_search(image)
    b, _ = P.selective_search(image, P.SelectiveSearchConfig(max_proposals=25))
    assert torch.equal(b, b_all[:25])
    b, _ = P.selective_search(image, P.SelectiveSearchConfig(min_box_size=8))
    assert ((b[:, 2:] - b[:, :2]) >= 8).all() and 0 < len(b) < len(b_all)
    assert torch.equal(P.SelectiveSearch()(image), b_all)  # the wrapper returns the boxes


def test_uint8_hwc_and_float_chw_give_the_same_boxes(shapes):
    u8 = (shapes[3][0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    as_float = torch.from_numpy(u8).permute(2, 0, 1).float() / 255
    b1, p1 = P.selective_search(u8)
    b2, p2 = P.selective_search(as_float)
    assert torch.equal(b1, b2) and torch.equal(p1, p2)


def test_single_square_is_found_with_few_proposals():
    b, priority = P.selective_search(square_image())
    check_proposals(b, priority, 64, 64)
    for seed in range(3):
        b, _ = P.selective_search(square_image(), seed=seed)
        r = metrics.proposal_recall([b], [SQUARE_BOX], iou_thresholds=(0.7,), counts=(10,))
        assert r["recall"][0.7].item() == 1.0


def test_recall_on_shapes_images(shapes):
    props = [P.selective_search(image)[0] for image, _ in shapes]
    r = metrics.proposal_recall(props, [t["boxes"] for _, t in shapes], counts=(30, 100, None))
    assert r["num_gt"] == sum(len(t["boxes"]) for _, t in shapes)
    # measured on these 8 images (32 boxes), top 30 / 100 / all (717 at most):
    # 0.875 / 1.0 / 1.0 at IoU 0.5 and 0.781 / 1.0 / 1.0 at IoU 0.7
    assert r["recall"][0.5][1] >= 0.9 and r["recall"][0.5][2] >= 0.95
    assert r["recall"][0.7][1] >= 0.8 and r["recall"][0.7][2] >= 0.9
    assert (r["recall"][0.5] >= r["recall"][0.7]).all()


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("image, match", [
    (torch.rand(64, 64, 3), r"\[3, H, W\]"),
    (torch.rand(1, 3, 8, 8), r"\[3, H, W\]"),
    (np.zeros((3, 8, 8), np.uint8), r"\[H, W, 3\]"),
    (torch.rand(3, 0, 8), "empty"),
    (np.zeros((8, 0, 3), np.uint8), "empty"),
    (torch.randint(0, 255, (3, 8, 8), dtype=torch.uint8), "floating point"),
    (np.zeros((8, 8, 3), np.int32), "dtype"),
    (torch.rand(3, 8, 8) * 2, r"\[0, 1\]"),
    (torch.full((3, 8, 8), float("nan")), "finite"),
    ([[0.0]], "Tensor"),
])
def test_bad_images_raise(image, match):
    with pytest.raises(ValueError, match=match):
        P.selective_search(image)


@pytest.mark.parametrize("kwargs, match", [
    ({"scales": (100.0, 0.0)}, "scales"),
    ({"scales": ()}, "scales"),
    ({"colour_spaces": ("rgb", "yuv")}, "colour space"),
    ({"similarities": (("colour", "shape"),)}, "similarity"),
    ({"similarities": ("colour",)}, "similarity"),
    ({"similarities": ()}, "similarities"),
    ({"min_size": 0}, "min_size"),
    ({"max_proposals": 0}, "max_proposals"),
    ({"min_box_size": -1}, "min_box_size"),
])
def test_bad_config_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        P.SelectiveSearchConfig(**kwargs)


def test_bad_grouping_input_raises():
    segments = grid_segments()
    f = P.region_features(segments, np.zeros(segments.shape + (3,), np.float32))
    with pytest.raises(ValueError, match="similarity"):
        P.hierarchical_grouping(segments, f, ("color",))
    with pytest.raises(ValueError, match="every label present"):
        P.hierarchical_grouping(np.where(segments == 3, 4, segments), f)
    with pytest.raises(ValueError, match="features describe"):
        P.hierarchical_grouping(segments[:5], f)
    with pytest.raises(ValueError, match=r"float in \[0, 1\]"):
        P.region_features(segments, np.zeros(segments.shape + (3,), np.uint8))
    with pytest.raises(ValueError, match="segments' size"):
        P.region_features(segments, np.zeros((4, 4, 3), np.float32))
