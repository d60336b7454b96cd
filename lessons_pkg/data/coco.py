"""COCO format both ways: export the shapes data, read any COCO detection / instance set.

Reading goes through pycocotools (masks from polygons or RLE) into the target contract:
category ids are remapped to contiguous labels 1..C in sorted id order, crowd annotations and
zero-size boxes are left out of the objects, images without annotations are kept with empty
targets. Bad files get errors that name the file and the field.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from torch import Tensor
from torch.utils.data import Dataset

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
    existing = [p for p in (out / ANNOTATION_FILE, out / IMAGE_DIR) if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{existing[0]} exists: {out} already holds a dataset; pass overwrite=True "
                              "(--overwrite on the command line) to replace it, or choose another folder")
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


# --------------------------------------------------------------------------- reading
def _load_json(ann_file: Path) -> dict:
    if not ann_file.is_file():
        raise FileNotFoundError(f"COCO annotation file not found: {ann_file}")
    try:
        document = json.loads(ann_file.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{ann_file}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
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


def _validate(ann_file: Path, document: dict) -> None:
    """Check every reference and field that reading relies on, naming the first problem."""
    image_ids, category_ids = set(), set()
    for i, image in enumerate(document["images"]):
        _require(ann_file, f"images[{i}]", image, ("id", "file_name"))
        if image["id"] in image_ids:
            raise ValueError(f"{ann_file}: images[{i}] repeats image id {image['id']}")
        image_ids.add(image["id"])
    for i, category in enumerate(document["categories"]):
        _require(ann_file, f"categories[{i}]", category, ("id", "name"))
        category_ids.add(category["id"])
    for i, ann in enumerate(document["annotations"]):
        where = f"annotations[{i}] (id {ann.get('id', '?')})" if isinstance(ann, dict) else f"annotations[{i}]"
        _require(ann_file, where, ann, ("image_id", "category_id", "bbox"))
        if ann["image_id"] not in image_ids:
            raise ValueError(f"{ann_file}: {where} has image_id {ann['image_id']!r}, which is not in 'images'")
        if ann["category_id"] not in category_ids:
            raise ValueError(f"{ann_file}: {where} has category_id {ann['category_id']!r}, "
                             "which is not in 'categories'")
        bbox = ann["bbox"]
        if (not isinstance(bbox, list) or len(bbox) != 4
                or not all(isinstance(v, (int, float)) and np.isfinite(v) for v in bbox)):
            raise ValueError(f"{ann_file}: {where} field 'bbox' must be 4 finite numbers [x, y, w, h], got {bbox!r}")
        seg = ann.get("segmentation")
        if seg is not None and not isinstance(seg, (list, dict)):
            raise ValueError(f"{ann_file}: {where} field 'segmentation' must be polygons (list) or RLE (object), "
                             f"got {type(seg).__name__}")


class CocoDataset(Dataset):
    """A COCO-format detection or instance-segmentation set in the target contract.

    Args:
        root: folder that the images' ``file_name`` entries are relative to.
        ann_file: the COCO annotation JSON (default ``root/annotations.json``).
        transforms: optional torchvision.transforms.v2 pipeline on (image, target).

    Samples are ``(image float32[3, H, W] in [0, 1], target)`` with ``boxes``, ``labels`` and
    ``image_id`` (the file's image id), plus ``masks`` uint8[N, H, W] when every annotation of the
    set has a segmentation (a boxes-only set has no ``masks`` key rather than made-up masks).
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
        try:
            with Image.open(path) as im:
                array = np.asarray(im.convert("RGB"))
        except FileNotFoundError:
            raise FileNotFoundError(f"{self.ann_file}: image id {info['id']}: file not found: {path}") from None
        except OSError as e:
            raise ValueError(f"{self.ann_file}: image id {info['id']}: cannot read {path}: {e}") from None
        h, w = array.shape[:2]
        if ("height" in info and info["height"] != h) or ("width" in info and info["width"] != w):
            raise ValueError(f"{self.ann_file}: image id {info['id']}: fields height/width say "
                             f"{info.get('height')}x{info.get('width')} but {path} is {h}x{w}")
        return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255)

    def __getitem__(self, index: int) -> tuple[Tensor, dict]:
        image_id = self.image_ids[index]
        info = self.coco.imgs[image_id]
        image = self._load_image(info)
        h, w = image.shape[-2:]
        boxes, labels, masks = [], [], []
        for ann in self.coco.imgToAnns.get(image_id, []):
            if ann.get("iscrowd", 0):
                continue
            x, y, bw, bh = ann["bbox"]
            box = np.clip([x, y, x + bw, y + bh], 0, [w, h, w, h])
            if box[2] <= box[0] or box[3] <= box[1]:
                continue  # zero-size (or entirely outside the image)
            boxes.append(box)
            labels.append(self.category_id_to_label[ann["category_id"]])
            if self.has_masks:
                masks.append(self._decode_mask(ann, h, w))
        target = {
            "boxes": torch.tensor(np.array(boxes, dtype=np.float32).reshape(-1, 4)),
            "labels": torch.tensor(labels, dtype=torch.int64),
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
