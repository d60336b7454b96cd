"""Exercise checker of the chapter "Speed against accuracy"."""
from __future__ import annotations

from typing import Callable

import torch

from ..metrics import pareto_front
from ._report import check_cases, checker


def _cases() -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """(name, ms [N], accuracy [N])."""
    g = torch.Generator().manual_seed(7)
    return [
        ("one detector: it is the front", torch.tensor([10.0]), torch.tensor([0.5])),
        ("faster and better dominates", torch.tensor([10.0, 20.0]), torch.tensor([0.9, 0.8])),
        ("a trade-off: both on the front", torch.tensor([10.0, 20.0]), torch.tensor([0.8, 0.9])),
        ("equally fast, less accurate: dominated", torch.tensor([10.0, 10.0]), torch.tensor([0.8, 0.9])),
        ("equally accurate, slower: dominated", torch.tensor([10.0, 30.0]), torch.tensor([0.9, 0.9])),
        ("two identical detectors: neither beats the other", torch.tensor([5.0, 5.0]), torch.tensor([0.7, 0.7])),
        ("12 random detectors", torch.rand(12, generator=g) * 100, torch.rand(12, generator=g)),
        ("no detectors", torch.zeros(0), torch.zeros(0)),
    ]


@checker
def check_pareto_front(fn: Callable) -> bool:
    """Checks ``fn(ms: Tensor[N], accuracy: Tensor[N]) -> bool Tensor[N]`` (True on the
    speed/accuracy front) against ``lessons_pkg.metrics.pareto_front``."""
    def mismatch(got, expected, ms, accuracy):
        if torch.equal(got.bool(), expected):
            return None
        i = int((got.bool() != expected).nonzero()[0])
        return (f"detector {i} ({ms[i]:.1f} ms, accuracy {accuracy[i]:.3f}) should be "
                f"{'on' if expected[i] else 'off'} the front")

    return check_cases("check_pareto_front", fn, _cases(), pareto_front, mismatch)
