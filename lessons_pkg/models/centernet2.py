"""A second stage on CenterNet's peaks: CenterNet2's idea ("Probabilistic two-stage detection",
Zhou, Koltun and Krähenbühl, 2021), built from the course's parts.

CenterNet (:mod:`centernet`) names each object by the heatmap channel of its peak: one look. A
two-stage detector looks twice: it crops each candidate's features and classifies the crop.
This model does both, in that order:

  1. first stage, a :class:`centernet.CenterNet`: its heatmap, size and offset on the stride-4
     map. The top-K peaks of the *class-agnostic* heatmap (at each cell, the largest of the C
     class probabilities) are the proposals, their boxes decoded as CenterNet decodes a
     detection (:func:`propose`, through :func:`centernet.decode` with one class), each with its
     **objectness** P(O = 1), the peak's value;
  2. second stage, the R-CNN family's :class:`rcnn.RoIHeads`: RoI Align (``rcnn.make_pooler``)
     crops every proposal from a map of the same network (``roi_map``: the backbone's stride-8
     stage, or the stride-4 map CenterNet's heads read), and :class:`rcnn.MLPBoxHead` gives
     P(c | O = 1) over the C classes and background, and a per-class refinement of the box;
  3. the score of a detection of class c is P(O = 1) P(c | O = 1): CenterNet2's probabilistic
     reading of two-stage detection, in which a detection's probability is the first stage's
     objectness times the second stage's class probability given an object. It is computed as
     the joint distribution over the C + 1 outcomes (:func:`joint_log_probs`), so RoIHeads'
     decoding, per-class NMS and top-100 run on it unchanged.

Why the largest class probability is the objectness. CenterNet2 asks of its first stage a
likelihood that *some* object is there, P(O = 1), and trains a one-channel, class-agnostic
heatmap for it. CenterNet's C sigmoid channels are each trained as P(an object of class c is
centred here); a peak that the second stage may re-label holds some object, so P(O = 1) >=
max_c P(c). The maximum is that lower bound, the score CenterNet itself gives a peak, and it
needs no new first stage: a trained CenterNet is the first stage as it is
(``first_stage_checkpoint``), and only the second stage learns (``freeze_first_stage``). With
``freeze_first_stage=False`` both stages train together (CenterNet's losses and the second
stage's, summed), from that checkpoint or from the pretrained backbone.

Why a low score threshold (the recipe's 0.001 where RoIHeads' default is 0.05). A product of
two probabilities is smaller than either: at 0.05 the product drops correct detections that
either factor alone would keep. A monotone function of the product (its square root, the
geometric mean, say) ranks every detection the same, so it changes only which detections pass
the threshold, which the threshold itself sets.

Shape key
    B   images                         H, W   image size (any: padded to a multiple of 16)
    C   object classes, labels 1..C; the second stage scores C + 1 (index 0: background)
    K   proposals per image (``proposals_per_image``), R = B K over the batch
    D   channels of the map RoI Align crops;  P  its P x P bins (7)
Boxes are xyxy in image pixels.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .. import boxes as box_ops
from .. import records
from ..batching import any_size
from ..inputs import prepare_batch
from . import centernet, rcnn
from .configs import check_num_classes, resolve_config

ROI_MAPS = {"stride8": 8, "stride4": 4}   # the maps RoI Align may crop, by their stride


@dataclass
class CenterNet2Config(rcnn.RoIHeadsConfig):
    """The settings of a :class:`CenterNet2`: its first stage, its proposals, the map the second
    stage crops, and the second stage's RoI-head settings (:class:`rcnn.RoIHeadsConfig`).

    channels: the first stage's width (:class:`centernet.CenterNetConfig`'s ``channels``).
    first_stage_checkpoint: the name of a committed checkpoint (``data/pretrained/NAME.pt``) of a
        CenterNet of that width whose weights start the first stage when the model is built with
        a pretrained backbone (None: the pretrained backbone alone, as CenterNet starts).
    freeze_first_stage: the first stage is not trained (no gradient, BatchNorm in eval mode) and
        has no loss; else CenterNet's three losses are trained with the second stage's.
    proposals_per_image: K, the peaks of the class-agnostic heatmap kept per image, in training
        and at test time.
    roi_map: "stride8" (the backbone's stride-8 stage, 64 channels) or "stride4" (the merged map
        CenterNet's heads read, ``channels`` wide).
    pooled_size: P. hidden: the box head's fully connected width.
    """

    channels: int = 32
    first_stage_checkpoint: str | None = None
    freeze_first_stage: bool = True
    proposals_per_image: int = 64
    roi_map: str = "stride8"
    pooled_size: int = 7
    hidden: int = 256

    def __post_init__(self):
        super().__post_init__()
        if self.roi_map not in ROI_MAPS:
            raise ValueError(f"roi_map must be one of {tuple(ROI_MAPS)}, got {self.roi_map!r}")
        for name in ("channels", "proposals_per_image", "pooled_size", "hidden"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


# ----------------------------------------------------------------------------- the pieces
def propose(outputs: dict[str, Tensor], image_size: tuple[int, int], k: int, peak_kernel: int = 3
            ) -> tuple[list[Tensor], list[Tensor]]:
    """The first stage's proposals: the ``k`` highest peaks of the class-agnostic heatmap.

    outputs: CenterNet's raw outputs {"heatmap": logits Tensor[B, C, h, w], "size", "offset":
    Tensor[B, 2, h, w]}. The class-agnostic heatmap is the largest class logit at each cell (the
    sigmoid is increasing, so its probability is the largest class probability); its peaks are
    found and their boxes decoded by :func:`centernet.decode` as one class.

    A box narrower or lower than one cell of the map (R = 4 pixels) is widened to one cell about
    its centre (then clipped to the image): a peak cannot place a box finer than its cell, and the
    second stage needs a box with an inside to crop (an untrained size head predicts sizes near 0).

    Returns (boxes: one Tensor[K_i, 4] per image, objectness: one Tensor[K_i] per image, P(O = 1)
    of each box), K_i = k unless the map has fewer cells (every peak is kept, whatever its score).
    """
    agnostic = {**outputs, "heatmap": outputs["heatmap"].amax(dim=1, keepdim=True)}
    config = centernet.CenterNetConfig(score_threshold=-1.0, detections_per_image=k, peak_kernel=peak_kernel)
    found = centernet.decode(agnostic, image_size, config)
    boxes = []
    for d in found:
        centre, half = (d["boxes"][:, :2] + d["boxes"][:, 2:]) / 2, (d["boxes"][:, 2:] - d["boxes"][:, :2]) / 2
        half = half.clamp(min=centernet.STRIDE / 2)
        boxes.append(box_ops.clip_boxes_to_image(torch.cat([centre - half, centre + half], dim=1), image_size))
    return boxes, [d["scores"] for d in found]


def joint_log_probs(class_logits: Tensor, objectness: Tensor) -> Tensor:
    """The log of P(outcome) over the C + 1 outcomes of each proposal, from the two stages.

    class_logits Tensor[R, C + 1]: the second stage's, P(c | O = 1) = their softmax (index 0 the
    second stage's background); objectness Tensor[R]: the first stage's P(O = 1). Returns
    Tensor[R, C + 1] whose softmax is

        P(c) = P(O = 1) P(c | O = 1)                          for each class c >= 1,
        P(background) = 1 - P(O = 1) + P(O = 1) P(0 | O = 1)   (no object, or the second stage's no),

    which sum to 1, so that :meth:`rcnn.RoIHeads.postprocess` (which takes the softmax of what it
    is given) scores each class by CenterNet2's product.
    """
    o = objectness.to(class_logits.dtype).clamp(0, 1)[:, None]                   # [R, 1]
    conditional = class_logits.softmax(dim=1)                                     # [R, C + 1]
    joint = torch.cat([1 - o + o * conditional[:, :1], o * conditional[:, 1:]], dim=1)
    return joint.clamp(min=torch.finfo(joint.dtype).tiny).log()


# ----------------------------------------------------------------------------- the model
class CenterNet2(nn.Module):
    """CenterNet's peaks as proposals, re-scored and refined by a second stage (module docstring),
    in the one model contract (README).

    ``model(images, targets)`` in train mode: {"loss_cls", "loss_box"} (the second stage's, on a
    balanced sample of the proposals and the true boxes; nothing inside a crowd region is a
    negative, :func:`lessons_pkg.crowd.ignore_in_crowd`), and with ``freeze_first_stage=False``
    CenterNet's "loss_heatmap", "loss_size", "loss_offset" too. ``model(images)`` in eval mode:
    one dict per image with "boxes", "labels", "scores" (score = objectness x class probability).

    Args:
        num_classes: C, labels 1..C.
        pretrained_backbone: None (random), True (the committed ``data/pretrained/backbone.pt``,
            or, with ``first_stage_checkpoint``, that CenterNet's whole weights for the first
            stage) or the path of a checkpoint of ``python -m lessons_pkg.pretrain``.
        config: a :class:`CenterNet2Config`, or its fields as keyword ``settings`` (not both).
    """

    task = "detection"
    size_divisible = centernet.CenterNet.size_divisible

    def __init__(self, num_classes: int = 4, pretrained_backbone=None, config: CenterNet2Config | None = None,
                 **settings):
        super().__init__()
        self.num_classes = check_num_classes(num_classes)
        self.config = c = resolve_config(CenterNet2Config, config, settings)
        from_checkpoint = pretrained_backbone is True and c.first_stage_checkpoint is not None
        self.first_stage = centernet.CenterNet(num_classes, None if from_checkpoint else pretrained_backbone,
                                               channels=c.channels)
        if from_checkpoint:
            self.first_stage.load_state_dict(records.load_weights(records.default_path(c.first_stage_checkpoint)))
        stride = ROI_MAPS[c.roi_map]
        width = c.channels if c.roi_map == "stride4" else self.first_stage.backbone.widths[2]
        self.roi_heads = rcnn.RoIHeads(rcnn.make_pooler("roi_align", c.pooled_size, stride),
                                       rcnn.MLPBoxHead(width, c.pooled_size, num_classes, c.hidden), num_classes, c)
        if c.freeze_first_stage:
            self.first_stage.requires_grad_(False)

    def train(self, mode: bool = True) -> "CenterNet2":
        """As ``nn.Module.train``, but a frozen first stage stays in eval mode (its BatchNorm
        statistics are the checkpoint's)."""
        super().train(mode)
        if self.config.freeze_first_stage:
            self.first_stage.eval()
        return self

    def first_look(self, images: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Tensor[B, 3, H, W] (H, W multiples of 16) -> (the map RoI Align crops, Tensor[B, D,
        H / s, W / s]; CenterNet's raw outputs on the stride-4 map). CenterNet's own
        :meth:`centernet.CenterNet.outputs`, keeping the maps it passes through."""
        maps, x = self.first_stage.merged_map(images)                    # strides 2, 4, 8, 16; 4
        return (x if self.config.roi_map == "stride4" else maps[2]), self.first_stage.heads(x)

    @any_size
    def forward(self, images, targets: list[dict[str, Tensor]] | None = None):
        images, targets = prepare_batch(images, targets, self.training, self.num_classes, self.task)
        size = tuple(images.shape[-2:])
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.config.freeze_first_stage):
            features, outputs = self.first_look(images)
        with torch.no_grad():   # the proposals are inputs of the second stage, not trained through
            boxes, objectness = propose({k: v.detach() for k, v in outputs.items()}, size,
                                        self.config.proposals_per_image, self.first_stage.config.peak_kernel)
        if self.training:
            losses = {} if self.config.freeze_first_stage else self.first_stage.losses(outputs, targets, size)
            _, second = self.roi_heads(features, boxes, size, targets)
            return {**losses, **second}
        heads = self.roi_heads
        class_logits, box_deltas = heads.box_head(heads.pooler(features, boxes))
        return heads.postprocess(joint_log_probs(class_logits, torch.cat(objectness)), box_deltas, boxes, size)
