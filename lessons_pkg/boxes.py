"""Box primitives: formats, areas, IoU, clipping and the R-CNN box deltas.

Written from scratch with the signatures and semantics of ``torchvision.ops`` (the tests use
torchvision as the oracle), so a reader can swap one for the other.

Shape key
    N, M   number of boxes in the first and second set
    ...    any leading batch dimensions
    xyxy   (x1, y1, x2, y2): top-left and bottom-right corners, absolute pixels, y points down
    xywh   (x1, y1, w, h);   cxcywh: (cx, cy, w, h)
Coordinates are continuous: the box (0, 0, 10, 10) has width 10 and area 100 (no "+ 1").

Validation: shapes, formats and thresholds are checked always (that is free). Finiteness is
checked on CPU tensors only: ``torch.isfinite(x).all()`` on a CUDA tensor waits for the GPU
(a host-device sync) in every call. The ops that synchronise anyway (NMS, RoI ops) fold the
check into a sync they already pay; see ``lessons_pkg.ops``.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "box_convert", "box_area", "box_iou", "generalized_box_iou", "clip_boxes_to_image",
    "remove_small_boxes", "encode_boxes", "decode_boxes",
]

FORMATS = ("xyxy", "xywh", "cxcywh")


# ----------------------------------------------------------------------------- validation
def check_boxes(boxes: Tensor, name: str = "boxes", ndim: int | None = None,
                width: int = 4, finite: bool = True) -> None:
    """Raise ValueError unless ``boxes`` is a Tensor[..., width] (exactly ``ndim`` dims if
    given) with finite values (checked on CPU only, see the module docstring)."""
    if not isinstance(boxes, Tensor):
        raise ValueError(f"{name} must be a Tensor, got {type(boxes).__name__}")
    shape = "N" if ndim == 2 else "..., N" if ndim is None else "?"
    if boxes.dim() < 1 or boxes.shape[-1] != width or (ndim is not None and boxes.dim() != ndim):
        raise ValueError(f"{name} must have shape [{shape}, {width}], got {list(boxes.shape)}")
    if finite:
        check_finite(boxes, name)


def check_finite(x: Tensor, name: str) -> None:
    """Raise ValueError if a CPU tensor holds NaN or inf (a no-op on other devices)."""
    if x.device.type == "cpu" and x.is_floating_point() and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} must be finite, got NaN or inf in a tensor of shape "
                         f"{list(x.shape)}")


def _check_format(fmt: str, name: str) -> None:
    if fmt not in FORMATS:
        raise ValueError(f"{name} must be one of {FORMATS}, got {fmt!r}")


def _upcast(t: Tensor) -> Tensor:
    # Products of int16/float16 coordinates overflow or lose precision: compute wider.
    if t.is_floating_point():
        return t if t.dtype in (torch.float32, torch.float64) else t.float()
    return t if t.dtype in (torch.int32, torch.int64) else t.int()


# ----------------------------------------------------------------------------- formats
def box_convert(boxes: Tensor, in_fmt: str, out_fmt: str) -> Tensor:
    """Convert boxes between ``"xyxy"``, ``"xywh"`` and ``"cxcywh"``.

    Args:
        boxes (Tensor[..., 4]): boxes in ``in_fmt``.
        in_fmt, out_fmt (str): one of ``"xyxy"``, ``"xywh"``, ``"cxcywh"``.
    Returns:
        Tensor[..., 4] in ``out_fmt`` (a new tensor, also when the formats are equal).
    """
    _check_format(in_fmt, "in_fmt")
    _check_format(out_fmt, "out_fmt")
    check_boxes(boxes)
    if in_fmt == out_fmt:
        return boxes.clone()
    # Every conversion goes through xyxy: two small steps instead of six special cases.
    a, b, c, d = boxes.unbind(-1)
    if in_fmt == "xywh":
        a, b, c, d = a, b, a + c, b + d
    elif in_fmt == "cxcywh":
        a, b, c, d = a - 0.5 * c, b - 0.5 * d, a + 0.5 * c, b + 0.5 * d
    if out_fmt == "xywh":
        a, b, c, d = a, b, c - a, d - b
    elif out_fmt == "cxcywh":
        a, b, c, d = (a + c) / 2, (b + d) / 2, c - a, d - b
    return torch.stack((a, b, c, d), dim=-1)


def box_area(boxes: Tensor, fmt: str = "xyxy") -> Tensor:
    """Areas of boxes.

    Args:
        boxes (Tensor[..., 4]): boxes in ``fmt``.
    Returns:
        Tensor[...]: width * height (negative for boxes with x2 < x1 in xyxy; not clamped).
    """
    _check_format(fmt, "fmt")
    check_boxes(boxes)
    boxes = _upcast(boxes)
    if fmt == "xyxy":
        return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
    return boxes[..., 2] * boxes[..., 3]


# ----------------------------------------------------------------------------- overlaps
def _columns(boxes: Tensor, inner: bool) -> list[Tensor]:
    """x1, y1, x2, y2 as Tensor[..., N, 1] (outer set) or contiguous Tensor[..., 1, M] (inner
    set). Broadcasting over contiguous columns vectorizes; strided ones run 2-3x slower."""
    cols = _upcast(boxes).unbind(-1)
    return [c.contiguous()[..., None, :] if inner else c[..., :, None] for c in cols]


def _inter_union(boxes1: Tensor, boxes2: Tensor) -> tuple[Tensor, Tensor]:
    """xyxy Tensor[..., N, 4], Tensor[..., M, 4] -> intersection and union, Tensor[..., N, M]."""
    ax1, ay1, ax2, ay2 = _columns(boxes1, inner=False)
    bx1, by1, bx2, by2 = _columns(boxes2, inner=True)
    w = torch.min(ax2, bx2).sub_(torch.max(ax1, bx1)).clamp_(min=0)
    h = torch.min(ay2, by2).sub_(torch.max(ay1, by1)).clamp_(min=0)
    inter = w.mul_(h)
    return inter, ((ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1)).sub_(inter)


def box_iou(boxes1: Tensor, boxes2: Tensor, fmt: str = "xyxy") -> Tensor:
    """Pairwise intersection over union (Jaccard index).

    Args:
        boxes1 (Tensor[..., N, 4]): in ``fmt``, absolute pixels.
        boxes2 (Tensor[..., M, 4]): in ``fmt``, absolute pixels.
        fmt (str): ``"xyxy"``, ``"xywh"`` or ``"cxcywh"``.
    Returns:
        Tensor[..., N, M] with values in [0, 1] (NaN for two empty boxes: 0 / 0).
    """
    _check_format(fmt, "fmt")
    check_boxes(boxes1, "boxes1")
    check_boxes(boxes2, "boxes2")
    if fmt != "xyxy":
        boxes1, boxes2 = box_convert(boxes1, fmt, "xyxy"), box_convert(boxes2, fmt, "xyxy")
    inter, union = _inter_union(boxes1, boxes2)
    return inter.div_(union) if inter.is_floating_point() else inter / union


def generalized_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise generalized IoU: IoU - (hull - union) / hull, where hull is the area of the
    smallest box enclosing both.

    Args:
        boxes1 (Tensor[..., N, 4]): xyxy with x1 <= x2, y1 <= y2.
        boxes2 (Tensor[..., M, 4]): xyxy with x1 <= x2, y1 <= y2.
    Returns:
        Tensor[..., N, M] with values in [-1, 1].
    """
    check_boxes(boxes1, "boxes1")
    check_boxes(boxes2, "boxes2")
    inter, union = _inter_union(boxes1, boxes2)
    ax1, ay1, ax2, ay2 = _columns(boxes1, inner=False)
    bx1, by1, bx2, by2 = _columns(boxes2, inner=True)
    hull = (torch.max(ax2, bx2) - torch.min(ax1, bx1)).clamp_(min=0) \
        * (torch.max(ay2, by2) - torch.min(ay1, by1)).clamp_(min=0)
    return inter / union - (hull - union) / hull


# ----------------------------------------------------------------------------- image bounds
def box_ioa(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise intersection over the area of the first box (how much of each box of
    ``boxes1`` lies inside each of ``boxes2``: COCO's overlap with a crowd region, Detectron2's
    ``pairwise_ioa``).

    Args:
        boxes1 (Tensor[..., N, 4]), boxes2 (Tensor[..., M, 4]): xyxy, absolute pixels.
    Returns:
        Tensor[..., N, M] in [0, 1] (NaN for an empty box of ``boxes1``: 0 / 0).
    """
    check_boxes(boxes1, "boxes1")
    check_boxes(boxes2, "boxes2")
    inter, _ = _inter_union(boxes1, boxes2)
    return inter / box_area(boxes1)[..., :, None]


def clip_boxes_to_image(boxes: Tensor, size: tuple[int, int]) -> Tensor:
    """Clamp xyxy boxes into an image.

    Args:
        boxes (Tensor[..., 4]): xyxy, absolute pixels.
        size (tuple[int, int]): (height, width) of the image.
    Returns:
        Tensor[..., 4] with 0 <= x <= width and 0 <= y <= height.
    """
    check_boxes(boxes)
    if len(size) != 2:
        raise ValueError(f"size must be (height, width), got {size!r}")
    height, width = size
    x = boxes[..., 0::2].clamp(min=0, max=width)
    y = boxes[..., 1::2].clamp(min=0, max=height)
    return torch.stack((x, y), dim=-1).reshape(boxes.shape)


def remove_small_boxes(boxes: Tensor, min_size: float) -> Tensor:
    """Indices of the boxes whose width and height are both >= ``min_size``.

    Args:
        boxes (Tensor[..., 4]): xyxy.
    Returns:
        Tensor[K] int64 indices, ascending.
    """
    check_boxes(boxes)
    ws, hs = boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]
    return torch.where((ws >= min_size) & (hs >= min_size))[0]


# ----------------------------------------------------------------------------- R-CNN deltas
def _centers_sizes(boxes: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    w = boxes[..., 2] - boxes[..., 0]
    h = boxes[..., 3] - boxes[..., 1]
    return boxes[..., 0] + 0.5 * w, boxes[..., 1] + 0.5 * h, w, h


def _check_weights(weights) -> tuple[float, float, float, float]:
    if len(weights) != 4:
        raise ValueError(f"weights must have 4 entries (wx, wy, ww, wh), got {len(weights)}")
    return tuple(float(w) for w in weights)


def encode_boxes(gt: Tensor, anchors: Tensor, weights=(10.0, 10.0, 5.0, 5.0)) -> Tensor:
    """R-CNN regression targets of ground-truth boxes relative to their anchors.

    dx = wx (gx - ax) / aw,  dy = wy (gy - ay) / ah,  dw = ww log(gw / aw),  dh = wh log(gh / ah)
    with (x, y) box centres and (w, h) sizes. Inverse of :func:`decode_boxes`.

    Args:
        gt (Tensor[..., 4]): xyxy target boxes, absolute pixels.
        anchors (Tensor[..., 4]): xyxy anchors (or proposals) with positive sizes, same shape.
        weights: (wx, wy, ww, wh); larger weights give larger deltas (a loss-scale knob).
    Returns:
        Tensor[..., 4] deltas (dx, dy, dw, dh).
    """
    check_boxes(gt, "gt")
    check_boxes(anchors, "anchors")
    if gt.shape != anchors.shape:
        raise ValueError(f"gt and anchors must have the same shape, got {list(gt.shape)} "
                         f"and {list(anchors.shape)}")
    wx, wy, ww, wh = _check_weights(weights)
    ax, ay, aw, ah = _centers_sizes(anchors)
    gx, gy, gw, gh = _centers_sizes(gt)
    return torch.stack((wx * (gx - ax) / aw, wy * (gy - ay) / ah,
                        ww * torch.log(gw / aw), wh * torch.log(gh / ah)), dim=-1)


def decode_boxes(deltas: Tensor, anchors: Tensor, weights=(10.0, 10.0, 5.0, 5.0),
                 bbox_xform_clip: float = math.log(1000.0 / 16)) -> Tensor:
    """Apply R-CNN deltas to anchors: the inverse of :func:`encode_boxes`.

    dw and dh are clamped at ``bbox_xform_clip`` before ``exp`` so that an untrained head
    cannot produce inf-sized boxes (a box at most 1000/16 times its anchor, as in
    torchvision's ``BoxCoder``).

    Args:
        deltas (Tensor[..., 4]): (dx, dy, dw, dh).
        anchors (Tensor[..., 4]): xyxy, absolute pixels, broadcastable to ``deltas``.
    Returns:
        Tensor[..., 4] xyxy boxes, ``decode_boxes(encode_boxes(g, a), a) == g`` up to rounding.
    """
    check_boxes(deltas, "deltas")
    check_boxes(anchors, "anchors")
    wx, wy, ww, wh = _check_weights(weights)
    anchors = anchors.to(deltas.dtype)
    ax, ay, aw, ah = _centers_sizes(anchors)
    dx, dy, dw, dh = deltas.unbind(-1)
    dw = torch.clamp(dw / ww, max=bbox_xform_clip)
    dh = torch.clamp(dh / wh, max=bbox_xform_clip)
    cx, cy = dx / wx * aw + ax, dy / wy * ah + ay
    half_w, half_h = 0.5 * (torch.exp(dw) * aw), 0.5 * (torch.exp(dh) * ah)
    return torch.stack((cx - half_w, cy - half_h, cx + half_w, cy + half_h), dim=-1)
