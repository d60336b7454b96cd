"""Exercise checkers of the semantic segmentation chapters (unpooling, transposed convolution)."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from ._report import check_cases, checker, report


def _conv_transpose1d_cases() -> list[tuple[str, torch.Tensor, torch.Tensor, int, int, int]]:
    """(description, x, weight, stride, padding, output_padding)."""
    g = torch.Generator().manual_seed(2025)
    return [
        ("stride 2, kernel 3, no padding: neighbouring copies overlap at one output "
         "(x = [1, 2, 3], kernel [1, 10, 100])",
         torch.tensor([[[1.0, 2.0, 3.0]]]), torch.tensor([[[1.0, 10.0, 100.0]]]), 2, 0, 0),
        ("stride 2, kernel 4, padding 1 (the usual doubling layer), 3 input and 2 output channels, "
         "batch of 2", torch.randn(2, 3, 5, generator=g), torch.randn(3, 2, 4, generator=g), 2, 1, 0),
        ("stride 1, kernel 3, padding 2", torch.randn(1, 2, 6, generator=g), torch.randn(2, 1, 3, generator=g),
         1, 2, 0),
        ("stride 3, kernel 2, no padding, output_padding 2", torch.randn(1, 1, 4, generator=g),
         torch.randn(1, 1, 2, generator=g), 3, 0, 2),
        ("stride 2, kernel 3, padding 1, output_padding 1 (the other doubling layer): "
         "Lo = (L - 1) s - 2p + k + op, so which positions of the sum of copies does it return?",
         torch.tensor([[[1.0, 2.0, 3.0]]]), torch.tensor([[[1.0, 10.0, 100.0]]]), 2, 1, 1),
        ("stride 3, kernel 5, padding 2, output_padding 1, 2 input and 3 output channels",
         torch.randn(1, 2, 4, generator=g), torch.randn(2, 3, 5, generator=g), 3, 2, 1),
    ]


@checker
def check_conv_transpose1d(fn: Callable) -> bool:
    """Checks ``fn(x: Tensor[B, Cin, L], weight: Tensor[Cin, Cout, k], stride: int, padding: int,
    output_padding: int) -> Tensor[B, Cout, (L - 1) * stride - 2 * padding + k + output_padding]``,
    a 1-D transposed convolution without bias, against ``F.conv_transpose1d``."""
    def mismatch(got, expected, x, w, stride, padding, output_padding):
        wrong = ~torch.isclose(got.to(expected.dtype), expected, atol=1e-5, rtol=1e-5)
        if not wrong.any():
            return None
        b, c, j = (int(v) for v in wrong.nonzero()[0])
        return f"output[{b}, {c}, {j}] should be {expected[b, c, j]:.4f}, got {float(got[b, c, j]):.4f}"

    return check_cases("check_conv_transpose1d", fn, _conv_transpose1d_cases(),
                       lambda x, w, stride, padding, output_padding: F.conv_transpose1d(
                           x, w, stride=stride, padding=padding, output_padding=output_padding),
                       mismatch, shape_hint=" (Lo = (L - 1) * stride - 2 * padding + k + output_padding)")


def _miou_cases() -> list[tuple[str, torch.Tensor, torch.Tensor, int]]:
    """(name, pred int64[H, W], target int64[H, W], num_classes K including background)."""
    g = torch.Generator().manual_seed(2026)
    target = torch.zeros(8, 8, dtype=torch.int64)
    target[2:6, 2:6] = 1
    all_background = torch.zeros_like(target)
    shifted = torch.zeros_like(target)
    shifted[3:7, 3:7] = 1
    random_target = torch.randint(0, 4, (16, 12), generator=g)
    noisy = torch.where(torch.rand(16, 12, generator=g) < 0.3, torch.randint(0, 4, (16, 12), generator=g), random_target)
    absent = torch.randint(0, 2, (6, 6), generator=g)  # classes 2 and 3 appear nowhere
    return [
        ("a perfect prediction", target.clone(), target, 2),
        ("everything called background (pixel accuracy 0.75, but the object class has IoU 0)", all_background, target, 2),
        ("the object shifted by one pixel", shifted, target, 2),
        ("4 classes, 30 % of the pixels relabelled at random", noisy, random_target, 4),
        ("classes 2 and 3 in neither map: left out of the mean, not counted as 0", absent.flip(0), absent, 4),
        ("a class predicted where the target never has it (IoU 0, counted)",
         torch.full((4, 4), 2, dtype=torch.int64), torch.zeros(4, 4, dtype=torch.int64), 3),
    ]


@checker
def check_miou(fn: Callable) -> bool:
    """Checks ``fn(pred: int64[H, W], target: int64[H, W], num_classes: int) -> float``, the mean
    over classes of IoU = |pred == k and target == k| / |pred == k or target == k|, leaving out
    the classes that appear in neither map, against ``lessons_pkg.metrics.mean_iou``."""
    from ..metrics import mean_iou

    failures = []
    cases = _miou_cases()
    for name, pred, target, k in cases:
        expected = mean_iou(pred, target, k, ignore_index=None)["miou"]
        try:
            got = float(fn(pred.clone(), target.clone(), k))
        except Exception as e:  # the reader's bug, shown rather than raised
            failures.append(f"{name}: raised {type(e).__name__}: {e}")
            continue
        if not abs(got - expected) <= 1e-6:
            failures.append(f"{name}: expected mIoU {expected:.4f}, got {got:.4f}")
    return report("check_miou", failures, len(cases))


def _upsample_cases() -> list[tuple[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(2028)
    ramp = torch.arange(12.0).view(1, 1, 3, 4)
    return [
        ("a constant map stays constant", torch.full((1, 1, 3, 3), 0.7)),
        ("a 3 x 4 ramp 0..11", ramp),
        ("random values, 2 images x 3 channels x 5 x 6", torch.rand(2, 3, 5, 6, generator=g)),
        ("a single pixel becomes a 2 x 2 block", torch.tensor([[[[4.0]]]])),
        ("a non-square 1 x 7 map", torch.rand(1, 2, 1, 7, generator=g)),
    ]


@checker
def check_bilinear_upsample(fn: Callable) -> bool:
    """Checks ``fn(x: Tensor[B, C, H, W]) -> Tensor[B, C, 2H, 2W]``, bilinear upsampling by 2,
    against ``F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)``: output
    pixel i samples input position (i + 0.5) / 2 - 0.5, clamped at 0 (and at H - 1)."""
    def mismatch(got, expected, x):
        if torch.allclose(got.float(), expected, atol=1e-5):
            return None
        wrong = ((got.float() - expected).abs() > 1e-5).nonzero()[0].tolist()
        return (f"first wrong output pixel {wrong} (batch, channel, row, column): "
                f"expected {expected[tuple(wrong)].item():.4f}, got {got[tuple(wrong)].item():.4f}")

    return check_cases("check_bilinear_upsample", fn, _upsample_cases(),
                       lambda x: F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False), mismatch)
