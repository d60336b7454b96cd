"""Exercise checker of the chapter "Your own data, more machines"."""
from __future__ import annotations

from typing import Callable

import torch

from ._report import check_cases, checker


def _cases() -> list[tuple]:
    """(name, dataset size N, number of processes W, this process's rank, epoch, seed)."""
    return [
        ("one process, epoch 0: a permutation of every index", 10, 1, 0, 0, 0),
        ("10 images over 2 processes, rank 0, epoch 0", 10, 2, 0, 0, 0),
        ("10 images over 2 processes, rank 1, epoch 0", 10, 2, 1, 0, 0),
        ("10 images over 2 processes, rank 1, epoch 1: a new order every epoch", 10, 2, 1, 1, 0),
        ("10 images over 4 processes, rank 3, epoch 0: 10 indices for 12 places", 10, 4, 3, 0, 0),
        ("10 images over 4 processes, rank 2, epoch 3", 10, 4, 2, 3, 0),
        ("3 images over 4 processes, rank 3, epoch 0: fewer images than processes", 3, 4, 3, 0, 0),
        ("7 images over 3 processes, rank 2, epoch 1, seed 5", 7, 3, 2, 1, 5),
    ]


def _hint(got: list[int], n: int, world_size: int, rank: int, epoch: int, seed: int) -> str:
    """What a wrong answer most likely got wrong, told from the case and the sampler's order."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch)).tolist()
    per = -(-n // world_size)
    padded = (order * world_size)[:per * world_size]
    unshuffled = (list(range(n)) * world_size)[:per * world_size]
    if got == unshuffled[rank::world_size]:
        return "these are the unshuffled indices: the sampler shuffles"
    if got == padded[rank * per:(rank + 1) * per]:
        return ("a block of consecutive positions of the epoch's order: which position goes to "
                "which rank, so that the processes' first indices are the order's first W?")
    if got[:len(padded[rank::world_size])] and set(got) - set(range(n)):
        return "indices outside 0..N-1"
    if got[:n // world_size] == padded[rank::world_size][:n // world_size]:
        return ("right until the padding: the places past N repeat the start of the epoch's "
                "order (the shuffled one)")
    if sorted(got) == sorted(padded[rank::world_size]):
        return "the right indices in the wrong order"
    return ("not the sampler's permutation: every process must draw the same one (else some images "
            "are read twice and others never), a different one each epoch, and the same one again "
            "when the run is repeated: what do all processes know alike?")


@checker
def check_shard(fn: Callable) -> bool:
    """Checks ``fn(num_samples, world_size, rank, epoch, seed) -> int64 Tensor[ceil(N / W)]``,
    the indices one process reads in one epoch with shuffling, against
    ``torch.utils.data.DistributedSampler(shuffle=True, seed=seed)`` after ``set_epoch(epoch)``."""
    from torch.utils.data import DistributedSampler

    def reference(n, world_size, rank, epoch, seed):
        sampler = DistributedSampler(range(n), num_replicas=world_size, rank=rank, shuffle=True, seed=seed)
        sampler.set_epoch(epoch)
        return torch.tensor(list(sampler), dtype=torch.int64)

    def mismatch(got, expected, n, world_size, rank, epoch, seed):
        if torch.equal(got.long(), expected):
            return None
        got, expected = got.long().tolist(), expected.tolist()
        return f"expected the indices {expected}, got {got}: {_hint(got, n, world_size, rank, epoch, seed)}"

    return check_cases("check_shard", fn, _cases(), reference, mismatch,
                       shape_hint=" (every process reads ceil(N / W) indices, so all take the same number of steps)")
