"""Rescoring the committed checkpoints: every record's val and test scores recomputed from its
weights (tests/test_checkpoints_dense.py and tests/test_checkpoints_region_based.py).

The recipes are shared between two test files so that ``pytest -n 2 --dist loadfile`` (which
keeps a file on one worker) rescores them on both workers at once: the region-based detectors
(the R-CNN family, Faster and Mask R-CNN: proposals, then one classification per region) in
one, every other model (a prediction at every location: the sliding window, the single-shot
detectors, CenterNet and its second stage, SSDLite and the FCNs) in the other; CenterNet2 sits
there, though its second stage classifies regions, to keep the two files near the same length.
Together they are every recipe.
"""
import functools

import pytest
from torch.utils.data import Dataset

from lessons_pkg import evaluation, recipes
from lessons_pkg.models import faster_rcnn, rcnn

REGION_BASED_MODELS = (rcnn.RCNN, rcnn.FastRCNN, faster_rcnn.FasterRCNN)  # Mask R-CNN is a Faster R-CNN
REGION_BASED = sorted(name for name, r in recipes.RECIPES.items() if issubclass(r.model, REGION_BASED_MODELS))
DENSE = sorted(set(recipes.RECIPES) - set(REGION_BASED))
SPLITS = ("val", "test")


@functools.lru_cache(maxsize=None)
def evaluation_set(split: str, num_images: int, config: str, proposals: bool) -> Dataset:
    """:func:`lessons_pkg.evaluation.evaluation_set`, made once per worker process: the shapes
    images render on first access (about 2.6 s for the 300 test images) and are kept by the
    dataset, so every recipe scored on the same split reuses them."""
    return evaluation.evaluation_set(split, num_images, config, proposals)


def check_recorded_scores(name: str, split: str) -> None:
    """Recipe ``name``'s committed record holds, for ``split``, the scores of its committed
    weights on the first ``VAL_IMAGES`` val or ``TEST_IMAGES`` test images: mAP@0.5 and mAP
    (and the masks' for instance segmentation) or mIoU and pixel accuracy."""
    model, record = recipes.load(name)
    recorded = record[split]
    assert recorded["split"] == split
    assert recorded["num_images"] == evaluation.split_size(split)
    dataset = evaluation_set(split, recorded["num_images"], recorded["config"], record["proposals"])
    result = evaluation.split_scores(record["task"], model, split, recorded["num_images"], recorded["config"],
                                      record["proposals"], dataset=dataset)
    # Float arithmetic differs a little across machines and thread counts: a detection may flip.
    keys = ["miou", "pixel_accuracy"] if record["task"] == "segmentation" else ["map_50", "map"]
    for key in keys:
        assert result[key] == pytest.approx(recorded[key], abs=0.01), key
    if record["task"] == "instance":
        for key in ("map_50", "map"):
            assert result["segm"][key] == pytest.approx(recorded["segm"][key], abs=0.01), f"segm {key}"
