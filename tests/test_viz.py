"""Drawing helpers (torchvision.utils underneath) and the book's static figures."""
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from lessons_pkg import data, train, viz  # noqa: E402
from lessons_pkg.commands import figures  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def test_draw_target_shapes_and_scale():
    image, target = data.ShapesDataset(1)[0]
    drawn = viz.draw_target(image, target, data.preset("default").classes, scale=3)
    assert drawn.dtype == torch.uint8 and drawn.shape == (3, 384, 384)
    # Masks and boxes change pixels; an empty prediction changes none.
    assert not torch.equal(drawn, viz.upscale(viz.to_uint8(image), 3))
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64), "scores": torch.zeros(0)}
    assert torch.equal(viz.draw_target(image, empty), viz.to_uint8(image))


def test_score_threshold_hides_low_scores():
    image = torch.zeros(3, 32, 32)
    pred = {"boxes": torch.tensor([[2.0, 2, 12, 12], [15, 15, 30, 30]]), "labels": torch.tensor([1, 2]),
            "scores": torch.tensor([0.9, 0.1]), "masks": torch.rand(2, 32, 32)}
    high = viz.draw_target(image, pred, score_threshold=0.5, draw_masks=False)
    assert high[:, 20, 15].sum() == 0 and high[:, 2, 5].sum() > 0


def test_to_uint8_rejects_non_rgb():
    with pytest.raises(ValueError, match=r"RGB image Tensor\[3, H, W\]"):
        viz.to_uint8(torch.zeros(1, 5, 5))
    assert viz.to_uint8(np.zeros((4, 4, 3), np.uint8)).shape == (3, 4, 4)


def test_colourize_semantic_and_grids():
    semantic = torch.tensor([[0, 1], [2, 4]])
    colours = viz.colourize_semantic(semantic)
    assert colours.shape == (3, 2, 2) and colours[:, 0, 0].sum() == 0
    assert tuple(colours[:, 1, 1].tolist()) == viz.label_colour(4)
    fig = viz.show_images([colours, torch.rand(3, 4, 4), torch.rand(5, 5)], titles=["a", "b", "c"], ncols=2)
    assert len(fig.axes) == 4
    plt.close("all")
    with pytest.raises(ValueError, match="at least one image"):
        viz.show_images([])


def test_plot_history():
    history = train.History(steps=[1, 2], losses={"total": [2.0, 1.0], "loss_a": [1.5, 0.7]})
    ax = viz.plot_history({"run": history})
    assert len(ax.lines) == 2
    plt.close("all")


def test_committed_book_figures_are_up_to_date(tmp_path):
    for path in figures.write_figures(tmp_path):
        committed = ROOT / "book" / "figures" / path.name
        assert committed.is_file(), f"{committed} is missing: run `make figures`"
        fresh, stored = np.asarray(Image.open(path)), np.asarray(Image.open(committed))
        assert fresh.shape == stored.shape and np.abs(fresh.astype(int) - stored).mean() < 1.0, \
            f"{committed} is out of date: run `make figures`"
