"""Helper of tests/test_train_command.py, run under torchrun with 2 processes: one SGD step of
the FCN with DistributedDataParallel (each process 4 images), then, on rank 0, the same step in
one process on the union of the 8 images. Writes start.pt, ddp.pt and single.pt to
argv[1]/MODE/ for each MODE of argv[2:] (default: both), in one process group: starting
torchrun and importing torch costs more than the steps.

A mode says how BatchNorm runs: "frozen" (torchvision's FrozenBatchNorm2d with
the same statistics), under which the two steps are equal; or "per-process" (BatchNorm in
train mode, as the SSD of "Your data, more machines" trains on the CPU, where SyncBatchNorm
has no kernels): each process then normalizes with its own 4 images' statistics, the single
process with the 8 images', and the two steps differ by design, not by a bug.
"""
import sys
from pathlib import Path

import torch
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from lessons_pkg import data, train
from lessons_pkg.inputs import IGNORE_INDEX
from lessons_pkg.models import fcn
from lessons_pkg.train import distributed


def freeze_batchnorm(module: nn.Module) -> nn.Module:
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            for key in ("weight", "bias", "running_mean", "running_var"):
                getattr(frozen, key).copy_(getattr(child, key).detach())
            setattr(module, name, frozen)
        else:
            freeze_batchnorm(child)
    return module


def build(batchnorm: str = "frozen") -> nn.Module:
    torch.manual_seed(0)
    model = fcn.BackboneFCN(4, pretrained_backbone=True)
    return freeze_batchnorm(model) if batchnorm == "frozen" else model


def one_step(model: nn.Module, images, targets) -> nn.Module:
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    train.fit(model, [(images, targets)], steps=1, optimizer=optimizer, schedule="constant", warmup_steps=0,
              seed=None, progress=False, device="cpu")
    return model


MODES = ("frozen", "per-process")


def main(out: Path, modes: tuple[str, ...] = MODES) -> None:
    assert set(modes) <= set(MODES), modes
    context = distributed.init("cpu")
    images, targets = data.collate_detection([data.make_split("train", 8)[i] for i in range(8)])
    assert not any((t["semantic"] == IGNORE_INDEX).any() for t in targets)  # equal pixel counts: mean of means = mean
    mine = slice(4 * context.rank, 4 * context.rank + 4)
    for batchnorm in modes:
        folder = out / batchnorm
        model = distributed.wrap(build(batchnorm), context)
        if context.is_main:
            folder.mkdir(parents=True, exist_ok=True)
            torch.save(distributed.unwrap(model).state_dict(), folder / "start.pt")
        one_step(model, images[mine], targets[mine])
        if context.is_main:
            torch.save(distributed.unwrap(model).state_dict(), folder / "ddp.pt")
            torch.save(one_step(build(batchnorm), images, targets).state_dict(), folder / "single.pt")
        distributed.barrier(context)
    distributed.shutdown()


if __name__ == "__main__":
    main(Path(sys.argv[1]), tuple(sys.argv[2:]) or MODES)
