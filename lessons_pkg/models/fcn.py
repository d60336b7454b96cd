"""Fully convolutional networks for semantic segmentation: downsample, then upsample back.

An encoder of conv-BN-ReLU blocks (one conv at full resolution, two at the others) halves
the resolution ``len(widths) - 1`` times with max pooling (keeping the pooling switches); a
decoder brings the features back to the input size with a selectable upsampling layer,
optionally concatenating the encoder's features of the same resolution (U-Net's skip
connections), and a 1x1 convolution scores every pixel.

Upsampling choices (``FCNConfig.upsampling``), each doubling the resolution:
    "nearest"       nearest-neighbour unpooling, then convolutions
    "bed_of_nails"  each value at the top-left of its 2x2 block, zeros elsewhere, then convolutions
    "max_unpool"    each value back at the position of the encoder's max (the switches)
    "bilinear"      bilinear interpolation, then convolutions
    "transposed"    a learned 4x4 transposed convolution with stride 2 (channels in x out)
    "transposed_2x2"  a learned 2x2 transposed convolution with stride 2 (U-Net's up-convolution,
                    Mask R-CNN's mask head, SAM's mask decoder): the copies do not overlap
    "transposed_bilinear"  a 4x4 transposed convolution with stride 2, one kernel per channel
                    (depthwise), fixed to bilinear interpolation: what FCN's reference models use
    "transposed_bilinear_learned"  the same layer, started at bilinear and learned (FCN's paper)
    "subpixel"      a 3x3 convolution to 4x the channels + PixelShuffle(2), ICNR-initialized

Shape key
    B      images in a batch
    C      object classes; the network scores C + 1 classes per pixel (0 is background)
    H, W   image size; any size works: the image is padded (replicating its border) to a
           multiple of 2^levels and the scores are cropped back to H x W
    w_i    channels at level i, at resolution (H / 2^i, W / 2^i)
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import upsampling as up
from ..batching import any_size
from ..inputs import IGNORE_INDEX, prepare_batch
from .backbone import WIDTHS, build_backbone
from .configs import check_num_classes, resolve_config

UPSAMPLING = ("nearest", "bed_of_nails", "max_unpool", "bilinear", "transposed", "transposed_2x2",
              "transposed_bilinear", "transposed_bilinear_learned", "subpixel")
LEARNED_CHANNELS = ("transposed", "transposed_2x2", "subpixel")  # kinds that map in_ch -> out_ch


def conv_bn_relu(in_ch: int, out_ch: int) -> nn.Sequential:
    """3x3 conv (padding 1, no bias) - BN - ReLU: Tensor[B, in_ch, h, w] -> Tensor[B, out_ch, h, w]."""
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False), nn.BatchNorm2d(out_ch),
                         nn.ReLU(inplace=True))


def block(in_ch: int, out_ch: int) -> nn.Sequential:
    """Two conv-BN-ReLU layers, the unit of the encoder and the decoder."""
    return nn.Sequential(conv_bn_relu(in_ch, out_ch), conv_bn_relu(out_ch, out_ch))


@dataclass
class FCNConfig:
    """The settings of an :class:`FCN`. ``widths[i]`` is the channel count at 1 / 2^i of the
    input resolution, so ``len(widths) - 1`` poolings (2 or 3 is typical)."""

    widths: tuple[int, ...] = (16, 32, 64, 96)
    upsampling: str = "transposed"
    skips: bool = False
    # a conv-BN-ReLU to the next level's channels at low resolution, before each upsampling:
    # always there for "max_unpool" (its switches have that many channels); True gives any
    # other kind the same layer, so that it differs from "max_unpool" in the upsampling alone
    conv_first: bool = False

    def __post_init__(self):
        check_upsampling(self.upsampling)
        self.widths = tuple(self.widths)  # a JSON record gives a list
        if len(self.widths) < 2 or any(int(w) < 1 for w in self.widths):
            raise ValueError(f"widths must hold at least 2 positive channel counts (1 pooling), got {self.widths}")


@dataclass
class BackboneFCNConfig:
    """The settings of a :class:`BackboneFCN`: the decoder's upsampling kind (any but
    "max_unpool", since a strided-convolution encoder keeps no pooling switches) and the
    backbone's widths (smaller ones make tiny test networks; the pretrained weights need the
    default)."""

    upsampling: str = "bilinear"
    widths: tuple[int, ...] = WIDTHS

    def __post_init__(self):
        if self.upsampling == "max_unpool":
            raise ValueError("upsampling 'max_unpool' needs pooling switches, and this encoder downsamples "
                             "with strided convolutions; use FCN(upsampling='max_unpool') instead")
        check_upsampling(self.upsampling)
        self.widths = tuple(self.widths)


@dataclass
class ScoreFusionFCNConfig:
    """The settings of a :class:`ScoreFusionFCN`: the strides whose scores are fused, the
    deepest first, halving at each skip (``(16,)``: FCN-16s, ``(16, 8)``: FCN-8s), and the
    backbone's widths (the pretrained weights need the default)."""

    strides: tuple[int, ...] = (16, 8)
    widths: tuple[int, ...] = WIDTHS

    def __post_init__(self):
        self.strides = tuple(int(s) for s in self.strides)  # a JSON record gives a list
        self.widths = tuple(self.widths)


def check_upsampling(kind: str) -> str:
    """``kind``, or a ValueError unless it is one of :data:`UPSAMPLING`."""
    if kind not in UPSAMPLING:
        raise ValueError(f"unknown upsampling {kind!r}; choose from {UPSAMPLING}")
    return kind


class Upsample(nn.Module):
    """One decoder step's upsampling by 2: Tensor[B, in_ch, h, w] -> Tensor[B, out_channels, 2h, 2w].

    Parameter-free kinds keep the channels (``out_channels == in_ch``); the learned kinds
    ("transposed", "transposed_2x2", "subpixel") map to ``out_ch`` channels, followed by BN and
    ReLU. "transposed_bilinear" and "transposed_bilinear_learned" keep the channels too: one
    4x4 kernel per channel (``groups = in_ch``, 16 weights a channel), equal to "bilinear" away
    from the border (:func:`lessons_pkg.upsampling.bilinear_upsampler`); the first stays fixed
    (FCN's reference models), the second learns (the paper's intermediate layers).
    ``conv_first``: a conv-BN-ReLU to ``out_ch`` channels at low resolution before the
    upsampling (then ``out_channels == out_ch``). "max_unpool" always has it (as SegNet's decoder
    maps the features to the pooled map's channels) and needs the switches of the matching
    pooling, passed as ``indices`` (Tensor[B, out_ch, h, w]), so that each channel goes back to
    the switches of its own channel.
    """

    def __init__(self, kind: str, in_ch: int, out_ch: int, conv_first: bool = False):
        super().__init__()
        self.kind = check_upsampling(kind)
        conv_first = conv_first or kind == "max_unpool"
        self.pre = conv_bn_relu(in_ch, out_ch) if conv_first else None
        ch = out_ch if conv_first else in_ch
        self.out_channels = out_ch if kind in LEARNED_CHANNELS else ch
        if kind == "transposed":
            self.layer = nn.Sequential(nn.ConvTranspose2d(ch, out_ch, 4, stride=2, padding=1, bias=False),
                                       nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True))
        elif kind == "transposed_2x2":
            self.layer = nn.Sequential(nn.ConvTranspose2d(ch, out_ch, 2, stride=2, bias=False),
                                       nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True))
        elif kind in ("transposed_bilinear", "transposed_bilinear_learned"):
            self.layer = up.bilinear_upsampler(ch, 2, learnable=kind.endswith("learned"), depthwise=True)
        elif kind == "subpixel":
            self.layer = nn.Sequential(up.SubPixelConv(ch, out_ch, 2, 3, icnr=True), nn.BatchNorm2d(out_ch),
                                       nn.ReLU(inplace=True))

    def forward(self, x: Tensor, indices: Tensor | None = None) -> Tensor:
        if self.pre is not None:
            x = self.pre(x)
        if self.kind == "nearest":
            return up.nearest_unpool(x, 2)
        if self.kind == "bed_of_nails":
            return up.bed_of_nails_unpool(x, 2)
        if self.kind == "max_unpool":
            if indices is None:
                raise ValueError("max_unpool needs the pooling switches (indices), got None")
            return up.max_unpool(x, indices, 2)
        if self.kind == "bilinear":
            return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        return self.layer(x)


class SegmentationModel(nn.Module):
    """The contract of every segmentation network here; a subclass defines ``logits``.

    ``model(images, targets)`` in train mode: {"loss_seg": pixel-wise cross-entropy} against
    the targets' "semantic" maps (pixels of ``inputs.IGNORE_INDEX`` left out). ``model(images)`` in
    eval mode: one dict per image with "semantic" int64[H, W] (the argmax) and "scores"
    float[C + 1, H, W] (probabilities).
    """

    num_classes: int

    def logits(self, images: Tensor) -> Tensor:
        """Tensor[B, 3, H, W] -> per-pixel class scores Tensor[B, C + 1, H, W] (before softmax)."""
        raise NotImplementedError

    @any_size
    def forward(self, images, targets: list[dict[str, Tensor]] | None = None):
        """Training: returns {"loss_seg": ...}. Eval: one dict per image with "semantic" and "scores"."""
        images, targets = prepare_batch(images, targets, self.training, self.num_classes, "semantic")
        b = len(images)
        if self.training:
            semantic = torch.stack([t["semantic"] for t in targets])
            return {"loss_seg": F.cross_entropy(self.logits(images), semantic, ignore_index=IGNORE_INDEX)}
        probs = self.logits(images).softmax(dim=1)
        classes = probs.argmax(dim=1)
        return [{"semantic": classes[i], "scores": probs[i]} for i in range(b)]


def pad_to_multiple(images: Tensor, multiple: int) -> Tensor:
    """Pad Tensor[B, 3, H, W] at the bottom and right (replicating the border) to sides that are
    multiples of ``multiple``, so that every downsampling by 2 divides evenly."""
    height, width = images.shape[-2:]
    pad_h, pad_w = -height % multiple, -width % multiple
    return F.pad(images, (0, pad_w, 0, pad_h), mode="replicate") if pad_h or pad_w else images


class FCN(SegmentationModel):
    """Encoder (conv blocks + max pooling) and decoder (upsampling + conv blocks), in the one
    target contract (README).

    ``model(images, targets)`` in train mode: {"loss_seg": pixel-wise cross-entropy} against
    the targets' "semantic" maps (pixels of ``inputs.IGNORE_INDEX`` left out). ``model(images)``
    in eval mode: one dict per image with "semantic" int64[H, W] (the argmax) and "scores"
    float[C + 1, H, W] (probabilities).

    Args:
        num_classes: C, labels 1..C.
        pretrained_backbone: must be None: this network has no backbone to pretrain (its encoder
            keeps the pooling switches that "max_unpool" needs); any other value is a ValueError.
            It is there so that every model is built the same way, ``model(num_classes,
            pretrained_backbone, config)``.
        config: an :class:`FCNConfig`, or its fields as keyword ``settings`` (not both).
    """

    def __init__(self, num_classes: int = 4, pretrained_backbone=None, config: FCNConfig | None = None,
                 **settings):
        super().__init__()
        check_num_classes(num_classes)
        if pretrained_backbone is not None:
            raise ValueError("FCN has no backbone to pretrain (its encoder is its own); use BackboneFCN for "
                             f"a pretrained one (got pretrained_backbone={pretrained_backbone!r})")
        self.config = c = resolve_config(FCNConfig, config, settings)
        w = [int(v) for v in c.widths]
        self.levels = len(w) - 1
        # Full resolution is the most expensive level: one conv there, two at every other level.
        self.stem = conv_bn_relu(3, w[0])
        self.down = nn.ModuleList(block(w[i], w[i + 1]) for i in range(self.levels))
        self.up = nn.ModuleList()
        self.fuse = nn.ModuleList()
        for i in reversed(range(self.levels)):           # from level i + 1 back to level i
            upsample = Upsample(c.upsampling, w[i + 1], w[i], c.conv_first)
            self.up.append(upsample)
            fuse_in = upsample.out_channels + (w[i] if c.skips else 0)
            self.fuse.append(block(fuse_in, w[i]) if i > 0 else conv_bn_relu(fuse_in, w[i]))
        self.head = nn.Conv2d(w[0], num_classes + 1, 1)
        self.num_classes = num_classes

    def logits(self, images: Tensor) -> Tensor:
        """Tensor[B, 3, H, W] -> per-pixel class scores Tensor[B, C + 1, H, W] (before softmax)."""
        _, _, height, width = images.shape
        x = pad_to_multiple(images, 2 ** self.levels)
        features, switches = [self.stem(x)], []
        for down in self.down:
            pooled, indices = F.max_pool2d(features[-1], 2, return_indices=True)
            switches.append(indices)
            features.append(down(pooled))
        x = features.pop()
        for upsample, fuse in zip(self.up, self.fuse):
            skip, indices = features.pop(), switches.pop()
            x = upsample(x, indices)
            x = fuse(torch.cat([x, skip], 1) if self.config.skips else x)
        return self.head(x)[:, :, :height, :width]


class BackboneFCN(SegmentationModel):
    """An FCN whose encoder is the course's backbone (:mod:`backbone`), which can start from the
    weights pretrained by ``python -m lessons_pkg.pretrain``, as the FCN paper started from an
    ImageNet classifier.

    The backbone's features at strides 2, 4, 8 and 16 (widths 16, 32, 64, 128) come back up
    through a decoder: at each step an upsampling by 2 (``upsampling``: any kind but
    "max_unpool", since a strided-convolution encoder keeps no pooling switches), the encoder's
    features of that resolution concatenated (U-Net skips), two conv-BN-ReLU; the last step
    returns to full resolution and sees the image itself. Tensor[B, 3, H, W] -> scores
    Tensor[B, C + 1, H, W] for any H, W (padded to a multiple of 16, cropped back).

    Args:
        num_classes: C, labels 1..C.
        pretrained_backbone: None (random), True (the committed ``data/pretrained/backbone.pt``)
            or the path of a checkpoint of ``python -m lessons_pkg.pretrain``.
        config: a :class:`BackboneFCNConfig` (``upsampling``, ``widths``), or its fields as
            keyword ``settings`` (not both).
    """

    def __init__(self, num_classes: int = 4, pretrained_backbone=None, config: BackboneFCNConfig | None = None,
                 **settings):
        super().__init__()
        self.num_classes = check_num_classes(num_classes)
        self.config = c = resolve_config(BackboneFCNConfig, config, settings)
        self.backbone = build_backbone(pretrained_backbone, widths=c.widths)
        w = self.backbone.widths
        self.up, self.fuse = nn.ModuleList(), nn.ModuleList()
        for i in reversed(range(len(w) - 1)):  # stride 2^(i+2) -> 2^(i+1)
            upsample = Upsample(c.upsampling, w[i + 1], w[i])
            self.up.append(upsample)
            self.fuse.append(block(upsample.out_channels + w[i], w[i]))
        self.up_full = Upsample(c.upsampling, w[0], w[0])  # stride 2 -> full resolution
        self.fuse_full = conv_bn_relu(self.up_full.out_channels + 3, w[0])
        self.head = nn.Conv2d(w[0], num_classes + 1, 1)

    def logits(self, images: Tensor) -> Tensor:
        _, _, height, width = images.shape
        x = pad_to_multiple(images, self.backbone.stride)
        features = self.backbone.stages(x)
        y = features.pop()
        for upsample, fuse in zip(self.up, self.fuse):
            y = fuse(torch.cat([upsample(y), features.pop()], 1))
        y = self.fuse_full(torch.cat([self.up_full(y), x], 1))
        return self.head(y)[:, :, :height, :width]


class ScoreFusionFCN(SegmentationModel):
    """The FCN of Long, Shelhamer and Darrell (2015) on the course's backbone: class scores
    predicted at coarse strides, upsampled and **added**, then upsampled to the image.

    The deepest stage (stride 16 here; VGG's is 32) gets a 3x3 conv-BN-ReLU (the paper's
    convolutionalized fully connected layers, in miniature) and a 1x1 conv to C + 1 class
    scores. Each further stride in ``strides`` adds a skip: a 1x1 conv of that stage's features
    to class scores (zero-initialized, as in the paper, so training starts from the coarser
    net), added to the running scores after a x2 transposed convolution initialized to bilinear
    and learned. A last transposed convolution, fixed to bilinear (the paper's FCN-8s fixes it
    too), brings the scores to the image's size. ``strides=(16,)`` is the single-stream net
    ("FCN-16s", the paper's FCN-32s on a deeper network), ``(16, 8)`` "FCN-8s", ``(16, 8, 4)``
    "FCN-4s". U-Net (:class:`BackboneFCN`) instead concatenates features and convolves them at
    every step of a learned decoder.

    Tensor[B, 3, H, W] -> scores Tensor[B, C + 1, H, W] for any H, W (padded to a multiple of
    16, cropped back).

    Args:
        num_classes: C, labels 1..C.
        pretrained_backbone: None (random), True (the committed ``data/pretrained/backbone.pt``)
            or the path of a checkpoint of ``python -m lessons_pkg.pretrain``.
        config: a :class:`ScoreFusionFCNConfig` (``strides``, ``widths``), or its fields as
            keyword ``settings`` (not both).
    """

    def __init__(self, num_classes: int = 4, pretrained_backbone=None, config: ScoreFusionFCNConfig | None = None,
                 **settings):
        super().__init__()
        self.num_classes = check_num_classes(num_classes)
        self.config = c = resolve_config(ScoreFusionFCNConfig, config, settings)
        self.backbone = build_backbone(pretrained_backbone, widths=c.widths)
        strides = c.strides
        available = self.backbone.strides
        if not strides or strides[0] != available[-1] or any(s not in available[1:] for s in strides) \
                or any(a != 2 * b for a, b in zip(strides, strides[1:])):
            raise ValueError(f"strides must start at the backbone's deepest stride {available[-1]} and halve at "
                             f"each skip, down to at least {available[1]}, e.g. {available[:0:-1]}; got {strides}")
        width = {s: w for s, w in zip(available, self.backbone.widths)}
        scores = num_classes + 1
        self.head = conv_bn_relu(width[strides[0]], width[strides[0]])
        self.score = nn.ModuleList([nn.Conv2d(width[s], scores, 1) for s in strides])
        for skip in self.score[1:]:
            nn.init.zeros_(skip.weight)
            nn.init.zeros_(skip.bias)
        self.up2 = nn.ModuleList([up.bilinear_upsampler(scores, 2) for _ in strides[1:]])
        self.up_final = up.bilinear_upsampler(scores, strides[-1], learnable=False)

    def logits(self, images: Tensor) -> Tensor:
        _, _, height, width = images.shape
        x = pad_to_multiple(images, self.backbone.stride)
        maps = dict(zip(self.backbone.strides, self.backbone.stages(x)))
        strides = self.config.strides
        y = self.score[0](self.head(maps[strides[0]]))
        for stride, score, upsample in zip(strides[1:], self.score[1:], self.up2):
            y = upsample(y) + score(maps[stride])
        return self.up_final(y)[:, :, :height, :width]

