"""metrics.detection_confusions: right box, wrong class, counted by object size, on hand-made
scenes whose every count is known."""
import pytest
import torch

from lessons_pkg import metrics


def det(boxes, labels, scores):
    return {"boxes": torch.tensor(boxes, dtype=torch.float32), "labels": torch.tensor(labels),
            "scores": torch.tensor(scores)}


def gt(boxes, labels, **extra):
    return {"boxes": torch.tensor(boxes, dtype=torch.float32), "labels": torch.tensor(labels), **extra}


# One image, four objects: a 10 x 10 square (size 10), a 16 x 25 box (size 20: on the edge,
# so in the second bin), a 30 x 30 (size 30) and a 40 x 40 (size 40).
OBJECTS = gt([[0, 0, 10, 10], [20, 0, 36, 25], [50, 50, 80, 80], [0, 60, 40, 100]], [1, 2, 3, 4])


def test_the_best_candidate_of_any_class_decides():
    """Object 1: its best candidate (0.9) says class 3, a weaker one (0.5) says 1: confused.
    Object 2: its best candidate (0.8) says 2, a weaker wrong one (0.7): right. Object 3: only a
    box at IoU < 0.5 (missed). Object 4: a wrong class at IoU 0.5 exactly (confused)."""
    preds = det([[0, 0, 10, 10], [1, 0, 11, 10], [20, 0, 36, 25], [20, 1, 36, 26], [65, 65, 95, 95],
                 [0, 60, 40, 80]],
                [3, 1, 2, 4, 3, 1], [0.9, 0.5, 0.8, 0.7, 0.95, 0.6])
    out = metrics.detection_confusions([preds], [OBJECTS], size_edges=(0, 20, 32, 1000))
    assert out["objects"].tolist() == [1, 2, 1]
    assert out["confused"].tolist() == [1, 0, 1]
    assert out["missed"].tolist() == [0, 1, 0]
    assert out["right"].tolist() == [0, 1, 0]
    assert out["by_class"][0, 1, 3] == 1 and out["by_class"][2, 4, 1] == 1 and out["by_class"].sum() == 2
    assert out["edges"] == [0, 20, 32, 1000]


def test_the_order_of_the_candidates_does_not_matter_only_their_scores():
    """The same detections listed in reverse: the same counts (a planted fault that takes the
    first or the last candidate instead of the best-scoring one fails one of the two)."""
    boxes = [[0, 0, 10, 10], [1, 0, 11, 10], [20, 0, 36, 25], [20, 1, 36, 26]]
    labels, scores = [3, 1, 2, 4], [0.9, 0.5, 0.8, 0.7]
    forward = metrics.detection_confusions([det(boxes, labels, scores)], [OBJECTS])
    backward = metrics.detection_confusions([det(boxes[::-1], labels[::-1], scores[::-1])], [OBJECTS])
    for key in ("objects", "missed", "confused", "right"):
        assert torch.equal(forward[key], backward[key]), key
    assert forward["confused"].tolist() == [1, 0, 0] and forward["right"].tolist() == [0, 1, 0]


def test_crowd_regions_sizes_outside_the_bins_and_empty_images():
    """A crowd region is no object; an object outside every bin is not counted; an image with
    no detections misses all its objects; no images: zeros."""
    crowded = gt([[0, 0, 10, 10], [0, 0, 100, 100]], [1, 1], iscrowd=torch.tensor([0, 1]))
    out = metrics.detection_confusions([det([[0, 0, 100, 100]], [2], [0.9])], [crowded])
    assert out["objects"].tolist() == [1, 0, 0] and out["missed"].tolist() == [1, 0, 0]
    out = metrics.detection_confusions([det([], [], [])], [OBJECTS], size_edges=(15, 35))
    assert out["objects"].tolist() == [2] and out["missed"].tolist() == [2]
    out = metrics.detection_confusions([], [])
    assert out["objects"].tolist() == [0, 0, 0] and out["by_class"].shape == (3, 1, 1)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="size_edges"):
        metrics.detection_confusions([], [], size_edges=(20, 10))
    with pytest.raises(ValueError, match="iou_threshold"):
        metrics.detection_confusions([], [], iou_threshold=0)
    with pytest.raises(ValueError, match="preds has 1 images"):
        metrics.detection_confusions([det([], [], [])], [])
