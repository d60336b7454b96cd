"""COCO data scored exactly as COCO scores it: CocoDataset's targets + metrics.mean_average_precision
against pycocotools' COCOeval on generated files with crowd regions, areas unequal to the boxes',
non-contiguous category ids, images without objects, polygons and RLE (compressed and not)."""
import contextlib
import io

import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from lessons_pkg import metrics
from lessons_pkg.data import CocoDataset, coco_results

from coco_files import make_detections, write_coco_set


def cocoeval_stats(ann_file, results: list, iou_type: str) -> list[float]:
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(ann_file))
        evaluation = COCOeval(gt, gt.loadRes(results), iou_type)
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return [float(v) for v in evaluation.stats]


def ours(dataset: CocoDataset, predictions: list, iou_type: str) -> list[float]:
    targets = [dataset[i][1] for i in range(len(dataset))]
    scores = metrics.mean_average_precision(predictions, targets, iou_type)
    return [scores[k] for k in metrics.SUMMARY_KEYS]


def generated(tmp_path, seed):
    tmp_path.mkdir(parents=True, exist_ok=True)
    ann_file, truth = write_coco_set(tmp_path, seed)
    dataset = CocoDataset(tmp_path, ann_file)
    sizes = {image_id: tuple(dataset.coco.imgs[image_id][k] for k in ("height", "width")) for image_id in truth}
    predictions = make_detections(truth, sizes, dataset.category_id_to_label, seed)
    return ann_file, dataset, predictions


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
@pytest.mark.parametrize("seed", range(6))
def test_cocodataset_targets_score_as_cocoeval(tmp_path, seed, iou_type):
    ann_file, dataset, predictions = generated(tmp_path, seed)
    expected = cocoeval_stats(ann_file, coco_results(predictions, dataset.label_to_category_id, iou_type), iou_type)
    assert ours(dataset, predictions, iou_type) == pytest.approx(expected, abs=1e-6)


def test_the_generated_files_hold_what_they_claim(tmp_path):
    """Crowd regions, areas unlike the boxes', RLE of both kinds, polygons, an empty image and a
    category without objects, in every seed's file (else the comparison above proves less)."""
    import json
    for seed in range(6):
        ann_file, _ = write_coco_set(tmp_path / str(seed), seed)
        doc = json.loads(ann_file.read_text())
        anns = doc["annotations"]
        assert any(a["iscrowd"] for a in anns)
        assert any(abs(a["area"] - a["bbox"][2] * a["bbox"][3]) > 1 for a in anns)
        kinds = {"polygon" if isinstance(a["segmentation"], list) else
                 "rle" if isinstance(a["segmentation"]["counts"], str) else "counts" for a in anns}
        assert kinds == {"polygon", "rle", "counts"}, (seed, kinds)
        assert {a["image_id"] for a in anns} < {im["id"] for im in doc["images"]}
        assert 20 not in {a["category_id"] for a in anns}


def _summary(predictions, targets) -> list[float]:
    scores = metrics.mean_average_precision(predictions, targets)
    return [scores[k] for k in metrics.SUMMARY_KEYS]


def test_crowd_dropped_again_or_area_lost_is_caught(tmp_path):
    """The planted faults of the issue: targets without their crowd regions (the old reader), or
    without COCO's area (sizes judged on boxes), no longer match COCOeval on these files."""
    differ = {"crowd dropped": 0, "area lost": 0}
    for seed in range(6):
        ann_file, dataset, predictions = generated(tmp_path / str(seed), seed)
        expected = pytest.approx(cocoeval_stats(
            ann_file, coco_results(predictions, dataset.label_to_category_id), "bbox"), abs=1e-6)
        targets = [dataset[i][1] for i in range(len(dataset))]
        assert _summary(predictions, targets) == expected
        no_crowd = [{k: (v[t["iscrowd"] == 0] if isinstance(v, torch.Tensor) else v) for k, v in t.items()}
                    for t in targets]
        no_area = [{k: v for k, v in t.items() if k != "area"} for t in targets]
        differ["crowd dropped"] += _summary(predictions, no_crowd) != expected
        differ["area lost"] += _summary(predictions, no_area) != expected
    assert all(differ.values()), differ
