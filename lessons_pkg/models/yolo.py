"""YOLO (v1): detection as one regression from the image to a grid of boxes and class scores.

R-CNN's family first proposes regions, then classifies each. YOLO (Redmon et al. 2016) looks
once: the network cuts the image into an S x S grid and, at every cell, predicts K boxes, each
with a confidence, and one class distribution shared by the cell. One forward pass, no
proposals, no anchors:

  1. backbone: image -> feature map (the course's residual backbone, stride 16: a 128-pixel
     image gives an 8 x 8 grid of 16-pixel cells);
  2. head: a few convolutions, then a 1x1 conv to K * 5 + C numbers per cell. The paper ends
     with two fully connected layers over a 7 x 7 x 1024 map (its section 2.1), so each cell's
     numbers are computed from the whole image. The convolutional head keeps the output
     layout, S x S x (K * 5 + C), not that: a cell sees its receptive field only (151 pixels
     wide with the course's backbone, so on a 128-pixel image only the cells near the centre
     reach every pixel), with fewer weights and at any image size;
  3. training (:func:`encode_targets`, :func:`yolo_loss`): each object belongs to the cell
     that holds its centre; of that cell's K predictors, the one whose box overlaps the object
     most is *responsible* for it; a sum-squared loss pulls the responsible box onto the object
     and its confidence onto that IoU, every other confidence onto 0, and the cell's class
     probabilities onto the one-hot class;
  4. test time (:func:`postprocess`): score = confidence x P(class), threshold, per-class
     NMS, the best detections.

One limit comes with the grid: a cell holds one class distribution, so it describes one
object. When two objects' centres fall in one cell, :func:`encode_targets` keeps the larger
and the other is never learned (:func:`dropped_objects` counts them). The paper names the
limit: the model "struggles with small objects that appear in groups" (its section 2.4);
YOLOv2 predicts a class for every anchor box, so one cell can hold several objects.

Parametrization of predictor k in cell (i, j) (row i, column j), from its raw outputs
(tx, ty, tw, th, tc):
    x, y = sigmoid(tx), sigmoid(ty)  the box centre inside the cell, 0..1
    cx = (j + x) W / S_w, cy = (i + y) H / S_h      (pixels)
    sqrt(w / W) = sigmoid(tw), sqrt(h / H) = sigmoid(th)  the paper's square roots: the same
        error costs a small box more than a large one
    confidence = sigmoid(tc), trained towards the IoU of the box with its object
and the cell's class probabilities = softmax of its C class logits.

Shape key
    B   images                     H, W   image size in pixels (multiples of the stride)
    S_h, S_w  grid (H / stride, W / stride)
    K   predictors (boxes) per cell: the paper's "B", renamed since B is the batch here
    C   object classes, labels 1..C; class index c = label - 1
    N   predictors of an image, S_h * S_w * K, ordered (row i, column j, predictor k):
        index (i S_w + j) K + k
Raw outputs are Tensor[B, S_h, S_w, K * 5 + C]: predictor k's (tx, ty, tw, th, tc) in
channels 5k..5k+4, the class logits in the last C. Boxes are xyxy in image pixels.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import boxes as box_ops
from .. import crowd, ops
from ..batching import any_size
from ..inputs import prepare_batch
from .backbone import build_backbone
from .configs import check_num_classes, resolve_config


# ----------------------------------------------------------------------------- settings
@dataclass
class YOLOConfig:
    """Settings of a :class:`YOLO` (the paper's values, except the grid: stride 16 instead
    of a 7 x 7 grid over 448 pixels)."""

    stride: int = 16                  # image pixels per grid cell (the backbone's stride)
    boxes_per_cell: int = 2           # K (the paper's B)
    head_channels: int = 256          # width of the head's two 3x3 convolutions
    lambda_coord: float = 5.0         # weight of the box coordinates
    lambda_noobj: float = 0.5         # weight of the confidences that should be 0
    score_threshold: float = 0.05     # test time, on confidence x P(class)
    nms_threshold: float = 0.5
    detections_per_image: int = 100

    def __post_init__(self):
        for name in ("stride", "boxes_per_cell", "head_channels", "detections_per_image"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("lambda_coord", "lambda_noobj"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("score_threshold", "nms_threshold"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")


# ----------------------------------------------------------------------------- the head
class YOLOHead(nn.Module):
    """Two 3x3 conv-BN-LeakyReLU(0.1) layers, then a 1x1 conv to K * 5 + C channels.

    features Tensor[B, D, S_h, S_w] -> raw outputs Tensor[B, S_h, S_w, K * 5 + C].
    """

    def __init__(self, in_channels: int, num_classes: int, boxes_per_cell: int = 2, channels: int = 256):
        super().__init__()
        layers = []
        for c_in in (in_channels, channels):
            layers += [nn.Conv2d(c_in, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels),
                       nn.LeakyReLU(0.1, inplace=True)]
        self.conv = nn.Sequential(*layers)
        self.predict = nn.Conv2d(channels, boxes_per_cell * 5 + num_classes, 1)
        nn.init.normal_(self.predict.weight, std=0.01)  # start from the same guess everywhere:
        nn.init.zeros_(self.predict.bias)               # centred, 32-px boxes, confidence 0.5

    def forward(self, features: Tensor) -> Tensor:
        return self.predict(self.conv(features)).permute(0, 2, 3, 1)


# ----------------------------------------------------------------------------- targets
def _assign(targets: list[dict], grid_size: tuple[int, int], image_size: tuple[int, int]):
    """Every object of the batch, the cell holding its centre, and whether it keeps that cell.

    Returns (batch index int64[G], flat cell index int64[G] over B * S_h * S_w, kept bool[G],
    boxes Tensor[G, 4], labels int64[G]) for the G objects of all images, image after image.
    In a cell claimed by several objects the largest box wins, the first listed on equal areas.
    """
    (s_h, s_w), (height, width) = grid_size, image_size
    ref = targets[0]["boxes"]
    boxes = torch.cat([t["boxes"] for t in targets]).to(ref.device)
    labels = torch.cat([t["labels"] for t in targets]).to(ref.device)
    batch = torch.cat([torch.full((len(t["boxes"]),), i, dtype=torch.int64, device=ref.device)
                       for i, t in enumerate(targets)])
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    col = (cx * s_w / width).floor().long().clamp(0, s_w - 1)
    row = (cy * s_h / height).floor().long().clamp(0, s_h - 1)
    cell = (batch * s_h + row) * s_w + col
    # Rank the objects by decreasing area (stable: ties keep their order); each cell keeps the
    # object of lowest rank. scatter_reduce is deterministic, and nothing waits for the device.
    order = torch.argsort(-box_ops.box_area(boxes), stable=True)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order), device=order.device)
    best = torch.full((len(targets) * s_h * s_w,), len(order), dtype=torch.int64, device=ref.device)
    best = best.scatter_reduce(0, cell, rank, reduce="amin")
    return batch, cell, rank == best[cell], boxes, labels


def dropped_objects(targets: list[dict], grid_size: tuple[int, int], image_size: tuple[int, int]) -> list[Tensor]:
    """Which objects the one-object-per-cell rule drops: one bool Tensor[G_i] per image, True
    for an object whose centre shares its cell with a larger one (see :func:`encode_targets`)."""
    _, _, kept, _, _ = _assign(targets, grid_size, image_size)
    return list((~kept).split([len(t["boxes"]) for t in targets]))


def encode_targets(targets: list[dict], grid_size: tuple[int, int], image_size: tuple[int, int]) -> dict[str, Tensor]:
    """The targets of a batch as dense grids, one object per cell at most.

    Each object belongs to the cell (i, j) holding its box centre. When several centres fall
    in one cell, the largest box is kept (the first listed on equal areas) and the others are
    dropped: YOLOv1 predicts one class per cell, so it cannot learn them.

    Args:
        targets: one dict per image with "boxes" Tensor[G_i, 4] (xyxy pixels) and "labels"
            int64[G_i] in 1..C (G_i = 0 allowed).
        grid_size: (S_h, S_w).  image_size: (H, W).
    Returns:
        {"mask": bool[B, S_h, S_w], True in the cells that hold an object,
        "target": Tensor[B, S_h, S_w, 4], (x, y, sqrt(w / W), sqrt(h / H)) of the cell's object,
            x, y its centre's offset in the cell, 0..1 (clamped for a centre outside the image),
        "boxes": Tensor[B, S_h, S_w, 4], the object's box, xyxy pixels,
        "classes": int64[B, S_h, S_w], its class index label - 1 (-1 in empty cells),
        "num_dropped": int64[B], objects dropped per image}.
        Empty cells hold zeros in "target" and "boxes".
    """
    (s_h, s_w), (height, width) = grid_size, image_size
    batch, cell, kept, boxes, labels = _assign(targets, grid_size, image_size)
    n_cells = len(targets) * s_h * s_w
    # Dropped objects write into one extra "trash" row, cut off at the end: no boolean indexing,
    # so no wait for the device, and each real cell is written once.
    where = torch.where(kept, cell, n_cells)
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    col, row = cell % s_w, (cell // s_w) % s_h
    target = torch.stack([(cx * s_w / width - col).clamp(0, 1), (cy * s_h / height - row).clamp(0, 1),
                          ((boxes[:, 2] - boxes[:, 0]) / width).clamp(0, 1).sqrt(),
                          ((boxes[:, 3] - boxes[:, 1]) / height).clamp(0, 1).sqrt()], dim=1)

    def grid(values: Tensor, fill) -> Tensor:
        out = values.new_full((n_cells + 1, *values.shape[1:]), fill)
        out[where] = values
        return out[:n_cells].view(len(targets), s_h, s_w, *values.shape[1:])

    num_dropped = torch.zeros(len(targets), dtype=torch.int64, device=boxes.device)
    return {"mask": grid(torch.ones_like(kept), False), "target": grid(target, 0.0), "boxes": grid(boxes, 0.0),
            "classes": grid(labels - 1, -1), "num_dropped": num_dropped.index_add_(0, batch, (~kept).long())}


# ----------------------------------------------------------------------------- outputs
def split_outputs(raw: Tensor, boxes_per_cell: int = 2) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Raw outputs Tensor[B, S_h, S_w, K * 5 + C] -> (xy Tensor[B, S_h, S_w, K, 2] offsets in
    the cell, sqrt_wh Tensor[B, S_h, S_w, K, 2], confidences Tensor[B, S_h, S_w, K],
    class probabilities Tensor[B, S_h, S_w, C]), after their sigmoids and softmax."""
    k = boxes_per_cell
    if not isinstance(raw, Tensor) or raw.dim() != 4 or raw.shape[-1] <= 5 * k:
        got = list(raw.shape) if isinstance(raw, Tensor) else type(raw).__name__
        raise ValueError(f"raw outputs must be a Tensor[B, S_h, S_w, K * 5 + C] with K = {k} and C >= 1, got {got}")
    per_box = raw[..., :5 * k].unflatten(-1, (k, 5)).sigmoid()
    return per_box[..., 0:2], per_box[..., 2:4], per_box[..., 4], raw[..., 5 * k:].softmax(dim=-1)


def cell_boxes(xy: Tensor, sqrt_wh: Tensor, image_size: tuple[int, int]) -> Tensor:
    """Offsets in the cell and square-rooted sizes (Tensor[B, S_h, S_w, K, 2] each) -> boxes
    Tensor[B, S_h, S_w, K, 4], xyxy pixels."""
    s_h, s_w = xy.shape[1:3]
    height, width = image_size
    col = torch.arange(s_w, device=xy.device, dtype=xy.dtype)[None, None, :, None]
    row = torch.arange(s_h, device=xy.device, dtype=xy.dtype)[None, :, None, None]
    cx, cy = (col + xy[..., 0]) * (width / s_w), (row + xy[..., 1]) * (height / s_h)
    half_w, half_h = sqrt_wh[..., 0] ** 2 * (width / 2), sqrt_wh[..., 1] ** 2 * (height / 2)
    return torch.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], dim=-1)


def decode_predictions(raw: Tensor, image_size: tuple[int, int], boxes_per_cell: int = 2
                       ) -> tuple[Tensor, Tensor, Tensor]:
    """Raw outputs Tensor[B, S_h, S_w, K * 5 + C] -> every predictor's (boxes Tensor[B, N, 4]
    xyxy pixels, unclipped; confidences Tensor[B, N]; class probabilities Tensor[B, N, C], its
    cell's), N = S_h S_w K in the order of the shape key."""
    xy, sqrt_wh, conf, probs = split_outputs(raw, boxes_per_cell)
    b, s_h, s_w, k = conf.shape
    boxes = cell_boxes(xy, sqrt_wh, image_size).reshape(b, s_h * s_w * k, 4)
    probs = probs[:, :, :, None, :].expand(b, s_h, s_w, k, probs.shape[-1]).reshape(b, s_h * s_w * k, -1)
    return boxes, conf.reshape(b, -1), probs


def raw_from_encoding(encoded: dict[str, Tensor], num_classes: int, boxes_per_cell: int = 2,
                      logit: float = 10.0) -> Tensor:
    """A perfect network's raw outputs for ``encoded`` (a demonstration, and the inverse that
    the tests check): :func:`postprocess` of the result gives back the kept objects.

    In each object cell predictor 0 gets the object's box (logits of the offsets and square
    roots), confidence logit +``logit`` and class logit +``logit``; every other confidence
    gets -``logit``. Returns Tensor[B, S_h, S_w, K * 5 + C].
    """
    mask, target = encoded["mask"], encoded["target"]
    b, s_h, s_w = mask.shape
    k = boxes_per_cell
    raw = target.new_zeros(b, s_h, s_w, k * 5 + num_classes)
    box = torch.logit(target, eps=1e-6) * mask[..., None]
    raw[..., :5 * k] = torch.cat([box, box.new_full((b, s_h, s_w, 1), -logit)], dim=-1).repeat(1, 1, 1, k)
    raw[..., 4] = torch.where(mask, logit, -logit)
    one_hot = F.one_hot(encoded["classes"].clamp(min=0), num_classes) * mask[..., None]
    raw[..., 5 * k:] = logit * one_hot
    return raw


def postprocess(raw: Tensor, image_size: tuple[int, int], config: YOLOConfig | None = None) -> list[dict[str, Tensor]]:
    """Raw outputs -> one dict of detections per image: every (predictor, class) pair is a
    candidate scored confidence x P(class); boxes clipped to the image; candidates scoring at
    most ``score_threshold`` or smaller than 0.01 pixel go; per-class NMS; the best
    ``detections_per_image`` stay.

    Returns [{"boxes": float[M, 4] xyxy pixels, "labels": int64[M] in 1..C, "scores": float[M]}]
    by decreasing score.
    """
    c = config if config is not None else YOLOConfig()
    boxes, conf, probs = decode_predictions(raw, image_size, c.boxes_per_cell)
    boxes = box_ops.clip_boxes_to_image(boxes, image_size)
    scores = conf[..., None] * probs                                            # [B, N, C]
    num_classes = probs.shape[-1]
    labels = torch.arange(1, num_classes + 1, device=raw.device).expand(scores.shape[1], num_classes).reshape(-1)
    detections = []
    for b, s in zip(boxes, scores):          # per image: the number of survivors differs
        b, s = b[:, None, :].expand(-1, num_classes, 4).reshape(-1, 4), s.reshape(-1)
        keep = torch.nonzero(s > c.score_threshold).flatten()
        keep = keep[box_ops.remove_small_boxes(b[keep], 1e-2)]
        keep = keep[ops.batched_nms(b[keep], s[keep], labels[keep], c.nms_threshold)[:c.detections_per_image]]
        detections.append({"boxes": b[keep], "labels": labels[keep], "scores": s[keep]})
    return detections


# ----------------------------------------------------------------------------- the loss
def yolo_loss(raw: Tensor, encoded: dict[str, Tensor], image_size: tuple[int, int],
              config: YOLOConfig | None = None) -> dict[str, Tensor]:
    """The paper's sum-squared loss, summed over the grid and divided by the batch size.

    In each object cell the *responsible* predictor is the one of the K whose decoded box has
    the highest IoU with the object (the first on ties; computed without gradient). Then
        loss_box   = λ_coord Σ_resp [(x - x̂)² + (y - ŷ)² + (√w - √ŵ)² + (√h - √ĥ)²]
        loss_obj   = Σ_resp (conf - IoU)²  the target is the responsible box's own IoU, detached
        loss_noobj = λ_noobj Σ_others conf²  every other predictor, object cells included
        loss_cls   = Σ_object cells Σ_c (P(c) - 1[c = class])²
    Without objects, loss_box, loss_obj and loss_cls are exactly 0 (and still in the graph).

    Args:
        raw (Tensor[B, S_h, S_w, K * 5 + C]); encoded: :func:`encode_targets` of the batch,
            optionally with "ignore" bool[B, S_h, S_w]: cells left out of loss_noobj (inside a
            crowd region, :mod:`lessons_pkg.crowd`).
        image_size: (H, W).  config: λ_coord, λ_noobj and K.
    Returns:
        {"loss_box", "loss_obj", "loss_noobj", "loss_cls"}, scalars.
    """
    c = config if config is not None else YOLOConfig()
    xy, sqrt_wh, conf, probs = split_outputs(raw, c.boxes_per_cell)
    mask = encoded["mask"]
    if mask.shape != raw.shape[:3]:
        raise ValueError(f"the encoding's grid {list(mask.shape)} does not match the outputs' {list(raw.shape[:3])}")
    target, gt = encoded["target"].to(raw.dtype), encoded["boxes"].to(raw.dtype)
    with torch.no_grad():
        pred = cell_boxes(xy, sqrt_wh, image_size)                                  # [B, S_h, S_w, K, 4]
        iou = box_ops.box_iou(pred, gt[..., None, :])[..., 0].nan_to_num(0.0)      # [B, S_h, S_w, K]
        best = iou.argmax(dim=-1, keepdim=True)
        responsible = torch.zeros_like(conf, dtype=torch.bool).scatter_(-1, best, True) & mask[..., None]
    resp = responsible.to(raw.dtype)
    coord = ((xy - target[..., None, :2]) ** 2 + (sqrt_wh - target[..., None, 2:]) ** 2).sum(-1)
    # A comparison, not F.one_hot (which may read the classes back to check them): -1 matches nothing.
    classes = torch.arange(probs.shape[-1], device=raw.device)
    one_hot = (encoded["classes"][..., None] == classes).to(raw.dtype)
    batch = raw.shape[0]
    noobj = 1 - resp
    if "ignore" in encoded:    # cells inside a crowd region: not told they are empty
        noobj = noobj * (~encoded["ignore"][..., None]).to(raw.dtype)
    return {"loss_box": c.lambda_coord * (resp * coord).sum() / batch,
            "loss_obj": (resp * (conf - iou) ** 2).sum() / batch,
            "loss_noobj": c.lambda_noobj * (noobj * conf ** 2).sum() / batch,
            "loss_cls": (mask[..., None] * (probs - one_hot) ** 2).sum() / batch}


# ----------------------------------------------------------------------------- the model
class YOLO(nn.Module):
    """Backbone + :class:`YOLOHead`, in the one model contract (README).

    ``model(images, targets)`` in train mode: {"loss_box", "loss_obj", "loss_noobj",
    "loss_cls"} (see :func:`yolo_loss`). ``model(images)`` in eval mode: one dict per image
    with "boxes" float[M, 4] (xyxy pixels, clipped), "labels" int64[M] (1..C) and
    "scores" float[M]. Image sides must be multiples of the stride (16).

    Args:
        num_classes: C, labels 1..C.
        pretrained_backbone: None (random), True (the committed ``data/pretrained/backbone.pt``)
            or the path of a checkpoint of ``python -m lessons_pkg.pretrain``.
        config: a :class:`YOLOConfig`, or its fields as keyword ``settings``.
    """

    def __init__(self, num_classes: int = 4, pretrained_backbone=None, config: YOLOConfig | None = None,
                 **settings):
        super().__init__()
        check_num_classes(num_classes)
        self.num_classes = num_classes
        self.config = c = resolve_config(YOLOConfig, config, settings)
        self.backbone = build_backbone(pretrained_backbone)
        if c.stride != self.backbone.stride:
            raise ValueError(f"the config's stride ({c.stride}) must be the backbone's ({self.backbone.stride})")
        self.head = YOLOHead(self.backbone.out_channels, num_classes, c.boxes_per_cell, c.head_channels)

    @any_size
    def forward(self, images, targets: list[dict[str, Tensor]] | None = None):
        """Training: returns {"loss_box", "loss_obj", "loss_noobj", "loss_cls"}.
        Eval: returns one dict per image with "boxes", "labels", "scores"."""
        images, targets = prepare_batch(images, targets, self.training, self.num_classes)
        image_size = tuple(images.shape[-2:])
        stride = self.config.stride
        if image_size[0] % stride or image_size[1] % stride:
            raise ValueError(f"YOLO needs an image height and width that are multiples of the stride "
                             f"{stride} (one grid cell per {stride}x{stride} pixels), got "
                             f"{image_size[0]}x{image_size[1]}; resize or pad the images")
        raw = self.head(self.backbone(images))
        if not self.training:
            return postprocess(raw, image_size, self.config)
        encoded = encode_targets(targets, tuple(raw.shape[1:3]), image_size)
        in_crowd = crowd.cells_inside_crowd(targets, tuple(raw.shape[1:3]), image_size)
        if in_crowd is not None:   # no "this cell is empty" inside a crowd region
            encoded["ignore"] = in_crowd & ~encoded["mask"]
        return yolo_loss(raw, encoded, image_size, self.config)
