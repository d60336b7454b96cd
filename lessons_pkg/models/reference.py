"""Outside reference points: torchvision's own detectors, built without any weights.

The speed/accuracy chart of the course places our detectors beside a detector that the
ecosystem ships, trained by our code on our data for the same budget, so the comparison says
something about the recipe and not about ImageNet: ``weights=None, weights_backbone=None``
(nothing is downloaded, ever).

:class:`SSDLite` wraps ``torchvision.models.detection.ssdlite320_mobilenet_v3_large`` in the
course's contract: images Tensor[B, 3, H, W] in [0, 1], targets with "boxes" (xyxy pixels)
and "labels" (1..C); train mode returns {"loss_box", "loss_cls"}, eval mode one dict per image
with "boxes", "labels", "scores" in the input image's pixels. torchvision's transform resizes
every image to 320 x 320 and normalizes it (mean 0.5, std 0.5) inside the model, and maps the
boxes back.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from torch import Tensor, nn
from torchvision.models.detection import ssdlite320_mobilenet_v3_large

from ..batching import any_size
from ..inputs import prepare_batch
from .configs import check_num_classes, resolve_config


@dataclass
class SSDLiteConfig:
    """The settings of an :class:`SSDLite`: torchvision's SSD arguments under their own names,
    with the defaults that ``ssdlite320_mobilenet_v3_large`` gives them."""

    score_thresh: float = 0.001
    nms_thresh: float = 0.55
    detections_per_img: int = 300
    topk_candidates: int = 300
    iou_thresh: float = 0.5        # matching default boxes to objects in training
    positive_fraction: float = 0.25  # hard negative mining: 3 negatives per positive


class SSDLite(nn.Module):
    """torchvision's SSDLite (MobileNetV3-Large backbone, 320 x 320 input), random init.

    Args:
        num_classes: C, labels 1..C (torchvision counts the background too: it gets C + 1).
        pretrained_backbone: must be None: a reference point trained from scratch here; any
            other value is a ValueError.
        config: an :class:`SSDLiteConfig`, or its fields as keyword ``settings`` (not both).
    """

    def __init__(self, num_classes: int = 4, pretrained_backbone=None, config: SSDLiteConfig | None = None,
                 **settings):
        super().__init__()
        self.num_classes = check_num_classes(num_classes)
        if pretrained_backbone is not None:
            raise ValueError("SSDLite is the outside reference: it trains from scratch, without our backbone "
                             f"(got pretrained_backbone={pretrained_backbone!r})")
        self.config = resolve_config(SSDLiteConfig, config, settings)
        self.detector = ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None,
                                                      num_classes=num_classes + 1,
                                                      **dataclasses.asdict(self.config))

    @any_size
    def forward(self, images, targets: list[dict[str, Tensor]] | None = None):
        """Training: {"loss_box", "loss_cls"}. Eval: one dict per image ("boxes", "labels", "scores")."""
        images, targets = prepare_batch(images, targets, self.training, self.num_classes)
        if not self.training:
            return self.detector(list(images))
        # Only boxes and labels: torchvision would otherwise resize every instance mask too.
        losses = self.detector(list(images), [{"boxes": t["boxes"], "labels": t["labels"]} for t in targets])
        return {"loss_box": losses["bbox_regression"], "loss_cls": losses["classification"]}
