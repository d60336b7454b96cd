"""COCO format both ways: export the shapes data, read any COCO detection / instance set.

Reading goes through pycocotools (masks from polygons or RLE) into the target contract:
category ids are remapped to contiguous labels 1..C in sorted id order; every object carries
COCO's ``iscrowd`` and ``area`` (crowd regions included, so that evaluation ignores detections on
them as COCOeval does, and training leaves them out of the positives: :mod:`lessons_pkg.crowd`);
zero-size boxes are left out, images without annotations are kept with empty targets. Bad files
get errors that name the file and the field.
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import os
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from torch import Tensor
from torch.utils.data import Dataset

from .. import records
from ..records import read_json
from .dataset import ShapesDataset, apply_transforms

IMAGE_DIR = "images"
ANNOTATION_FILE = "annotations.json"


# --------------------------------------------------------------------------- writing
def mask_to_rle(mask: np.ndarray) -> dict:
    """uint8[H, W] binary mask -> COCO compressed RLE with ``counts`` as a JSON-ready str."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def check_export_folder(out_dir: str | os.PathLike, overwrite: bool) -> Path:
    """``out_dir`` as a Path, if a dataset may be written there: FileExistsError when it already
    holds one (annotation file or image folder) and ``overwrite`` is False."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out} exists and is not a folder")
    records.refuse_overwrite((out / ANNOTATION_FILE, out / IMAGE_DIR), overwrite,
                             f"{out} already holds a dataset; pass overwrite=True (--overwrite on the command "
                             "line) to replace it, or choose another folder")
    return out


def export_coco(dataset: ShapesDataset, out_dir: str | os.PathLike, command: str | None = None,
                overwrite: bool = False) -> Path:
    """Write ``dataset`` as PNG images plus ``annotations.json`` (RLE masks) under ``out_dir``.

    A folder that already holds a dataset (an annotation file or images) is refused with
    FileExistsError unless ``overwrite`` is True: a set is never replaced without being asked.

    The output is byte-for-byte reproducible: PNGs without timestamps, JSON with sorted keys.
    The generator's config, seed and size are recorded in ``info`` so anyone can regenerate it.
    Returns the path of the annotation file.
    """
    out = check_export_folder(out_dir, overwrite)
    if overwrite and (out / IMAGE_DIR).is_dir():  # no stale images of a larger earlier export
        for old in (out / IMAGE_DIR).glob("*.png"):
            old.unlink()
    (out / IMAGE_DIR).mkdir(parents=True, exist_ok=True)
    config = dataset.config
    images, annotations = [], []
    for index in range(len(dataset)):
        scene = dataset.scene(index)
        file_name = f"{IMAGE_DIR}/{index:06d}.png"
        Image.fromarray(scene.image).save(out / file_name, format="PNG", optimize=False)
        h, w = scene.image.shape[:2]
        images.append({"id": index, "file_name": file_name, "height": h, "width": w})
        for box, label, mask in zip(scene.boxes, scene.labels, scene.masks):
            x1, y1, x2, y2 = (float(v) for v in box)
            annotations.append({
                "id": len(annotations) + 1, "image_id": index, "category_id": int(label),
                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": int(mask.sum()), "iscrowd": 0,
                "segmentation": mask_to_rle(mask),
            })
    info = {
        "description": "Synthetic shapes scenes of the Detection & Segmentation course",
        "generator": {"seed": dataset.seed, "num_images": len(dataset),
                      "config": json.loads(json.dumps(config.__dict__))},
    }
    if command:
        info["command"] = command
    categories = [{"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(config.classes)]
    document = {"info": info, "images": images, "annotations": annotations, "categories": categories}
    ann_path = out / ANNOTATION_FILE
    ann_path.write_text(json.dumps(document, sort_keys=True, indent=1) + "\n")
    return ann_path


def coco_results(predictions: list[dict], label_to_category_id: dict[int, int], iou_type: str = "bbox") -> list[dict]:
    """Detections in COCO's results format, which ``COCO.loadRes`` and COCOeval read.

    Args:
        predictions: one dict per image, in the image's own pixels (the frame of the annotation
            file), with "image_id" (the file's id), "boxes" Tensor[M, 4] xyxy, "labels" int64[M]
            (1..C), "scores" Tensor[M], and for "segm" "masks" Tensor[M, H, W] (or [M, 1, H, W])
            of probabilities or 0/1 (foreground above 0.5).
        label_to_category_id: the dataset's (:attr:`CocoDataset.label_to_category_id`).
        iou_type: "bbox": {"image_id", "category_id" (the file's id), "bbox" [x, y, w, h],
            "score"} per detection; "segm": {"image_id", "category_id", "segmentation"
            (compressed RLE, counts as str), "score"}, without "bbox".
    Why two lists: ``loadRes`` takes a detection's area from its "bbox" whenever one is there,
    so in a file with both, COCOeval would sort masks into small/medium/large by their boxes'
    areas. Mask results without boxes (COCO's segmentation results format, as torchvision's
    reference evaluator writes them) get their masks' areas.
    """
    if iou_type not in ("bbox", "segm"):
        raise ValueError(f"iou_type must be 'bbox' or 'segm', got {iou_type!r}")
    results = []
    for i, p in enumerate(predictions):
        if "image_id" not in p:
            raise ValueError(f"prediction {i} has no 'image_id' (the annotation file's id of its image)")
        if iou_type == "segm" and "masks" not in p:
            raise ValueError(f"prediction {i} has no 'masks': segmentation results need an instance model")
        boxes = p["boxes"].detach().double().cpu()
        xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1).tolist()
        labels, scores = p["labels"].tolist(), p["scores"].detach().double().cpu().tolist()
        if iou_type == "segm":
            masks = p["masks"].detach().cpu()
            masks = (masks[:, 0] if masks.dim() == 4 else masks) > 0.5
        for k, (box, label, score) in enumerate(zip(xywh, labels, scores)):
            if label not in label_to_category_id:
                raise ValueError(f"prediction {i}: label {label} has no category id (labels "
                                 f"{sorted(label_to_category_id)})")
            entry = {"image_id": int(p["image_id"]), "category_id": int(label_to_category_id[label]),
                     "score": score}   # unrounded: COCOeval reads our numbers
            if iou_type == "bbox":
                entry["bbox"] = box
            else:
                entry["segmentation"] = mask_to_rle(masks[k].numpy())
            results.append(entry)
    return results


# --------------------------------------------------------------------------- reading
# A coordinate further than this many image sides outside the image is refused: pycocotools
# rasterizes a polygon along its perimeter, and a huge (or non-finite) vertex runs it out of
# memory or crashes the interpreter.
POLYGON_MARGIN = 1.0


def _load_json(ann_file: Path) -> dict:
    if not ann_file.is_file():
        raise FileNotFoundError(f"COCO annotation file not found: {ann_file}")
    document = read_json(ann_file)
    if not isinstance(document, dict):
        raise ValueError(f"{ann_file}: the top level must be a JSON object, got {type(document).__name__}")
    for key in ("images", "annotations", "categories"):
        if key not in document:
            raise ValueError(f"{ann_file}: missing top-level field '{key}'")
        if not isinstance(document[key], list):
            raise ValueError(f"{ann_file}: field '{key}' must be a list, got {type(document[key]).__name__}")
    return document


def _require(ann_file: Path, where: str, entry, fields: tuple[str, ...]) -> None:
    if not isinstance(entry, dict):
        raise ValueError(f"{ann_file}: {where} must be an object, got {type(entry).__name__}")
    for f in fields:
        if f not in entry:
            raise ValueError(f"{ann_file}: {where} has no field '{f}'")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_finite_number(value) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:  # a 400-digit integer
        return False


def _shown(value, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _check_int_field(ann_file: Path, where: str, entry: dict, field: str, minimum: int | None = None) -> None:
    value = entry[field]
    if not _is_int(value) or (minimum is not None and value < minimum) or abs(value) > 2**63 - 1:
        bound = f" >= {minimum}" if minimum is not None else ""
        raise ValueError(f"{ann_file}: {where} field '{field}' must be an integer{bound}, got {_shown(value)}")


def _check_file_name(ann_file: Path, where: str, file_name) -> None:
    """A relative path that stays inside the dataset root (no absolute path, no '..' out of it)."""
    if not isinstance(file_name, str) or not file_name.strip():
        raise ValueError(f"{ann_file}: {where} field 'file_name' must be a non-empty string, got {_shown(file_name)}")
    if "\x00" in file_name:
        raise ValueError(f"{ann_file}: {where} field 'file_name' holds a NUL character: {_shown(file_name)}")
    normal = os.path.normpath(file_name.replace("\\", "/"))
    if os.path.isabs(normal) or normal == ".." or normal.startswith("../") or Path(file_name).drive:
        raise ValueError(f"{ann_file}: {where} field 'file_name' must be a path relative to the images root "
                         f"that stays inside it, got {file_name!r}")


def _check_polygons(where: str, polygons: list, size: tuple[int, int] | None) -> None:
    """Each polygon a list of >= 3 (x, y) vertices: an even count >= 6 of finite numbers, within
    :data:`POLYGON_MARGIN` image sides of the image when its size is known."""
    if not polygons:
        raise ValueError(f"{where} field 'segmentation' is an empty list of polygons")
    for k, polygon in enumerate(polygons):
        if not isinstance(polygon, list):
            raise ValueError(f"{where} field 'segmentation' polygon {k} must be a list [x1, y1, x2, y2, ...], "
                             f"got {_shown(polygon)}")
        if len(polygon) < 6 or len(polygon) % 2:
            raise ValueError(f"{where} field 'segmentation' polygon {k} must hold an even number >= 6 of "
                             f"coordinates (x, y pairs, 3 vertices at least), got {len(polygon)}")
        if not all(_is_finite_number(v) for v in polygon):
            bad = next(v for v in polygon if not _is_finite_number(v))
            raise ValueError(f"{where} field 'segmentation' polygon {k} must hold finite numbers, got {_shown(bad)}")
        if size is not None:
            h, w = size
            side = max(h, w)
            lo, hi = -POLYGON_MARGIN * side, (1 + POLYGON_MARGIN) * side
            if min(polygon) < lo or max(polygon) > hi:
                raise ValueError(f"{where} field 'segmentation' polygon {k} has coordinates in "
                                 f"[{min(polygon):.6g}, {max(polygon):.6g}], far outside the {w}x{h} image "
                                 f"(allowed: [{lo:g}, {hi:g}])")


def _compressed_rle_total(counts: str) -> int:
    """The number of pixels a compressed RLE string covers (pycocotools' rleFrString, in
    Python): each count is a little-endian run of 5-bit chunks in characters 48..111; from the
    third count on, it is a difference to the count two before. ValueError on a bad string."""
    total, values, i = 0, [], 0
    while i < len(counts):
        x, shift, more = 0, 0, True
        while more:
            if i >= len(counts):
                raise ValueError("the string ends inside a count")
            c = ord(counts[i]) - 48
            if not 0 <= c < 64:
                raise ValueError(f"character {counts[i]!r} is not an RLE character")
            x |= (c & 0x1f) << (5 * shift)
            more = bool(c & 0x20)
            i += 1
            shift += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * shift)
        if len(values) > 2:
            x += values[-2]
        if x < 0:
            raise ValueError("a run length is negative")
        values.append(x)
        total += x
    return total


def _check_rle(where: str, rle: dict, size: tuple[int, int] | None) -> None:
    """RLE: "size" [h, w] (the image's) and "counts", a list of non-negative ints (uncompressed)
    or a string (compressed), covering exactly h * w pixels."""
    rle_size = rle.get("size")
    if not (isinstance(rle_size, list) and len(rle_size) == 2 and all(_is_int(v) and 0 < v < 2**31 for v in rle_size)):
        raise ValueError(f"{where} field 'segmentation' (RLE) needs 'size' [height, width] of positive integers, "
                         f"got {_shown(rle_size)}")
    if size is not None and tuple(rle_size) != tuple(size):
        raise ValueError(f"{where} field 'segmentation' (RLE) has size {rle_size}, the image is {list(size)}")
    counts = rle.get("counts")
    pixels = rle_size[0] * rle_size[1]
    if isinstance(counts, list):
        if not all(_is_int(v) and 0 <= v <= pixels for v in counts):
            raise ValueError(f"{where} field 'segmentation' (RLE) 'counts' must be non-negative integers")
        total = sum(counts)
    elif isinstance(counts, str):
        try:
            total = _compressed_rle_total(counts)
        except ValueError as e:
            raise ValueError(f"{where} field 'segmentation' (compressed RLE) 'counts' is not valid: {e}") from None
    else:
        raise ValueError(f"{where} field 'segmentation' (RLE) 'counts' must be a list of integers or a string, "
                         f"got {type(counts).__name__}")
    if total != pixels:
        raise ValueError(f"{where} field 'segmentation' (RLE) 'counts' cover {total} pixels, "
                         f"its size {rle_size[0]}x{rle_size[1]} has {pixels}")


def _validate(ann_file: Path, document: dict) -> None:
    """Check every reference and field that reading relies on, naming the first problem."""
    image_sizes: dict = {}
    for i, image in enumerate(document["images"]):
        where = f"images[{i}]"
        _require(ann_file, where, image, ("id", "file_name"))
        _check_int_field(ann_file, where, image, "id")
        if image["id"] in image_sizes:
            raise ValueError(f"{ann_file}: {where} repeats image id {image['id']}")
        _check_file_name(ann_file, f"{where} (id {image['id']})", image["file_name"])
        for field in ("height", "width"):
            if field in image:
                _check_int_field(ann_file, f"{where} (id {image['id']})", image, field, minimum=1)
        image_sizes[image["id"]] = ((image["height"], image["width"]) if "height" in image and "width" in image
                                    else None)
    category_ids = set()
    for i, category in enumerate(document["categories"]):
        _require(ann_file, f"categories[{i}]", category, ("id", "name"))
        _check_int_field(ann_file, f"categories[{i}]", category, "id")
        if category["id"] in category_ids:
            raise ValueError(f"{ann_file}: categories[{i}] repeats category id {category['id']} "
                             f"(name {category['name']!r}): each id must name one class")
        if not isinstance(category["name"], str):
            raise ValueError(f"{ann_file}: categories[{i}] field 'name' must be a string, got {_shown(category['name'])}")
        category_ids.add(category["id"])
    annotation_ids = set()
    for i, ann in enumerate(document["annotations"]):
        where = f"annotations[{i}] (id {_shown(ann.get('id', '?'), 30)})" if isinstance(ann, dict) else f"annotations[{i}]"
        _require(ann_file, where, ann, ("id", "image_id", "category_id", "bbox"))
        for field in ("id", "image_id", "category_id"):
            _check_int_field(ann_file, where, ann, field)
        if ann["id"] in annotation_ids:
            raise ValueError(f"{ann_file}: {where} repeats annotation id {ann['id']}")
        annotation_ids.add(ann["id"])
        if ann["image_id"] not in image_sizes:
            raise ValueError(f"{ann_file}: {where} has image_id {ann['image_id']!r}, which is not in 'images'")
        if ann["category_id"] not in category_ids:
            raise ValueError(f"{ann_file}: {where} has category_id {ann['category_id']!r}, "
                             "which is not in 'categories'")
        bbox = ann["bbox"]
        if not isinstance(bbox, list) or len(bbox) != 4 or not all(_is_finite_number(v) for v in bbox):
            raise ValueError(f"{ann_file}: {where} field 'bbox' must be 4 finite numbers [x, y, w, h], got {_shown(bbox)}")
        if bbox[2] < 0 or bbox[3] < 0:
            raise ValueError(f"{ann_file}: {where} field 'bbox' [x, y, w, h] has a negative size "
                             f"(w={bbox[2]}, h={bbox[3]}); COCO boxes are [x, y, width, height]")
        if "iscrowd" in ann and ann["iscrowd"] not in (0, 1):
            raise ValueError(f"{ann_file}: {where} field 'iscrowd' must be 0 or 1, got {_shown(ann['iscrowd'])}")
        if "area" in ann and not _is_finite_number(ann["area"]):
            raise ValueError(f"{ann_file}: {where} field 'area' must be a finite number, got {_shown(ann['area'])}")
        seg = ann.get("segmentation")
        if seg is None or seg == [] or seg == {}:
            continue
        if isinstance(seg, list):
            _check_polygons(f"{ann_file}: {where}", seg, image_sizes[ann["image_id"]])
        elif isinstance(seg, dict):
            _check_rle(f"{ann_file}: {where}", seg, image_sizes[ann["image_id"]])
        else:
            raise ValueError(f"{ann_file}: {where} field 'segmentation' must be polygons (list) or RLE (object), "
                             f"got {type(seg).__name__}")


def _pil_to_array(im: Image.Image) -> np.ndarray:
    """float32[H, W, 3] in [0, 1] from any PIL mode: 16-bit and 32-bit integer greyscale scaled
    by their own range (Pillow's conversion to RGB would clip them to 255: almost white),
    palette and alpha images through RGB."""
    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        grey = np.asarray(im).astype(np.float32) / 65535.0
    elif im.mode == "I":  # 32-bit integers: 16-bit PNGs open so in some Pillow versions
        values = np.asarray(im)
        grey = values.astype(np.float32) / (65535.0 if values.min() >= 0 and values.max() <= 65535 else 2**31 - 1)
    elif im.mode == "F":
        grey = np.clip(np.asarray(im, dtype=np.float32), 0, 1)
    else:
        return np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    return np.repeat(np.clip(grey, 0, 1)[:, :, None], 3, axis=2)


class CocoDataset(Dataset):
    """A COCO-format detection or instance-segmentation set in the target contract.

    Args:
        root: folder that the images' ``file_name`` entries are relative to.
        ann_file: the COCO annotation JSON (default ``root/annotations.json``).
        transforms: optional torchvision.transforms.v2 pipeline on (image, target).

    Samples are ``(image float32[3, H, W] in [0, 1], target)`` with ``boxes`` float32[N, 4] (xyxy,
    clipped to the image), ``labels`` int64[N], ``iscrowd`` uint8[N] and ``area`` float64[N], and
    ``image_id`` (the file's image id), plus ``masks`` uint8[N, H, W] when every annotation of the
    set has a segmentation (a boxes-only set has no ``masks`` key rather than made-up masks).

    ``iscrowd`` and ``area`` are COCO's: a crowd annotation (``iscrowd`` 1) is one region over many
    objects, kept so that evaluation ignores detections on it (and training keeps it out of the
    positives, :mod:`lessons_pkg.crowd`); ``area`` is the annotation's own (COCO's is the mask's
    pixel count, not the box's), else the mask's, else the box's; COCO's size ranges (small,
    medium, large) are judged on it. One difference from COCOeval remains: a box that lies outside
    the image, or has no width or height, is left out here (a model cannot predict it) where
    COCOeval counts it as an object nobody can find.
    ``classes[k - 1]`` is the name of label ``k``; ``label_to_category_id`` maps back.
    """

    def __init__(self, root: str | os.PathLike, ann_file: str | os.PathLike | None = None,
                 transforms: Callable | None = None):
        self.root = Path(root)
        self.ann_file = Path(ann_file) if ann_file is not None else self.root / ANNOTATION_FILE
        document = _load_json(self.ann_file)
        _validate(self.ann_file, document)
        self.coco = COCO()
        self.coco.dataset = document
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress lines
            self.coco.createIndex()
        self.transforms = transforms
        self.image_ids = [image["id"] for image in document["images"]]
        category_ids = sorted(c["id"] for c in document["categories"])
        names = {c["id"]: c["name"] for c in document["categories"]}
        self.category_id_to_label = {cid: i + 1 for i, cid in enumerate(category_ids)}
        self.label_to_category_id = {label: cid for cid, label in self.category_id_to_label.items()}
        self.classes = tuple(names[cid] for cid in category_ids)
        self.has_masks = bool(document["annotations"]) and all(
            a.get("segmentation") not in (None, [], {}) for a in document["annotations"])
        missing = [im["file_name"] for im in document["images"] if not (self.root / im["file_name"]).is_file()]
        if missing:
            raise FileNotFoundError(f"{self.ann_file}: {len(missing)} image file(s) named in field 'file_name' "
                                    f"do not exist under {self.root}, e.g. {missing[:3]}")

    def __len__(self) -> int:
        return len(self.image_ids)

    def _load_image(self, info: dict) -> Tensor:
        path = self.root / info["file_name"]
        where = f"{self.ann_file}: image id {info['id']}"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(path) as im:
                    w, h = im.size  # from the header: a size mismatch is named before decoding
                    if ("height" in info and info["height"] != h) or ("width" in info and info["width"] != w):
                        raise ValueError(f"{where}: fields height/width say {info.get('height')}x{info.get('width')} "
                                         f"but {path} is {h}x{w}")
                    array = _pil_to_array(im)
        except FileNotFoundError:
            raise FileNotFoundError(f"{where}: file not found: {path}") from None
        except ValueError as e:
            if str(e).startswith(where):
                raise
            raise ValueError(f"{where}: cannot read {path}: {e}") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise ValueError(f"{where}: {path} is refused as a decompression bomb ({e})") from None
        except Exception as e:  # OSError, SyntaxError, struct.error...: Pillow on a broken file
            raise ValueError(f"{where}: cannot read {path} as an image ({type(e).__name__}: {e})") from None
        return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).contiguous()

    def __getitem__(self, index: int) -> tuple[Tensor, dict]:
        image_id = self.image_ids[index]
        info = self.coco.imgs[image_id]
        image = self._load_image(info)
        h, w = image.shape[-2:]
        boxes, labels, crowd, area, masks = [], [], [], [], []
        for ann in self.coco.imgToAnns.get(image_id, []):
            x, y, bw, bh = ann["bbox"]
            box = np.clip([x, y, x + bw, y + bh], 0, [w, h, w, h])
            if box[2] <= box[0] or box[3] <= box[1]:
                continue  # zero-size (or entirely outside the image)
            boxes.append(box)
            labels.append(self.category_id_to_label[ann["category_id"]])
            crowd.append(int(ann.get("iscrowd", 0)))
            mask = self._decode_mask(ann, h, w) if self.has_masks else None
            if mask is not None:
                masks.append(mask)
            area.append(float(ann["area"]) if "area" in ann else float(mask.sum()) if mask is not None
                        else float(bw * bh))
        target = {
            "boxes": torch.tensor(np.array(boxes, dtype=np.float32).reshape(-1, 4)),
            "labels": torch.tensor(labels, dtype=torch.int64),
            "iscrowd": torch.tensor(crowd, dtype=torch.uint8),
            "area": torch.tensor(area, dtype=torch.float64),   # COCO's size ranges end at 32² and 96²: no rounding
            "image_id": image_id,
        }
        if self.has_masks:
            target["masks"] = (torch.from_numpy(np.stack(masks)) if masks
                               else torch.zeros((0, h, w), dtype=torch.uint8))
        return apply_transforms(self.transforms, image, target)

    def _decode_mask(self, ann: dict, h: int, w: int) -> np.ndarray:
        """uint8[H, W] from polygons, uncompressed RLE or compressed RLE."""
        where = f"{self.ann_file}: annotation id {ann.get('id', '?')}"
        seg = ann["segmentation"]
        # again with the image's real size (the file may not give height/width): pycocotools
        # would crash the interpreter on a polygon far outside the image
        if isinstance(seg, list):
            _check_polygons(where, seg, (h, w))
        elif isinstance(seg, dict):
            _check_rle(where, seg, (h, w))
        try:
            if isinstance(seg, list):  # polygons
                rle = mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
            elif isinstance(seg.get("counts"), list):  # uncompressed RLE
                rle = mask_utils.frPyObjects(seg, h, w)
            else:
                rle = seg
            mask = mask_utils.decode(rle)
        except Exception as e:  # pycocotools raises bare exceptions on malformed input
            raise ValueError(f"{where}: field 'segmentation' cannot be decoded: {e!r}") from None
        if mask.shape != (h, w):
            raise ValueError(f"{where}: field 'segmentation' has size {mask.shape}, the image is {(h, w)}")
        return mask.astype(np.uint8)


class SemanticTargets(Dataset):
    """An instance-segmentation dataset as semantic segmentation: each sample's target gains
    "semantic" int64[H, W], the label of the instance mask covering each pixel (0: background;
    where masks overlap, the later annotation wins, as when painting them in order).

    For training a semantic-segmentation network (``fcn``) on a COCO set with masks."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset
        self.classes = getattr(dataset, "classes", None)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Tensor, dict]:
        image, target = self.dataset[index]
        if "masks" not in target:
            raise ValueError(f"sample {index} has no 'masks': semantic targets are made from instance masks")
        masks, labels = target["masks"], target["labels"]
        semantic = torch.zeros(masks.shape[-2:], dtype=torch.int64)   # the masks' frame (data.ResizedImages)
        for mask, label in zip(masks, labels):
            semantic[mask.bool()] = int(label)
        return image, {**target, "semantic": semantic}
