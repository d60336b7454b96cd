"""SSD: a Single Shot MultiBox Detector (Liu et al. 2016): boxes and classes from every level at once.

Faster R-CNN looks twice: the RPN proposes, then RoI heads classify each proposal. SSD looks
once. A fixed set of *default boxes* tiles the image at several scales, one set per feature map
(fine maps for small objects, coarse maps for large ones), and a 3x3 conv on each map predicts,
for every default box, C + 1 class scores and four deltas that move it onto an object:

  1. backbone: the course's residual network gives maps at strides 8 and 16; extra layers
     (1x1 conv, then 3x3 conv of stride 2, as in SSD) add strides 32, 64, 128;
  2. heads: at level k, a 3x3 conv with A_k (C + 1) outputs (class logits) and one with 4 A_k
     (box deltas) per location, A_k = 2 + 2 len(aspect_ratios[k]) default boxes per location;
  3. matching (:func:`match_default_boxes`): each object's best default box is positive, and so
     is every default box with IoU >= 0.5; the rest are background;
  4. loss (:func:`ssd_loss`): smooth L1 on the positives' deltas, plus cross-entropy on the
     positives and on three times as many negatives, the hardest ones ("hard negative
     mining"); or random ones; or a focal loss on all default boxes; all divided by the number
     of positives;
  5. detections (:func:`postprocess`): softmax, per class the scores above 0.01, the best 400,
     decoded, per-class NMS at 0.45, the best 100 of the image.

Shape key
    B   images                      H, W  image size in pixels (multiples of 128)
    C   object classes, labels 1..C; the heads score C + 1 (index 0 is background)
    k   feature level, 0..4         h_k, w_k  its map: H / 8, H / 16, H / 32, H / 64, H / 128
    A_k default boxes per location of level k
    D   default boxes of an image, sum over k of h_k w_k A_k (1524 at 128 x 128), ordered level
        by level, then location (row i, column j), then the A_k boxes of the location
    G   objects of an image
Boxes are xyxy in image pixels. Deltas use the R-CNN encoding with weights (10, 10, 5, 5):
SSD's "variances" 0.1 and 0.2 (:func:`lessons_pkg.boxes.encode_boxes`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import anchors as anchor_ops
from .. import boxes as box_ops
from .. import crowd, ops
from ..batching import any_size
from ..inputs import prepare_batch
from ..matching import NEGATIVE
from .backbone import Backbone, build_backbone
from .configs import check_num_classes, resolve_config

BOX_WEIGHTS = (10.0, 10.0, 5.0, 5.0)   # 1 / SSD's variances (0.1, 0.1, 0.2, 0.2)
STRIDES = (8, 16, 32, 64, 128)         # image pixels per cell of each level
NEGATIVES = ("hard", "focal", "random")


# ----------------------------------------------------------------------------- settings
@dataclass
class SSDConfig:
    """Settings of an :class:`SSD` (defaults for 128-pixel images whose objects measure 12-48
    pixels; the paper's, for 300-pixel images, are in comments).

    ``scales`` are SSD's s_1..s_5 and s_6 (fractions of the image side; see
    :func:`lessons_pkg.anchors.ssd_scales`): s_min = 0.12, s_max = 0.6 put the finest level's
    boxes at 15 and 22 pixels. Over 1720 objects of 500 validation images, 95 % have a default
    box with IoU >= 0.5 (s_min = 0.2, s_max = 0.9, the paper's, reach 73 %; the rest are small
    or half-hidden objects that fall between two cells of the stride-8 grid).
    """

    scales: tuple[float, ...] = tuple(anchor_ops.ssd_scales(5, 0.12, 0.6))   # ssd_scales(6, 0.2, 0.9)
    aspect_ratios: tuple[tuple[float, ...], ...] = ((2,), (2, 3), (2, 3), (2,), (2,))
    iou_threshold: float = 0.5
    neg_pos_ratio: int = 3
    negatives: str = "hard"            # "hard" (the paper), "focal" (RetinaNet's loss) or "random"
    min_negatives: int = 0             # negatives per image at least ("hard", "random"); see ssd_loss
    focal_alpha: float | None = 0.25   # None: no α weighting (the focal loss paper's eq. 4)
    focal_gamma: float = 2.0
    score_threshold: float = 0.01
    nms_threshold: float = 0.45
    topk_candidates: int = 400
    detections_per_image: int = 100    # 200
    prior: float | None = 0.01         # the class head's initial P(object); None: zero biases (torchvision)
    seed: int = 0                      # the stream of the random negatives

    def __post_init__(self):
        self.scales = tuple(float(s) for s in self.scales)
        self.aspect_ratios = tuple(tuple(float(r) for r in level) for level in self.aspect_ratios)
        if len(self.aspect_ratios) != len(STRIDES):
            raise ValueError(f"aspect_ratios needs one list per level ({len(STRIDES)}), got {len(self.aspect_ratios)}")
        if len(self.scales) != len(STRIDES) + 1:
            raise ValueError(f"scales needs {len(STRIDES) + 1} values (s_1..s_{len(STRIDES)} and the extra "
                             f"s_{len(STRIDES) + 1}), got {len(self.scales)}")
        if not all(0 < s for s in self.scales):
            raise ValueError(f"scales must be positive fractions of the image side, got {self.scales}")
        if any(r <= 0 for level in self.aspect_ratios for r in level):
            raise ValueError(f"aspect ratios must be positive, got {self.aspect_ratios}")
        if self.negatives not in NEGATIVES:
            raise ValueError(f"negatives must be one of {NEGATIVES}, got {self.negatives!r}")
        for name in ("iou_threshold", "nms_threshold", "score_threshold", "focal_alpha"):
            if getattr(self, name) is None and name == "focal_alpha":
                continue
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.focal_gamma < 0:
            raise ValueError(f"focal_gamma must be >= 0, got {self.focal_gamma}")
        if self.neg_pos_ratio < 0 or self.min_negatives < 0:
            raise ValueError(f"neg_pos_ratio and min_negatives must be >= 0, got {self.neg_pos_ratio}, "
                             f"{self.min_negatives}")
        if self.prior is not None and not 0 < self.prior < 1:
            raise ValueError(f"prior must be in (0, 1) or None, got {self.prior}")
        if self.topk_candidates < 1 or self.detections_per_image < 1:
            raise ValueError(f"topk_candidates and detections_per_image must be >= 1, got "
                             f"{self.topk_candidates}, {self.detections_per_image}")

    @property
    def boxes_per_location(self) -> list[int]:
        """A_k of each level: two squares (s_k and sqrt(s_k s_k+1)), two boxes per ratio."""
        return [2 + 2 * len(level) for level in self.aspect_ratios]


def feature_sizes(image_size: tuple[int, int]) -> list[tuple[int, int]]:
    """(h_k, w_k) of the five levels for an (H, W) image; H and W must be multiples of 128
    (every level then divides the image exactly, and the 1 x 1 level exists)."""
    if len(image_size) != 2:
        raise ValueError(f"image_size must be (H, W), got {image_size!r}")
    H, W = (int(v) for v in image_size)
    if H < STRIDES[-1] or W < STRIDES[-1] or H % STRIDES[-1] or W % STRIDES[-1]:
        raise ValueError(f"SSD needs an image size that is a multiple of {STRIDES[-1]} pixels (its coarsest "
                         f"level has a stride of {STRIDES[-1]}), got {H}x{W}; resize or pad the images")
    return [(H // s, W // s) for s in STRIDES]


# ----------------------------------------------------------------------------- matching
def match_default_boxes(gt_boxes: Tensor, default_boxes: Tensor, iou_threshold: float = 0.5) -> Tensor:
    """SSD's matching rule (torchvision's ``SSDMatcher``).

    Every default box with IoU >= ``iou_threshold`` with some object is matched to the object
    it overlaps most; then each object's best default box (the first of equal IoUs) is matched
    to that object, whatever the IoU, so no object goes without a positive. When two objects
    share a best default box, the later object takes it (what torchvision does on the CPU).
    There is no "ignored" band: anything else is background.

    Args:
        gt_boxes (Tensor[G, 4]); default_boxes (Tensor[D, 4]): xyxy pixels.
    Returns:
        Tensor[D] int64: the matched object's index in 0..G-1, or ``matching.NEGATIVE``;
        all NEGATIVE when G = 0.
    """
    box_ops.check_boxes(gt_boxes, "gt_boxes", ndim=2)
    box_ops.check_boxes(default_boxes, "default_boxes", ndim=2)
    num_gt, num_default = len(gt_boxes), len(default_boxes)
    if num_gt == 0 or num_default == 0:
        return torch.full((num_default,), NEGATIVE, dtype=torch.int64, device=default_boxes.device)
    iou = box_ops.box_iou(gt_boxes.to(default_boxes), default_boxes)              # [G, D]
    best_iou, matches = iou.max(dim=0)
    matches = torch.where(best_iou >= iou_threshold, matches, torch.full_like(matches, NEGATIVE))
    best_default = iou.max(dim=1).indices                                         # [G]
    objects = torch.arange(num_gt, device=matches.device)
    # scatter with "amax": a default box that is the best of several objects gets the last one
    return matches.scatter_reduce(0, best_default, objects, reduce="amax", include_self=False)


# ----------------------------------------------------------------------------- the loss
def _check_head_outputs(class_logits: Tensor, box_deltas: Tensor, default_boxes: Tensor) -> None:
    if not isinstance(class_logits, Tensor) or class_logits.dim() != 3 or class_logits.shape[-1] < 2:
        got = list(class_logits.shape) if isinstance(class_logits, Tensor) else type(class_logits).__name__
        raise ValueError(f"class_logits must be a Tensor[B, D, C + 1] with C >= 1, got {got}")
    b, d, _ = class_logits.shape
    if not isinstance(box_deltas, Tensor) or box_deltas.shape != (b, d, 4):
        got = list(box_deltas.shape) if isinstance(box_deltas, Tensor) else type(box_deltas).__name__
        raise ValueError(f"box_deltas must be a Tensor[B, D, 4] = {[b, d, 4]}, got {got}")
    if not isinstance(default_boxes, Tensor) or default_boxes.shape != (d, 4):
        got = list(default_boxes.shape) if isinstance(default_boxes, Tensor) else type(default_boxes).__name__
        raise ValueError(f"default_boxes must be a Tensor[D, 4] = {[d, 4]}, got {got}")


def ssd_loss(class_logits: Tensor, box_deltas: Tensor, default_boxes: Tensor, targets: list[dict],
             config: SSDConfig | None = None, generator: torch.Generator | None = None,
             image_size: tuple[int, int] | None = None) -> dict[str, Tensor]:
    """SSD's multibox loss over a batch.

    Args:
        class_logits (Tensor[B, D, C + 1]); box_deltas (Tensor[B, D, 4]) (encoded with
            weights (10, 10, 5, 5)); default_boxes (Tensor[D, 4]).
        targets: one dict per image with "boxes" Tensor[G, 4] and "labels" int64 Tensor[G]
            in 1..C (G = 0 allowed), and optionally "crowd_boxes" Tensor[K, 4]: background
            boxes inside a crowd region are left out of the loss (:mod:`lessons_pkg.crowd`).
        config: ``iou_threshold``, ``negatives``, ``neg_pos_ratio``, ``min_negatives``, ``focal_*``.
        generator: draws the "random" negatives (on its own device); the global RNG when None.
        image_size: (H, W), to clip the default boxes when judging whether one lies in a crowd region.
    Returns:
        {"loss_box": smooth L1 (beta 1) of the positives' deltas, summed,
         "loss_cls": the classification term below, summed},
        both divided by N, the number of positives in the batch (at least 1). Classification:
          "hard": cross-entropy of the positives and of each image's max(neg_pos_ratio * P_i,
              min_negatives) negatives of highest cross-entropy (torchvision's SSD loss, equal
              to it when min_negatives = 0);
          "random": the same, with that many negatives picked uniformly at random;
          "focal": softmax focal loss on all D boxes, -alpha_t (1 - p_t)^gamma log p_t with
              alpha_t = focal_alpha for objects and 1 - focal_alpha for background (Lin et
              al. 2017, eq. 5); focal_alpha None: alpha_t = 1 for every box (their eq. 4).
        Without objects the box loss is exactly 0 (and so is "hard"'s and "random"'s
        classification loss when min_negatives = 0, torchvision's choice: an image without
        objects then trains nothing; set min_negatives = 3, say, to train its background).
        Both values stay finite and in the graph, so ``backward`` works in every case.
    """
    config = config if config is not None else SSDConfig()
    _check_head_outputs(class_logits, box_deltas, default_boxes)
    b, d, k = class_logits.shape
    if not isinstance(targets, (list, tuple)) or len(targets) != b:
        raise ValueError(f"targets must be a list of {b} dicts (one per image), got "
                         f"{len(targets) if isinstance(targets, (list, tuple)) else type(targets).__name__}")
    default_boxes = default_boxes.to(box_deltas)
    labels, regression, in_crowd = [], [], []
    for t in targets:                     # a loop over images: G differs from image to image
        gt = t["boxes"].to(default_boxes)
        matches = match_default_boxes(gt, default_boxes, config.iou_threshold)
        in_crowd.append(crowd.inside_crowd(default_boxes, t.get("crowd_boxes"), image_size=image_size).to(class_logits.device)
                        & (matches < 0))
        if len(gt) == 0:
            labels.append(torch.zeros(d, dtype=torch.int64, device=class_logits.device))
            regression.append(torch.zeros_like(default_boxes))
            continue
        index = matches.clamp(min=0)      # every box gets some object; only positives count
        object_labels = t["labels"].to(class_logits.device)[index]
        labels.append(torch.where(matches >= 0, object_labels, torch.zeros_like(object_labels)))
        regression.append(box_ops.encode_boxes(gt[index], default_boxes, BOX_WEIGHTS))
    labels, regression = torch.stack(labels), torch.stack(regression)            # [B, D], [B, D, 4]
    positive = labels > 0
    ignored = torch.stack(in_crowd)       # [B, D]: background inside a crowd region, left out
    num_positive = positive.sum(dim=1)                                            # [B]
    normalizer = num_positive.sum().clamp(min=1).to(box_deltas.dtype)            # a tensor: no sync

    box_loss = F.smooth_l1_loss(box_deltas, regression, beta=1.0, reduction="none").sum(-1)
    loss_box = torch.where(positive, box_loss, torch.zeros_like(box_loss)).sum() / normalizer

    ce = F.cross_entropy(class_logits.reshape(b * d, k), labels.reshape(-1), reduction="none").view(b, d)
    if config.negatives == "focal":
        p_true = torch.exp(-ce)
        if config.focal_alpha is None:
            alpha = torch.ones_like(ce)
        else:
            alpha = torch.where(positive, config.focal_alpha, 1.0 - config.focal_alpha).to(ce.dtype)
        focal = alpha * (1 - p_true).clamp(min=0) ** config.focal_gamma * ce
        loss_cls = torch.where(ignored, torch.zeros_like(focal), focal).sum() / normalizer
        return {"loss_box": loss_box, "loss_cls": loss_cls}
    if config.negatives == "hard":
        keys = ce.detach()
    else:
        device = generator.device if generator is not None else ce.device
        keys = torch.rand((b, d), generator=generator, device=device).to(ce.device)
    keys = keys.masked_fill(positive | ignored, -float("inf"))                    # never drawn as negatives
    rank = keys.argsort(dim=1, descending=True).argsort(dim=1)                    # 0 = first chosen
    num_negative = (config.neg_pos_ratio * num_positive).clamp(min=config.min_negatives)
    negative = (rank < num_negative[:, None]) & ~positive & ~ignored
    loss_cls = torch.where(positive | negative, ce, torch.zeros_like(ce)).sum() / normalizer
    return {"loss_box": loss_box, "loss_cls": loss_cls}


# ----------------------------------------------------------------------------- detections
@torch.no_grad()
def postprocess(class_logits: Tensor, box_deltas: Tensor, default_boxes: Tensor, image_size: tuple[int, int],
                config: SSDConfig | None = None) -> list[dict[str, Tensor]]:
    """Head outputs -> detections (torchvision's ``SSD.postprocess_detections``).

    Per image: softmax over the C + 1 classes; decode every default box's deltas and clip to
    the image; for each class 1..C the (at most) ``topk_candidates`` boxes of highest score
    above ``score_threshold``; NMS per class at ``nms_threshold``; the best
    ``detections_per_image`` of all classes.

    Args:
        class_logits (Tensor[B, D, C + 1]); box_deltas (Tensor[B, D, 4]); default_boxes (Tensor[D, 4]);
        image_size: (H, W).
    Returns:
        one dict per image: "boxes" float[M, 4] (xyxy pixels, clipped), "labels" int64[M] in
        1..C, "scores" float[M], by decreasing score.
    """
    config = config if config is not None else SSDConfig()
    _check_head_outputs(class_logits, box_deltas, default_boxes)
    b, d, k = class_logits.shape
    scores = class_logits.softmax(dim=-1)[..., 1:]                                # [B, D, C]
    boxes = box_ops.decode_boxes(box_deltas, default_boxes, BOX_WEIGHTS)
    boxes = box_ops.clip_boxes_to_image(boxes, tuple(image_size))                 # [B, D, 4]
    top_k = min(config.topk_candidates, d)
    classes = torch.arange(1, k, device=scores.device).repeat_interleave(top_k)  # class-major
    detections = []
    for image_boxes, image_scores in zip(boxes, scores):
        # The best top_k of each class at once, then the threshold: the same set as thresholding
        # first (whatever passes the threshold ranks above whatever does not).
        top, index = image_scores.topk(top_k, dim=0)                             # [top_k, C]
        top, index = top.t().reshape(-1), index.t().reshape(-1)
        keep = top > config.score_threshold
        top, index, labels = top[keep], index[keep], classes[keep]
        candidates = image_boxes[index]
        keep = ops.batched_nms(candidates, top, labels, config.nms_threshold)[:config.detections_per_image]
        detections.append({"boxes": candidates[keep], "labels": labels[keep], "scores": top[keep]})
    return detections


# ----------------------------------------------------------------------------- the network
class SSDFeatures(nn.Module):
    """The course's backbone (:mod:`backbone`) plus SSD's extra layers.

    images Tensor[B, 3, H, W] -> five maps: Tensor[B, 64, H / 8, W / 8] (the backbone's stage at
    stride 8), Tensor[B, 128, H / 16, W / 16] (its last stage), then three extra layers, each a
    1x1 conv down to 64 channels and a 3x3 conv of stride 2 back to 128:
    Tensor[B, 128, H / 32, W / 32], Tensor[B, 128, H / 64, ...], Tensor[B, 128, H / 128, ...].
    """

    def __init__(self, backbone: Backbone, extra_width: int = 128, bottleneck: int = 64):
        super().__init__()
        if backbone.strides[-2:] != STRIDES[:2]:
            raise ValueError(f"SSD needs a backbone whose last two stages have strides {STRIDES[:2]}, "
                             f"got strides {backbone.strides}")
        self.backbone = backbone
        in_channels = backbone.widths[-1]
        self.extras = nn.ModuleList()
        for _ in range(len(STRIDES) - 2):
            self.extras.append(nn.Sequential(
                nn.Conv2d(in_channels, bottleneck, 1), nn.ReLU(inplace=True),
                nn.Conv2d(bottleneck, extra_width, 3, stride=2, padding=1), nn.ReLU(inplace=True)))
            in_channels = extra_width
        self.out_channels = [backbone.widths[-2], backbone.widths[-1]] + [extra_width] * (len(STRIDES) - 2)

    def forward(self, images: Tensor) -> list[Tensor]:
        maps = self.backbone.stages(images)[-2:]          # strides 8 and 16
        for extra in self.extras:
            maps.append(extra(maps[-1]))
        return maps


class SSDHead(nn.Module):
    """One 3x3 conv per level for the class logits and one for the deltas.

    maps (list of Tensor[B, D_k, h_k, w_k]) -> (class_logits Tensor[B, D, C + 1],
    box_deltas Tensor[B, D, 4]) in the default boxes' order (level, location, box): channel
    a (C + 1) + c of a location is box a's class c (torchvision's SSDHead layout).

    Weights start Xavier-uniform (torchvision's). With a ``prior`` p, the background logit's
    bias starts at log(C (1 - p) / p), so every default box starts at P(background) = 1 - p:
    RetinaNet's initialization, here for a softmax. Without it the focal loss starts at
    P(background) = 1 / (C + 1) on some 1500 boxes per image, a loss of ~25 per object whose
    first steps undo the pretrained features (measured: mAP@0.5 0.80 instead of 0.92 after
    1500 steps); hard negative mining hardly cares (0.93 either way).
    """

    def __init__(self, in_channels: list[int], boxes_per_location: list[int], num_classes: int,
                 prior: float | None = 0.01):
        super().__init__()
        self.num_columns = num_classes + 1
        self.cls_logits = nn.ModuleList(nn.Conv2d(c, a * self.num_columns, 3, padding=1)
                                        for c, a in zip(in_channels, boxes_per_location))
        self.bbox_pred = nn.ModuleList(nn.Conv2d(c, a * 4, 3, padding=1)
                                       for c, a in zip(in_channels, boxes_per_location))
        for conv in [*self.cls_logits, *self.bbox_pred]:
            nn.init.xavier_uniform_(conv.weight)
            nn.init.zeros_(conv.bias)
        if prior is not None:
            for conv in self.cls_logits:
                with torch.no_grad():
                    conv.bias.view(-1, self.num_columns)[:, 0] = math.log(num_classes * (1 - prior) / prior)

    @staticmethod
    def _flatten(x: Tensor, columns: int) -> Tensor:
        b, _, h, w = x.shape                      # [B, A K, h, w] -> [B, h w A, K]
        return x.permute(0, 2, 3, 1).reshape(b, -1, columns)

    def forward(self, maps: list[Tensor]) -> tuple[Tensor, Tensor]:
        logits = [self._flatten(conv(x), self.num_columns) for conv, x in zip(self.cls_logits, maps)]
        deltas = [self._flatten(conv(x), 4) for conv, x in zip(self.bbox_pred, maps)]
        return torch.cat(logits, dim=1), torch.cat(deltas, dim=1)


# ----------------------------------------------------------------------------- the model
class SSD(nn.Module):
    """Features + heads + default boxes, in the one model contract (README).

    ``model(images, targets)`` in train mode: {"loss_box", "loss_cls"} (see :func:`ssd_loss`).
    ``model(images)`` in eval mode: one dict per image with "boxes" float[M, 4] (xyxy pixels,
    clipped), "labels" int64[M] (1..C) and "scores" float[M] (see :func:`postprocess`).
    Images: Tensor[B, 3, H, W] in [0, 1] or a list of Tensor[3, H_i, W_i] of any sizes; the
    batch is padded (bottom and right) to sides that are multiples of 128
    (:attr:`size_divisible`, the coarsest level's stride) and each image's predictions are
    mapped back to its own size (:mod:`lessons_pkg.batching`). The default boxes scale with the
    padded batch (they are fractions of its side).

    Args:
        num_classes: C, labels 1..C.
        pretrained_backbone: None (random), True (the committed ``data/pretrained/backbone.pt``)
            or the path of a checkpoint of ``python -m lessons_pkg.pretrain``.
        config: an :class:`SSDConfig`, or its fields as keyword ``settings`` (not both).
    """

    size_divisible = STRIDES[-1]  # batches are padded to multiples of the coarsest stride

    def __init__(self, num_classes: int = 4, pretrained_backbone=None, config: SSDConfig | None = None,
                 **settings):
        super().__init__()
        check_num_classes(num_classes)
        self.num_classes = num_classes
        self.config = resolve_config(SSDConfig, config, settings)
        self.features = SSDFeatures(build_backbone(pretrained_backbone))
        self.head = SSDHead(self.features.out_channels, self.config.boxes_per_location, num_classes,
                            self.config.prior)
        self._default_boxes: dict[tuple, Tensor] = {}
        self._generators: dict[torch.device, torch.Generator] = {}

    def default_boxes(self, image_size: tuple[int, int], device="cpu") -> Tensor:
        """Tensor[D, 4] float32 default boxes (xyxy pixels, clipped to the image) of an (H, W)
        image, cached per size and device."""
        sizes = feature_sizes(image_size)
        key = (int(image_size[0]), int(image_size[1]), torch.device(device))
        if key not in self._default_boxes:
            c = self.config
            self._default_boxes[key] = anchor_ops.ssd_default_boxes(
                sizes, key[:2], c.scales, [list(r) for r in c.aspect_ratios], clip=True, device=device)
        return self._default_boxes[key]

    def generator(self, device) -> torch.Generator:
        """The generator of the random negatives on ``device``, seeded with ``config.seed``."""
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        if device not in self._generators:
            self._generators[device] = torch.Generator(device=device).manual_seed(self.config.seed)
        return self._generators[device]

    @any_size
    def forward(self, images, targets: list[dict[str, Tensor]] | None = None):
        """Training: returns {"loss_box", "loss_cls"}.
        Eval: returns one dict per image with "boxes", "labels", "scores"."""
        images, targets = prepare_batch(images, targets, self.training, self.num_classes)
        image_size = tuple(images.shape[-2:])
        default_boxes = self.default_boxes(image_size, images.device)   # raises on a bad size
        class_logits, box_deltas = self.head(self.features(images))
        if self.training:
            generator = self.generator(images.device) if self.config.negatives == "random" else None
            return ssd_loss(class_logits, box_deltas, default_boxes, targets, self.config, generator, image_size)
        return postprocess(class_logits, box_deltas, default_boxes, image_size, self.config)
