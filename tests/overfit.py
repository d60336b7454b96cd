"""The overfit check every detector's tests run: train on four images, predict them back."""
import time

import torch

from lessons_pkg import data, train


def overfit(model: torch.nn.Module, steps: int, dataset=None, lr: float = 3e-3) -> tuple[list, list, float]:
    """Train ``model`` (built under torch.manual_seed(0) by the caller) for ``steps`` steps on
    four training images (or ``dataset``), batch 4, on the CPU; returns (predictions, targets,
    seconds) on the same images."""
    dataset = dataset if dataset is not None else data.make_split("train", 4)
    loader = train.make_loader(dataset, batch_size=4, shuffle=False)
    start = time.perf_counter()
    train.fit(model, loader, steps=steps, lr=lr, device="cpu", progress=False, log_every=20)
    preds, targets = train.evaluate(model, loader, device="cpu")
    return preds, targets, time.perf_counter() - start
