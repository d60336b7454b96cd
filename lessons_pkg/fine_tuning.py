"""Fine-tuning a pretrained backbone: the classification & localization chapter's four workflows.

The chapter compares training a :class:`~lessons_pkg.models.localizer.Localizer` from scratch
with three ways of building on the backbone pretrained by ``python -m lessons_pkg.pretrain``
(:data:`WORKFLOWS`); :func:`train_workflow` runs one of them, and ``lessons_pkg.ablations``
replicates each over seeds. An experiment, not a model: it builds the model, loads the
pretrained weights and calls the training loop (:mod:`lessons_pkg.train`).

Runs that share a frozen phase (the chapter's three λ, same seed, same batches) may share its
backbone features through one :class:`FrozenFeatures`: the frozen backbone is a fixed function,
so each batch's features are computed once and replayed, and the runs stay bit-identical.
"""
from __future__ import annotations

import hashlib
from contextlib import contextmanager

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from . import train
from .models.localizer import Localizer

WORKFLOWS = ("scratch", "frozen", "frozen, then fine-tuned", "pretrained, unfrozen")


class FrozenFeatures:
    """The frozen backbone's features, computed once per distinct batch and shared by runs.

    A frozen backbone (``requires_grad=False``, eval mode) is a fixed function of its input:
    runs of the same seed see the same batches in their frozen phase, so its forward pass,
    most of that phase's time, need only be done once. Features are keyed by the bytes of the
    batch (a digest), so a replay is exact or not a replay: a batch never seen is computed.
    The first run also fixes the backbone's weights; a later run whose frozen backbone differs
    in any tensor is refused (its features would be another function's).

    Memory: one Tensor[B, D, h, w] per distinct batch (100 batches of 32 at D = 128, 8 x 8:
    about 100 MB).
    """

    def __init__(self):
        self.features: dict[bytes, Tensor] = {}
        self.weights: dict[str, Tensor] | None = None
        self.computed = 0  # backbone passes actually run (the rest were replays)

    def check_backbone(self, backbone: nn.Module) -> None:
        """Remember the first backbone's weights; raise ValueError if a later one differs."""
        state = backbone.state_dict()
        if self.weights is None:
            self.weights = {k: v.detach().clone() for k, v in state.items()}
            return
        if state.keys() != self.weights.keys():
            raise ValueError("frozen_features: this backbone has other tensors than the one the "
                             "features were computed with; use a new FrozenFeatures")
        for name, value in state.items():
            if not torch.equal(value, self.weights[name]):
                raise ValueError(f"frozen_features: backbone tensor {name!r} differs from the one the "
                                 "features were computed with; use a new FrozenFeatures")

    def __call__(self, backbone: nn.Module, images: Tensor) -> Tensor:
        """images Tensor[B, 3, H, W] -> backbone(images) Tensor[B, D, h, w], from the store when
        this exact batch (dtype, shape and bytes) was seen before."""
        digest = hashlib.blake2b(f"{images.dtype} {tuple(images.shape)}".encode(), digest_size=32)
        digest.update(images.detach().cpu().contiguous().numpy().tobytes())
        key = digest.digest()
        if key not in self.features:
            with torch.no_grad():  # frozen: no gradient would flow into it anyway
                self.features[key] = backbone(images)
            self.computed += 1
        return self.features[key]


class _ReplayedBackbone(nn.Module):
    """Stands in for a frozen backbone during a frozen phase: forward reads ``store``. The
    backbone stays a submodule, so the model's parameters, buffers and modes are unchanged."""

    def __init__(self, backbone: nn.Module, store: FrozenFeatures):
        super().__init__()
        self.inner = backbone
        self.store = store
        self.out_channels = getattr(backbone, "out_channels", None)

    def forward(self, images: Tensor) -> Tensor:
        return self.store(self.inner, images)


@contextmanager
def _replaying(model: Localizer, store: FrozenFeatures | None):
    """Within the block, ``model.backbone`` (frozen) answers from ``store``; restored after."""
    if store is None:
        yield
        return
    store.check_backbone(model.backbone)
    backbone = model.backbone
    model.backbone = _ReplayedBackbone(backbone, store)
    try:
        yield
    finally:
        model.backbone = backbone


def train_workflow(train_set: Dataset, workflow: str, box_weight: float = 1.0, steps: int = 200,
                   batch_size: int = 32, seed: int = 0, lr: float = 3e-3, finetune_lr: float = 2e-3,
                   progress: bool = False, frozen_features: FrozenFeatures | None = None):
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
    ``frozen_features``: a :class:`FrozenFeatures` shared by runs whose frozen phases see the
    same batches ("frozen" and "frozen, then fine-tuned" with one seed, any ``box_weight``):
    each batch's backbone pass is done once; the weights and losses are the same as without it.
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
        with _replaying(model, frozen_features):
            return model, train.fit(model, loader, steps, **fit)
    with _replaying(model, frozen_features):
        history = train.fit(model, loader, steps // 2, **fit)
    model.freeze_backbone(False)  # then everything together, more gently
    fit.update(lr=finetune_lr, seed=seed + 1, history=history)
    return model, train.fit(model, loader, steps - steps // 2, **fit)
