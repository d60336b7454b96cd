"""COCO's crowd regions in training (lessons_pkg.crowd): out of the positives, never background."""
import pytest
import torch

from lessons_pkg import crowd
from lessons_pkg.inputs import prepare_batch
from lessons_pkg.recipes import RECIPES

H = W = 128   # the shapes images: no model pads them (padding would be true background)


def test_split_crowd_moves_crowd_objects_and_leaves_plain_targets_alone():
    target = {"boxes": torch.tensor([[0., 0, 10, 10], [20, 20, 60, 60], [5, 5, 15, 15]]),
              "labels": torch.tensor([1, 2, 3]), "iscrowd": torch.tensor([0, 1, 0], dtype=torch.uint8),
              "area": torch.tensor([100., 1500, 90], dtype=torch.float64),
              "masks": torch.zeros(3, H, W, dtype=torch.uint8), "image_id": 7}
    split = crowd.split_crowd(target)
    assert split["labels"].tolist() == [1, 3] and split["boxes"].shape == (2, 4)
    assert split["masks"].shape == (2, H, W) and split["area"].tolist() == [100., 90.]
    assert split["crowd_boxes"].tolist() == [[20., 20, 60, 60]] and split["image_id"] == 7
    plain = {"boxes": target["boxes"], "labels": target["labels"]}
    assert crowd.split_crowd(plain) is plain


def test_inside_crowd_is_intersection_over_the_reference():
    region = torch.tensor([[0., 0, 40, 40]])
    refs = torch.tensor([[0., 0, 10, 10],     # all inside
                         [30., 0, 40, 10],    # all inside, at the edge
                         [35., 0, 45, 10],    # half inside: 0.5 < 0.7
                         [32., 0, 42, 10],    # 0.8 inside
                         [50., 50, 60, 60],   # outside
                         [0., 0, 80, 80]])    # holds the region: IoF 0.25, not inside
    assert crowd.inside_crowd(refs, region).tolist() == [True, True, False, True, False, False]
    assert not crowd.inside_crowd(refs, torch.zeros(0, 4)).any()
    assert not crowd.inside_crowd(refs, None).any()


def test_prepare_batch_splits_crowds_and_checks_their_length():
    images = torch.rand(1, 3, H, W)
    t = {"boxes": torch.tensor([[0., 0, 10, 10]]), "labels": torch.tensor([1]),
         "iscrowd": torch.tensor([1], dtype=torch.uint8)}
    _, (out,) = prepare_batch(images, [t], True, 4)
    assert len(out["boxes"]) == 0 and out["crowd_boxes"].shape == (1, 4)
    with pytest.raises(ValueError, match="iscrowd"):
        prepare_batch(images, [{**t, "iscrowd": torch.tensor([1, 0], dtype=torch.uint8)}], True, 4)


# Every recipe of the course's own detectors. (ssdlite is torchvision's model, run as a reference:
# it gets the targets without their crowd regions, torchvision's rule, and no more.)
DETECTORS = ["ssd", "ssd_focal", "ssd_random", "yolo", "centernet", "centernet2", "faster_rcnn", "fast_rcnn", "rcnn",
             "sliding_window", "mask_rcnn"]


def _losses(name: str, crowded: bool) -> dict:
    """One training forward of recipe ``name`` on an image without objects whose whole area is
    one crowd region (``crowded``) or plain background."""
    recipe = RECIPES[name]
    torch.manual_seed(0)
    model = recipe.build(num_classes=4).train()
    images = torch.rand(2, 3, H, W)
    boxes = torch.tensor([[0., 0, W, H]]) if crowded else torch.zeros(0, 4)
    target = {"boxes": boxes, "labels": torch.ones(len(boxes), dtype=torch.int64),
              "iscrowd": torch.ones(len(boxes), dtype=torch.uint8)}
    if recipe.task == "instance":
        target["masks"] = torch.ones(len(boxes), H, W, dtype=torch.uint8)
    if recipe.proposals:   # R-CNN and Fast R-CNN read proposals: a grid of windows over the image
        xs = torch.arange(0, W - 16, 8.)
        target["proposals"] = torch.stack([torch.stack([x, y, x + 24, y + 24]) for x in xs for y in xs])
    if hasattr(model.config, "min_negatives"):
        model.config.min_negatives = 3   # SSD: so that an image without objects trains its background
    torch.manual_seed(1)
    return {k: float(v.detach()) for k, v in model(images, [target, target]).items()}


@pytest.mark.slow
@pytest.mark.parametrize("name", DETECTORS)
def test_no_detector_trains_a_crowd_region_as_background(name):
    """On an image that is all one crowd region every loss is 0: nothing there is a positive,
    and nothing is a negative either. The same image as plain background costs something, so
    the test fails if a model drops the crowd region without ignoring what lies in it."""
    background = _losses(name, crowded=False)
    assert sum(background.values()) > 0, background
    assert all(v == 0 for v in _losses(name, crowded=True).values()), name
