"""Fine-tuning a pretrained backbone: the classification & localization chapter's four workflows.

The chapter compares training a :class:`~lessons_pkg.models.localizer.Localizer` from scratch
with three ways of building on the backbone pretrained by ``python -m lessons_pkg.pretrain``
(:data:`WORKFLOWS`); :func:`train_workflow` runs one of them, and ``lessons_pkg.ablations``
replicates each over seeds. An experiment, not a model: it builds the model, loads the
pretrained weights and calls the training loop (:mod:`lessons_pkg.train`).
"""
from __future__ import annotations

import torch
from torch.utils.data import Dataset

from . import train
from .models.localizer import Localizer

WORKFLOWS = ("scratch", "frozen", "frozen, then fine-tuned", "pretrained, unfrozen")


def train_workflow(train_set: Dataset, workflow: str, box_weight: float = 1.0, steps: int = 200,
                   batch_size: int = 32, seed: int = 0, lr: float = 3e-3, finetune_lr: float = 2e-3,
                   progress: bool = False):
    """Train a :class:`~lessons_pkg.models.localizer.Localizer` from scratch or by one of the
    three ways of building on a pretrained backbone (the chapter's comparison, and its seed
    replicas in :mod:`lessons_pkg.ablations`):

    - "scratch": random backbone, everything trained for ``steps``;
    - "frozen": the pretrained backbone fixed, the new heads trained for ``steps``;
    - "frozen, then fine-tuned": "frozen" for ``steps // 2``, then everything together for the
      rest with the smaller ``finetune_lr``;
    - "pretrained, unfrozen": "scratch" with the pretrained backbone: everything trained from
      step 0 at ``lr`` (the one change from "scratch" is where the backbone's weights start).

    ``train_set``: single-object samples (e.g. :class:`lessons_pkg.data.SingleObjectTensors`).
    ``seed`` fixes the initial heads and the batches (the second phase draws with ``seed + 1``).
    Returns (model, History).
    """
    if workflow not in WORKFLOWS:
        raise ValueError(f"unknown workflow {workflow!r}; choose from {WORKFLOWS}")
    torch.manual_seed(seed)  # the same initial heads in every run of one seed
    model = Localizer(box_weight=box_weight)
    loader = train.make_loader(train_set, batch_size, drop_last=True)
    fit = dict(lr=lr, warmup_steps=10, progress=progress, seed=seed)
    if workflow == "scratch":
        return model, train.fit(model, loader, steps, **fit)
    if workflow == "pretrained, unfrozen":
        model.load_backbone()
        return model, train.fit(model, loader, steps, **fit)
    model.load_backbone().freeze_backbone()
    if workflow == "frozen":
        return model, train.fit(model, loader, steps, **fit)
    history = train.fit(model, loader, steps // 2, **fit)
    model.freeze_backbone(False)  # then everything together, more gently
    fit.update(lr=finetune_lr, seed=seed + 1, history=history)
    return model, train.fit(model, loader, steps - steps // 2, **fit)
