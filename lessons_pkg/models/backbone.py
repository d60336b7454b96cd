"""The course's one backbone: a small residual network, its pretrained weights, its input norm.

Every model of the course that starts from pretrained features (the localizer, R-CNN, Fast and
Faster R-CNN, Mask R-CNN, YOLO, SSD, the FCN) builds its backbone here, with
:func:`build_backbone`, and taps the strides it needs:

    backbone = build_backbone(pretrained_backbone)            # strides 2, 4, 8, 16
    features = backbone(images)                                # the last map, stride 16
    maps = backbone.stages(images)                             # every stage's map, strides 2..16
    backbone = build_backbone(pretrained_backbone, stride=8)  # stops at stride 8 (R-CNN family)

The weights come from ``python -m lessons_pkg.pretrain`` (``data/pretrained/backbone.pt``,
multi-label classification of the nine shapes, seeds of its own): the role ImageNet plays for
real detectors, without a download.

Shape key
    B      images in a batch;  H, W  image size in pixels
    D_s    channels of the stage at stride s: 16, 32, 64, 128 at strides 2, 4, 8, 16
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import records

WIDTHS = (16, 32, 64, 128)  # the pretrained backbone's channels at strides 2, 4, 8, 16
PRETRAINED_BACKBONE = records.PRETRAINED_DIR / "backbone.pt"


class ResidualBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus a shortcut, then ReLU (ResNet's basic block).

    Tensor[B, in_ch, h, w] -> Tensor[B, out_ch, h / stride, w / stride]. The shortcut is a
    strided 1x1 conv when the shape changes, the identity otherwise.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.shortcut = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch))

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


def normalize(images: Tensor) -> Tensor:
    """The backbone's input: each image minus its mean colour, channels-last.

    Tensor[B, 3, H, W] in [0, 1] -> Tensor[B, 3, H, W]. The background colour changes from
    image to image and says nothing about the shapes (subtracting it alone doubles the accuracy
    reached in a short training), and the weights need no dataset statistics. Channels-last
    (NHWC) is the layout the CPU's oneDNN convolutions prefer (a training step is about 25 %
    faster here) and that GPUs' tensor cores use; the values are the same.
    """
    x = images - images.mean(dim=(2, 3), keepdim=True)
    return x.contiguous(memory_format=torch.channels_last)


class Backbone(nn.Module):
    """A small ResNet for CPU training: a strided 3x3 stem, then one strided residual block
    per further width.

    Tensor[B, 3, H, W] in [0, 1] -> features Tensor[B, D, H / stride, W / stride] with
    ``D = widths[-1]`` and ``stride = 2 ** len(widths)``. The default (16, 32, 64, 128) turns a
    128-pixel image into an 8x8 map of 128 channels in about 45 M multiply-adds, and has 0.3 M
    parameters (1.2 MB in float32). The input is normalized inside (:func:`normalize`).
    """

    def __init__(self, widths: tuple[int, ...] = WIDTHS):
        super().__init__()
        if len(widths) < 2 or any(int(w) < 1 for w in widths):
            raise ValueError(f"widths needs at least two positive channel counts, got {widths}")
        self.widths = tuple(int(w) for w in widths)
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 3, 2, 1, bias=False), nn.BatchNorm2d(widths[0]),
                                  nn.ReLU(inplace=True))
        self.blocks = nn.Sequential(*[ResidualBlock(a, b, stride=2) for a, b in zip(widths, widths[1:])])
        self.out_channels = self.widths[-1]
        self.stride = 2 ** len(widths)

    @property
    def strides(self) -> tuple[int, ...]:
        """The stride of each stage's map: (2, 4, ..., stride)."""
        return tuple(2 ** (i + 1) for i in range(len(self.widths)))

    def stages(self, images: Tensor) -> list[Tensor]:
        """Every stage's map: Tensor[B, widths[i], H / strides[i], W / strides[i]] for each i
        (the stem's at stride 2, then one per residual block)."""
        maps = [self.stem(normalize(images))]
        for block in self.blocks:
            maps.append(block(maps[-1]))
        return maps

    def forward(self, images: Tensor) -> Tensor:
        return self.blocks(self.stem(normalize(images)))


def load_pretrained_backbone(backbone: Backbone, path=None, map_location="cpu") -> Backbone:
    """Load the pretrained weights into ``backbone`` and return it.

    ``path``: a checkpoint of ``python -m lessons_pkg.pretrain`` (its ``backbone.*`` weights are
    used, the pretraining head is left out) or a bare Backbone state_dict; None for the committed
    ``data/pretrained/backbone.pt``. Read with ``weights_only=True``: tensors, no pickled code.
    A backbone that stops at an earlier stride takes the weights of its stages and leaves the
    later ones out; every weight the backbone has must be in the file.
    """
    path = PRETRAINED_BACKBONE if path is None else Path(path)
    state = records.load_weights(path, map_location)
    prefix = "backbone."
    if any(key.startswith(prefix) for key in state):
        state = {key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}
    wanted = backbone.state_dict()
    missing = sorted(set(wanted) - set(state))
    if missing:
        raise ValueError(f"{path}: not a backbone of widths {backbone.widths}: missing {missing[:3]}"
                         f"{' ...' if len(missing) > 3 else ''}")
    backbone.load_state_dict({key: state[key] for key in wanted})
    return backbone


def build_backbone(pretrained_backbone=None, stride: int | None = None,
                   widths: tuple[int, ...] = WIDTHS) -> Backbone:
    """The course's backbone, random or pretrained: the one place a model gets its backbone.

    Args:
        pretrained_backbone: None or False for random weights; True for the committed
            ``data/pretrained/backbone.pt``; a path for another checkpoint of ``python -m
            lessons_pkg.pretrain`` (its widths must be ``widths``).
        stride: stop at this stage (4, 8 or 16 with the default widths; None: the last one).
            The R-CNN family stops at stride 8, where objects of 12 pixels still span cells.
        widths: the channels of the stages (smaller ones make tiny test networks).
    """
    strides = {2 ** n: n for n in range(2, len(widths) + 1)}   # n widths end at stride 2^n
    if stride is not None and stride not in strides:
        raise ValueError(f"stride must be one of {sorted(strides)}, got {stride!r}")
    backbone = Backbone(tuple(widths)[:strides[stride]] if stride is not None else widths)
    if pretrained_backbone is True:
        load_pretrained_backbone(backbone)
    elif pretrained_backbone is not None and pretrained_backbone is not False:
        load_pretrained_backbone(backbone, pretrained_backbone)
    return backbone
