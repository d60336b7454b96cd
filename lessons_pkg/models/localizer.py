"""Classification & localization: one object per image, two heads on one shared backbone.

The image holds exactly one object of interest, so the task is "which class, and where": a
classifier and a box regressor that share their features, trained with one multi-task loss

    L = L_cls + λ · L_box

(cross-entropy, and 1 - GIoU or smooth L1 on boxes normalized by the image size).

Shape key
    B      images in a batch
    C      object classes: labels run 1..C (0 is background and never a label here); the
           classifier's logits index 0..C-1, so logit k scores label k + 1
    H, W   image size in pixels
    D      backbone channels;  h, w  its feature map (H / stride, W / stride)

Boxes: ``targets`` and predictions use xyxy absolute pixels (the contract of the README); inside
the model and its loss, boxes are normalized by the image size, (x / W, y / H), so the loss
does not depend on the image size and λ means the same at 96 and at 512 pixels.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import boxes as box_ops
from ..batching import any_size
from ..inputs import prepare_batch
from .backbone import WIDTHS, build_backbone, load_pretrained_backbone
from .configs import check_num_classes, resolve_config

BOX_LOSSES = ("giou", "smooth_l1")


# ----------------------------------------------------------------------------- heads
class ClassHead(nn.Module):
    """Global average *and* max pooling, concatenated, then a linear layer:
    Tensor[B, D, h, w] -> logits Tensor[B, C].

    The average alone dilutes a small object among the background cells of the map; the
    maximum answers "is this pattern anywhere?" whatever the object's size.
    """

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        self.linear = nn.Linear(2 * in_channels, num_classes)

    def forward(self, features: Tensor) -> Tensor:
        return self.linear(torch.cat([features.mean(dim=(2, 3)), features.amax(dim=(2, 3))], dim=1))


def cell_centres(h: int, w: int, device=None, dtype=torch.float32) -> tuple[Tensor, Tensor]:
    """Normalized centres of the cells of an h x w map: cx Tensor[1, w], cy Tensor[h, 1] in (0, 1)."""
    cx = (torch.arange(w, device=device, dtype=dtype) + 0.5) / w
    cy = (torch.arange(h, device=device, dtype=dtype) + 0.5) / h
    return cx[None, :], cy[:, None]


class BoxHead(nn.Module):
    """One box per image from a feature map, by *attention over cells*.

    A fully connected layer from the flattened map to 4 numbers (the lecture's picture) must
    learn every position separately. Here a small conv net predicts, at every cell of the map,
    a score (is the object here?) and a box as distances from the cell centre to the four
    sides; a softmax over the cells turns the scores into weights that sum to 1, and the box is
    the weighted average of the cells' boxes. The same weights work at every position
    (translation-equivariant), and the whole head trains from the box loss alone.

    features Tensor[B, D, h, w] -> (boxes Tensor[B, 4] normalized xyxy, weights Tensor[B, h, w]).
    """

    def __init__(self, in_channels: int, hidden: int = 64):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(in_channels, hidden, 3, padding=1), nn.ReLU(inplace=True),
                                  nn.Conv2d(hidden, 5, 1))

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        out = self.conv(features)  # [B, 5, h, w]: a score and four side distances per cell
        b, _, h, w = out.shape
        weights = out[:, 0].flatten(1).softmax(dim=1).view(b, h, w)
        # Distances in units of the image size, in (0, 1): a box may reach any border, and
        # left + right > 0, so every box has a positive width and height (GIoU stays defined).
        left, top, right, bottom = out[:, 1:].sigmoid().unbind(1)
        cx, cy = cell_centres(h, w, device=out.device, dtype=out.dtype)
        cell_boxes = torch.stack([cx - left, cy - top, cx + right, cy + bottom], dim=1)  # [B, 4, h, w]
        boxes = (cell_boxes * weights[:, None]).sum(dim=(2, 3))
        return boxes, weights


# ----------------------------------------------------------------------------- the loss
def multitask_loss(class_logits: Tensor, pred_boxes: Tensor, labels: Tensor, gt_boxes: Tensor,
                   box_weight: float = 1.0, box_loss: str = "giou", beta: float = 0.02) -> dict[str, Tensor]:
    """The multi-task loss of classification & localization, as a dict of named terms.

    Args:
        class_logits (Tensor[B, C]): the classifier's scores; logit k is label k + 1.
        pred_boxes (Tensor[B, 4]): predicted boxes, xyxy normalized by the image size, x1 < x2, y1 < y2.
        labels (Tensor[B]): int64 in 1..C.
        gt_boxes (Tensor[B, 4]): true boxes, xyxy normalized by the image size.
        box_weight: λ.
        box_loss: ``"giou"``, the mean of 1 - GIoU (in [0, 2]; 0 for a perfect box; it measures
            what the metric measures, overlap, and still has a gradient when the boxes do not
            overlap), or ``"smooth_l1"`` over the B x 4 coordinates (``beta`` in normalized
            units: 0.02 is 2.6 px on a 128-px image).
    Returns:
        {"loss_cls": cross-entropy (mean over B), "loss_box": λ · box loss}. The box term is
        already weighted, so the sum of the values is L_cls + λ · L_box, what ``train.fit``
        minimizes; divide ``loss_box`` by λ to compare box losses across λ.
    """
    loss_cls = F.cross_entropy(class_logits, labels - 1)  # labels 1..C -> class indices 0..C-1
    if box_loss == "giou":
        # The diagonal of the B x B matrix pairs each prediction with its own image's box
        # (B is a batch, so the B² pairs cost nothing worth a special function).
        loss_box = (1 - box_ops.generalized_box_iou(pred_boxes, gt_boxes).diagonal()).mean()
    elif box_loss == "smooth_l1":
        loss_box = F.smooth_l1_loss(pred_boxes, gt_boxes, beta=beta)
    else:
        raise ValueError(f"unknown box_loss {box_loss!r}; choose from {BOX_LOSSES}")
    return {"loss_cls": loss_cls, "loss_box": box_weight * loss_box}


# ----------------------------------------------------------------------------- the model
@dataclass
class LocalizerConfig:
    """The settings of a :class:`Localizer`. ``box_weight`` is λ of the multi-task loss."""

    widths: tuple[int, ...] = WIDTHS
    box_hidden: int = 64
    box_weight: float = 1.0
    box_loss: str = "giou"
    beta: float = 0.02

    def __post_init__(self):
        self.widths = tuple(self.widths)  # a JSON record gives a list
        if self.box_loss not in BOX_LOSSES:
            raise ValueError(f"unknown box_loss {self.box_loss!r}; choose from {BOX_LOSSES}")
        if not self.box_weight >= 0:
            raise ValueError(f"box_weight (λ) must be >= 0, got {self.box_weight}")


class Localizer(nn.Module):
    """Backbone + class head + box head, in the one model contract (README).

    ``model(images, targets)`` in train mode: {"loss_cls", "loss_box"} (see
    :func:`multitask_loss`). ``model(images)`` in eval mode: one dict per image with
    "boxes" float[1, 4] (xyxy pixels, clipped to the image), "labels" int64[1] (1..C) and
    "scores" float[1] (the class probability).

    Args:
        num_classes: C, labels 1..C.
        pretrained_backbone: None (random), True (the committed ``data/pretrained/backbone.pt``)
            or the path of a checkpoint of ``python -m lessons_pkg.pretrain``.
        config: a :class:`LocalizerConfig`, or its fields as keyword ``settings`` (not both).
    """

    def __init__(self, num_classes: int = 4, pretrained_backbone=None, config: LocalizerConfig | None = None,
                 **settings):
        super().__init__()
        check_num_classes(num_classes)
        self.num_classes = num_classes
        self.config = resolve_config(LocalizerConfig, config, settings)
        c = self.config
        self.backbone = build_backbone(pretrained_backbone, widths=c.widths)
        self.class_head = ClassHead(self.backbone.out_channels, num_classes)
        self.box_head = BoxHead(self.backbone.out_channels, c.box_hidden)
        self.backbone_frozen = False

    def freeze_backbone(self, frozen: bool = True) -> "Localizer":
        """Stop (or restart) training the backbone: its parameters get ``requires_grad=False``
        and its batch norms keep their statistics (eval mode) even while the model trains;
        otherwise a "frozen" backbone would still drift with the new data's statistics."""
        self.backbone_frozen = frozen
        self.backbone.requires_grad_(not frozen)
        self.backbone.train(self.training and not frozen)
        return self

    def train(self, mode: bool = True) -> "Localizer":
        super().train(mode)
        if self.backbone_frozen:
            self.backbone.eval()
        return self

    def load_backbone(self, path=None, map_location="cpu") -> "Localizer":
        """Load the backbone of a checkpoint written by ``python -m lessons_pkg.pretrain`` (the
        committed one when ``path`` is None), weights only. The pretraining head (``head.*``) is
        left out: the heads here answer another question."""
        load_pretrained_backbone(self.backbone, path, map_location)
        return self

    def heads(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Tensor[B, 3, H, W] -> class logits [B, C], normalized boxes [B, 4], weights [B, h, w]."""
        features = self.backbone(images)
        boxes, weights = self.box_head(features)
        return self.class_head(features), boxes, weights

    @any_size
    def forward(self, images, targets: list[dict[str, Tensor]] | None = None):
        """Training: returns {"loss_cls": ..., "loss_box": ...}.
        Eval: returns one dict per image with "boxes" [1, 4], "labels" [1], "scores" [1]."""
        images, targets = prepare_batch(images, targets, self.training, self.num_classes, "single_object")
        b, _, height, width = images.shape
        # Pixels <-> normalized: (W, H, W, H) filled on the images' device (torch.tensor from a
        # Python list would be a host-to-device copy at every step).
        scale = images.new_full((4,), float(width))
        scale[1::2] = height
        if self.training:
            logits, boxes, _ = self.heads(images)
            gt_boxes = torch.cat([t["boxes"] for t in targets]).to(images.dtype) / scale
            labels = torch.cat([t["labels"] for t in targets])
            c = self.config
            return multitask_loss(logits, boxes, labels, gt_boxes, c.box_weight, c.box_loss, c.beta)
        logits, boxes, _ = self.heads(images)
        probs = logits.softmax(dim=1)
        scores, classes = probs.max(dim=1)
        boxes = torch.min(boxes.clamp(min=0) * scale, scale)  # clip to the image
        return [{"boxes": boxes[i:i + 1], "labels": classes[i:i + 1] + 1, "scores": scores[i:i + 1]}
                for i in range(b)]
