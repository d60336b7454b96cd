"""The target contract, checked: every check of a model's images and targets lives here.

The contract (README, "The target contract"): images are ``Tensor[B, 3, H, W]`` float in [0, 1]
(or a list of ``Tensor[3, H, W]``; lists of different sizes are padded by
:func:`lessons_pkg.batching.any_size` before they get here); each image has a target dict with
``"boxes"`` float[N, 4] (xyxy pixels), ``"labels"`` int64[N] (1..C, 0 is background),
``"masks"`` uint8[N, H, W] for instance segmentation, ``"semantic"`` int64[H, W] (0..C, or
:data:`IGNORE_INDEX` for pixels left out) for semantic segmentation. Every model's ``forward``
opens with :func:`prepare_batch`, which checks what its task needs and raises ValueError naming
the image, the key, what was expected and what came.

Values (finite, ordered, in range) are read only from CPU tensors: free there, while on a GPU
reading them would make every training step wait for the device. Shapes and dtypes are checked
everywhere.

Also here: :func:`as_pair`, the one parser of "an int or a pair (height, width)" arguments.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from . import crowd

IGNORE_INDEX = 255  # "semantic" pixels with this value are left out of losses and metrics (VOC's convention)
TASKS = {  # the keys each task's targets must hold, in train mode
    "detection": ("boxes", "labels"),
    "instance": ("boxes", "labels", "masks"),
    "single_object": ("boxes", "labels"),
    "semantic": ("semantic",),
}


# ----------------------------------------------------------------------------- arguments
def as_pair(value, name: str, positive: bool = False, kind: tuple[type, ...] = (int,)) -> tuple:
    """A number or a pair of numbers of ``kind`` -> (a, b), with an error naming ``name``.

    ``positive``: every value must be > 0. Booleans are refused (``True`` is an int in Python).
    """
    pair = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    ok = len(pair) == 2 and all(isinstance(v, kind) and not isinstance(v, bool) for v in pair)
    if ok and positive:
        ok = all(v > 0 for v in pair)
    if not ok:
        number = "int" if kind == (int,) else "number"
        if positive:
            raise ValueError(f"{name} must be a positive {number} or a pair (height, width) of positive "
                             f"{number}s, got {value!r}")
        raise ValueError(f"{name} must be an {number} or a pair of {number}s, got {value!r}")
    return pair


# ----------------------------------------------------------------------------- images
RANGE_TOLERANCE = 1e-3  # float rounding of colour jitter and resizing; 0..255 images are far outside


def check_image_values(images: Tensor) -> None:
    """Raise ValueError, naming the image, unless every value of Tensor[B, 3, H, W] is finite and
    in [0, 1] (within :data:`RANGE_TOLERANCE`). Read only from a CPU tensor (free there; on a GPU
    it would make every step wait for the device): :func:`lessons_pkg.train.fit` checks each
    batch on the CPU before moving it.

    A NaN pixel would poison BatchNorm's running statistics for good in train mode; 0..255 floats
    (a forgotten division) would train and predict silently wrong.
    """
    if images.device.type != "cpu" or images.numel() == 0:
        return
    flat = images.detach().reshape(len(images), -1)
    finite = torch.isfinite(flat).all(dim=1)
    if not bool(finite.all()):
        i = int((~finite).nonzero()[0])
        bad = flat[i][~torch.isfinite(flat[i])]
        raise ValueError(f"image {i} holds {len(bad)} non-finite value(s) (e.g. {bad[0].item()}); images must "
                         "be finite floats in [0, 1]. Nothing was run: BatchNorm statistics are unchanged")
    low, high = flat.amin(dim=1), flat.amax(dim=1)
    bad = (low < -RANGE_TOLERANCE) | (high > 1 + RANGE_TOLERANCE)
    if bool(bad.any()):
        i = int(bad.nonzero()[0])
        hint = " (0..255 values: divide by 255)" if high[i] > 2 else " (clamp them, or undo a normalization)"
        raise ValueError(f"images must be floats in [0, 1]; image {i} has values in "
                         f"[{low[i].item():.4g}, {high[i].item():.4g}]{hint}")


def check_images(images) -> Tensor:
    """Tensor[B, 3, H, W] floating (or a list of equal-size Tensor[3, H, W]) -> Tensor[B, 3, H, W]
    float32, B >= 1, values checked by :func:`check_image_values`.

    float64, float16 and bfloat16 images are converted to float32, the dtype of the course's
    weights (under ``torch.autocast`` the convolutions still run in half precision). A list of
    images of different sizes is batched by :func:`any_size` before this check.
    """
    if isinstance(images, (list, tuple)):
        if not images or not all(isinstance(im, Tensor) and im.dim() == 3 for im in images):
            raise ValueError("images as a list must be a non-empty list of Tensor[3, H, W], got "
                             f"{[tuple(im.shape) if isinstance(im, Tensor) else type(im).__name__ for im in images]}")
        if not all(im.shape == images[0].shape for im in images):
            raise ValueError("images as a list must share one size here (a model's forward batches images of "
                             f"different sizes with batching.any_size), got {[tuple(im.shape) for im in images]}")
        images = torch.stack(list(images))
    if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[1] != 3:
        got = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images must be a Tensor[B, 3, H, W], got {got}")
    if not images.is_floating_point():
        raise ValueError(f"images must be floating point in [0, 1], got dtype {images.dtype} "
                         "(divide uint8 images by 255)")
    if len(images) == 0:
        raise ValueError(f"images: an empty batch (shape {tuple(images.shape)}); give at least one image")
    if images.shape[-2] < 1 or images.shape[-1] < 1:
        raise ValueError(f"images must have a height and width >= 1, got {tuple(images.shape)}")
    if images.dtype != torch.float32:
        images = images.float()
    check_image_values(images)
    return images


# ----------------------------------------------------------------------------- one key of a target
# Each check below raises ValueError naming ``where`` (e.g. "target 0", or "targets[0]" in
# lessons_pkg.metrics, which checks its inputs with these same functions), the key, what was
# expected and what came.

def check_target_dict(t, keys: tuple[str, ...], where: str, why: str = "") -> None:
    """``t`` must be a dict holding every key of ``keys`` (``why``: what needs them, e.g.
    "for iou_type='segm'")."""
    if not isinstance(t, dict) or any(k not in t for k in keys):
        got = sorted(t) if isinstance(t, dict) else type(t).__name__
        need = " and ".join(repr(k) for k in keys) + (f" {why}" if why else "")
        raise ValueError(f"{where}: expected a dict with {need}, got {got}")


def check_box_rows(boxes, where: str, n: int | None = None, ordered: bool = True) -> None:
    """``boxes`` must be a float Tensor[N, 4] (N = ``n`` when given), xyxy, finite and, when
    ``ordered``, with x1 < x2 and y1 < y2 (a degenerate box would turn a regression target into
    log(0)). Values are read only from a CPU tensor."""
    rows = "N" if n is None else n
    if not isinstance(boxes, Tensor) or not boxes.is_floating_point() or boxes.dim() != 2 or boxes.shape[1] != 4 \
            or (n is not None and len(boxes) != n):
        got = f"{boxes.dtype} {list(boxes.shape)}" if isinstance(boxes, Tensor) else type(boxes).__name__
        raise ValueError(f"{where} 'boxes': expected a float Tensor[{rows}, 4] (xyxy pixels), got {got}")
    if boxes.device.type != "cpu" or not len(boxes):
        return
    finite = torch.isfinite(boxes).all(dim=1)
    if not bool(finite.all()):
        raise ValueError(f"{where} 'boxes': expected finite values, got {boxes[~finite][:3].tolist()}")
    if ordered:
        bad = (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
        if bool(bad.any()):
            raise ValueError(f"{where} 'boxes': expected x1 < x2 and y1 < y2, got {boxes[bad][:3].tolist()}")


def check_labels(labels, where: str, n: int | None = None, num_classes: int | None = None) -> None:
    """``labels`` must be an int64 Tensor[N] (N = ``n`` when given, e.g. the number of boxes) of
    classes 1..C (C = ``num_classes``; any class >= 1 when None): 0 is the background, never a
    label. Values are read only from a CPU tensor."""
    if not isinstance(labels, Tensor) or labels.dtype != torch.int64 or labels.dim() != 1 \
            or (n is not None and len(labels) != n):
        got = f"{labels.dtype} {list(labels.shape)}" if isinstance(labels, Tensor) else type(labels).__name__
        raise ValueError(f"{where} 'labels': expected an int64 Tensor[{'N' if n is None else n}], got {got}")
    if labels.device.type != "cpu" or not len(labels):
        return
    bad = (labels < 1) if num_classes is None else (labels < 1) | (labels > num_classes)
    if bool(bad.any()):
        classes = "1..K" if num_classes is None else f"1..{num_classes}"
        raise ValueError(f"{where} 'labels': expected values in {classes} (0 is the background, never a class), "
                         f"got {labels[bad][:5].tolist()}")


def check_masks(masks, where: str, n: int, size: tuple[int, int] | None = None) -> None:
    """``masks`` must be a Tensor[n, H, W], one mask per object ((H, W) = ``size`` when given:
    the image's size)."""
    shape, per = (f"[{n}, {size[0]}, {size[1]}]", "one mask per object, the image's size") if size is not None \
        else (f"[{n}, H, W]", "one mask per object")
    if not isinstance(masks, Tensor) or masks.dim() != 3 or len(masks) != n \
            or (size is not None and tuple(masks.shape[1:]) != tuple(size)):
        got = list(masks.shape) if isinstance(masks, Tensor) else type(masks).__name__
        raise ValueError(f"{where} 'masks': expected a Tensor{shape} ({per}), got {got}")


def check_per_object(t: dict, keys: tuple[str, ...], n: int, where: str) -> None:
    """Each of ``keys`` that ``t`` holds (e.g. "iscrowd", "area") must be a Tensor[n]: one value
    per object."""
    for key in keys:
        if key in t and (not isinstance(t[key], Tensor) or tuple(t[key].shape) != (n,)):
            got = list(t[key].shape) if isinstance(t[key], Tensor) else type(t[key]).__name__
            raise ValueError(f"{where} {key!r}: expected a Tensor[{n}] (one value per object), got {got}")


def check_classes(classes: Tensor, where: str, num_values: int, ignore_index: int | None = None) -> None:
    """Every value of ``classes`` (e.g. a semantic map int64[H, W]) must be a class 0..K-1
    (K = ``num_values``) or ``ignore_index``. Reads the values on any device: callers that must
    not wait for a GPU call it on CPU tensors only."""
    bad = (classes < 0) | (classes >= num_values)
    if ignore_index is not None:
        bad &= classes != ignore_index
    if bool(bad.any()):
        ignored = f" (or {ignore_index}, ignored)" if ignore_index is not None else ""
        raise ValueError(f"{where}: expected classes 0..{num_values - 1}{ignored}, got {int(classes[bad][0])}")


# ----------------------------------------------------------------------------- targets
def _check_list(targets, batch_size: int) -> None:
    if not isinstance(targets, (list, tuple)) or len(targets) != batch_size:
        got = f"{len(targets)} targets" if isinstance(targets, (list, tuple)) else type(targets).__name__
        raise ValueError(f"targets must be a list of {batch_size} dicts (one per image), got {got}")


def check_detection_targets(targets, batch_size: int, num_classes: int | None = None) -> None:
    """Raise ValueError, naming the image and the key, unless ``targets`` is a list of
    ``batch_size`` dicts with "boxes" float Tensor[N, 4] (xyxy pixels, x1 < x2 and y1 < y2,
    finite) and, when ``num_classes`` is given, "labels" int64 Tensor[N] in 1..C.
    """
    _check_list(targets, batch_size)
    keys = ("boxes", "labels") if num_classes is not None else ("boxes",)
    for i, t in enumerate(targets):
        check_target_dict(t, keys, f"target {i}")
        check_box_rows(t["boxes"], f"target {i}")
        if num_classes is not None:
            check_labels(t["labels"], f"target {i}", len(t["boxes"]), num_classes)


def check_mask_targets(targets: list[dict], image_size: tuple[int, int]) -> None:
    """Raise ValueError, naming the image and the key, unless every target has "masks" Tensor[N, H, W]
    with N its number of boxes and (H, W) the images' size (call after check_detection_targets)."""
    h, w = image_size
    for i, t in enumerate(targets):
        if "masks" not in t:
            raise ValueError(f"target {i}: Mask R-CNN needs 'masks' (uint8[N, H, W], one per box), got keys {sorted(t)}")
        check_masks(t["masks"], f"target {i}", len(t["boxes"]), (h, w))


def check_single_object_targets(targets, batch_size: int, image_size: tuple[int, int], num_classes: int) -> None:
    """Raise ValueError, naming the image, the key, what was expected and what came, unless
    ``targets`` is a list of ``batch_size`` dicts each holding exactly one object (the task of
    classification & localization): "boxes" float Tensor[1, 4] xyxy inside the image with
    x1 < x2, y1 < y2, and "labels" int64 Tensor[1] in 1..C."""
    _check_list(targets, batch_size)
    height, width = image_size
    for i, t in enumerate(targets):
        check_target_dict(t, ("boxes", "labels"), f"target {i}")
        boxes = t["boxes"]
        if not isinstance(boxes, Tensor) or not boxes.is_floating_point():
            raise ValueError(f"target {i} 'boxes': expected a float Tensor[1, 4], got "
                             f"{boxes.dtype if isinstance(boxes, Tensor) else type(boxes).__name__}")
        if boxes.dim() != 2 or boxes.shape[1] != 4:
            raise ValueError(f"target {i} 'boxes': expected shape [1, 4], got {list(boxes.shape)}")
        if boxes.shape[0] != 1:
            raise ValueError(f"target {i} 'boxes': classification & localization needs exactly one object "
                             f"per image, got {boxes.shape[0]} boxes (shape {list(boxes.shape)}); "
                             "use a detector for any other number")
        check_labels(t["labels"], f"target {i}", 1, num_classes)
        if boxes.device.type == "cpu":
            x1, y1, x2, y2 = boxes[0].tolist()
            if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
                raise ValueError(f"target {i} 'boxes': expected finite values, got {[x1, y1, x2, y2]}")
            if not (0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height):
                raise ValueError(f"target {i} 'boxes': expected xyxy inside the {width}x{height} image "
                                 f"(0 <= x1 < x2 <= {width}, 0 <= y1 < y2 <= {height}), got {[x1, y1, x2, y2]}")


def check_semantic_targets(targets, batch_size: int, image_size: tuple[int, int], num_classes: int) -> None:
    """Raise ValueError, naming the image and the key, unless ``targets`` is a list of
    ``batch_size`` dicts, each with "semantic" int64 Tensor[H, W] (the images' size) of classes
    0..C, or :data:`IGNORE_INDEX` for pixels left out."""
    _check_list(targets, batch_size)
    for i, t in enumerate(targets):
        check_target_dict(t, ("semantic",), f"target {i}")
        s = t["semantic"]
        if not isinstance(s, Tensor) or s.dtype != torch.int64:
            raise ValueError(f"target {i} 'semantic': expected an int64 Tensor[H, W], got "
                             f"{s.dtype if isinstance(s, Tensor) else type(s).__name__}")
        if tuple(s.shape) != tuple(image_size):
            raise ValueError(f"target {i} 'semantic': expected the image's size {list(image_size)}, "
                             f"got {list(s.shape)}")
        if s.device.type == "cpu":
            check_classes(s, f"target {i} 'semantic'", num_classes + 1, IGNORE_INDEX)


# ----------------------------------------------------------------------------- the one entry point
def prepare_batch(images, targets, training: bool, num_classes: int, task: str = "detection"
                  ) -> tuple[Tensor, list[dict] | None]:
    """What every model's ``forward`` does first: check the images and, in train mode, the
    targets that ``task`` needs.

    Args:
        images: Tensor[B, 3, H, W] float, or a list of equal-size Tensor[3, H, W].
        targets: one dict per image (train mode; ignored in eval mode).
        training: the model's ``self.training``.
        num_classes: C, labels 1..C.
        task: "detection" (boxes, labels), "instance" (and masks), "single_object" (exactly one
            box inside the image, and its label) or "semantic" (a class map).
    Returns:
        (images Tensor[B, 3, H, W], the targets in train mode or None in eval mode). Detection
        and instance targets that carry COCO's "iscrowd" come back with their crowd regions
        moved to "crowd_boxes" (:func:`lessons_pkg.crowd.split_crowd`).
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose from {sorted(TASKS)}")
    images = check_images(images)
    if not training:
        return images, None
    if targets is None:
        keys = ", ".join(repr(k) for k in TASKS[task])
        raise ValueError(f"in train mode the model needs targets (a list of dicts with {keys}, one per image)")
    batch_size, image_size = len(images), tuple(images.shape[-2:])
    if task == "single_object":
        check_single_object_targets(targets, batch_size, image_size, num_classes)
    elif task == "semantic":
        check_semantic_targets(targets, batch_size, image_size, num_classes)
    else:
        check_detection_targets(targets, batch_size, num_classes)
        if task == "instance":
            check_mask_targets(targets, image_size)
        for i, t in enumerate(targets):
            check_per_object(t, ("iscrowd", "area"), len(t["boxes"]), f"target {i}")
        # COCO's crowd regions: out of the positives, into "crowd_boxes" (never hard background)
        return images, [crowd.split_crowd(t) for t in targets]
    return images, list(targets)
