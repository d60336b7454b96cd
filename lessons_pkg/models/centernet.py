"""CenterNet ("Objects as Points", Zhou et al. 2019): detection without anchors and without NMS.

Every detector of the course so far enumerates boxes (windows, proposals, anchors, default
boxes) and then removes duplicates with non-maximum suppression. CenterNet predicts, at every
cell of a stride-4 map, how likely each class's object *centre* is there (a heatmap), and, at
the centre, the object's width and height and the sub-cell offset of the centre:

  1. backbone: the course's residual network; its stride-16, 8 and 4 maps are merged top-down
     (upsample, add the finer map through a 1x1 conv) into one stride-4 map;
  2. heads: three small conv heads on it: heatmap logits (C channels), size (2: w, h in cells
     of the map, pixels / R) and offset (2: the centre's position inside its cell, 0..1);
  3. training (:func:`encode_targets`, :func:`centernet_loss`): each object puts a Gaussian
     bump of peak 1 on its class's heatmap at its centre cell, its radius that of CenterNet's
     code (:func:`centernet_radius`, about 0.27 of a square object's side; the rule it is said
     to solve, :func:`gaussian_radius`, gives about 0.08 of it); a penalty-reduced
     focal loss pulls the heatmap there, and L1 losses pull size and offset, at the centres only;
  4. test time (:func:`decode`): a cell whose heatmap value is the maximum of its 3 x 3
     neighbourhood is a peak, and each peak is a detection: a 3 x 3 max-pool replaces NMS.

Shape key
    B   images                      H, W   image size in pixels (any: padded to a multiple of 16)
    C   object classes, labels 1..C; heatmap channel c = label - 1
    h, w  the output map, H / 4 x W / 4 (R = 4, the output stride)
    N   objects of an image;  K  peaks kept per image (``detections_per_image``)
Boxes are xyxy in image pixels.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import crowd, ops
from ..batching import any_size
from ..inputs import prepare_batch
from .backbone import build_backbone
from .configs import check_num_classes, resolve_config

STRIDE = 4  # R: the output map's stride


@dataclass
class CenterNetConfig:
    """The settings of a :class:`CenterNet` (the paper's defaults where they apply)."""

    channels: int = 64              # width of the merged stride-4 map and of the heads
    size_weight: float = 0.1        # λ_size
    offset_weight: float = 1.0      # λ_off
    min_overlap: float = 0.7        # the IoU a box displaced by the Gaussian's radius keeps
    alpha: float = 2.0              # focal loss exponents (the paper's α, β)
    beta: float = 4.0
    score_threshold: float = 0.05
    detections_per_image: int = 100
    peak_kernel: int = 3            # the max-pool that finds peaks; 1 keeps every cell (then NMS is needed)
    # where size and offset are regressed: "centre" (CenterNet: the centre cell of each object
    # only) or "gaussian" (every cell of the object's bump, weighted by the bump's value: TTFNet,
    # Liu et al. 2020, who measured that one sample per object is what makes CenterNet slow to train)
    regression: str = "centre"

    def __post_init__(self):
        if self.regression not in ("centre", "gaussian"):
            raise ValueError(f"regression must be 'centre' or 'gaussian', got {self.regression!r}")
        if self.channels < 1:
            raise ValueError(f"channels must be >= 1, got {self.channels}")
        if not 0 < self.min_overlap < 1:
            raise ValueError(f"min_overlap must be in (0, 1), got {self.min_overlap}")
        if self.peak_kernel < 1 or self.peak_kernel % 2 == 0:
            raise ValueError(f"peak_kernel must be odd and >= 1, got {self.peak_kernel}")
        if self.detections_per_image < 1:
            raise ValueError(f"detections_per_image must be >= 1, got {self.detections_per_image}")


# ----------------------------------------------------------------------------- targets
def gaussian_radius(height: Tensor, width: Tensor, min_overlap: float = 0.7) -> Tensor:
    """The largest r such that moving a box's corners by r keeps IoU >= t = ``min_overlap`` with
    the box, in each of CornerNet's three cases, for Tensor[N] heights and widths:

        both corners the same way (a shift by (r, r)): (w - r)(h - r) / (2wh - (w - r)(h - r)) >= t
        both inwards (the box shrinks by 2r):           (w - 2r)(h - 2r) / wh >= t
        both outwards (the box grows by 2r):            wh / ((w + 2r)(h + 2r)) >= t

    each the smaller root of its quadratic (the larger one of the third), and the smallest of
    the three. At t = 0.7 it is small: about 1 cell for a 12 x 12-cell object.
    """
    h, w = height.double(), width.double()
    t = min_overlap
    s, p = h + w, h * w
    shift = (s - torch.sqrt(s ** 2 - 4 * p * (1 - t) / (1 + t))) / 2
    shrink = (s - torch.sqrt(s ** 2 - 4 * p * (1 - t))) / 4
    grow = (-s + torch.sqrt(s ** 2 + 4 * p * (1 - t) / t)) / 4
    return torch.minimum(torch.minimum(shift, shrink), grow).to(height.dtype)


def centernet_radius(height: Tensor, width: Tensor, min_overlap: float = 0.7) -> Tensor:
    """The radius CornerNet's and CenterNet's published code computes for the same three cases,
    and the one their results (and this module's targets) rest on. It writes each root as
    (b + sqrt(b² - 4ac)) / 2, without the division by a and with the larger root, so it is not
    the rule of :func:`gaussian_radius`: for a 12 x 12-cell object it gives 3.3 cells where the
    rule gives 1.0 (about 0.27 of a square object's side, at any size). Taken as it is, as
    the papers' numbers were obtained with it."""
    h, w = height.double(), width.double()
    t = min_overlap
    b1, c1 = h + w, w * h * (1 - t) / (1 + t)
    r1 = (b1 + torch.sqrt(b1 ** 2 - 4 * c1)) / 2
    b2, c2 = 2 * (h + w), (1 - t) * w * h
    r2 = (b2 + torch.sqrt(b2 ** 2 - 16 * c2)) / 2
    b3, c3 = -2 * t * (h + w), (t - 1) * w * h
    r3 = (b3 + torch.sqrt(b3 ** 2 - 16 * t * c3)) / 2
    return torch.minimum(torch.minimum(r1, r2), r3).to(height.dtype)


def encode_targets(targets: list[dict], num_classes: int, map_size: tuple[int, int],
                   min_overlap: float = 0.7, regression: str = "centre") -> dict[str, Tensor]:
    """The dense targets of a batch on the h x w output map.

    Returns {"heatmap": Tensor[B, C, h, w] (Gaussian bumps, peak exactly 1 at each centre
    cell), "size": Tensor[B, 2, h, w] (w, h in map cells, pixels / R), "offset": Tensor[B, 2, h,
    w] (centre / R minus the cell), "centre": bool Tensor[B, h, w], "weight": Tensor[B, h, w]
    (how much each cell's size and offset count)}.

    ``regression="centre"`` (CenterNet): size and offset at centre cells only (weight 1, offset
    0..1); two objects whose centres share a cell keep the later one's. ``"gaussian"`` (TTFNet):
    at every cell of an object's bump, weighted by the bump's value there (1 at the centre), the
    offset then pointing from that cell to the centre; where bumps overlap, the higher one's object.
    """
    device = targets[0]["boxes"].device if targets else torch.device("cpu")
    b, (h, w) = len(targets), map_size
    heatmap = torch.zeros(b, num_classes, h, w, device=device)
    size = torch.zeros(b, 2, h, w, device=device)
    offset = torch.zeros(b, 2, h, w, device=device)
    centre = torch.zeros(b, h, w, dtype=torch.bool, device=device)
    weight = torch.zeros(b, h, w, device=device)
    ys = torch.arange(h, device=device, dtype=torch.float32)[:, None]
    xs = torch.arange(w, device=device, dtype=torch.float32)[None, :]
    for i, t in enumerate(targets):
        boxes, labels = t["boxes"].float(), t["labels"]
        if not len(boxes):
            continue
        wh = boxes[:, 2:] - boxes[:, :2]                                  # [N, 2] pixels
        c = (boxes[:, :2] + boxes[:, 2:]) / 2 / STRIDE                     # [N, 2] map units
        cell = c.floor().long()
        cell[:, 0].clamp_(0, w - 1)
        cell[:, 1].clamp_(0, h - 1)
        # the radius from the box's size on the map, rounded as CenterNet's code does
        radius = centernet_radius((wh[:, 1] / STRIDE).ceil(), (wh[:, 0] / STRIDE).ceil(), min_overlap)
        radius = radius.floor().clamp(min=0)[:, None, None]                 # [N, 1, 1]
        sigma = (2 * radius + 1) / 6
        # one bump per object over the whole map (maps are small), inside a (2r + 1)-cell square
        dx, dy = xs - cell[:, 0, None, None], ys - cell[:, 1, None, None]   # [N, 1, w], [N, h, 1]
        bumps = torch.exp(-(dx ** 2 + dy ** 2) / (2 * sigma ** 2))          # [N, h, w]
        bumps = bumps * ((dx.abs() <= radius) & (dy.abs() <= radius))
        for k in range(num_classes):
            mine = labels == k + 1
            if mine.any():
                heatmap[i, k] = torch.maximum(heatmap[i, k], bumps[mine].amax(dim=0))
        centre[i, cell[:, 1], cell[:, 0]] = True
        if regression == "centre":
            size[i, :, cell[:, 1], cell[:, 0]] = (wh / STRIDE).t()
            offset[i, :, cell[:, 1], cell[:, 0]] = (c - cell).t()
            weight[i] = centre[i].float()
        else:
            value, owner = bumps.max(dim=0)                                  # [h, w] each
            inside = value > 0
            size[i] = (wh / STRIDE)[owner].permute(2, 0, 1) * inside
            offset[i, 0] = (c[owner, 0] - xs) * inside                       # from the cell to the centre
            offset[i, 1] = (c[owner, 1] - ys) * inside
            weight[i] = value
    return {"heatmap": heatmap, "size": size, "offset": offset, "centre": centre, "weight": weight}


# ----------------------------------------------------------------------------- the loss
def focal_loss(logits: Tensor, heatmap: Tensor, alpha: float = 2.0, beta: float = 4.0,
               ignore: Tensor | None = None) -> Tensor:
    """CenterNet's penalty-reduced pixel-wise focal loss, summed and divided by the number of
    centres (cells where ``heatmap`` is 1; at least 1). logits, heatmap Tensor[B, C, h, w]:
        centre:    -(1 - p)^α log p
        elsewhere: -(1 - y)^β p^α log(1 - p)   (near a centre, y close to 1, costs little)
    computed from logits with logsigmoid (no log of 0). ``ignore`` bool Tensor[B, h, w]: cells
    whose "elsewhere" term is left out (inside a crowd region, :mod:`lessons_pkg.crowd`)."""
    p = logits.sigmoid()
    is_centre = heatmap.eq(1).float()
    pos = -((1 - p) ** alpha) * F.logsigmoid(logits) * is_centre
    neg = -((1 - heatmap) ** beta) * (p ** alpha) * F.logsigmoid(-logits) * (1 - is_centre)
    if ignore is not None:
        neg = neg * (~ignore[:, None]).to(neg.dtype)
    return (pos.sum() + neg.sum()) / is_centre.sum().clamp(min=1)


def centernet_loss(outputs: dict[str, Tensor], encoded: dict[str, Tensor],
                   config: CenterNetConfig | None = None) -> dict[str, Tensor]:
    """{"loss_heatmap": focal loss, "loss_size": λ_size L1 of (w, h) in map cells, "loss_offset":
    λ_off L1 of the centre offset}, the last two weighted by ``encoded["weight"]`` (1 at centre
    cells for CenterNet) and divided by the weights' sum."""
    c = config if config is not None else CenterNetConfig()
    weight = encoded["weight"][:, None]                                  # [B, 1, h, w]
    count = weight.sum().clamp(min=1)
    size = (F.l1_loss(outputs["size"], encoded["size"], reduction="none") * weight).sum() / count
    offset = (F.l1_loss(outputs["offset"], encoded["offset"], reduction="none") * weight).sum() / count
    return {"loss_heatmap": focal_loss(outputs["heatmap"], encoded["heatmap"], c.alpha, c.beta, encoded.get("ignore")),
            "loss_size": c.size_weight * size, "loss_offset": c.offset_weight * offset}


# ----------------------------------------------------------------------------- decoding
def peaks(heat: Tensor, kernel: int = 3) -> Tensor:
    """bool Tensor like ``heat`` [B, C, h, w]: True where a value is the maximum of its
    ``kernel`` x ``kernel`` neighbourhood (a 3 x 3 max-pool: CenterNet's replacement for NMS)."""
    return F.max_pool2d(heat, kernel, stride=1, padding=kernel // 2) == heat


def decode(outputs: dict[str, Tensor], image_size: tuple[int, int], config: CenterNetConfig | None = None
           ) -> list[dict[str, Tensor]]:
    """Raw outputs -> one dict of detections per image: the ``detections_per_image`` highest
    heatmap peaks above ``score_threshold``, each a box centred at (cell + offset) R with the
    predicted size, clipped to the image. No NMS.

    outputs: {"heatmap": logits Tensor[B, C, h, w], "size": Tensor[B, 2, h, w], "offset":
    Tensor[B, 2, h, w]}. Returns [{"boxes": float[K, 4], "labels": int64[K] (1..C),
    "scores": float[K]}]."""
    c = config if config is not None else CenterNetConfig()
    heat = outputs["heatmap"].sigmoid()
    b, num_classes, h, w = heat.shape
    heat = heat * peaks(heat, c.peak_kernel)
    k = min(c.detections_per_image, num_classes * h * w)
    scores, index = heat.flatten(1).topk(k, dim=1)                     # [B, K]
    label, cell = index // (h * w), index % (h * w)
    row, col = cell // w, cell % w
    gather = lambda t: t.flatten(2).gather(2, cell[:, None, :].expand(-1, 2, -1))   # [B, 2, K]
    size, offset = gather(outputs["size"]), gather(outputs["offset"])
    cx = (col + offset[:, 0]) * STRIDE
    cy = (row + offset[:, 1]) * STRIDE
    half_w, half_h = size[:, 0].clamp(min=0) * STRIDE / 2, size[:, 1].clamp(min=0) * STRIDE / 2
    boxes = torch.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], dim=2)
    height, width = image_size
    boxes[..., 0::2] = boxes[..., 0::2].clamp(0, width)
    boxes[..., 1::2] = boxes[..., 1::2].clamp(0, height)
    out = []
    for i in range(b):
        keep = scores[i] > c.score_threshold
        out.append({"boxes": boxes[i][keep], "labels": label[i][keep] + 1, "scores": scores[i][keep]})
    return out


def decode_with_nms(outputs: dict[str, Tensor], image_size: tuple[int, int], config: CenterNetConfig | None = None,
                    iou_threshold: float = 0.5, candidates: int = 1000) -> list[dict[str, Tensor]]:
    """What CenterNet's max-pool replaces, for comparison: every cell is a candidate box (the
    ``candidates`` best above ``score_threshold``), then per-class NMS at ``iou_threshold``, then
    the ``detections_per_image`` best. Same inputs and outputs as :func:`decode`."""
    c = config if config is not None else CenterNetConfig()
    every_cell = replace(c, peak_kernel=1, detections_per_image=candidates)
    out = []
    for det in decode(outputs, image_size, every_cell):
        keep = ops.batched_nms(det["boxes"], det["scores"], det["labels"], iou_threshold)[:c.detections_per_image]
        out.append({k: v[keep] for k, v in det.items()})
    return out


# ----------------------------------------------------------------------------- the network
def head(in_ch: int, out_ch: int, bias: float = 0.0) -> nn.Sequential:
    """3x3 conv + ReLU + 1x1 conv (the paper's heads); the last bias set to ``bias``."""
    layers = nn.Sequential(nn.Conv2d(in_ch, in_ch, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(in_ch, out_ch, 1))
    nn.init.constant_(layers[-1].bias, bias)
    return layers


class CenterNet(nn.Module):
    """Backbone, top-down merge to stride 4, three heads, in the one model contract (README).

    ``model(images, targets)`` in train mode: {"loss_heatmap", "loss_size", "loss_offset"}
    (:func:`centernet_loss`). ``model(images)`` in eval mode: one dict per image with "boxes",
    "labels", "scores" (:func:`decode`: heatmap peaks, no NMS).

    Args:
        num_classes: C, labels 1..C.
        pretrained_backbone: None (random), True (the committed ``data/pretrained/backbone.pt``)
            or the path of a checkpoint of ``python -m lessons_pkg.pretrain``.
        config: a :class:`CenterNetConfig`, or its fields as keyword ``settings`` (not both).
    """

    task = "detection"
    size_divisible = 16  # the coarsest map merged, so every upsampling by 2 lands on its finer map

    def __init__(self, num_classes: int = 4, pretrained_backbone=None, config: CenterNetConfig | None = None,
                 **settings):
        super().__init__()
        check_num_classes(num_classes)
        self.num_classes = num_classes
        self.config = resolve_config(CenterNetConfig, config, settings)
        d = self.config.channels
        self.backbone = build_backbone(pretrained_backbone)
        widths = self.backbone.widths                                   # strides 2, 4, 8, 16
        self.lateral = nn.ModuleList([nn.Conv2d(widths[i], d, 1) for i in (3, 2, 1)])  # strides 16, 8, 4
        self.smooth = nn.Sequential(nn.Conv2d(d, d, 3, padding=1, bias=False), nn.BatchNorm2d(d), nn.ReLU(inplace=True))
        # the heatmap starts at p = 0.1 everywhere (the paper's -2.19): the loss is not swamped
        # by the background on the first steps
        self.heatmap_head = head(d, num_classes, bias=-math.log((1 - 0.1) / 0.1))
        self.size_head = head(d, 2)
        self.offset_head = head(d, 2)

    def merged_map(self, images: Tensor) -> tuple[list[Tensor], Tensor]:
        """Tensor[B, 3, H, W] (H, W multiples of 16) -> (the backbone's maps at strides 2, 4, 8,
        16; the merged stride-4 map Tensor[B, channels, H / 4, W / 4] the heads read)."""
        maps = self.backbone.stages(images)                             # strides 2, 4, 8, 16
        x = self.lateral[0](maps[3])
        for lateral, finer in zip(self.lateral[1:], (maps[2], maps[1])):
            x = F.interpolate(x, size=finer.shape[-2:], mode="nearest") + lateral(finer)
        return maps, self.smooth(x)

    def heads(self, merged: Tensor) -> dict[str, Tensor]:
        """The merged stride-4 map -> raw outputs: "heatmap" [B, C, h, w], "size" and "offset" [B, 2, h, w]."""
        return {"heatmap": self.heatmap_head(merged), "size": self.size_head(merged), "offset": self.offset_head(merged)}

    def outputs(self, images: Tensor) -> dict[str, Tensor]:
        """Tensor[B, 3, H, W] (H, W multiples of 16) -> raw outputs on the stride-4 map."""
        return self.heads(self.merged_map(images)[1])

    def losses(self, outputs: dict[str, Tensor], targets: list[dict], image_size: tuple[int, int]) -> dict[str, Tensor]:
        """The three losses of raw ``outputs`` against prepared ``targets`` (images of ``image_size``)."""
        map_size = tuple(outputs["heatmap"].shape[-2:])
        encoded = encode_targets(targets, self.num_classes, map_size, self.config.min_overlap, self.config.regression)
        in_crowd = crowd.cells_inside_crowd(targets, map_size, image_size)
        if in_crowd is not None:   # no "no centre here" inside a crowd region
            encoded["ignore"] = in_crowd
        return centernet_loss(outputs, encoded, self.config)

    @any_size
    def forward(self, images, targets: list[dict[str, Tensor]] | None = None):
        images, targets = prepare_batch(images, targets, self.training, self.num_classes, self.task)
        outputs = self.outputs(images)
        if self.training:
            return self.losses(outputs, targets, tuple(images.shape[-2:]))
        return decode(outputs, tuple(images.shape[-2:]), self.config)
