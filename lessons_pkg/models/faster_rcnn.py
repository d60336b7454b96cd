"""Faster R-CNN: a Region Proposal Network learns the proposals, Fast R-CNN's heads classify them.

Fast R-CNN (:mod:`rcnn`) still waits for selective search on the CPU. Faster R-CNN (Ren et al.
2015) predicts the proposals from the same feature map with a small convolutional head, the
RPN, so one network does everything:

  1. backbone: image -> feature map (stride 8);
  2. RPN head: at every cell, for each of its A anchors (sizes x aspect ratios), an objectness
     logit and four deltas that move the anchor onto an object;
  3. proposals: per image, the ``pre_nms_top_n`` anchors of highest objectness, decoded,
     clipped to the image, tiny boxes dropped, NMS at 0.7, the best ``post_nms_top_n`` kept;
  4. RPN loss: anchors matched to the objects (IoU >= 0.7 positive, < 0.3 negative, and each
     object's best anchors positive), 256 sampled per image, half positives at most;
     BCE on objectness + smooth L1 on the positives' deltas;
  5. Fast R-CNN's heads (:class:`rcnn.RoIHeads`) on the proposals: a pooler, MLP, class + box.
     The pooler is RoI Align by default, Mask R-CNN's (He et al. 2017, section 3), not the
     paper's: Faster R-CNN used Fast R-CNN's RoI Pool (``pool="roi_pool"``).
The proposals are detached: the heads' loss does not flow back through the boxes (the
"approximate joint training" of the paper and of torchvision).

Shape key
    B   images                 H, W  image size in pixels
    D   feature channels       h, w  feature map (H / stride, W / stride)
    A   anchors per cell (len(anchor_sizes) * len(aspect_ratios))
    N   anchors of an image, h * w * A, ordered (row i, column j, anchor a): index (i w + j) A + a
    K   proposals, K_i of image i (at most post_nms_top_n)
    G   objects of an image
Boxes are xyxy in image pixels. The head's deltas Tensor[B, 4A, h, w] hold anchor a's
(dx, dy, dw, dh) in channels 4a..4a+3 (torchvision's layout, so its RPNHead loads our weights).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import anchors as anchor_ops
from .. import boxes as box_ops
from .. import crowd, matching, ops
from ..batching import any_size
from ..inputs import check_detection_targets, prepare_batch
from . import rcnn
from .backbone import build_backbone
from .configs import check_num_classes, resolve_config

RPN_BOX_WEIGHTS = (1.0, 1.0, 1.0, 1.0)  # the RPN's box coder (torchvision's)


# ----------------------------------------------------------------------------- the head
class RPNHead(nn.Module):
    """A shared 3x3 conv + ReLU, then two 1x1 convs (torchvision's RPNHead, same layer names).

    features Tensor[B, D, h, w] -> (objectness logits Tensor[B, A, h, w],
    box deltas Tensor[B, 4A, h, w]).
    """

    def __init__(self, in_channels: int, num_anchors: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, in_channels, 3, padding=1)
        self.cls_logits = nn.Conv2d(in_channels, num_anchors, 1)
        self.bbox_pred = nn.Conv2d(in_channels, 4 * num_anchors, 1)
        for layer in (self.conv, self.cls_logits, self.bbox_pred):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.zeros_(layer.bias)

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        x = F.relu(self.conv(features))
        return self.cls_logits(x), self.bbox_pred(x)


def flatten_head_outputs(objectness: Tensor, deltas: Tensor) -> tuple[Tensor, Tensor]:
    """Head outputs -> one row per anchor, in the order of ``anchors.anchor_grid``.

    Args:
        objectness (Tensor[B, A, h, w]); deltas (Tensor[B, 4A, h, w]).
    Returns:
        (Tensor[B, N], Tensor[B, N, 4]) with N = h * w * A, index (i w + j) A + a.
    """
    b, a, h, w = objectness.shape
    if deltas.shape != (b, 4 * a, h, w):
        raise ValueError(f"deltas must have shape [B, 4A, h, w] = {[b, 4 * a, h, w]}, got {list(deltas.shape)}")
    objectness = objectness.permute(0, 2, 3, 1).reshape(b, h * w * a)
    deltas = deltas.view(b, a, 4, h, w).permute(0, 3, 4, 1, 2).reshape(b, h * w * a, 4)
    return objectness, deltas


# ----------------------------------------------------------------------------- the RPN
@dataclass
class RPNConfig:
    """Settings of a :class:`RegionProposalNetwork` (defaults for 128-pixel images whose objects
    measure 12-48 pixels; torchvision's defaults, for 800-pixel images, are in comments)."""

    anchor_sizes: tuple[float, ...] = (16.0, 32.0, 64.0)   # pixels; (32, ..., 512) over 5 levels
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)     # height / width
    stride: int = 8                                        # image pixels per feature pixel
    anchor_convention: str = "center"                      # see anchors.anchor_grid
    fg_iou: float = 0.7
    bg_iou: float = 0.3
    allow_low_quality: bool = True
    batch_size_per_image: int = 256
    positive_fraction: float = 0.5
    pre_nms_top_n_train: int = 600                         # 2000
    post_nms_top_n_train: int = 300                        # 2000
    pre_nms_top_n_test: int = 300                          # 1000
    post_nms_top_n_test: int = 100                         # 1000
    nms_threshold: float = 0.7
    min_size: float = 1e-3
    score_threshold: float = 0.0
    seed: int = 0                                          # the sampler's stream

    def __post_init__(self):
        self.anchor_sizes, self.aspect_ratios = tuple(self.anchor_sizes), tuple(self.aspect_ratios)
        counts = ("batch_size_per_image", "pre_nms_top_n_train", "post_nms_top_n_train",
                  "pre_nms_top_n_test", "post_nms_top_n_test", "stride")
        for name in counts:
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.bg_iou <= self.fg_iou <= 1:
            raise ValueError(f"need 0 <= bg_iou <= fg_iou <= 1, got bg_iou={self.bg_iou}, fg_iou={self.fg_iou}")
        if not 0 < self.positive_fraction <= 1:
            raise ValueError(f"positive_fraction must be in (0, 1], got {self.positive_fraction}")
        if self.anchor_convention not in ("center", "torchvision"):
            raise ValueError(f"anchor_convention must be 'center' or 'torchvision', got {self.anchor_convention!r}")
        anchor_ops.anchor_shapes(self.anchor_sizes, self.aspect_ratios)  # raises on bad values

    @property
    def num_anchors(self) -> int:
        """A, anchors per cell."""
        return len(self.anchor_sizes) * len(self.aspect_ratios)


class RegionProposalNetwork(nn.Module):
    """Proposals (and, in training, the RPN's losses) from a feature map.

    ``RegionProposalNetwork(in_channels, config)`` or ``RegionProposalNetwork(in_channels,
    fg_iou=0.6, ...)`` with the fields of :class:`RPNConfig`.
    """

    def __init__(self, in_channels: int, config: RPNConfig | None = None, **settings):
        super().__init__()
        self.config = resolve_config(RPNConfig, config, settings)
        self.head = RPNHead(in_channels, self.config.num_anchors)
        self.generator = torch.Generator().manual_seed(self.config.seed)
        self._anchors: dict[tuple, Tensor] = {}

    def anchors(self, feature_size: tuple[int, int], device) -> Tensor:
        """Tensor[N, 4] float32 anchors of an h x w map, cached per (h, w, device)."""
        key = (int(feature_size[0]), int(feature_size[1]), torch.device(device))
        if key not in self._anchors:
            c = self.config
            self._anchors[key] = anchor_ops.anchor_grid(key[:2], c.stride, c.anchor_sizes, c.aspect_ratios,
                                                        device=device, convention=c.anchor_convention)
        return self._anchors[key]

    # ------------------------------------------------------------------ proposals
    def propose(self, objectness: Tensor, deltas: Tensor, anchors: Tensor, image_size: tuple[int, int]
                ) -> tuple[list[Tensor], list[Tensor]]:
        """Filter the anchors' predictions into proposals (step 3 of the module docstring).

        Args:
            objectness (Tensor[B, N]): logits.  deltas (Tensor[B, N, 4]).  anchors (Tensor[N, 4]).
            image_size: (H, W).
        Returns:
            (boxes, scores): per image Tensor[K_i, 4] clipped to the image and Tensor[K_i]
            (sigmoid of the logits), by decreasing score; detached.
        """
        c = self.config
        pre, post = ((c.pre_nms_top_n_train, c.post_nms_top_n_train) if self.training
                     else (c.pre_nms_top_n_test, c.post_nms_top_n_test))
        objectness, deltas = objectness.detach(), deltas.detach()
        top, idx = objectness.topk(min(pre, objectness.shape[1]), dim=1)           # [B, pre]
        batch = torch.arange(len(idx), device=idx.device)[:, None]
        boxes = box_ops.decode_boxes(deltas[batch, idx], anchors[idx], RPN_BOX_WEIGHTS)
        boxes = box_ops.clip_boxes_to_image(boxes, image_size)                      # [B, pre, 4]
        scores = top.sigmoid()
        out_boxes, out_scores = [], []
        for b, s in zip(boxes, scores):     # per image: the number of survivors differs
            keep = box_ops.remove_small_boxes(b, c.min_size)
            if c.score_threshold > 0:
                keep = keep[s[keep] >= c.score_threshold]
            b, s = b[keep], s[keep]
            keep = ops.nms(b, s, c.nms_threshold)[:post]
            out_boxes.append(b[keep])
            out_scores.append(s[keep])
        return out_boxes, out_scores

    # ------------------------------------------------------------------ loss
    def loss(self, objectness: Tensor, deltas: Tensor, anchors: Tensor, targets: list[dict],
             image_size: tuple[int, int] | None = None
             ) -> dict[str, Tensor]:
        """The RPN's losses over the anchors sampled in every image (step 4).

        Args:
            objectness (Tensor[B, N]); deltas (Tensor[B, N, 4]); anchors (Tensor[N, 4]);
            targets: one dict per image with "boxes" Tensor[G, 4] (G = 0 allowed).
        Returns:
            {"loss_objectness": BCE with logits, mean over the sampled anchors of all images,
            "loss_rpn_box": smooth L1 (beta 1/9) of the positives' deltas, summed and divided
            by the number sampled (torchvision's normalization: exactly 0 without objects)}.
        """
        c = self.config
        n = anchors.shape[0]
        positives, negatives, matched = [], [], []
        for i, t in enumerate(targets):
            gt = t["boxes"].to(anchors)
            matches = matching.match_boxes(box_ops.box_iou(gt, anchors), c.fg_iou, c.bg_iou, c.allow_low_quality)
            matches = crowd.ignore_in_crowd(matches, anchors, t.get("crowd_boxes"), matching.NEGATIVE,
                                            matching.IGNORED, image_size)
            pos, neg = matching.sample_balanced(matches, c.batch_size_per_image, c.positive_fraction,
                                                self.generator)
            positives.append(pos + i * n)                    # indices into the flattened batch
            negatives.append(neg + i * n)
            matched.append(gt[matches[pos]])
        pos, neg, gt = torch.cat(positives), torch.cat(negatives), torch.cat(matched)
        sampled = torch.cat([pos, neg])
        num_sampled = max(sampled.numel(), 1)
        labels = torch.zeros(len(sampled), dtype=objectness.dtype, device=objectness.device)
        labels[:len(pos)] = 1
        loss_objectness = F.binary_cross_entropy_with_logits(objectness.reshape(-1)[sampled], labels,
                                                             reduction="sum") / num_sampled
        regression_targets = box_ops.encode_boxes(gt, anchors[pos % n], RPN_BOX_WEIGHTS)
        loss_box = F.smooth_l1_loss(deltas.reshape(-1, 4)[pos], regression_targets.to(deltas.dtype),
                                    beta=1 / 9, reduction="sum") / num_sampled
        return {"loss_objectness": loss_objectness, "loss_rpn_box": loss_box}

    def forward(self, image_size: tuple[int, int], features: Tensor, targets: list[dict] | None = None
                ) -> tuple[list[Tensor], dict[str, Tensor]]:
        """Proposals for a batch.

        Args:
            image_size: (H, W) of the images (all of one size).
            features (Tensor[B, D, h, w]): the backbone's map, h = H / stride.
            targets: train mode only, one dict per image with "boxes" Tensor[G, 4].
        Returns:
            (proposals: per image Tensor[K_i, 4], detached, clipped, by decreasing objectness;
            losses: {"loss_objectness", "loss_rpn_box"} in train mode, {} in eval mode).
        """
        if not isinstance(features, Tensor) or features.dim() != 4:
            got = list(features.shape) if isinstance(features, Tensor) else type(features).__name__
            raise ValueError(f"features must be a Tensor[B, D, h, w], got {got}")
        if len(image_size) != 2:
            raise ValueError(f"image_size must be (H, W), got {image_size!r}")
        h, w = features.shape[-2:]
        stride = self.config.stride
        if not (abs(h * stride - image_size[0]) < stride and abs(w * stride - image_size[1]) < stride):
            raise ValueError(f"a {h}x{w} feature map with stride {stride} covers "
                             f"{h * stride}x{w * stride} pixels, not the {image_size[0]}x{image_size[1]} image; "
                             "set the RPN's stride to the backbone's")
        if self.training:
            if targets is None:
                raise ValueError("in train mode the RPN needs targets (a list of dicts with 'boxes')")
            check_detection_targets(targets, len(features))
        anchors = self.anchors((h, w), features.device)
        objectness, deltas = flatten_head_outputs(*self.head(features))
        proposals, _ = self.propose(objectness, deltas, anchors, tuple(image_size))
        losses = self.loss(objectness, deltas, anchors, targets, image_size) if self.training else {}
        return proposals, losses


# ----------------------------------------------------------------------------- the model
@dataclass
class FasterRCNNConfig(rcnn.RoIHeadsConfig):
    """The settings of a :class:`FasterRCNN`: its RPN, its pooler and box head, and the RoI
    heads' settings (the fields of :class:`rcnn.RoIHeadsConfig`).

    rpn: an :class:`RPNConfig`, or a dict of its fields (a JSON record's form); its stride must
        be the backbone's, 8.
    pool: "roi_align" (Mask R-CNN's RoI Align, aligned, 2 x 2 samples per bin; the default here)
        or "roi_pool" (the Faster R-CNN paper's, from Fast R-CNN).
    pooled_size, box_hidden: the pooler's P x P bins, the box head's hidden width.
    """

    rpn: RPNConfig = field(default_factory=RPNConfig)
    pool: str = "roi_align"
    pooled_size: int = 7
    box_hidden: int = 256

    def __post_init__(self):
        super().__post_init__()
        if isinstance(self.rpn, dict):
            self.rpn = resolve_config(RPNConfig, None, self.rpn)
        if not isinstance(self.rpn, RPNConfig):
            raise ValueError(f"rpn must be an RPNConfig or a dict of its fields, got {type(self.rpn).__name__}")
        rcnn.check_pool(self.pool, "pool")


class FasterRCNN(nn.Module):
    """Backbone + RPN + Fast R-CNN's heads (torchvision's layout: ``backbone``, ``rpn``,
    ``roi_heads``), in the one model contract (README).

    ``model(images, targets)`` in train mode: {"loss_objectness", "loss_rpn_box", "loss_cls",
    "loss_box"}. ``model(images)`` in eval mode: one dict per image with "boxes" float[M, 4],
    "labels" int64[M] (1..C) and "scores" float[M].

    Args:
        num_classes: C, labels 1..C.
        pretrained_backbone: None (random), True (the committed ``data/pretrained/backbone.pt``)
            or the path of a checkpoint of ``python -m lessons_pkg.pretrain``.
        config: a :class:`FasterRCNNConfig`, or its fields as keyword ``settings`` (not both):
            ``FasterRCNN(pool="roi_pool", batch_size_per_image=64, rpn=RPNConfig(fg_iou=0.6))``.
    """

    task = "detection"   # what prepare_batch checks in the targets ("instance" for Mask R-CNN)

    def __init__(self, num_classes: int = 4, pretrained_backbone=None, config: FasterRCNNConfig | None = None,
                 **settings):
        super().__init__()
        self.num_classes = check_num_classes(num_classes)
        self.config = c = resolve_config(FasterRCNNConfig, config, settings)
        self.backbone = build_backbone(pretrained_backbone, stride=rcnn.STRIDE)
        if c.rpn.stride != self.backbone.stride:
            raise ValueError(f"the RPN's stride ({c.rpn.stride}) must be the backbone's ({self.backbone.stride})")
        self.rpn = RegionProposalNetwork(self.backbone.out_channels, c.rpn)
        pooler = rcnn.make_pooler(c.pool, c.pooled_size, self.backbone.stride)
        box_head = rcnn.MLPBoxHead(self.backbone.out_channels, c.pooled_size, num_classes, c.box_hidden)
        self.roi_heads = rcnn.RoIHeads(pooler, box_head, num_classes, c)

    @any_size
    def forward(self, images, targets: list[dict[str, Tensor]] | None = None):
        """Training: returns {"loss_objectness", "loss_rpn_box", "loss_cls", "loss_box"}.
        Eval: returns one dict per image with "boxes", "labels", "scores"."""
        images, targets = prepare_batch(images, targets, self.training, self.num_classes, self.task)
        image_size = tuple(images.shape[-2:])
        features = self.backbone(images)
        proposals, rpn_losses = self.rpn(image_size, features, targets)
        detections, head_losses = self.roi_heads(features, proposals, image_size, targets)
        return {**rpn_losses, **head_losses} if self.training else detections
