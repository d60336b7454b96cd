"""R-CNN and Fast R-CNN: classify and refine region proposals.

Both take the proposals of an image (selective search, :mod:`lessons_pkg.models.proposals`) and
answer, for each: which class (or background), and how to move its box onto the object (four
regression deltas per class). They differ in *where the CNN runs*:

  * R-CNN (Girshick et al. 2014) cuts every proposal out of the **image**, warps it to a fixed
    S x S crop and runs the CNN on each crop: one CNN pass per proposal;
  * Fast R-CNN (Girshick 2015) runs the CNN **once per image** and cuts every proposal out of the
    **feature map** with RoI Pool (or RoI Align): P x P bins of features per proposal, then
    shared fully connected layers.

Everything after the crop is shared (:class:`RoIHeads`): matching proposals to objects
(IoU >= 0.5: that object's class; below: background), a balanced sample of them for the loss
(cross-entropy + smooth L1 on the true class's deltas), and at test time decoding, per-class
NMS and the top detections. Faster R-CNN (:mod:`faster_rcnn`) keeps these heads and learns the
proposals too.

Shape key
    B   images                     K   proposals (RoIs) over the batch, K_i of image i
    C   object classes, labels 1..C; the heads score C + 1 (index 0 is background)
    D   feature channels (64)      h, w  feature map (H / 8, W / 8)
    P   pooled bins (7)            S   R-CNN's crop side (32 pixels)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import boxes as box_ops
from .. import crowd, matching, ops
from ..batching import any_size
from ..inputs import prepare_batch
from . import proposals as proposal_methods
from .backbone import Backbone, build_backbone
from .configs import check_num_classes, resolve_config

STRIDE = 8  # the R-CNN family's feature map: the backbone's stage at 1/8 of the image


# ----------------------------------------------------------------------------- poolers
POOLS = ("roi_pool", "roi_align")


def make_pooler(pool: str, output_size: int, stride: int = STRIDE) -> nn.Module:
    """RoI Pool or RoI Align (aligned, 2 x 2 samples per bin) from a stride-``stride`` feature
    map: ``pooler(features, proposals) -> Tensor[K, D, P, P]`` for proposals in image pixels
    (a list of Tensor[K_i, 4], or Tensor[K, 5] with the image index first)."""
    if check_pool(pool, "pool") == "roi_pool":
        return ops.RoIPool(output_size, spatial_scale=1 / stride)
    return ops.RoIAlign(output_size, spatial_scale=1 / stride, sampling_ratio=2, aligned=True)


def check_pool(pool: str, name: str) -> str:
    """``pool``, or a ValueError naming the setting ``name`` unless it is one of :data:`POOLS`."""
    if pool not in POOLS:
        raise ValueError(f"unknown {name} {pool!r}; choose from {POOLS}")
    return pool


# ----------------------------------------------------------------------------- box heads
class MLPBoxHead(nn.Module):
    """Two shared fully connected layers, then a classifier and a per-class box regressor
    (torchvision's TwoMLPHead + FastRCNNPredictor).

    pooled Tensor[K, D, P, P] -> (class_logits Tensor[K, C + 1], box_deltas Tensor[K, 4 (C + 1)]).
    """

    def __init__(self, in_channels: int, pooled_size: int, num_classes: int, hidden: int = 256):
        super().__init__()
        self.fc6 = nn.Linear(in_channels * pooled_size ** 2, hidden)
        self.fc7 = nn.Linear(hidden, hidden)
        self.cls_score = nn.Linear(hidden, num_classes + 1)
        self.bbox_pred = nn.Linear(hidden, 4 * (num_classes + 1))
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.zeros_(self.cls_score.bias)
        nn.init.zeros_(self.bbox_pred.bias)

    def forward(self, pooled: Tensor) -> tuple[Tensor, Tensor]:
        x = F.relu(self.fc7(F.relu(self.fc6(pooled.flatten(1)))))
        return self.cls_score(x), self.bbox_pred(x)


class CropCNNBoxHead(nn.Module):
    """R-CNN's head: the whole CNN on every warped crop, then :class:`MLPBoxHead`.

    crops Tensor[K, 3, S, S] -> (class_logits [K, C + 1], box_deltas [K, 4 (C + 1)]); the CNN
    makes a (S / 8) x (S / 8) map of each crop.
    """

    def __init__(self, features: Backbone, crop_size: int, num_classes: int, hidden: int = 256):
        super().__init__()
        if crop_size % features.stride:
            raise ValueError(f"crop_size must be a multiple of {features.stride}, got {crop_size}")
        self.features = features
        self.mlp = MLPBoxHead(features.out_channels, crop_size // features.stride, num_classes, hidden)

    def forward(self, crops: Tensor) -> tuple[Tensor, Tensor]:
        return self.mlp(self.features(crops))


# ----------------------------------------------------------------------------- loss
def fastrcnn_loss(class_logits: Tensor, box_deltas: Tensor, labels: Tensor,
                  regression_targets: Tensor) -> dict[str, Tensor]:
    """The heads' multi-task loss over K sampled proposals.

    Args:
        class_logits (Tensor[K, C + 1]); box_deltas (Tensor[K, 4 (C + 1)]).
        labels (Tensor[K]): int64, 0 for background.
        regression_targets (Tensor[K, 4]): encoded true boxes (used where labels > 0).
    Returns:
        {"loss_cls": cross-entropy (mean over K), "loss_box": smooth L1 (beta 1/9) of the true
        class's four deltas, summed over the positives and divided by K (torchvision's
        normalization, so an image without objects has a box loss of exactly 0)}. With K = 0
        (every proposal inside a crowd region, :mod:`lessons_pkg.crowd`) both are 0, in the graph.
    """
    if labels.numel() == 0:
        return {"loss_cls": class_logits.sum() * 0, "loss_box": box_deltas.sum() * 0}
    loss_cls = F.cross_entropy(class_logits, labels)
    positive = torch.nonzero(labels > 0).flatten()
    deltas = box_deltas.view(len(box_deltas), -1, 4)[positive, labels[positive]]
    loss_box = F.smooth_l1_loss(deltas, regression_targets[positive], beta=1 / 9, reduction="sum")
    return {"loss_cls": loss_cls, "loss_box": loss_box / max(labels.numel(), 1)}


# ----------------------------------------------------------------------------- the shared heads
@dataclass
class RoIHeadsConfig:
    """The settings of :class:`RoIHeads` (torchvision's defaults but ``batch_size_per_image``).

    fg_iou, bg_iou: a proposal with IoU >= fg_iou with an object takes its class; below bg_iou it
    is background; in between, ignored. batch_size_per_image, positive_fraction: the sample that
    trains the heads (at most a quarter of positives by default). score_threshold,
    nms_threshold, detections_per_image: test-time post-processing. box_weights: the box coder's
    weights (dx, dy, dw, dh). add_gt_as_proposals: add the true boxes to the proposals in
    training (so every object has at least one perfect positive, as torchvision does). seed:
    the sampler's stream.

    The R-CNN family's model configs extend it, so a model's RoI-head settings are its own
    keywords (``FastRCNN(batch_size_per_image=64)``).
    """

    fg_iou: float = 0.5
    bg_iou: float = 0.5
    batch_size_per_image: int = 128
    positive_fraction: float = 0.25
    score_threshold: float = 0.05
    nms_threshold: float = 0.5
    detections_per_image: int = 100
    box_weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0)
    add_gt_as_proposals: bool = True
    seed: int = 0

    def __post_init__(self):
        self.box_weights = tuple(self.box_weights)  # a JSON record gives a list
        if not 0 <= self.bg_iou <= self.fg_iou <= 1:
            raise ValueError(f"need 0 <= bg_iou <= fg_iou <= 1, got bg_iou={self.bg_iou}, fg_iou={self.fg_iou}")
        for name in ("batch_size_per_image", "detections_per_image"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.positive_fraction <= 1:
            raise ValueError(f"positive_fraction must be in (0, 1], got {self.positive_fraction}")
        if len(self.box_weights) != 4:
            raise ValueError(f"box_weights must be four numbers (dx, dy, dw, dh), got {self.box_weights}")


class RoIHeads(nn.Module):
    """From proposals to detections (or losses), around a pooler and a box head.

    ``RoIHeads(pooler, box_head, num_classes, config)`` or ``RoIHeads(pooler, box_head,
    num_classes, batch_size_per_image=64, ...)`` with the fields of :class:`RoIHeadsConfig`,
    which become attributes of the same names: :meth:`postprocess` reads them, so a built
    model's ``roi_heads.score_threshold`` may be changed to look at more (or fewer) detections.

    Args:
        pooler: ``pooler(features, proposals) -> pooled``: cuts each proposal (a list of
            Tensor[K_i, 4] in image pixels) out of ``features`` (a feature map, or the images).
        box_head: pooled -> (class_logits [K, C + 1], box_deltas [K, 4 (C + 1)]).
        num_classes: C.
        config: a :class:`RoIHeadsConfig` (or a model config that extends it: only its
            RoI-head fields are read), or its fields as keyword ``settings`` (not both).
        mask_branch: optional, e.g. Mask R-CNN's ``mask_rcnn.MaskBranch``: in training
            ``mask_branch.loss(features, sampled, labels, matched, targets)`` adds "loss_mask"
            over the positive samples; at test time ``mask_branch.predict(features, detections,
            image_size)`` adds "masks" to the detections. The box path is the same with or
            without it (torchvision's RoIHeads does the same).
    """

    def __init__(self, pooler: Callable[[Tensor, list[Tensor]], Tensor], box_head: nn.Module, num_classes: int,
                 config: RoIHeadsConfig | None = None, mask_branch: nn.Module | None = None, **settings):
        super().__init__()
        c = resolve_config(RoIHeadsConfig, config, settings)  # a model's config: its RoI-head fields
        self.pooler, self.box_head, self.num_classes = pooler, box_head, num_classes
        self.fg_iou, self.bg_iou = c.fg_iou, c.bg_iou
        self.batch_size_per_image, self.positive_fraction = c.batch_size_per_image, c.positive_fraction
        self.score_threshold, self.nms_threshold = c.score_threshold, c.nms_threshold
        self.detections_per_image, self.box_weights = c.detections_per_image, c.box_weights
        self.add_gt_as_proposals = c.add_gt_as_proposals
        self.generator = torch.Generator().manual_seed(c.seed)  # the sampler's stream (CPU)
        self.register_module("mask_branch", mask_branch)

    def select_training_samples(self, proposals: list[Tensor], targets: list[dict], return_matched: bool = False
                                ) -> tuple[list[Tensor], Tensor, Tensor] | tuple[list[Tensor], Tensor, Tensor, Tensor]:
        """Match and sample each image's proposals.

        Returns (sampled proposals per image, labels int64[K], regression targets Tensor[K, 4]);
        with ``return_matched``, also int64[K]: the index of each sample's object among its
        image's targets (-1 for background), e.g. to find the object's mask (Mask R-CNN).
        """
        sampled, all_labels, all_targets, all_matched = [], [], [], []
        for props, target in zip(proposals, targets):
            gt, gt_labels = target["boxes"], target["labels"]
            if self.add_gt_as_proposals:
                props = torch.cat([props, gt.to(props.dtype)])
            matches = matching.match_boxes(box_ops.box_iou(gt, props), self.fg_iou, self.bg_iou)
            matches = crowd.ignore_in_crowd(matches, props, target.get("crowd_boxes"), matching.NEGATIVE,
                                            matching.IGNORED)
            pos, neg = matching.sample_balanced(matches, self.batch_size_per_image, self.positive_fraction,
                                                self.generator)
            keep = torch.cat([pos, neg])
            labels = torch.zeros(len(keep), dtype=torch.int64, device=props.device)
            labels[:len(pos)] = gt_labels[matches[pos]]
            reg = torch.zeros(len(keep), 4, dtype=props.dtype, device=props.device)
            if len(pos):
                reg[:len(pos)] = box_ops.encode_boxes(gt[matches[pos]], props[pos], self.box_weights)
            sampled.append(props[keep])
            all_labels.append(labels)
            all_targets.append(reg)
            all_matched.append(torch.cat([matches[pos], matches.new_full((len(neg),), -1)]))
        out = sampled, torch.cat(all_labels), torch.cat(all_targets)
        return (*out, torch.cat(all_matched)) if return_matched else out

    def postprocess(self, class_logits: Tensor, box_deltas: Tensor, proposals: list[Tensor],
                    image_size: tuple[int, int]) -> list[dict[str, Tensor]]:
        """Scores and per-class boxes -> one dict of detections per image: every (proposal,
        class) pair is a candidate, decoded with that class's deltas and clipped; candidates
        under ``score_threshold`` or smaller than 0.01 pixel go; per-class NMS; the best
        ``detections_per_image`` stay."""
        probs = class_logits.softmax(dim=1)
        k, c1 = probs.shape
        boxes = box_ops.decode_boxes(box_deltas.view(k, c1, 4), torch.cat(proposals)[:, None, :], self.box_weights)
        boxes = box_ops.clip_boxes_to_image(boxes, image_size)
        labels = torch.arange(c1, device=probs.device).expand(k, c1)
        detections = []
        for b, s, lb in zip(boxes.split([len(p) for p in proposals]), probs.split([len(p) for p in proposals]),
                            labels.split([len(p) for p in proposals])):
            b, s, lb = b[:, 1:].reshape(-1, 4), s[:, 1:].reshape(-1), lb[:, 1:].reshape(-1)  # drop background
            keep = torch.nonzero(s > self.score_threshold).flatten()
            keep = keep[box_ops.remove_small_boxes(b[keep], 1e-2)]
            b, s, lb = b[keep], s[keep], lb[keep]
            keep = ops.batched_nms(b, s, lb, self.nms_threshold)[:self.detections_per_image]
            detections.append({"boxes": b[keep], "labels": lb[keep], "scores": s[keep]})
        return detections

    def forward(self, features: Tensor, proposals: list[Tensor], image_size: tuple[int, int],
                targets: list[dict] | None = None) -> tuple[list[dict], dict[str, Tensor]]:
        """Train: ([], {"loss_cls", "loss_box"} and "loss_mask" with a mask branch).
        Eval: (one dict per image, with "masks" too with a mask branch; {})."""
        if self.training:
            if targets is None:
                raise ValueError("in train mode the heads need targets")
            proposals, labels, regression_targets, matched = self.select_training_samples(
                proposals, targets, return_matched=True)
            class_logits, box_deltas = self.box_head(self.pooler(features, proposals))
            losses = fastrcnn_loss(class_logits, box_deltas, labels, regression_targets)
            if self.mask_branch is not None:
                losses["loss_mask"] = self.mask_branch.loss(features, proposals, labels, matched, targets)
            return [], losses
        class_logits, box_deltas = self.box_head(self.pooler(features, proposals))
        detections = self.postprocess(class_logits, box_deltas, proposals, image_size)
        if self.mask_branch is not None:
            detections = self.mask_branch.predict(features, detections, image_size)
        return detections, {}


# ----------------------------------------------------------------------------- inputs
def image_proposals(images: Tensor, targets: list[dict] | None, proposals: list[Tensor] | None,
                    top_k: int) -> list[Tensor]:
    """Each image's proposals: given as ``proposals``, or in ``targets[i]["proposals"]`` (see
    :class:`WithProposals`), or else computed now by selective search (about 0.1 s per
    128-pixel image on a CPU). At most ``top_k`` per image, on the images' device."""
    if proposals is None and targets is not None and all("proposals" in t for t in targets):
        proposals = [t["proposals"] for t in targets]
    if proposals is None:
        proposals = [proposal_methods.selective_search(image)[0] for image in images]
    if len(proposals) != len(images):
        raise ValueError(f"got proposals for {len(proposals)} images, expected {len(images)}")
    for i, p in enumerate(proposals):
        box_ops.check_boxes(p, f"proposals of image {i}", ndim=2)
    return [p[:top_k].to(images.device, images.dtype) for p in proposals]


class WithProposals(torch.utils.data.Dataset):
    """A detection dataset whose targets also hold ``"proposals"`` (Tensor[K, 4], best first),
    computed once per image by ``method`` (selective search by default) and kept in memory:
    R-CNN and Fast R-CNN train over the same images many times. ``proposals``: the proposals of
    the first images, computed before (Tensor[K, 4] each; e.g. the committed ones of the
    evaluation sets, :func:`lessons_pkg.evaluation.stored_proposals`), used instead of ``method``."""

    def __init__(self, dataset, top_k: int = 300, method: Callable | None = None,
                 proposals: list[Tensor] | None = None):
        self.dataset, self.top_k = dataset, top_k
        self.method = method if method is not None else (lambda image: proposal_methods.selective_search(image)[0])
        if proposals is not None and len(proposals) > len(dataset):
            raise ValueError(f"proposals for {len(proposals)} images, the dataset holds {len(dataset)}")
        self._cache: dict[int, Tensor] = {i: p[:top_k] for i, p in enumerate(proposals or [])}

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        image, target = self.dataset[index]
        if index not in self._cache:
            self._cache[index] = self.method(image)[:self.top_k]
        return image, {**target, "proposals": self._cache[index]}


# ----------------------------------------------------------------------------- the two models
@dataclass
class FastRCNNConfig(RoIHeadsConfig):
    """The settings of a :class:`FastRCNN`: its pooler, the proposals it classifies, and the
    RoI heads' settings (:class:`RoIHeadsConfig`).

    pool: "roi_pool" (the paper's max pooling over quantized bins) or "roi_align" (bilinear
    samples, no quantization; Mask R-CNN's fix). pooled_size: P, the pooler's P x P bins.
    proposals_per_image: at most this many proposals per image, best first.
    """

    pool: str = "roi_pool"
    pooled_size: int = 7
    proposals_per_image: int = 300

    def __post_init__(self):
        super().__post_init__()
        check_pool(self.pool, "pool")


@dataclass
class RCNNConfig(RoIHeadsConfig):
    """The settings of an :class:`RCNN`: the side S of its warped crops (a multiple of the
    backbone's stride, 8), the proposals it classifies per image, and the RoI heads' settings
    (:class:`RoIHeadsConfig`)."""

    crop_size: int = 32
    proposals_per_image: int = 300


class _ProposalDetector(nn.Module):
    """The contract shared by R-CNN and Fast R-CNN (README): ``model(images, targets)`` ->
    {"loss_cls", "loss_box"}; ``model(images)`` -> one dict per image. Proposals come from
    ``proposals=`` or the targets' "proposals" (see :func:`image_proposals`)."""

    roi_heads: RoIHeads
    config: FastRCNNConfig | RCNNConfig

    def __init__(self, num_classes: int):
        super().__init__()
        self.num_classes = check_num_classes(num_classes)

    def features(self, images: Tensor) -> Tensor:
        raise NotImplementedError

    @any_size
    def forward(self, images, targets: list[dict] | None = None, proposals: list[Tensor] | None = None):
        images, checked = prepare_batch(images, targets, self.training, self.num_classes)
        props = image_proposals(images, targets, proposals, self.config.proposals_per_image)
        detections, losses = self.roi_heads(self.features(images), props, tuple(images.shape[-2:]), checked)
        return losses if self.training else detections


class FastRCNN(_ProposalDetector):
    """Fast R-CNN: the CNN once per image, proposals cropped from its feature map.

    Args:
        num_classes: C, labels 1..C.
        pretrained_backbone: None (random), True (the committed ``data/pretrained/backbone.pt``)
            or the path of a checkpoint of ``python -m lessons_pkg.pretrain``.
        config: a :class:`FastRCNNConfig` (e.g. ``pool="roi_align"``, or RoI-head settings such
            as ``batch_size_per_image``), or its fields as keyword ``settings`` (not both).
    """

    def __init__(self, num_classes: int = 4, pretrained_backbone=None, config: FastRCNNConfig | None = None,
                 **settings):
        super().__init__(num_classes)
        self.config = c = resolve_config(FastRCNNConfig, config, settings)
        self.backbone = build_backbone(pretrained_backbone, stride=STRIDE)
        self.roi_heads = RoIHeads(make_pooler(c.pool, c.pooled_size, self.backbone.stride),
                                  MLPBoxHead(self.backbone.out_channels, c.pooled_size, num_classes),
                                  num_classes, c)

    def features(self, images: Tensor) -> Tensor:
        return self.backbone(images)


class RCNN(_ProposalDetector):
    """R-CNN: every proposal warped out of the image to S x S pixels, the CNN run on each crop.

    The cost is one CNN pass per proposal, so it classifies fewer proposals per image in
    training (``batch_size_per_image``) and at test time (``proposals_per_image``).

    Args:
        num_classes: C, labels 1..C.
        pretrained_backbone: None (random), True (the committed ``data/pretrained/backbone.pt``)
            or the path of a checkpoint of ``python -m lessons_pkg.pretrain``.
        config: an :class:`RCNNConfig` (e.g. ``crop_size=64``, or RoI-head settings), or its
            fields as keyword ``settings`` (not both).
    """

    def __init__(self, num_classes: int = 4, pretrained_backbone=None, config: RCNNConfig | None = None,
                 **settings):
        super().__init__(num_classes)
        self.config = c = resolve_config(RCNNConfig, config, settings)
        head = CropCNNBoxHead(build_backbone(pretrained_backbone, stride=STRIDE), c.crop_size, num_classes)
        self.roi_heads = RoIHeads(self.warp_crops, head, num_classes, c)

    def warp_crops(self, images: Tensor, proposals: list[Tensor]) -> Tensor:
        """proposals -> Tensor[K, 3, S, S]: each box of the image resized to S x S (RoI Align
        with bilinear samples: the "warp" of the paper, without its context padding)."""
        return ops.roi_align(images, proposals, self.config.crop_size, spatial_scale=1.0, sampling_ratio=2,
                             aligned=True)

    def features(self, images: Tensor) -> Tensor:
        return images  # the CNN runs inside the head, once per crop
