"""Exercise checkers of the semantic segmentation chapters (unpooling, transposed convolution)."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from ._report import report


def _conv_transpose1d_cases() -> list[tuple[str, torch.Tensor, torch.Tensor, int]]:
    g = torch.Generator().manual_seed(2025)
    return [
        ("stride 1: copies overlap by k - 1 (x = [1, 2], kernel [1, 10, 100])",
         torch.tensor([[[1.0, 2.0]]]), torch.tensor([[[1.0, 10.0, 100.0]]]), 1),
        ("stride 2, kernel 3: neighbouring copies share one output (x = [1, 2, 3], kernel [1, 10, 100])",
         torch.tensor([[[1.0, 2.0, 3.0]]]), torch.tensor([[[1.0, 10.0, 100.0]]]), 2),
        ("stride 3, kernel 2: copies leave gaps (zeros)", torch.randn(1, 1, 4, generator=g),
         torch.randn(1, 1, 2, generator=g), 3),
        ("stride 2, kernel 4, 3 input and 2 output channels, batch of 2", torch.randn(2, 3, 5, generator=g),
         torch.randn(3, 2, 4, generator=g), 2),
        ("a single input value (the output is the scaled kernel)", torch.tensor([[[-2.0]]]),
         torch.tensor([[[1.0, 2.0, 3.0]]]), 2),
    ]


def check_conv_transpose1d(fn: Callable) -> bool:
    """Checks ``fn(x: Tensor[B, Cin, L], weight: Tensor[Cin, Cout, k], stride: int) ->
    Tensor[B, Cout, (L - 1) * stride + k]``, a 1-D transposed convolution without padding or
    bias, against ``F.conv_transpose1d``."""
    failures = []
    cases = _conv_transpose1d_cases()
    for name, x, w, stride in cases:
        expected = F.conv_transpose1d(x, w, stride=stride)
        try:
            got = torch.as_tensor(fn(x.clone(), w.clone(), stride))
        except Exception as e:  # the reader's bug, shown rather than raised
            failures.append(f"{name}: raised {type(e).__name__}: {e}")
            continue
        if got.shape != expected.shape:
            failures.append(f"{name}: expected a result of shape {tuple(expected.shape)} "
                            f"(Lo = (L - 1) * stride + k), got {tuple(got.shape)}")
            continue
        wrong = ~torch.isclose(got.to(expected.dtype), expected, atol=1e-5, rtol=1e-5)
        if wrong.any():
            b, c, j = (int(v) for v in wrong.nonzero()[0])
            failures.append(f"{name}: output[{b}, {c}, {j}] should be {expected[b, c, j]:.4f}, "
                            f"got {float(got[b, c, j]):.4f}")
    return report("check_conv_transpose1d", failures, len(cases))
