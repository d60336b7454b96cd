"""Exercise checker of the chapter "Your own data, more machines"."""
from __future__ import annotations

from typing import Callable

import torch

from ._report import check_cases


def _cases() -> list[tuple]:
    """(name, dataset size N, number of processes W, this process's rank)."""
    return [
        ("one process: every index, in order", 10, 1, 0),
        ("10 images over 2 processes, rank 0", 10, 2, 0),
        ("10 images over 2 processes, rank 1", 10, 2, 1),
        ("10 images over 4 processes, rank 3: the set is padded to 12 by repeating its start", 10, 4, 3),
        ("10 images over 4 processes, rank 1", 10, 4, 1),
        ("3 images over 4 processes, rank 3: fewer images than processes", 3, 4, 3),
        ("7 images over 3 processes, rank 2", 7, 3, 2),
    ]


def check_shard(fn: Callable) -> bool:
    """Checks ``fn(num_samples: int, world_size: int, rank: int) -> int64 Tensor[ceil(N / W)]``, the
    indices one process reads in an epoch without shuffling, against
    ``torch.utils.data.DistributedSampler(shuffle=False)``."""
    from torch.utils.data import DistributedSampler

    def reference(n, world_size, rank):
        return torch.tensor(list(DistributedSampler(range(n), num_replicas=world_size, rank=rank, shuffle=False)),
                            dtype=torch.int64)

    def mismatch(got, expected, *args):
        if torch.equal(got.long(), expected):
            return None
        return f"expected the indices {expected.tolist()}, got {got.long().tolist()}"

    return check_cases("check_shard", fn, _cases(), reference, mismatch,
                       shape_hint=" (every process reads ceil(N / W) indices, so all take the same number of steps)")
