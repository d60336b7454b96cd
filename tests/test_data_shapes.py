"""The shapes generator: determinism, the target contract, tight boxes, the knobs."""
import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from lessons_pkg import data
from lessons_pkg.data import shapes


@pytest.mark.parametrize("name", ["easy", "default", "hard", "single", "pretrain"])
def test_same_seed_same_scene_other_seed_other_scene(name):
    config = data.preset(name)
    a, b = data.render_scene(config, 3, 5), data.render_scene(config, 3, 5)
    for field in ("image", "boxes", "labels", "masks", "semantic"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert not np.array_equal(a.image, data.render_scene(config, 4, 5).image)
    assert not np.array_equal(a.image, data.render_scene(config, 3, 6).image)


def test_scene_does_not_depend_on_rendering_order():
    ds_forward, ds_backward = data.ShapesDataset(6, seed=9), data.ShapesDataset(6, seed=9)
    forward = [ds_forward[i][0] for i in range(6)]
    backward = [ds_backward[i][0] for i in reversed(range(6))][::-1]
    assert all(torch.equal(f, b) for f, b in zip(forward, backward))


@pytest.mark.parametrize("name", ["default", "hard", "single"])
def test_target_contract(name):
    ds = data.ShapesDataset(40, seed=2, config=name)
    h, w = ds.config.image_size
    for i in range(len(ds)):
        image, t = ds[i]
        n = len(t["labels"])
        assert image.dtype == torch.float32 and image.shape == (3, h, w)
        assert 0 <= image.min() and image.max() <= 1
        assert t["boxes"].dtype == torch.float32 and t["boxes"].shape == (n, 4)
        assert t["labels"].dtype == torch.int64 and ((t["labels"] >= 1) & (t["labels"] <= ds.config.num_classes)).all()
        assert t["masks"].dtype == torch.uint8 and t["masks"].shape == (n, h, w)
        assert t["semantic"].dtype == torch.int64 and t["semantic"].shape == (h, w)
        assert t["image_id"] == i and n >= 1
        x1, y1, x2, y2 = t["boxes"].unbind(1)
        assert ((x2 > x1) & (y2 > y1)).all(), "degenerate box"
        assert ((x1 >= 0) & (y1 >= 0) & (x2 <= w) & (y2 <= h)).all(), "box outside the image"
        assert (t["masks"].flatten(1).sum(1) >= ds.config.min_pixels).all()


def test_boxes_are_tight_around_masks_as_pycocotools_says():
    ds = data.ShapesDataset(30, seed=4)
    for i in range(len(ds)):
        _, t = ds[i]
        for box, mask in zip(t["boxes"], t["masks"]):
            x, y, w, h = mask_utils.toBbox(mask_utils.encode(np.asfortranarray(mask.numpy())))
            torch.testing.assert_close(box, torch.tensor([x, y, x + w, y + h], dtype=torch.float32))


def test_instance_masks_are_disjoint_and_agree_with_semantic():
    ds = data.ShapesDataset(30, seed=5)
    for i in range(len(ds)):
        _, t = ds[i]
        assert t["masks"].sum(0).max() <= 1, "two visible masks share a pixel"
        for mask, label in zip(t["masks"].bool(), t["labels"]):
            assert (t["semantic"][mask] == label).all()


def test_heavily_occluded_objects_are_dropped():
    crowded = data.preset("hard").replace(max_overlap=1.0, num_objects=(8, 10))
    visible = np.concatenate([data.render_scene(crowded, 0, i).visible for i in range(20)])
    assert visible.min() >= crowded.min_visible  # nothing less visible than the threshold is kept
    assert (visible < 0.9).mean() > 0.1  # and occlusion does happen
    strict = crowded.replace(min_visible=1.0)
    n_strict = sum(len(data.render_scene(strict, 0, i).labels) for i in range(20))
    assert n_strict < len(visible)


def test_single_object_mode_has_one_fully_visible_object():
    config = data.preset("single")
    for i in range(30):
        scene = data.render_scene(config, 0, i)
        assert len(scene.labels) == 1
        assert scene.visible[0] == 1.0, "the object is covered or cut by the border"


def test_image_size_is_configurable():
    config = data.ShapesConfig(image_size=(96, 160), size_range=(10.0, 40.0))
    image, t = data.ShapesDataset(3, config=config)[2]
    assert image.shape == (3, 96, 160) and t["masks"].shape[1:] == (96, 160)


def test_distractors_are_not_targets():
    # With distractors only of one kind and classes of another, no target mask is a distractor:
    # the semantic mask is zero wherever a distractor is on top.
    config = data.ShapesConfig(classes=("square",), distractors=("ring",), num_distractors=(3, 3))
    for i in range(10):
        scene = data.render_scene(config, 0, i)
        assert set(scene.shapes) <= {"square"}


def test_masks_to_boxes_np_edges():
    masks = np.zeros((2, 6, 7), np.uint8)
    masks[0, 0, 0] = 1
    masks[1, 5, 6] = 1
    np.testing.assert_array_equal(shapes.masks_to_boxes_np(masks), [[0, 0, 1, 1], [6, 5, 7, 6]])
    assert shapes.masks_to_boxes_np(np.zeros((0, 4, 4), np.uint8)).shape == (0, 4)


@pytest.mark.parametrize("changes, message", [
    ({"classes": ("circle", "blob")}, "unknown shapes"),
    ({"classes": ()}, "at least one shape"),
    ({"num_objects": (0, 3)}, "num_objects"),
    ({"size_range": (40.0, 20.0)}, "size_range"),
    ({"image_size": (8, 8)}, "image_size"),
    ({"noise": -0.1}, "noise"),
    ({"texture": 2.0}, "texture"),
    ({"distractors": ("circle",)}, "both a class and a distractor"),
])
def test_bad_config_is_named(changes, message):
    with pytest.raises(ValueError, match=message):
        data.ShapesConfig(**changes)


def test_unknown_preset_and_negative_seed():
    with pytest.raises(ValueError, match="unknown preset"):
        data.preset("impossible")
    with pytest.raises(ValueError, match="non-negative"):
        data.render_scene(data.preset("default"), -1, 0)
