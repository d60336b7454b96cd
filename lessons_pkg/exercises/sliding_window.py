"""Exercise checkers of the chapter "Sliding window and region proposals"."""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ._report import checker, report


def _linear_cases() -> list[tuple[str, nn.Linear, int, int, tuple[int, int]]]:
    """(name, linear, in_channels D, kernel k, map size (h, w))."""
    torch.manual_seed(2024)  # the layers' initial weights (inside fork_rng)
    return [
        ("the classifier's fc1: D = 64, k = 2 -> 128 outputs", nn.Linear(64 * 2 * 2, 128), 64, 2, (5, 7)),
        ("a 1 x 1 block (k = 1): a Linear after a Linear", nn.Linear(128, 5), 128, 1, (3, 4)),
        ("k = 3, D = 4, and a map exactly one block big", nn.Linear(4 * 3 * 3, 6), 4, 3, (3, 3)),
        ("no bias", nn.Linear(3 * 2 * 2, 2, bias=False), 3, 2, (6, 5)),
        ("a non-square map, D = 2, k = 4", nn.Linear(2 * 4 * 4, 3), 2, 4, (9, 4)),
    ]


@checker
def check_linear_to_conv(fn: Callable) -> bool:
    """Checks ``fn(linear: nn.Linear, in_channels: int, kernel_size: int)``, which must return a
    module (an ``nn.Conv2d``) that computes ``linear`` on every k x k block of a
    Tensor[B, D, h, w] map: output [B, out, h - k + 1, w - k + 1], entry [:, :, i, j] ==
    ``linear(x[:, :, i:i+k, j:j+k].flatten(1))``."""
    with torch.random.fork_rng(devices=[]):  # cases and the reader's layers draw weights; the caller's RNG stays
        return _check_linear_to_conv(fn)


def _check_linear_to_conv(fn: Callable) -> bool:
    cases = _linear_cases()
    failures = []
    g = torch.Generator().manual_seed(7)
    for name, linear, d, k, (h, w) in cases:
        x = torch.randn(2, d, h, w, generator=g)
        blocks = x.unfold(2, k, 1).unfold(3, k, 1)  # [2, D, h', w', k, k]
        hh, ww = blocks.shape[2:4]
        with torch.no_grad():
            expected = linear(blocks.permute(0, 2, 3, 1, 4, 5).reshape(2, hh, ww, -1)).permute(0, 3, 1, 2)
        try:
            module = fn(linear, d, k)
            with torch.no_grad():
                got = module(x)
        except Exception as e:  # the reader's bug, shown rather than raised
            failures.append(f"{name}: raised {type(e).__name__}: {e}")
            continue
        if not isinstance(got, torch.Tensor) or got.shape != expected.shape:
            shown = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
            failures.append(f"{name}: expected an output of shape {tuple(expected.shape)}, got {shown}")
        elif not torch.allclose(got, expected, atol=1e-5, rtol=1e-4):
            failures.append(f"{name}: values differ from the Linear layer on the same block by up to "
                            f"{(got - expected).abs().max():.3g} (is the weight reshaped in (out, D, k, k) "
                            "order, and the bias copied?)")
    return report("check_linear_to_conv", failures, len(cases))
