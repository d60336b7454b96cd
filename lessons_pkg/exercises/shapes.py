"""Exercise checkers of the chapter "The shapes dataset"."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from ._report import report
from ..data.shapes import masks_to_boxes_np, render_scene, preset


def _mask_cases() -> list[tuple[str, np.ndarray]]:
    cases = []
    single = np.zeros((1, 8, 8), np.uint8)
    single[0, 3, 5] = 1
    cases.append(("a single pixel at row 3, column 5", single))
    edge = np.zeros((2, 10, 12), np.uint8)
    edge[0, :, 0] = 1  # a full-height line on the left border
    edge[1, 9, 4:12] = 1  # a line along the bottom-right border
    cases.append(("lines touching the image border", edge))
    holes = np.zeros((1, 16, 16), np.uint8)
    holes[0, 2, 3] = holes[0, 12, 9] = 1  # two separate blobs: one box around both
    cases.append(("a mask in two separate pieces", holes))
    cases.append(("no masks at all", np.zeros((0, 5, 5), np.uint8)))
    scene = render_scene(preset("default"), seed=12345, index=7)
    cases.append(("a generated scene", scene.masks))
    return cases


def check_masks_to_boxes(fn: Callable) -> bool:
    """Checks ``fn(masks: Tensor[N, H, W] uint8) -> Tensor[N, 4]`` (xyxy, pixel-edge convention:
    a mask covering columns 10..19 has x1 = 10 and x2 = 20)."""
    failures = []
    cases = _mask_cases()
    for name, masks in cases:
        expected = torch.from_numpy(masks_to_boxes_np(masks))
        try:
            got = fn(torch.from_numpy(masks))
        except Exception as e:  # the reader's bug, shown rather than raised
            failures.append(f"{name}: raised {type(e).__name__}: {e}")
            continue
        got = torch.as_tensor(got)
        if got.shape != expected.shape:
            failures.append(f"{name}: expected shape {tuple(expected.shape)}, got {tuple(got.shape)}")
        elif not torch.allclose(got.float(), expected):
            row = int((got.float() - expected).abs().sum(1).argmax())
            failures.append(f"{name}: box {row} expected {expected[row].tolist()}, got {got[row].tolist()}")
    return report("check_masks_to_boxes", failures, len(cases))
