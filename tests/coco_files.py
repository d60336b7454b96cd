"""Generated COCO files with everything COCO's rules turn on, and detections for them.

:func:`write_coco_set` writes a small set (PNG images + annotation JSON) with crowd regions,
``area`` unequal to the box's, non-contiguous category ids (and a category without objects),
images without objects, and masks as polygons, compressed RLE and uncompressed RLE;
:func:`make_detections` makes detections for it in the course's prediction contract: near-misses,
wrong classes, duplicates, and detections on crowd regions, with masks.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from pycocotools import mask as mask_utils

CATEGORY_IDS = (3, 7, 12, 20)   # 20 has no objects


def _ellipse(h: int, w: int, box: tuple[int, int, int, int]) -> np.ndarray:
    x0, y0, x1, y1 = box
    ys, xs = np.mgrid[:h, :w]
    cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, max((x1 - x0) / 2, 1), max((y1 - y0) / 2, 1)
    return ((((xs + 0.5 - cx) / rx) ** 2 + ((ys + 0.5 - cy) / ry) ** 2) <= 1).astype(np.uint8)


def _segmentation(rng, h: int, w: int, box, kind: str):
    """(segmentation, its mask uint8[h, w]) of kind "polygon", "rle" (compressed) or "counts" (uncompressed)."""
    x0, y0, x1, y1 = box
    if kind == "polygon":   # a hexagon with integer vertices inside the box
        cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
        poly = [x0, cy, (x0 + cx) // 2, y0, (cx + x1) // 2, y0, x1, cy, (cx + x1) // 2, y1, (x0 + cx) // 2, y1]
        rle = mask_utils.merge(mask_utils.frPyObjects([[float(v) for v in poly]], h, w))
        return [[float(v) for v in poly]], mask_utils.decode(rle)
    mask = _ellipse(h, w, box)
    if not mask.any():
        mask[y0, x0] = 1
    if kind == "rle":
        rle = mask_utils.encode(np.asfortranarray(mask))
        return {"size": [h, w], "counts": rle["counts"].decode("ascii")}, mask
    flat = mask.flatten(order="F")   # uncompressed RLE: run lengths from a 0-run, column-major
    changes = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], changes, [flat.size]])).tolist()
    if flat[0] == 1:
        runs = [0] + runs
    return {"size": [h, w], "counts": runs}, mask


def write_coco_set(root: Path, seed: int, num_images: int = 8) -> tuple[Path, dict]:
    """Write the set under ``root``; returns (the annotation file, {image_id: [(box xyxy, category
    id, iscrowd, mask)]}) for :func:`make_detections`."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    images, annotations, truth = [], [], {}
    for index in range(num_images):
        image_id = 100 + 7 * index              # ids neither contiguous nor starting at 0
        h, w = int(rng.integers(48, 161)), int(rng.integers(48, 161))
        file_name = f"images/{image_id}.png"
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / file_name)
        images.append({"id": image_id, "file_name": file_name, "height": h, "width": w})
        truth[image_id] = []
        count = 0 if index == 1 else int(rng.integers(1, 7))   # image 1 has no objects
        for _ in range(count):
            bw, bh = int(rng.integers(4, w // 2 + 2)), int(rng.integers(4, h // 2 + 2))
            x0, y0 = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
            box = (x0, y0, x0 + bw, y0 + bh)
            crowd = int(rng.random() < 0.2)
            kind = "counts" if crowd else str(rng.choice(["polygon", "rle", "counts"]))
            segmentation, mask = _segmentation(rng, h, w, box, kind)
            rle = mask_utils.encode(np.asfortranarray(mask))
            bx, by, bbw, bbh = (float(v) for v in mask_utils.toBbox(rle))   # the mask's box, as COCO's
            area = float(mask_utils.area(rle)) * (1.0 if rng.random() < 0.7 else float(rng.uniform(0.3, 3.0)))
            category = int(rng.choice(CATEGORY_IDS[:3]))
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": category,
                                "bbox": [bx, by, bbw, bbh], "area": area, "iscrowd": crowd,
                                "segmentation": segmentation})
            truth[image_id].append(((bx, by, bx + bbw, by + bbh), category, crowd, mask))
    categories = [{"id": c, "name": f"class{c}"} for c in CATEGORY_IDS]
    path = root / "annotations.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path, truth


def make_detections(truth: dict, sizes: dict, category_to_label: dict, seed: int) -> list[dict]:
    """Detections for :func:`write_coco_set`'s truth, one dict per image (the course's contract
    with "image_id"): each object found with probability 0.8 (jittered; sometimes the wrong
    class, sometimes twice), crowd regions hit by several detections, and false positives."""
    rng = np.random.default_rng(seed + 1000)
    predictions = []
    for image_id, objects in truth.items():
        h, w = sizes[image_id]
        boxes, labels = [], []
        for box, category, crowd, _ in objects:
            for _ in range(int(rng.integers(2, 4)) if crowd else 1 + int(rng.random() < 0.2)):
                if rng.random() > 0.8 and not crowd:
                    continue
                x0, y0, x1, y1 = box
                jitter = rng.normal(0, 0.08, 4) * [x1 - x0, y1 - y0, x1 - x0, y1 - y0]
                if crowd:   # small detections inside the crowd region
                    cx, cy = rng.uniform(x0, x1), rng.uniform(y0, y1)
                    jitter = [cx - x0 - 3, cy - y0 - 3, cx + 3 - x1, cy + 3 - y1]
                b = np.clip(np.array(box, dtype=float) + jitter, 0, [w, h, w, h])
                if b[2] - b[0] < 1 or b[3] - b[1] < 1:
                    continue
                wrong = rng.random() < 0.15
                boxes.append(b)
                labels.append(category_to_label[int(rng.choice(CATEGORY_IDS)) if wrong else category])
        for _ in range(int(rng.integers(0, 4))):   # false positives anywhere
            x0, y0 = rng.uniform(0, w - 8), rng.uniform(0, h - 8)
            boxes.append([x0, y0, min(w, x0 + rng.uniform(4, w / 2)), min(h, y0 + rng.uniform(4, h / 2))])
            labels.append(category_to_label[int(rng.choice(CATEGORY_IDS))])
        boxes_t = torch.tensor(np.array(boxes, dtype=np.float32).reshape(-1, 4))
        masks = torch.zeros(len(boxes), h, w, dtype=torch.uint8)
        for k, b in enumerate(boxes_t.tolist()):   # an ellipse in each box
            masks[k] = torch.from_numpy(_ellipse(h, w, tuple(int(round(v)) for v in b)))
        scores = torch.from_numpy(rng.uniform(0.05, 1.0, len(boxes))).float()   # no ties (COCOeval's sort is stable)
        predictions.append({"image_id": image_id, "boxes": boxes_t, "labels": torch.tensor(labels, dtype=torch.int64),
                            "scores": scores, "masks": masks})
    return predictions
