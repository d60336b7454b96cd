"""Static figures of the book's markdown pages, made by code so they reproduce.

``python -m lessons_pkg.figures book/figures`` writes every figure; a test regenerates them and
compares pixels with the committed files.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from .. import viz  # noqa: E402
from ..data import make_split  # noqa: E402

FOUR_TASKS_SCENE = ("val", 35)  # the split and index of the scene shown on the intro page
ONE_OBJECT_SCENE = ("val", 3)   # ... and of the one-object scene of classification & localization


def four_tasks_figure() -> plt.Figure:
    """The four tasks of the course: classification & localization on a scene of the task's own
    kind (exactly one object, the ``single`` preset), then object detection, instance
    segmentation and semantic segmentation on one scene with several objects."""
    split, index = FOUR_TASKS_SCENE
    dataset = make_split(split, index + 1)
    image, target = dataset[index]
    classes = dataset.classes
    one_split, one_index = ONE_OBJECT_SCENE
    one_image, one_target = make_split(one_split, one_index + 1, config="single")[one_index]
    panels = [
        ("Classification & localization\none object: its class and box",
         viz.draw_target(one_image, one_target, classes, draw_masks=False, scale=3)),
        ("Object detection\nevery object: class and box",
         viz.draw_target(image, target, classes, draw_masks=False, scale=3)),
        ("Instance segmentation\nevery object: class and mask",
         viz.draw_target(image, target, classes, draw_boxes=False, scale=3, instance_colours=True, mask_alpha=0.7)),
        ("Semantic segmentation\nevery pixel: a class", viz.upscale(viz.colourize_semantic(target["semantic"]), 3)),
    ]
    # 2 x 2, not one row of four: at the text column's width a row of four would be shrunk
    # until its titles could not be read
    fig, axes = plt.subplots(2, 2, figsize=(7.6, 8.9))
    for ax, (title, picture) in zip(axes.flatten(), panels):
        ax.imshow(picture.permute(1, 2, 0).numpy(), interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.axis("off")
    handles = [plt.Rectangle((0, 0), 1, 1, color=torch.tensor(viz.label_colour(k + 1)).div(255).tolist())
               for k in range(len(classes))]
    fig.legend(handles, classes, loc="lower center", ncol=len(classes), frameon=False, fontsize=9)
    fig.tight_layout(rect=(0, 0.04, 1, 1), h_pad=1.6)
    return fig


FIGURES = {"four_tasks.png": four_tasks_figure}


def write_figures(out_dir: str | Path) -> list[Path]:
    """Render every figure of FIGURES into ``out_dir``; returns the paths written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, make in FIGURES.items():
        fig = make()
        fig.savefig(out / name, dpi=100, metadata={"Software": None})
        plt.close(fig)
        paths.append(out / name)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lessons_pkg.figures", description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", nargs="?", default="book/figures")
    for path in write_figures(parser.parse_args(argv).out_dir):
        print("wrote", path)
    return 0


if __name__ == "__main__":
    main()
