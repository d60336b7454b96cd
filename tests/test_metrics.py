"""Tests of lessons_pkg.metrics: COCO mAP against pycocotools' COCOeval, VOC AP, the
segmentation metrics and proposal recall against slow loop references written here."""
import contextlib
import io

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from lessons_pkg import metrics
from lessons_pkg.boxes import box_iou


# ---------------------------------------------------------------- random scenes

def _ellipse_masks(boxes: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Tensor[N, 4] xyxy -> uint8[N, H, W]: the ellipse inscribed in each box, so mask IoU
    differs from box IoU."""
    ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    c = (boxes[:, :2] + boxes[:, 2:]) / 2
    r = ((boxes[:, 2:] - boxes[:, :2]) / 2).clamp(min=0.5)
    inside = ((xs - c[:, 0, None, None]) / r[:, 0, None, None]) ** 2 \
        + ((ys - c[:, 1, None, None]) / r[:, 1, None, None]) ** 2 <= 1
    return inside.to(torch.uint8)


def random_scene(seed: int, num_images=10, max_gts=15, max_dets=30, num_classes=3,
                 equal_scores=False, with_masks=True):
    """Random preds and targets in the package contract. Dets are jittered gts (to spread
    IoUs over the thresholds) plus random boxes; ~15% of gts are crowds; class
    num_classes + 1 appears only in preds, num_classes + 2 only in targets."""
    g = torch.Generator().manual_seed(seed)
    rand = lambda *s: torch.rand(*s, generator=g)
    randint = lambda lo, hi, s=(): torch.randint(lo, hi, s, generator=g)
    preds, targets = [], []
    for _ in range(randint(1, num_images + 1).item()):
        h, w = randint(60, 201).item(), randint(60, 201).item()
        size = torch.tensor([w, h, w, h], dtype=torch.float32)
        n = randint(0, max_gts + 1).item()
        xy = rand(n, 2) * 0.6
        # small, any size, and large ones: all three area ranges
        kind = rand(n, 1)
        frac = torch.where(kind < 0.4, 0.2 * rand(n, 2), torch.where(kind < 0.75, rand(n, 2), 0.6 + 0.4 * rand(n, 2)))
        wh = (frac * (1 - xy)).clamp(min=0.02)
        gt = torch.cat([xy, xy + wh], 1) * size
        gt_labels = randint(1, num_classes + 1, (n,))
        gt_labels[rand(n) < 0.05] = num_classes + 2
        near = randint(0, max(n, 1), (max_dets,))
        m = randint(0, max_dets + 1).item()
        if n:
            spread = 0.5 * rand(m, 1) ** 2  # most dets close to their gt, some far
            jitter = (rand(m, 4) - 0.5) * spread * (gt[near[:m], 2:] - gt[near[:m], :2]).repeat(1, 2)
            det = gt[near[:m]] + jitter
            det_labels = torch.where(rand(m) < 0.8, gt_labels[near[:m]], randint(1, num_classes + 2, (m,)))
        else:
            det, det_labels = torch.zeros(m, 4), randint(1, num_classes + 2, (m,))
        lone = rand(m) < 0.3  # some dets anywhere
        xy2 = rand(m, 2) * 0.9
        det[lone] = (torch.cat([xy2, xy2 + rand(m, 2) * (1 - xy2)], 1) * size)[lone]
        det = torch.minimum(det.clamp(min=0), size)
        det[:, 2:] = torch.maximum(det[:, 2:], det[:, :2] + 0.5)
        scores = rand(m)
        if equal_scores:
            scores = (scores * 4).round() / 4
        target = {"boxes": gt, "labels": gt_labels, "iscrowd": (rand(n) < 0.15).long()}
        pred = {"boxes": det, "labels": det_labels, "scores": scores}
        if with_masks:
            target["masks"] = _ellipse_masks(gt, h, w)
            pred["masks"] = _ellipse_masks(det, h, w)
            if seed % 3 == 0:  # float probabilities, as a model outputs them, some [M, 1, H, W]
                pred["masks"] = pred["masks"] * (0.5 + 0.5 * rand(m, 1, 1)) + 0.4 * rand(m, h, w)
                pred["masks"] = pred["masks"][:, None] if seed % 2 else pred["masks"]
        preds.append(pred)
        targets.append(target)
    return preds, targets


# ---------------------------------------------------------------- the pycocotools reference

def _rle(mask: torch.Tensor) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.numpy().astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def _binary(masks: torch.Tensor) -> torch.Tensor:
    return masks > 0.5 if masks.is_floating_point() else masks != 0


def _xywh(box) -> list[float]:
    x1, y1, x2, y2 = box.double().tolist()
    return [x1, y1, x2 - x1, y2 - y1]


def coco_reference(preds, targets, iou_type="bbox", use_cats=True, iou_thresholds=None):
    """COCOeval run on the same lists. Gt "area" is what the package's contract says: the
    given one, else the mask's, else the box's. Segm results carry only their RLE, so
    loadRes sets a det's area to its mask area (with a "bbox" it would use the box's)."""
    images, anns, dets = [], [], []
    labels = set()
    for i, (p, t) in enumerate(zip(preds, targets), start=1):
        h, w = t["masks"].shape[-2:] if "masks" in t else (1000, 1000)
        images.append({"id": i, "height": int(h), "width": int(w)})
        boxes = t["boxes"].double()
        if "area" in t:
            area = t["area"].double()
        elif "masks" in t:
            area = _binary(t["masks"]).flatten(1).sum(1).double()
        else:
            area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        crowd = t.get("iscrowd", torch.zeros(len(boxes), dtype=torch.long))
        for j in range(len(boxes)):
            ann = {"id": len(anns) + 1, "image_id": i, "category_id": int(t["labels"][j]),
                   "bbox": _xywh(boxes[j]), "area": float(area[j]), "iscrowd": int(crowd[j])}
            if iou_type == "segm":
                ann["segmentation"] = _rle(_binary(t["masks"][j]))
            anns.append(ann)
        for j in range(len(p["scores"])):
            det = {"image_id": i, "category_id": int(p["labels"][j]), "score": float(p["scores"][j])}
            if iou_type == "bbox":
                det["bbox"] = _xywh(p["boxes"][j])
            else:
                det["segmentation"] = _rle(_binary(p["masks"][j].squeeze(0)))
            dets.append(det)
        labels |= set(t["labels"].tolist()) | set(p["labels"].tolist())
    cats = [{"id": c, "name": str(c)} for c in sorted(labels)]
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"images": images, "annotations": anns, "categories": cats}
        gt.createIndex()
        if dets:
            dt = gt.loadRes(dets)
        else:  # loadRes cannot take an empty list
            dt = COCO()
            dt.dataset = {"images": images, "annotations": [], "categories": cats}
            dt.createIndex()
        E = COCOeval(gt, dt, iou_type)
        E.params.useCats = int(use_cats)
        if iou_thresholds is not None:
            E.params.iouThrs = np.array(iou_thresholds)
        E.evaluate()
        E.accumulate()
        if iou_thresholds is None:
            E.summarize()
    return E


def assert_matches_coco(preds, targets, iou_type):
    """Every summary number, every class's AP and the whole precision and recall arrays."""
    ours = metrics.mean_average_precision(preds, targets, iou_type)
    E = coco_reference(preds, targets, iou_type)
    stats = np.array([ours[k] for k in metrics.SUMMARY_KEYS])
    np.testing.assert_allclose(stats, E.stats, rtol=0, atol=1e-12)
    assert ours["classes"].tolist() == E.params.catIds
    np.testing.assert_allclose(ours["precision"].numpy(), E.eval["precision"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(ours["recall"].numpy(), E.eval["recall"], rtol=0, atol=1e-12)
    for k, c in enumerate(E.params.catIds):
        s = E.eval["precision"][:, :, k, 0, 2]
        assert ours["map_per_class"][c] == pytest.approx(s[s > -1].mean() if (s > -1).any() else -1, abs=1e-12)
    return ours


# ---------------------------------------------------------------- COCO mAP

@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
@pytest.mark.parametrize("seed", range(20))
def test_map_matches_pycocotools_on_random_scenes(seed, iou_type):
    # bbox scenes without masks take the gt area from the box
    preds, targets = random_scene(seed, equal_scores=seed % 4 == 1, with_masks=iou_type == "segm" or seed % 2 == 0)
    if seed % 5 == 2:  # an explicit "area" overrides the mask's
        for t in targets:
            t["area"] = torch.rand(len(t["labels"]), generator=torch.Generator().manual_seed(seed)) * 2e4
    assert_matches_coco(preds, targets, iou_type)


@pytest.mark.parametrize("seed", range(6))
def test_recall_at_iou_matches_pycocotools(seed):
    """recall_at_iou(0.5) is COCOeval's recall at IoU 0.5, area all, 100 dets, over the classes;
    at 0.75 (and with 10 dets) it differs from 0.5's: the index is not fixed (a planted fault)."""
    preds, targets = random_scene(seed, with_masks=seed % 2 == 0)
    E = coco_reference(preds, targets, "bbox")
    for t, threshold in ((0, 0.5), (5, 0.75)):
        for l, max_dets in enumerate(metrics.MAX_DETS):
            r = E.eval["recall"][t, :, 0, l]
            expected = r[r > -1].mean() if (r > -1).any() else -1
            assert metrics.recall_at_iou(preds, targets, threshold, max_dets) == pytest.approx(expected, abs=1e-12)
    assert metrics.recall_at_iou(preds, targets, 0.5) >= metrics.mean_average_precision(preds, targets)["mar_100"]
    with pytest.raises(ValueError, match="one of COCO's"):
        metrics.recall_at_iou(preds, targets, 0.52)
    with pytest.raises(ValueError, match="max_dets"):
        metrics.recall_at_iou(preds, targets, 0.5, max_dets=50)


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_map_matches_pycocotools_beyond_100_detections(iou_type):
    # 150 dets per image and class: COCO keeps the best 100 of each, and AR@1/10 cut further
    preds, targets = random_scene(7, num_images=3, max_gts=40, max_dets=400, num_classes=2,
                                  equal_scores=True)
    assert max(len(p["scores"]) for p in preds) > 200
    assert_matches_coco(preds, targets, iou_type)


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_map_matches_pycocotools_with_empty_sides(iou_type):
    preds, targets = random_scene(3, num_images=4)
    # images with no gt, with no det, and with neither
    targets[0] = {k: v[:0] for k, v in targets[0].items()}
    preds[1] = {k: v[:0] for k, v in preds[1].items()}
    preds.append({k: v[:0] for k, v in preds[1].items()})
    targets.append({k: v[:0] for k, v in targets[0].items()})
    assert_matches_coco(preds, targets, iou_type)
    # no detections anywhere: AP and AR are 0 for every class with a gt
    no_dets = [{k: v[:0] for k, v in p.items()} for p in preds]
    out = assert_matches_coco(no_dets, targets, iou_type)
    assert out["map"] == 0 and out["mar_100"] == 0
    # no gts anywhere: nothing to measure, -1 as COCO says
    no_gts = [{k: v[:0] for k, v in t.items()} for t in targets]
    out = assert_matches_coco(preds, no_gts, iou_type)
    assert all(out[k] == -1 for k in metrics.SUMMARY_KEYS)


def test_map_of_no_images_and_no_objects():
    out = metrics.mean_average_precision([], [])
    assert all(out[k] == -1 for k in metrics.SUMMARY_KEYS) and out["map_per_class"] == {}
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long), "scores": torch.zeros(0)}
    out = metrics.mean_average_precision([empty], [empty])
    assert out["map"] == -1 and out["precision"].shape == (10, 101, 0, 4, 3)


def _box(*xyxy, label=1, score=None):
    d = {"boxes": torch.tensor([xyxy], dtype=torch.float32), "labels": torch.tensor([label])}
    if score is not None:
        d["scores"] = torch.tensor([score])
    return d


def _stack(*ds):
    return {k: torch.cat([d[k] for d in ds]) for k in ds[0]}


def test_map_by_hand():
    # one gt; a det at IoU 0.6 (exactly the third threshold) scores above a perfect one.
    # t = .50, .55, .60: the first det matches, AP 1. t >= .65: it is a false positive and the
    # perfect det comes second, precision 1/2 at recall 1, AP 1/2. mAP = (3 + 7/2) / 10.
    target = _box(0, 0, 10, 10)
    pred = _stack(_box(0, 0, 10, 6, score=0.9), _box(0, 0, 10, 10, score=0.8))
    out = assert_matches_coco([pred], [target], "bbox")
    assert out["map"] == pytest.approx(0.65)
    # (precision is tp / (tp + fp + eps), as in COCOeval, hence approx)
    assert out["map_50"] == pytest.approx(1) and out["map_75"] == pytest.approx(0.5)
    assert out["mar_1"] == pytest.approx(0.3)
    # perfect predictions give 1 everywhere a gt exists (the 10x10 gt is small)
    perfect = metrics.mean_average_precision([_box(0, 0, 10, 10, score=1.0)], [target])
    assert perfect["map"] == pytest.approx(1) and perfect["map_small"] == pytest.approx(1)
    assert perfect["map_large"] == -1


def test_map_equal_iou_tie_goes_to_the_later_gt():
    # the first det has IoU 0.6 with both gts; COCOeval keeps the later one on ties (its `<`
    # test), which leaves the first gt to the second det: two TPs. The other way, one FP.
    target = _stack(_box(0, 0, 10, 10), _box(5, 0, 15, 10))
    pred = _stack(_box(2.5, 0, 12.5, 10, score=0.9), _box(0, 0, 10, 10, score=0.8))
    out = assert_matches_coco([pred], [target], "bbox")
    assert out["map_50"] == pytest.approx(1)


def test_map_crowd_by_hand():
    # a crowd absorbs any number of dets, judged by intersection / det area, and none counts
    # as a false positive. The det at (55, 55, 95, 95) has 35² / 40² = 0.77 of itself inside:
    # it is absorbed up to t = .75 and a false positive, ahead of the TP, from t = .80 on.
    target = _stack(_box(0, 0, 10, 10), _box(50, 50, 90, 90))
    target["iscrowd"] = torch.tensor([0, 1])
    pred = _stack(_box(0, 0, 10, 10, score=0.9), _box(60, 60, 70, 70, score=0.95),
                  _box(55, 55, 95, 95, score=0.97), _box(52, 52, 62, 62, score=0.99))
    out = assert_matches_coco([pred], [target], "bbox")
    assert out["map"] == pytest.approx((6 * 1 + 4 * 0.5) / 10)


def test_map_class_names_and_device(device):
    preds, targets = random_scene(11, num_images=4)
    on_device = [{k: v.to(device) for k, v in d.items()} for d in preds]
    out = metrics.mean_average_precision(on_device, [{k: v.to(device) for k, v in d.items()} for d in targets],
                                         "segm", class_names=["bg", "a", "b", "c", "d", "e"])
    ref = metrics.mean_average_precision(preds, targets, "segm")
    assert out["map"] == ref["map"]
    assert list(out["map_per_class"].values()) == list(ref["map_per_class"].values())
    assert set(out["map_per_class"]) <= {"a", "b", "c", "d", "e"}


# ---------------------------------------------------------------- precision-recall curve

@pytest.mark.parametrize("seed", [0, 1, 5])
def test_precision_recall_curve_is_what_ap_summarizes(seed):
    preds, targets = random_scene(seed, equal_scores=seed == 1, with_masks=False)
    out = metrics.mean_average_precision(preds, targets)
    for k, c in enumerate(out["classes"].tolist()):
        if out["map_per_class"][c] == -1:
            continue
        precision, recall, scores = metrics.precision_recall_curve(preds, targets, 0.5, label=c)
        assert torch.all(scores[:-1] >= scores[1:]) and torch.all(recall[:-1] <= recall[1:])
        interpolated = [precision[recall >= r].max().item() if (recall >= r).any() else 0.0
                        for r in metrics.RECALL_THRESHOLDS.tolist()]
        np.testing.assert_allclose(interpolated, out["precision"][0, :, k, 0, 2], atol=1e-12)


def test_precision_recall_curve_pools_classes_like_use_cats_0():
    preds, targets = random_scene(4, with_masks=False)
    precision, recall, _ = metrics.precision_recall_curve(preds, targets, 0.7)
    E = coco_reference(preds, targets, use_cats=False, iou_thresholds=[0.7])
    interpolated = [precision[recall >= r].max().item() if (recall >= r).any() else 0.0
                    for r in metrics.RECALL_THRESHOLDS.tolist()]
    np.testing.assert_allclose(interpolated, E.eval["precision"][0, :, 0, 0, 2], atol=1e-12)
    assert recall[-1].item() == pytest.approx(E.eval["recall"][0, 0, 0, 2], abs=1e-12)


# ---------------------------------------------------------------- VOC AP

def voc_reference(preds, targets, iou_threshold, c):
    """voc_eval.py of the VOC devkit's Python port, one class, continuous boxes (no +1)."""
    gts, npos = [], 0
    for t in targets:
        keep = t["labels"] == c
        difficult = t.get("difficult", torch.zeros(len(keep), dtype=torch.bool))[keep].numpy()
        gts.append({"bbox": t["boxes"][keep].double().numpy(), "difficult": difficult,
                    "det": [False] * int(keep.sum())})
        npos += int((~difficult).sum())
    dets = [(i, float(s), b.double().numpy()) for i, p in enumerate(preds)
            for s, b, l in zip(p["scores"], p["boxes"], p["labels"]) if l == c]
    dets.sort(key=lambda d: -d[1])  # stable, like the package
    tp, fp = np.zeros(len(dets)), np.zeros(len(dets))
    for d, (i, _, bb) in enumerate(dets):
        R, ovmax = gts[i], -np.inf
        BBGT = R["bbox"]
        if BBGT.size > 0:
            iw = np.maximum(np.minimum(BBGT[:, 2], bb[2]) - np.maximum(BBGT[:, 0], bb[0]), 0.0)
            ih = np.maximum(np.minimum(BBGT[:, 3], bb[3]) - np.maximum(BBGT[:, 1], bb[1]), 0.0)
            inters = iw * ih
            uni = (bb[2] - bb[0]) * (bb[3] - bb[1]) + (BBGT[:, 2] - BBGT[:, 0]) * (BBGT[:, 3] - BBGT[:, 1]) - inters
            overlaps = inters / uni
            ovmax, jmax = np.max(overlaps), np.argmax(overlaps)
        if ovmax > iou_threshold:
            if not R["difficult"][jmax]:
                if not R["det"][jmax]:
                    tp[d], R["det"][jmax] = 1.0, True
                else:
                    fp[d] = 1.0
        else:
            fp[d] = 1.0
    if npos == 0:
        return float("nan")
    tp, fp = np.cumsum(tp), np.cumsum(fp)
    rec, prec = tp / npos, tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    mrec, mpre = np.concatenate(([0.0], rec, [1.0])), np.concatenate(([0.0], prec, [0.0]))
    for i in range(mpre.size - 1, 0, -1):
        mpre[i - 1] = max(mpre[i - 1], mpre[i])
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


@pytest.mark.parametrize("iou_threshold", [0.3, 0.5, 0.75])
@pytest.mark.parametrize("seed", range(4))
def test_voc_ap_matches_devkit_loop(seed, iou_threshold):
    preds, targets = random_scene(seed, equal_scores=seed == 2, with_masks=False)
    for t in targets:
        t["difficult"] = t.pop("iscrowd").bool()
    out = metrics.voc_average_precision(preds, targets, iou_threshold)
    for c, ap in out["ap_per_class"].items():
        np.testing.assert_allclose(ap, voc_reference(preds, targets, iou_threshold, c), atol=1e-12)
    assert out["map"] == pytest.approx(np.nanmean(list(out["ap_per_class"].values())))


def test_voc_ap_by_hand():
    # gts A, B. Dets: .9 on A (TP), .8 on A again (FP, duplicate), .7 on B (TP), .6 nowhere (FP).
    # recall .5 .5 1 1, precision 1 .5 2/3 1/2 -> AP = .5 * 1 + .5 * 2/3.
    target = _stack(_box(0, 0, 10, 10), _box(20, 20, 30, 30), _box(0, 0, 5, 5, label=2))
    pred = _stack(_box(0, 0, 10, 10, score=0.9), _box(1, 1, 10, 10, score=0.8),
                  _box(20, 20, 30, 31, score=0.7), _box(50, 50, 60, 60, score=0.6),
                  _box(0, 0, 5, 5, label=3, score=0.5))
    out = metrics.voc_average_precision([pred], [target], class_names=["bg", "x", "y", "z"])
    assert out["ap_per_class"]["x"] == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert out["ap_per_class"]["y"] == 0 and np.isnan(out["ap_per_class"]["z"])
    assert out["map"] == pytest.approx((0.5 + 0.5 * 2 / 3) / 2)
    # IoU exactly at the threshold is not enough for VOC (IoU > t), though it is for COCO
    half = _box(0, 0, 10, 5, score=1.0)
    assert metrics.voc_average_precision([half], [_box(0, 0, 10, 10)])["map"] == 0
    assert metrics.mean_average_precision([half], [_box(0, 0, 10, 10)])["map_50"] == pytest.approx(1)


# ---------------------------------------------------------------- semantic segmentation

def loop_confusion(pred, target, n, ignore_index):
    cm = np.zeros((n, n), dtype=np.int64)
    for t, p in zip(target.flatten().tolist(), pred.flatten().tolist()):
        if t != ignore_index:
            cm[t, p] += 1
    return cm


def torchvision_reference_iou(pred, target, n):
    """references/segmentation/utils.py ConfusionMatrix (update, then compute's iu)."""
    a, b = target.flatten(), pred.flatten()
    k = (a >= 0) & (a < n)
    h = torch.bincount(n * a[k].to(torch.int64) + b[k], minlength=n**2).reshape(n, n).float()
    acc_global = torch.diag(h).sum() / h.sum()
    iu = torch.diag(h) / (h.sum(1) + h.sum(0) - torch.diag(h))
    return iu, acc_global


def test_confusion_matrix_and_miou_match_references(device):
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 5, (3, 17, 19), generator=g)
    pred = torch.where(torch.rand(3, 17, 19, generator=g) < 0.6, target, torch.randint(0, 5, (3, 17, 19), generator=g))
    target[torch.rand(3, 17, 19, generator=g) < 0.1] = 255
    target[target == 4] = 3  # class 4 lives in pred only: IoU 0
    pred[pred == 2] = 1  # class 2 lives in target only: IoU 0
    cm = metrics.confusion_matrix(pred.to(device), target.to(device), 6, ignore_index=255)
    assert cm.device.type == device.type
    np.testing.assert_array_equal(cm.cpu().numpy(), loop_confusion(pred, target, 6, 255))
    out = metrics.mean_iou(pred.to(device), target.to(device), 6)
    iu, acc = torchvision_reference_iou(pred, target, 6)
    np.testing.assert_allclose(out["iou_per_class"].numpy(), iu.numpy(), rtol=1e-6)
    assert out["iou_per_class"][5].isnan() and out["iou_per_class"][2] == 0 == out["iou_per_class"][4]
    assert out["miou"] == pytest.approx(iu[:5].mean().item())  # class 5 (absent) is left out
    assert out["pixel_accuracy"] == pytest.approx(acc.item())
    # a meter fed batch by batch (and scores instead of classes) sums to the same
    meter = metrics.SegmentationMeter(6)
    for i in range(3):
        meter.update(torch.nn.functional.one_hot(pred[i:i + 1], 6).permute(0, 3, 1, 2).float(), target[i:i + 1])
    assert meter.compute()["miou"] == pytest.approx(out["miou"])
    torch.testing.assert_close(meter.cm, cm.cpu())


def test_mean_iou_of_single_image_by_hand():
    target = torch.tensor([[0, 0, 1, 1]])
    pred = torch.tensor([[0, 1, 1, 1]])
    out = metrics.mean_iou(pred, target, 3, ignore_index=None)
    assert out["iou_per_class"][:2].tolist() == [0.5, 2 / 3] and out["iou_per_class"][2].isnan()
    assert out["miou"] == pytest.approx((0.5 + 2 / 3) / 2) and out["pixel_accuracy"] == 0.75


# ---------------------------------------------------------------- bad input

def _good():
    return [_box(0, 0, 5, 5, score=0.5)], [_box(0, 0, 5, 5)]


def _bad_cases():
    p, t = _good()
    without = lambda d, k: {kk: v for kk, v in d.items() if kk != k}
    masked_t = [{**t[0], "masks": torch.ones(1, 8, 8, dtype=torch.uint8)}]
    masked_p = [{**p[0], "masks": torch.ones(1, 8, 9, dtype=torch.uint8)}]
    return [
        ((p, t + t, "bbox"), "preds has 1 images but targets has 2"),
        (([without(p[0], "scores")], t, "bbox"),
         r"preds\[0\]: expected a dict with 'labels' and 'boxes' and 'scores' for iou_type='bbox', "
         r"got \['boxes', 'labels'\]"),
        (([without(p[0], "boxes")], t, "bbox"), r"preds\[0\]: expected a dict with 'labels' and 'boxes'.*"
                                                r"got \['labels', 'scores'\]"),
        ((p, [without(t[0], "labels")], "bbox"), r"targets\[0\]: expected a dict with 'labels' and 'boxes' "
                                            r"for iou_type='bbox', got \['boxes'\]"),
        ((p, [7], "bbox"), r"targets\[0\]: expected a dict with 'labels' and 'boxes'.*got int"),
        ((p, t, "segm"), r"preds\[0\]: expected a dict with 'labels' and 'masks' and 'scores' for iou_type='segm'"),
        (([{**p[0], "boxes": torch.zeros(1, 5)}], t, "bbox"),
         r"preds\[0\] 'boxes': expected a float Tensor\[1, 4\] \(xyxy pixels\), got torch.float64 \[1, 5\]"),
        (([{**p[0], "boxes": torch.zeros(2, 4)}], t, "bbox"), r"preds\[0\] 'boxes': expected a float Tensor\[1, 4\]"),
        (([{**p[0], "labels": torch.ones(1, 1)}], t, "bbox"),
         r"preds\[0\] 'labels': expected an int64 Tensor\[N\], got torch.int64 \[1, 1\]"),
        (([{**p[0], "scores": torch.zeros(2)}], t, "bbox"),
         r"preds\[0\] 'scores': expected a Tensor\[1\] \(one value per object\), got \[2\]"),
        ((p, [{**t[0], "iscrowd": torch.zeros(3)}], "bbox"), r"targets\[0\] 'iscrowd': expected a Tensor\[1\]"),
        ((masked_p, masked_t, "segm"), r"image 0: preds masks are \(8, 9\)"),
        (([{**p[0], "masks": torch.ones(2, 8, 8)}], masked_t, "segm"),
         r"preds\[0\] 'masks': expected a Tensor\[1, H, W\] \(one mask per object\), got \[2, 8, 8\]"),
        ((p, t, "keypoints"), "iou_type must be 'bbox' or 'segm'"),
        ((p, [{**t[0], "labels": torch.tensor([0])}], "bbox"),
         r"targets\[0\] 'labels': expected values in 1..K \(0 is the background, never a class\), got \[0\]"),
        (([{**p[0], "labels": torch.tensor([0])}], t, "bbox"), r"preds\[0\] 'labels': expected values in 1..K.*got \[0\]"),
        (([{**p[0], "scores": torch.tensor([float("nan")])}], t, "bbox"),
         r"preds\[0\] 'scores': expected finite values \(a NaN score cannot be ranked\), got \[nan\]"),
        (([{**p[0], "boxes": torch.tensor([[0.0, 0.0, float("nan"), 4.0]])}], t, "bbox"),
         r"preds\[0\] 'boxes': expected finite values, got \[\[0.0, 0.0, nan, 4.0\]\]"),
        ((p, [{**t[0], "boxes": torch.tensor([[0.0, float("inf"), 4.0, 4.0]])}], "bbox"),
         r"targets\[0\] 'boxes': expected finite values, got \[\[0.0, inf, 4.0, 4.0\]\]"),
        (([{**p[0], "image_id": 1}], [{**t[0], "image_id": 2}], "bbox"), r"targets\[0\] has image_id 2 but no prediction"),
        (([{**p[0], "image_id": 1}] * 2, [{**t[0], "image_id": 1}, {**t[0], "image_id": 2}], "bbox"),
         r"preds\[1\] repeats image_id 1"),
        (([{**p[0], "image_id": [1]}], [{**t[0], "image_id": 1}], "bbox"), r"preds\[0\]\['image_id'\] must be an int"),
    ]


def test_predictions_and_targets_are_paired_by_image_id():
    """Reversed prediction lists score as the right order does when both sides carry image_id
    (by position they would score 0)."""
    targets = [{**_box(0, 0, 10, 10), "image_id": 7}, {**_box(20, 20, 40, 30), "image_id": 3}]
    preds = [{**_box(0, 0, 10, 10, score=0.9), "image_id": 7}, {**_box(20, 20, 40, 30, score=0.8), "image_id": 3}]
    right = metrics.mean_average_precision(preds, targets)
    assert right["map"] == pytest.approx(1)
    reversed_ = metrics.mean_average_precision(preds[::-1], targets)
    assert {k: v for k, v in reversed_.items() if isinstance(v, float)} == {
        k: v for k, v in right.items() if isinstance(v, float)}
    assert metrics.voc_average_precision(preds[::-1], targets)["map"] == pytest.approx(1)
    anonymous = [{k: v for k, v in p.items() if k != "image_id"} for p in preds[::-1]]
    assert metrics.mean_average_precision(anonymous, targets)["map"] == 0  # by position


@pytest.mark.parametrize("args, message", _bad_cases())
def test_bad_detection_input_names_the_problem(args, message):
    with pytest.raises(ValueError, match=message):
        metrics.mean_average_precision(*args)


def test_bad_segmentation_input_names_the_problem():
    x = torch.zeros(2, 4, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="share one shape"):
        metrics.mean_iou(x, x[0], 3)
    with pytest.raises(ValueError, match=r"target: expected classes 0..2 \(or 255, ignored\), got 7"):
        metrics.mean_iou(x, x + 7, 3)
    with pytest.raises(ValueError, match=r"target: expected classes 0..2 \(or 255, ignored\), got -1"):
        metrics.mean_iou(x, x - 1, 3)
    with pytest.raises(ValueError, match=r"pred: expected classes 0..2, got 3"):
        metrics.mean_iou(x + 3, x, 3)
    with pytest.raises(ValueError, match=r"pred: expected classes 0..2, got 255"):  # only the target's 255 is ignored
        metrics.mean_iou(x + 255, x, 3)
    with pytest.raises(ValueError, match="integer class indices"):
        metrics.confusion_matrix(x.float(), x, 3)
    with pytest.raises(ValueError, match="iou_threshold"):
        metrics.voc_average_precision(*_good(), iou_threshold=1.5)


def test_multilabel_accuracy_on_known_decisions():
    logits = torch.tensor([[2.0, -1.0, 0.5], [-3.0, -0.1, 0.0]])   # present where > 0 (0.0 is absent)
    targets = torch.tensor([[1, 0, 1], [0, 1, 0]])
    scores = metrics.multilabel_accuracy(logits, targets)
    assert scores == {"exact_match": 0.5, "mean_label_accuracy": pytest.approx(5 / 6)}
    with pytest.raises(ValueError, match=r"\[N, C\]"):
        metrics.multilabel_accuracy(logits, targets[:1])


# ---------------------------------------------------------------- proposal recall
def test_proposal_recall_hand_cases():
    gt = [torch.tensor([[10.0, 10.0, 30.0, 30.0], [50.0, 50.0, 60.0, 70.0]]), torch.zeros(0, 4)]
    exact = [torch.tensor([[0.0, 0.0, 5.0, 5.0], [10.0, 10.0, 30.0, 30.0], [50.0, 50.0, 60.0, 70.0]]),
             torch.tensor([[1.0, 1.0, 2.0, 2.0]])]
    r = metrics.proposal_recall(exact, gt, counts=(1, 2, 3, None))
    assert r["counts"].tolist() == [1, 2, 3, 3] and r["num_gt"] == 2
    assert r["recall"][0.5].tolist() == [0.0, 0.5, 1.0, 1.0]
    # shifted by 5 pixels: IoU 15 * 20 / (2 * 400 - 300) = 0.6 -> found at 0.5, not at 0.7
    shifted = [torch.tensor([[15.0, 10.0, 35.0, 30.0]]), torch.zeros(0, 4)]
    r = metrics.proposal_recall(shifted, gt[:1] + gt[1:], counts=(1, 100))
    assert r["recall"][0.5].tolist() == [0.5, 0.5] and r["recall"][0.7].tolist() == [0.0, 0.0]
    # no ground truth at all: recall is undefined
    r = metrics.proposal_recall([torch.zeros(0, 4)], [torch.zeros(0, 4)])
    assert torch.isnan(r["recall"][0.5]).all()


def test_proposal_recall_equals_a_loop_reference():
    gen = torch.Generator().manual_seed(0)

    def rand_boxes(n):
        xy = torch.rand(n, 2, generator=gen) * 50
        return torch.cat([xy, xy + 5 + torch.rand(n, 2, generator=gen) * 30], 1)
    props = [rand_boxes(40), rand_boxes(7), rand_boxes(0)]
    gts = [rand_boxes(5), rand_boxes(3), rand_boxes(2)]
    counts, thresholds = (1, 5, 20, None), (0.3, 0.5)
    r = metrics.proposal_recall(props, gts, thresholds, counts)
    for t in thresholds:
        for n, k in enumerate(r["counts"].tolist()):
            hits = sum(bool(len(p) and (box_iou(g[None], p[:k]) >= t).any())
                       for p, gg in zip(props, gts) for g in gg)
            assert r["recall"][t][n].item() == pytest.approx(hits / 10)


def test_bad_proposal_recall_input_names_the_problem():
    with pytest.raises(ValueError, match="images"):
        metrics.proposal_recall([torch.zeros(0, 4)], [])
    with pytest.raises(ValueError, match="iou_thresholds"):
        metrics.proposal_recall([torch.zeros(0, 4)], [torch.zeros(0, 4)], iou_thresholds=(0.0,))
    with pytest.raises(ValueError, match="counts"):
        metrics.proposal_recall([torch.zeros(0, 4)], [torch.zeros(0, 4)], counts=(0,))
    with pytest.raises(ValueError, match="proposals"):
        metrics.proposal_recall([torch.zeros(3)], [torch.zeros(0, 4)])
