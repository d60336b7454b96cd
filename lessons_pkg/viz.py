"""Drawing: boxes, labels and masks with torchvision.utils, image grids and loss curves.

Images in, uint8 Tensor[3, H', W'] out (``draw_*``) or a matplotlib Figure (``show_*``,
``plot_*``). Small images are upscaled by an integer factor before drawing so labels stay legible.
"""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
from matplotlib import font_manager
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

# A colour per label (index 0 is background); tab10 without its grey, as RGB tuples.
PALETTE = [(0, 0, 0)] + [tuple(int(255 * c) for c in plt.get_cmap("tab10")(i)[:3]) for i in (0, 1, 2, 3, 4, 5, 6, 8, 9)]


# A TrueType font that ships with matplotlib, so label text can be scaled (PIL's default cannot).
LABEL_FONT = font_manager.findfont("DejaVu Sans")


def label_colour(label: int) -> tuple[int, int, int]:
    """The RGB colour of a label (labels beyond the palette wrap around, skipping background)."""
    return PALETTE[label] if label < len(PALETTE) else PALETTE[1 + (label - 1) % (len(PALETTE) - 1)]


def to_uint8(image: Tensor | np.ndarray) -> Tensor:
    """float [0, 1] or uint8 image, Tensor[3, H, W] or array[H, W, 3] -> uint8 Tensor[3, H, W] on the CPU."""
    if isinstance(image, np.ndarray):
        image = torch.from_numpy(image).permute(2, 0, 1) if image.ndim == 3 and image.shape[-1] == 3 else torch.from_numpy(image)
    image = image.detach().cpu()
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"expected an RGB image Tensor[3, H, W], got shape {tuple(image.shape)}")
    if image.dtype == torch.uint8:
        return image
    return (image.float().clamp(0, 1) * 255).round().to(torch.uint8)


def upscale(image: Tensor, scale: int) -> Tensor:
    """Nearest-neighbour upscale of a uint8 Tensor[3, H, W] (or masks [N, H, W]) by an integer."""
    if scale == 1:
        return image
    return F.interpolate(image[None].float(), scale_factor=scale, mode="nearest")[0].to(image.dtype)


def draw_target(image: Tensor | np.ndarray, target: dict, classes: Sequence[str] | None = None,
                score_threshold: float = 0.0, draw_boxes: bool = True, draw_masks: bool = True,
                scale: int = 1, width: int = 2, mask_alpha: float = 0.45,
                instance_colours: bool = False) -> Tensor:
    """Boxes, labels (and scores) and masks of a target or a prediction drawn on an image.

    Args:
        image: Tensor[3, H, W] float in [0, 1] or uint8 (or an array[H, W, 3]).
        target: {"boxes": [N, 4] xyxy pixels, "labels": [N], optional "scores": [N],
            optional "masks": [N, H, W] (uint8/bool, or float probabilities thresholded at 0.5)}.
        classes: names of labels 1..C (label k is classes[k - 1]); numbers are shown without it.
        score_threshold: predictions with a lower score are not drawn.
        scale: integer upscale before drawing, for legible labels on small images.
        instance_colours: colour each instance differently instead of by class.
    Returns:
        uint8 Tensor[3, H * scale, W * scale].
    """
    canvas = upscale(to_uint8(image), scale)
    boxes = target.get("boxes", torch.zeros(0, 4)).detach().cpu().float()
    labels = target.get("labels", torch.zeros(0, dtype=torch.int64)).detach().cpu()
    scores = target.get("scores")
    keep = torch.ones(len(labels), dtype=torch.bool)
    if scores is not None:
        scores = scores.detach().cpu()
        keep = scores >= score_threshold
    if instance_colours:
        cmap = plt.get_cmap("tab20")
        colours = [tuple(int(255 * c) for c in cmap(i % 20)[:3]) for i in range(int(keep.sum()))]
    else:
        colours = [label_colour(int(lab)) for lab in labels[keep]]
    masks = target.get("masks")
    if draw_masks and masks is not None and keep.any():
        masks = masks.detach().cpu()[keep]
        masks = masks > 0.5 if masks.is_floating_point() else masks.bool()
        canvas = draw_segmentation_masks(canvas, upscale(masks, scale), alpha=mask_alpha, colors=colours)
    if draw_boxes and keep.any():
        names = [classes[int(lab) - 1] if classes is not None and 0 < int(lab) <= len(classes) else str(int(lab))
                 for lab in labels[keep]]
        if scores is not None:
            names = [f"{n} {s:.2f}" for n, s in zip(names, scores[keep].tolist())]
        canvas = draw_bounding_boxes(canvas, boxes[keep] * scale, labels=names, colors=colours, width=width,
                                     font=LABEL_FONT, font_size=5 + 3 * scale, fill_labels=True,
                                     label_colors="white", label_background_colors=colours)
    return canvas


def colourize_semantic(semantic: Tensor, num_classes: int | None = None) -> Tensor:
    """int64[H, W] class map -> uint8 Tensor[3, H, W] with the label colours (0 stays black)."""
    semantic = semantic.detach().cpu().long()
    n = max(int(semantic.max()) + 1, num_classes + 1 if num_classes else 0, 1)
    table = torch.tensor([label_colour(i) for i in range(n)], dtype=torch.uint8)
    return table[semantic].permute(2, 0, 1)


def show_images(images: Sequence[Tensor | np.ndarray], titles: Sequence[str] | None = None,
                ncols: int = 4, size: float = 2.6, suptitle: str | None = None) -> plt.Figure:
    """A grid of images (each Tensor[3, H, W] float/uint8, Tensor[H, W], or array) as one Figure."""
    if len(images) == 0:
        raise ValueError("show_images needs at least one image")
    ncols = min(ncols, len(images))
    nrows = (len(images) + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows + (0.3 if suptitle else 0)),
                             squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= len(images):
            continue
        image = images[i]
        if isinstance(image, Tensor) and image.ndim == 2:
            ax.imshow(image.detach().cpu().numpy(), cmap="viridis", interpolation="nearest")
        else:
            ax.imshow(to_uint8(image).permute(1, 2, 0).numpy(), interpolation="nearest")
        if titles is not None:
            ax.set_title(titles[i], fontsize=9)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def plot_history(histories, keys: Sequence[str] | None = None, ax: plt.Axes | None = None,
                 log_y: bool = True) -> plt.Axes:
    """Loss curves of one History or a dict {name: History}; one line per (run, loss key)."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.5))
    runs = histories if isinstance(histories, dict) else {"": histories}
    for run, history in runs.items():
        for key in keys or history.losses:
            label = f"{run} {key}".strip()
            ax.plot(history.steps, history.losses[key], label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    if log_y:
        ax.set_yscale("log")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return ax
