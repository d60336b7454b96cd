"""Sliding-window detection: a patch classifier at every position and scale, then NMS.

Detection as classification. A small CNN learns to say which class (or background) fills a
P x P patch. To detect, slide a square window of side S over the image at every position, for
several S (an image pyramid: the image is resized by P / S so the window becomes P pixels),
classify every window, keep the confident ones and suppress overlapping duplicates with NMS.

Two ways to score the windows, with the same weights and the same numbers:
  * brute force (:func:`window_scores`, ``method="brute_force"``): cut every window out
    (``F.unfold``) and run the whole classifier on each: neighbouring windows recompute the
    same convolutions over and over;
  * the convolutional shortcut (``method="convolutional"``): the classifier's fully connected
    layers are convolutions in disguise (a Linear layer reading a D x k x k feature block is a
    k x k convolution), so the network runs once over the whole pyramid level and its output
    map holds every window's scores at once (OverFeat, Sermanet et al. 2014). With unpadded
    convolutions and pooling the two are equal to float rounding, for windows STRIDE = 8
    pixels apart, the network's own stride.

Shape key
    B   images                 C   object classes: labels 1..C, 0 is background
    K   classifier outputs, C + 1 (index 0 = background, index k = label k)
    P   patch side the classifier reads (PATCH = 30 pixels)
    S   window side in image pixels (one pyramid level per S)
    L   windows at one level   N   windows over all levels
    h, w  the score map of one level: window (i, j) starts at (STRIDE * j, STRIDE * i) in that
          level's pixels
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import boxes as box_ops
from .. import crowd, ops
from ..batching import any_size
from ..inputs import check_images, prepare_batch
from .configs import check_num_classes, resolve_config

PATCH = 30  # P: the classifier's input side
STRIDE = 8  # the classifier's total stride (three 2x2 max-pools): the score map's step


# ----------------------------------------------------------------------------- the classifier
class PatchClassifier(nn.Module):
    """A patch classifier built so that it can also run fully convolutionally.

    Tensor[L, 3, P, P] in [0, 1] -> logits Tensor[L, K]. Three (3x3 conv without padding, BN,
    ReLU, 2x2 max-pool) blocks take a 30-pixel patch to a 2 x 2 x D block (30 -> 28 -> 14 ->
    12 -> 6 -> 4 -> 2), then two fully connected layers. No padding anywhere: a padded
    convolution would see zeros at the patch border where the full image has pixels, and the
    two ways of scoring windows would differ. Batch norm is a per-channel affine map in eval
    mode, so it runs unchanged on a whole image. About 1.3 M multiply-adds per patch.
    """

    def __init__(self, num_classes: int = 4, widths: tuple[int, int, int] = (16, 32, 64), hidden: int = 128):
        super().__init__()
        check_num_classes(num_classes)
        if len(widths) != 3 or any(int(w) < 1 for w in widths):
            raise ValueError(f"widths must be three positive channel counts, got {widths}")
        layers, in_ch = [], 3
        for out_ch in widths:
            layers += [nn.Conv2d(in_ch, out_ch, 3, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True),
                       nn.MaxPool2d(2)]
            in_ch = out_ch
        self.features = nn.Sequential(*layers)
        self.fc1 = nn.Linear(widths[-1] * 2 * 2, hidden)  # reads the 2 x 2 x D block, flattened (D, 2, 2)
        self.fc2 = nn.Linear(hidden, num_classes + 1)
        self.num_classes = num_classes

    def forward(self, patches: Tensor) -> Tensor:
        if patches.dim() != 4 or patches.shape[1:] != (3, PATCH, PATCH):
            raise ValueError(f"patches must be a Tensor[L, 3, {PATCH}, {PATCH}], got {tuple(patches.shape)}")
        x = self.features(patches - 0.5).flatten(1)
        return self.fc2(F.relu(self.fc1(x)))

    def score_map(self, images: Tensor) -> Tensor:
        """The same network run fully convolutionally, its weights shared (no copy).

        Tensor[B, 3, H, W] (H, W >= P) -> logits Tensor[B, K, h, w], h = (H - P) // STRIDE + 1:
        entry [:, :, i, j] equals ``self(images[:, :, 8i:8i+P, 8j:8j+P])``.
        """
        x = self.features(images - 0.5)
        x = F.relu(F.conv2d(x, self.fc1.weight.view(self.fc1.out_features, -1, 2, 2), self.fc1.bias))
        return F.conv2d(x, self.fc2.weight[:, :, None, None], self.fc2.bias)


def linear_to_conv(linear: nn.Linear, in_channels: int, kernel_size: int) -> nn.Conv2d:
    """The k x k convolution that computes ``linear`` on every k x k block of a D-channel map.

    ``linear`` reads a block flattened in (D, k, k) order (what ``Tensor.flatten(1)`` does to
    Tensor[L, D, k, k]), so its weight Tensor[out, D * k * k] reshapes to a conv weight
    Tensor[out, D, k, k]; the bias is the same. A 1 x 1 convolution (k = 1) replaces a Linear
    layer that follows another one.
    """
    if linear.in_features != in_channels * kernel_size ** 2:
        raise ValueError(f"a Linear with {linear.in_features} inputs cannot read a {in_channels} x "
                         f"{kernel_size} x {kernel_size} block ({in_channels * kernel_size ** 2} values)")
    conv = nn.Conv2d(in_channels, linear.out_features, kernel_size, bias=linear.bias is not None)
    with torch.no_grad():
        conv.weight.copy_(linear.weight.view(linear.out_features, in_channels, kernel_size, kernel_size))
        if linear.bias is not None:
            conv.bias.copy_(linear.bias)
    return conv.to(linear.weight.device, linear.weight.dtype)


class _Shift(nn.Module):
    """x - 0.5, the classifier's input shift, as a layer."""

    def forward(self, x: Tensor) -> Tensor:
        return x - 0.5


def fully_convolutional(classifier: PatchClassifier) -> nn.Sequential:
    """A stand-alone copy of ``classifier`` with its fully connected layers turned into
    convolutions (:func:`linear_to_conv`): Tensor[B, 3, H, W] -> logits Tensor[B, K, h, w],
    equal to :meth:`PatchClassifier.score_map` (which does the same without copying)."""
    import copy

    features = copy.deepcopy(classifier.features)
    d = classifier.fc1.in_features // 4
    return nn.Sequential(_Shift(), features, linear_to_conv(classifier.fc1, d, 2), nn.ReLU(),
                         linear_to_conv(classifier.fc2, classifier.fc1.out_features, 1)).train(classifier.training)


# ----------------------------------------------------------------------------- windows and the pyramid
def check_window_args(image_size: tuple[int, int], window_sizes: Sequence[float], stride: int) -> None:
    """Raise ValueError naming the problem unless the windows fit the image and stride >= 1."""
    h, w = image_size
    if h < 1 or w < 1:
        raise ValueError(f"the image is empty: size {h} x {w}")
    if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
        raise ValueError(f"stride must be a positive integer (pixels of a pyramid level), got {stride!r}")
    if len(window_sizes) == 0:
        raise ValueError("window_sizes is empty: give at least one window side in pixels")
    for s in window_sizes:
        if not (isinstance(s, (int, float)) and math.isfinite(s) and s > 0):
            raise ValueError(f"window sizes must be positive numbers of pixels, got {s!r}")
        if s > min(h, w):
            raise ValueError(f"window size {s} is larger than the image ({h} x {w}): "
                             f"a window must fit inside the image")


def pyramid_level(image: Tensor, window_size: float) -> tuple[Tensor, tuple[float, float]]:
    """Resize Tensor[B, 3, H, W] so that a window of ``window_size`` pixels becomes P pixels.

    Returns (Tensor[B, 3, H', W'], (sy, sx)) with H' = round(H * P / S), at least P, and the
    exact scale factors sy = H' / H, sx = W' / W (level pixels per image pixel). Bilinear with
    antialiasing, so shrinking a large window averages its pixels instead of skipping them.
    """
    h, w = image.shape[-2:]
    nh, nw = max(PATCH, round(h * PATCH / window_size)), max(PATCH, round(w * PATCH / window_size))
    if (nh, nw) == (h, w):
        return image, (1.0, 1.0)
    resized = F.interpolate(image, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)
    return resized, (nh / h, nw / w)


def window_boxes(level_size: tuple[int, int], scale: tuple[float, float], stride: int,
                 device=None) -> Tensor:
    """The windows of one pyramid level as image boxes, in ``F.unfold``'s row-major order.

    Window (i, j) covers level pixels [stride*j, stride*j + P) x [stride*i, stride*i + P);
    divided by the scale it is Tensor[L, 4] xyxy in the original image's pixels.
    """
    h, w = level_size
    ys = torch.arange(0, h - PATCH + 1, stride, device=device, dtype=torch.float32)
    xs = torch.arange(0, w - PATCH + 1, stride, device=device, dtype=torch.float32)
    y0, x0 = torch.meshgrid(ys, xs, indexing="ij")
    sy, sx = scale
    return torch.stack([x0 / sx, y0 / sy, (x0 + PATCH) / sx, (y0 + PATCH) / sy], dim=-1).reshape(-1, 4)


def count_windows(image_size: tuple[int, int], window_sizes: Sequence[float], stride: int) -> int:
    """N, the number of windows the brute-force search classifies (no tensors involved)."""
    check_window_args(image_size, window_sizes, stride)
    h, w = image_size
    total = 0
    for s in window_sizes:
        nh, nw = max(PATCH, round(h * PATCH / s)), max(PATCH, round(w * PATCH / s))
        total += ((nh - PATCH) // stride + 1) * ((nw - PATCH) // stride + 1)
    return total


@torch.no_grad()
def window_scores(image: Tensor, classifier: PatchClassifier, window_sizes: Sequence[float], stride: int = STRIDE,
                  method: str = "convolutional", chunk: int = 4096) -> tuple[Tensor, Tensor]:
    """Every window's class probabilities, over every pyramid level.

    Args:
        image (Tensor[3, H, W]): float in [0, 1].
        classifier: a trained :class:`PatchClassifier` (used in eval mode).
        window_sizes: window sides S in image pixels, one pyramid level each.
        stride: step between windows in pixels of a pyramid level (a window is P = 30 level
            pixels, so the step in the image is stride * S / P). ``"convolutional"`` needs
            stride == STRIDE, the network's own step.
        method: ``"brute_force"`` (classify each cut-out window, ``chunk`` windows per batch) or
            ``"convolutional"`` (one pass per level).
    Returns:
        (boxes Tensor[N, 4] xyxy image pixels, probs Tensor[N, K]), level by level.
    """
    images = check_images([image] if isinstance(image, Tensor) and image.dim() == 3 else image)
    if images.shape[0] != 1:
        raise ValueError(f"window_scores takes one image Tensor[3, H, W], got a batch of {images.shape[0]}")
    check_window_args(tuple(images.shape[-2:]), window_sizes, stride)
    if method not in ("brute_force", "convolutional"):
        raise ValueError(f"unknown method {method!r}; choose 'brute_force' or 'convolutional'")
    if method == "convolutional" and stride != STRIDE:
        raise ValueError(f"the convolutional shortcut steps by the network's stride, {STRIDE}; got stride={stride} "
                         "(use method='brute_force' for other strides)")
    was_training = classifier.training
    classifier.eval()
    all_boxes, all_logits = [], []
    for s in window_sizes:
        level, scale = pyramid_level(images, s)
        all_boxes.append(window_boxes(tuple(level.shape[-2:]), scale, stride, device=images.device))
        if method == "convolutional":
            all_logits.append(classifier.score_map(level)[0].flatten(1).T)  # [K, h, w] -> [L, K]
        else:
            patches = F.unfold(level, PATCH, stride=stride)[0].T.reshape(-1, 3, PATCH, PATCH)  # [L, 3, P, P]
            all_logits.append(torch.cat([classifier(p) for p in patches.split(chunk)]))
    classifier.train(was_training)
    return torch.cat(all_boxes), torch.cat(all_logits).softmax(dim=1)


def detections_from_scores(boxes: Tensor, probs: Tensor, image_size: tuple[int, int], score_threshold: float = 0.5,
                           nms_threshold: float = 0.3, detections_per_image: int = 100) -> dict[str, Tensor]:
    """Windows and their class probabilities -> the contract's detections of one image.

    Every (window, class k >= 1) pair with probability above ``score_threshold`` is a candidate
    box of label k scored by that probability; per-class NMS then keeps the best of each group
    of overlapping windows, and the ``detections_per_image`` best survive.
    """
    keep_w, keep_k = torch.nonzero(probs[:, 1:] > score_threshold, as_tuple=True)
    cand_boxes = box_ops.clip_boxes_to_image(boxes[keep_w], image_size)
    cand_scores, cand_labels = probs[keep_w, keep_k + 1], keep_k + 1
    keep = ops.batched_nms(cand_boxes, cand_scores, cand_labels, nms_threshold)[:detections_per_image]
    return {"boxes": cand_boxes[keep], "labels": cand_labels[keep], "scores": cand_scores[keep]}


def sliding_window_detect(image: Tensor, classifier: PatchClassifier, window_sizes: Sequence[float],
                          stride: int = STRIDE, method: str = "convolutional", score_threshold: float = 0.5,
                          nms_threshold: float = 0.3, detections_per_image: int = 100) -> dict[str, Tensor]:
    """Detect objects in one image Tensor[3, H, W]: :func:`window_scores` then
    :func:`detections_from_scores`. Returns {"boxes": Tensor[D, 4], "labels": int64[D], "scores": Tensor[D]}."""
    boxes, probs = window_scores(image, classifier, window_sizes, stride, method)
    return detections_from_scores(boxes, probs, tuple(image.shape[-2:]), score_threshold, nms_threshold,
                                  detections_per_image)


# ----------------------------------------------------------------------------- training crops
def sample_windows(target: dict, image_size: tuple[int, int], window_range: tuple[float, float],
                   positives_per_object: int = 6, near_per_object: int = 6, random_per_image: int = 16,
                   fg_iou: float = 0.5, bg_iou: float = 0.3, generator: torch.Generator | None = None
                   ) -> tuple[Tensor, Tensor]:
    """Square training windows for one image and their labels.

    Three kinds: windows around each object (its box's larger side, jittered in scale by
    +-20 % and in position by up to 15 % of the side), windows near each object (0.4x to 2.5x
    its side, shifted by up to 70 % of it: the parts of an object, the object with too much
    around it, the object half out of the window, which must not be called the object), and
    windows anywhere (log-uniform side in ``window_range``). A window whose best IoU with an
    object is >= ``fg_iou`` takes that object's label, < ``bg_iou`` is background (0), in
    between is ambiguous and gets -1 (ignored by the loss).

    Returns (windows Tensor[M, 4] xyxy image pixels, labels int64[M] in {-1, 0..C}).
    """
    gt, labels = target["boxes"], target["labels"]
    device = gt.device
    h, w = image_size
    lo, hi = window_range
    g = generator

    def rand(*shape):
        return torch.rand(*shape, generator=g).to(device)

    parts = []
    if len(gt):
        side = (gt[:, 2:] - gt[:, :2]).amax(dim=1).clamp(min=4.0)
        centre = (gt[:, :2] + gt[:, 2:]) / 2
        for count, scale_lo, scale_hi, shift in ((positives_per_object, 0.8, 1.25, 0.15),
                                                 (near_per_object, 0.4, 2.5, 0.7)):
            n = len(gt) * count
            object_side = side.repeat_interleave(count)
            s = object_side * torch.exp(math.log(scale_lo) + rand(n) * (math.log(scale_hi) - math.log(scale_lo)))
            angle = rand(n) * 2 * math.pi
            dist = rand(n) * shift * object_side
            c = centre.repeat_interleave(count, dim=0) + dist[:, None] * torch.stack([angle.cos(), angle.sin()], 1)
            parts.append(torch.cat([c - s[:, None] / 2, c + s[:, None] / 2], dim=1))
    s = torch.exp(math.log(lo) + rand(random_per_image) * (math.log(hi) - math.log(lo))).clamp(max=min(h, w))
    x0, y0 = rand(random_per_image) * (w - s), rand(random_per_image) * (h - s)
    parts.append(torch.stack([x0, y0, x0 + s, y0 + s], dim=1))
    windows = torch.cat(parts)
    window_labels = torch.zeros(len(windows), dtype=torch.int64, device=device)
    if len(gt):
        best_iou, best = box_ops.box_iou(windows, gt).max(dim=1)
        window_labels = torch.where(best_iou >= fg_iou, labels[best], window_labels)
        window_labels[(best_iou >= bg_iou) & (best_iou < fg_iou)] = -1
    # a background window inside a crowd region is left out too (never hard background)
    window_labels[(window_labels == 0) & crowd.inside_crowd(windows, target.get("crowd_boxes"))] = -1
    return windows, window_labels


def crop_windows(images: Tensor, windows: list[Tensor]) -> Tensor:
    """Cut windows out of images and resize them to P x P with RoI Align (adaptive sampling,
    so a large window is averaged, as the pyramid's antialiased resize does).

    images Tensor[B, 3, H, W], windows: one Tensor[M_b, 4] per image -> Tensor[sum M_b, 3, P, P].
    """
    return ops.roi_align(images, windows, PATCH, spatial_scale=1.0, sampling_ratio=-1, aligned=True)


# ----------------------------------------------------------------------------- the detector
@dataclass
class SlidingWindowConfig:
    """The settings of a :class:`SlidingWindowDetector`.

    window_sizes: the pyramid's window sides S in image pixels (one level each); training
        samples windows between the smallest and the largest.
    stride, method: how :func:`window_scores` slides the windows.
    score_threshold, nms_threshold, detections_per_image: :func:`detections_from_scores`.
    seed: the training windows' stream.
    """

    window_sizes: tuple[float, ...] = (14, 17, 20, 24, 29, 35, 42, 50)
    stride: int = STRIDE
    method: str = "convolutional"
    score_threshold: float = 0.5
    nms_threshold: float = 0.3
    detections_per_image: int = 100
    seed: int = 0

    def __post_init__(self):
        self.window_sizes = tuple(self.window_sizes)  # a JSON record gives a list
        if not self.window_sizes:
            raise ValueError("window_sizes is empty: give at least one window side in pixels")


class SlidingWindowDetector(nn.Module):
    """A :class:`PatchClassifier` trained on sampled windows, detecting by sliding windows.

    Train mode: ``model(images, targets)`` samples windows (:func:`sample_windows`) from each
    image, crops them (:func:`crop_windows`) and returns {"loss_cls": cross-entropy}. Eval mode:
    ``model(images)`` returns one dict per image with "boxes", "labels", "scores".

    Args:
        num_classes: C, labels 1..C.
        pretrained_backbone: must be None: the patch classifier is not the course's backbone
            and has no pretrained weights; any other value is a ValueError.
        config: a :class:`SlidingWindowConfig`, or its fields as keyword ``settings`` (not both).
    """

    def __init__(self, num_classes: int = 4, pretrained_backbone=None, config: SlidingWindowConfig | None = None,
                 **settings):
        super().__init__()
        self.num_classes = check_num_classes(num_classes)
        if pretrained_backbone is not None:
            raise ValueError("the sliding-window detector's patch classifier has no pretrained backbone "
                             f"(got pretrained_backbone={pretrained_backbone!r})")
        self.config = c = resolve_config(SlidingWindowConfig, config, settings)
        self.classifier = PatchClassifier(num_classes)
        self.generator = torch.Generator().manual_seed(c.seed)  # the training windows' stream (CPU)

    @property
    def window_sizes(self) -> tuple[float, ...]:
        """The pyramid's window sides in image pixels (``config.window_sizes``)."""
        return self.config.window_sizes

    @any_size
    def forward(self, images, targets: list[dict] | None = None):
        images, targets = prepare_batch(images, targets, self.training, self.num_classes)
        size = tuple(images.shape[-2:])
        c = self.config
        if self.training:
            lo, hi = min(c.window_sizes), max(c.window_sizes)
            sampled = [sample_windows(t, size, (lo, hi), generator=self.generator) for t in targets]
            windows = [wb for wb, _ in sampled]
            labels = torch.cat([lb for _, lb in sampled])
            logits = self.classifier(crop_windows(images, windows))
            if not bool((labels >= 0).any()):   # every window ignored (a crowd region): nothing to learn
                return {"loss_cls": logits.sum() * 0}
            return {"loss_cls": F.cross_entropy(logits, labels, ignore_index=-1)}
        return [sliding_window_detect(image, self.classifier, c.window_sizes, c.stride, c.method, c.score_threshold,
                                      c.nms_threshold, c.detections_per_image)
                for image in images]
