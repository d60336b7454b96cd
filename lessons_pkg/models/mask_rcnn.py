"""Mask R-CNN: Faster R-CNN plus a small fully convolutional head that draws each object's mask.

Mask R-CNN (He et al. 2017) keeps everything of Faster R-CNN (:mod:`faster_rcnn`) and adds a
third output per RoI, next to its class and its box: an M x M mask (M = 28).

  1. backbone, RPN and box heads exactly as in Faster R-CNN;
  2. mask branch: RoI Align cuts a P x P (14 x 14) window of features out of the map for each
     RoI; four 3x3 convs, a 2x2 stride-2 transposed conv (-> 28 x 28) and a 1x1 conv give one
     mask logit map per class (or a single one, class-agnostic);
  3. training: on the *positive* sampled proposals only, the target is the matched object's
     mask cropped to the proposal and resized to M x M (:func:`mask_targets`), the loss a
     per-pixel binary cross-entropy on the channel of the object's class (:func:`mask_loss`):
     the classes do not compete for pixels, the box head already chose the class;
  4. inference: the mask branch runs on the final detections; each detection's channel of its
     label, through a sigmoid, is pasted back into the image inside its box (:func:`paste_masks`).

The branch (:class:`MaskBranch`) plugs into Fast R-CNN's heads (``rcnn.RoIHeads(mask_branch=...)``,
as in torchvision): the box path that samples, pools, classifies and regresses is the one of
Faster R-CNN, not a copy of it.

RoI Align (He et al. 2017, section 3) samples the feature map at exact positions; RoI Pool rounds
every RoI and bin to the feature grid, an error of up to a stride (8 pixels here).
``MaskRCNN(pool="roi_pool")`` puts RoI Pool back, in the box head and the mask branch (the
setting of the paper's table 2c, whose C4 head pools one feature for both);
``MaskRCNN(mask_pool="roi_pool")`` puts it back in the mask branch only, so the box head keeps
RoI Align: the two variants separate what the rounding does to the masks directly from what it
does through the boxes (the Mask R-CNN chapter measures both steps).

Sampling convention (one for crop and paste, so they are inverses up to resampling): boxes are
xyxy in pixel-edge coordinates, pixel (x, y) covers [x, x + 1) x [y, y + 1) and its value lives at
its centre (x + 0.5, y + 0.5). :func:`mask_targets` averages bilinear samples of the mask in
M x M equal bins of the box (RoI Align with ``aligned=True``); :func:`paste_masks` gives each
image pixel whose centre lies in the box the bilinear interpolation of the M x M grid at that
centre, bin j's value sitting at the centre of bin j, clamped to the border bins, and 0 outside
the box.

Shape key
    B   images                 H, W  image size in pixels
    D   feature channels       h, w  feature map (H / 8, W / 8)
    C   object classes, labels 1..C (the mask head's channel of label c is c - 1)
    G   objects of an image    K   RoIs (positive samples in training, detections at test time)
    P   pooled bins of the mask branch (14)       M   mask side (28 = 2 P)
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import ops
from . import faster_rcnn, rcnn
from .configs import resolve_config


# ----------------------------------------------------------------------------- the three functions
def mask_targets(gt_masks: Tensor, matched_gt: Tensor, boxes: Tensor, size: int = 28,
                 sampling_ratio: int = 2) -> Tensor:
    """Each RoI's mask target: its object's mask cropped to the RoI and resized to size x size.

    RoI Align on the masks themselves (torchvision's ``project_masks_on_boxes``), but with
    ``aligned=True`` (pixel centres at +0.5, as detectron2 does, the convention of
    :func:`paste_masks`) and a fixed ``sampling_ratio`` (2 x 2 samples per bin: our objects are
    at most ~64 pixels, so a bin spans at most ~2.3 pixels; the adaptive -1 of torchvision
    would make roi_align read the RoI sizes back from the device).

    Args:
        gt_masks (Tensor[G, H, W]): uint8/bool/float masks of the objects.
        matched_gt (Tensor[K]): int64, the object (row of gt_masks) of each RoI.
        boxes (Tensor[K, 4]): xyxy RoIs in image pixels (may reach outside the image).
        size: M, the side of the targets.
    Returns:
        Tensor[K, M, M] float in [0, 1], the fraction of mask under each bin.
    """
    dtype = boxes.dtype if boxes.is_floating_point() else torch.float32
    if len(boxes) == 0:
        return torch.zeros(0, size, size, dtype=dtype, device=boxes.device)
    rois = torch.cat([matched_gt[:, None].to(dtype), boxes.to(dtype)], dim=1)
    return ops.roi_align(gt_masks[:, None].to(dtype), rois, (size, size), spatial_scale=1.0,
                         sampling_ratio=sampling_ratio, aligned=True)[:, 0]


def mask_loss(mask_logits: Tensor, labels: Tensor, targets: Tensor) -> Tensor:
    """Per-pixel binary cross-entropy on the channel of each RoI's true class.

    Args:
        mask_logits (Tensor[K, C, M, M] or Tensor[K, 1, M, M]): class-specific (channel c - 1 for
            label c) or class-agnostic (channel 0 for every label).
        labels (Tensor[K]): int64 in 1..C.
        targets (Tensor[K, M, M]): in [0, 1] (see :func:`mask_targets`).
    Returns:
        scalar, the mean over the K M M pixels; ``mask_logits.sum() * 0`` (0, finite, and part of
        the graph so that backward works) when K = 0.
    """
    k = mask_logits.shape[0]
    if k == 0:
        return mask_logits.sum() * 0
    channel = labels - 1 if mask_logits.shape[1] > 1 else torch.zeros_like(labels)
    logits = mask_logits[torch.arange(k, device=mask_logits.device), channel]
    return F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype))


def paste_masks(mask_probs: Tensor, boxes: Tensor, image_size: tuple[int, int]) -> Tensor:
    """Paste each box's M x M mask back into the image (the inverse of :func:`mask_targets`).

    One ``F.grid_sample`` over all N boxes: image pixel (x, y) of box n reads the box's grid at
    normalized coordinates g = 2 (x + 0.5 - x1) / (x2 - x1) - 1 (and likewise for y), with
    ``align_corners=False`` (bin j's value at the centre of bin j, as mask_targets puts it),
    bilinear, clamped to the border bins inside the box; pixels whose centre is outside the box
    get 0. (torchvision's ``paste_masks_in_image`` instead pads the grid with a ring of zeros,
    rounds the box to whole pixels with the legacy "+1" width and resizes: its masks fade out at
    the box edges and sit up to half a pixel off.)

    Args:
        mask_probs (Tensor[N, M, M]): e.g. probabilities in [0, 1].
        boxes (Tensor[N, 4]): xyxy in image pixels (a side under 1e-3 pixels counts as 1e-3).
        image_size: (H, W).
    Returns:
        Tensor[N, H, W] of mask_probs' dtype.
    """
    h, w = int(image_size[0]), int(image_size[1])
    n = len(boxes)
    if n == 0:
        return mask_probs.new_zeros((0, h, w))
    x1, y1, x2, y2 = boxes.to(mask_probs.dtype).unbind(1)
    xs = torch.arange(w, dtype=mask_probs.dtype, device=mask_probs.device) + 0.5  # pixel centres
    ys = torch.arange(h, dtype=mask_probs.dtype, device=mask_probs.device) + 0.5
    gx = 2 * (xs - x1[:, None]) / (x2 - x1).clamp(min=1e-3)[:, None] - 1      # [N, W]
    gy = 2 * (ys - y1[:, None]) / (y2 - y1).clamp(min=1e-3)[:, None] - 1      # [N, H]
    grid = torch.stack([gx[:, None, :].expand(n, h, w), gy[:, :, None].expand(n, h, w)], dim=-1)
    pasted = F.grid_sample(mask_probs[:, None], grid, mode="bilinear", padding_mode="border",
                           align_corners=False)[:, 0]
    inside = (gy.abs() <= 1)[:, :, None] & (gx.abs() <= 1)[:, None, :]
    return pasted * inside


# ----------------------------------------------------------------------------- the head
class MaskHead(nn.Module):
    """Four 3x3 conv + ReLU, a 2x2 stride-2 transposed conv + ReLU, a 1x1 conv (torchvision's
    MaskRCNNHeads + MaskRCNNPredictor, narrower).

    pooled Tensor[K, D, P, P] -> mask logits Tensor[K, out_channels, 2P, 2P].
    """

    def __init__(self, in_channels: int, out_channels: int, width: int = 64, num_convs: int = 4):
        super().__init__()
        layers = []
        for i in range(num_convs):
            layers += [nn.Conv2d(in_channels if i == 0 else width, width, 3, padding=1), nn.ReLU(inplace=True)]
        self.convs = nn.Sequential(*layers)
        self.upsample = nn.ConvTranspose2d(width, width, 2, stride=2)
        self.predictor = nn.Conv2d(width, out_channels, 1)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.predictor.weight, std=0.001)  # detectron2's: starts at p = 0.5, loss log 2

    def forward(self, pooled: Tensor) -> Tensor:
        return self.predictor(F.relu(self.upsample(self.convs(pooled))))


# ----------------------------------------------------------------------------- the branch
class MaskBranch(nn.Module):
    """Mask R-CNN's branch, plugged into Fast R-CNN's heads (``rcnn.RoIHeads(mask_branch=...)``):
    a pooler (RoI Align or RoI Pool, P x P bins) and a :class:`MaskHead`.

    Args:
        in_channels: D, the feature map's channels.  num_classes: C.
        pool: "roi_align" or "roi_pool".  stride: the feature map's stride.
        pooled_size, mask_size: P and M (M = 2 P: the transposed conv doubles the side).
        width: channels of the head's convs.  class_agnostic: one mask per RoI, not one per class.
    """

    def __init__(self, in_channels: int, num_classes: int, pool: str = "roi_align", stride: int = rcnn.STRIDE,
                 pooled_size: int = 14, mask_size: int = 28, width: int = 64, class_agnostic: bool = False):
        super().__init__()
        if mask_size != 2 * pooled_size:
            raise ValueError(f"mask_size must be 2 * mask_pooled_size (the transposed conv doubles it), "
                             f"got {mask_size} and {pooled_size}")
        self.mask_size, self.class_agnostic = mask_size, class_agnostic
        self.pooler = rcnn.make_pooler(pool, pooled_size, stride)
        self.head = MaskHead(in_channels, 1 if class_agnostic else num_classes, width)

    def logits(self, features: Tensor, rois: Tensor | list[Tensor]) -> Tensor:
        """RoIs (Tensor[K, 5] or per image Tensor[K_i, 4]) -> Tensor[K, C or 1, M, M]."""
        return self.head(self.pooler(features, rois))

    def loss(self, features: Tensor, sampled: list[Tensor], labels: Tensor, matched: Tensor,
             targets: list[dict]) -> Tensor:
        """"loss_mask" over the positive samples of the box heads.

        Args:
            sampled: per image the sampled RoIs Tensor[K_i, 4]; labels (Tensor[K]): int64, 0 for
            background; matched (Tensor[K]): each sample's object in its image (-1: background);
            targets: with "masks" uint8[G_i, H, W].
        """
        # Every sample's image, and its object as a row of all the batch's masks (its index in
        # its image, offset by the objects of the earlier images); then the positives only (one
        # sync, as in fastrcnn_loss). Offsets are Python ints: no host-to-device copy.
        dev, sizes = labels.device, [len(p) for p in sampled]
        image = torch.cat([torch.full((n,), i, dtype=torch.int64, device=dev) for i, n in enumerate(sizes)])
        offsets = itertools.accumulate([len(t["boxes"]) for t in targets[:-1]], initial=0)
        gt_row = torch.cat([m + o for m, o in zip(matched.split(sizes), offsets)])
        positive = torch.nonzero(labels > 0).squeeze(1)
        boxes = torch.cat(sampled)[positive]
        logits = self.logits(features, torch.cat([image[positive, None].to(boxes.dtype), boxes], dim=1))
        gt_masks = torch.cat([t["masks"] for t in targets]).to(dev)
        goal = mask_targets(gt_masks, gt_row[positive], boxes, self.mask_size)
        return mask_loss(logits, labels[positive], goal)

    def predict(self, features: Tensor, detections: list[dict], image_size: tuple[int, int]) -> list[dict]:
        """Each detection's mask: its label's channel (channel 0 if class-agnostic), sigmoid,
        pasted into the image; adds "masks" float[M, H, W] to every dict."""
        boxes = [d["boxes"] for d in detections]
        labels = torch.cat([d["labels"] for d in detections])
        logits = self.logits(features, boxes)
        channel = torch.zeros_like(labels) if self.class_agnostic else labels - 1
        probs = logits[torch.arange(len(labels), device=labels.device), channel].sigmoid()
        masks = paste_masks(probs, torch.cat(boxes), image_size)
        for d, m in zip(detections, masks.split([len(b) for b in boxes])):
            d["masks"] = m
        return detections


# ----------------------------------------------------------------------------- the model
@dataclass
class MaskRCNNConfig(faster_rcnn.FasterRCNNConfig):
    """The settings of a :class:`MaskRCNN`: those of Faster R-CNN (:class:`faster_rcnn.FasterRCNNConfig`:
    rpn, pool, pooled_size, box_hidden and the RoI heads' settings) and the mask branch's.

    pool: "roi_align" or "roi_pool", for the box head's pooler and (unless ``mask_pool`` says
        otherwise) the mask branch's.
    mask_pool: the mask branch's pooler, when it differs from the box head's (None: ``pool``).
    class_agnostic: one mask per RoI instead of one per class.
    mask_size, mask_pooled_size: M and P (M = 2 P: the transposed conv doubles the side).
    mask_width: channels of the mask head's convs.
    """

    mask_pool: str | None = None
    class_agnostic: bool = False
    mask_size: int = 28
    mask_pooled_size: int = 14
    mask_width: int = 64

    def __post_init__(self):
        super().__post_init__()
        if self.mask_pool is not None:
            rcnn.check_pool(self.mask_pool, "mask_pool")


class MaskRCNN(faster_rcnn.FasterRCNN):
    """Faster R-CNN + a mask branch in its RoI heads, in the one model contract (README).

    ``model(images, targets)`` in train mode (targets with "masks" uint8[N, H, W]):
    {"loss_objectness", "loss_rpn_box", "loss_cls", "loss_box", "loss_mask"}.
    ``model(images)`` in eval mode: one dict per image with "boxes" float[M, 4], "labels"
    int64[M], "scores" float[M] and "masks" float[M, H, W], probabilities in [0, 1] (foreground
    above 0.5; the layout of the targets' masks, where torchvision gives [M, 1, H, W]).

    Args:
        num_classes: C, labels 1..C.
        pretrained_backbone: None (random), True (the committed ``data/pretrained/backbone.pt``)
            or the path of a checkpoint of ``python -m lessons_pkg.pretrain``.
        config: a :class:`MaskRCNNConfig`, or its fields as keyword ``settings`` (not both):
            ``MaskRCNN(mask_pool="roi_pool")``, ``MaskRCNN(class_agnostic=True)``.
    """

    task = "instance"

    def __init__(self, num_classes: int = 4, pretrained_backbone=None, config: MaskRCNNConfig | None = None,
                 **settings):
        c = resolve_config(MaskRCNNConfig, config, settings)
        super().__init__(num_classes, pretrained_backbone, c)
        self.roi_heads.mask_branch = MaskBranch(self.backbone.out_channels, num_classes, c.mask_pool or c.pool,
                                                self.backbone.stride, c.mask_pooled_size, c.mask_size,
                                                c.mask_width, c.class_agnostic)
