"""Pretrain the localizer's backbone on a *different* task, offline, without downloads.

    python -m lessons_pkg.pretrain            # reproduces data/pretrained/backbone.pt (about 7 min)
    python -m lessons_pkg.pretrain --out DIR/backbone.pt --steps 500   # another one

The task: multi-label classification on the ``pretrain`` preset of the shapes generator (all
nine shapes are classes, 1 to 4 objects per image, no distractors): "which shapes are in this
image?", one sigmoid per class, binary cross-entropy. That is the role ImageNet plays for real
detectors: a wider distribution and another question, whose features we then reuse for
single-object classification & localization (book/classification_localization.ipynb).

Its images come from their own seeds (``TRAIN_SEED``, ``HELDOUT_SEED``), so they never overlap
with the chapter's train/val splits (seeds 0 and 1 of the ``single`` preset).

The defaults (``DEFAULTS``) are the settings of the committed backbone. Writes the model's
float32 state_dict (keys ``backbone.*`` and ``head.*``; ``backbone.build_backbone`` reads the
first; float32, not float16, because every recipe of ``lessons_pkg.checkpoints`` starts from
these weights) and, beside it, a JSON record (``records.save_checkpoint``) with the command,
the settings, the torch version and the held-out accuracy: exact match (all nine
present/absent decisions right) and the mean per-label accuracy, on ``HELDOUT_IMAGES`` scenes
and on the first ``CHECK_IMAGES`` of them (the test recomputes the latter).
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from .. import metrics, records, train
from ..cli import positive_float, positive_int
from ..data import ShapesDataset, render_scene
from ..models.backbone import PRETRAINED_BACKBONE, WIDTHS, build_backbone
from ..models.localizer import ClassHead

TRAIN_SEED, HELDOUT_SEED = 100, 101
HELDOUT_IMAGES, CHECK_IMAGES = 1024, 256
CONFIG = "pretrain"
# The settings of the committed data/pretrained/backbone.pt: the command with no flag remakes it.
DEFAULTS = {"steps": 2500, "seed": 0, "num_images": 6000, "batch_size": 64, "lr": 2e-3}


class MultiLabelScenes(Dataset):
    """Scenes rendered once and kept as uint8, with their multi-hot class vectors.

    Items: (image float Tensor[3, H, W] in [0, 1], multi-hot float Tensor[C]). With ``augment``,
    random flips and transposes (the eight symmetries of the square; the shapes have no "up"),
    drawn from PyTorch's global generator (seeded by ``train.fit``).
    """

    def __init__(self, num_images: int, seed: int, config: str = CONFIG, augment: bool = False,
                 progress: bool = False):
        ds = ShapesDataset(num_images, seed=seed, config=config, cache=False)
        self.classes = ds.classes
        images, hot = [], torch.zeros(num_images, len(ds.classes))
        for i in tqdm(range(num_images), desc=f"render seed {seed}", disable=not progress):
            scene = render_scene(ds.config, seed, i)  # no masks kept: 4x less memory than ds[i]
            images.append(torch.from_numpy(np.ascontiguousarray(scene.image.transpose(2, 0, 1))))
            hot[i, torch.from_numpy(scene.labels) - 1] = 1.0
        self.images = torch.stack(images)  # uint8 [N, 3, H, W]: 4x smaller than float
        self.targets = hot  # [N, C]
        self.augment = augment

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        image = self.images[index].float().div_(255)
        if self.augment:
            transpose, flip_x, flip_y = (torch.rand(3) < 0.5).tolist()
            if transpose:
                image = image.transpose(1, 2)
            if flip_x:
                image = image.flip(2)
            if flip_y:
                image = image.flip(1)
        return image.contiguous(), self.targets[index]


class MultiLabelClassifier(nn.Module):
    """The backbone with a multi-label head: images Tensor[B, 3, H, W] -> logits Tensor[B, C].

    Train mode, ``model(images, targets)`` with multi-hot targets Tensor[B, C]: {"loss_bce": ...}
    (so ``train.fit`` trains it); eval mode: the logits.
    """

    def __init__(self, num_classes: int, widths: tuple[int, ...] = WIDTHS):
        super().__init__()
        self.backbone = build_backbone(widths=widths)
        self.head = ClassHead(self.backbone.out_channels, num_classes)

    def forward(self, images: Tensor, targets: Tensor | None = None):
        logits = self.head(self.backbone(images))
        if self.training:
            if targets is None:
                raise ValueError("in train mode the model needs multi-hot targets Tensor[B, C]")
            return {"loss_bce": F.binary_cross_entropy_with_logits(logits, targets)}
        return logits


@torch.no_grad()
def multilabel_accuracy(model: nn.Module, dataset: MultiLabelScenes, batch_size: int = 256,
                        device: torch.device | str | None = None) -> dict[str, float]:
    """:func:`lessons_pkg.metrics.multilabel_accuracy` of ``model`` on ``dataset`` (its logits
    computed in batches of ``batch_size``)."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.eval()
    logits = [model(dataset.images[start:start + batch_size].to(device).float() / 255).cpu()
              for start in range(0, len(dataset), batch_size)]
    return metrics.multilabel_accuracy(torch.cat(logits), dataset.targets)


def load(path: str | Path, map_location="cpu") -> tuple[MultiLabelClassifier, dict]:
    """The pretrained classifier (weights only, no pickled code) and its JSON record."""
    record = records.load_record(path)
    model = MultiLabelClassifier(len(record["classes"]), tuple(record["widths"]))
    model.load_state_dict(records.load_weights(path, map_location))
    return model.eval(), record


def pretrain(out: Path, steps: int, seed: int, num_images: int, batch_size: int, lr: float,
             command: str, progress: bool = True) -> dict:
    """Render, train, measure, save. Returns the JSON record."""
    start = time.perf_counter()
    train_set = MultiLabelScenes(num_images, TRAIN_SEED, augment=True, progress=progress)
    heldout = MultiLabelScenes(HELDOUT_IMAGES, HELDOUT_SEED, progress=progress)
    render_seconds = time.perf_counter() - start
    torch.manual_seed(seed)  # the initial weights
    model = MultiLabelClassifier(len(train_set.classes))
    loader = train.make_loader(train_set, batch_size, drop_last=True, collate_fn=None)
    history = train.fit(model, loader, steps, lr=lr, warmup_steps=min(100, steps // 10), seed=seed,
                        progress=progress, desc="pretrain", log_every=50)
    check = MultiLabelScenes(CHECK_IMAGES, HELDOUT_SEED)
    record = {
        "command": command,
        "task": f"multi-label classification (BCE) on the '{CONFIG}' preset: which of the 9 shapes are present",
        "config": CONFIG,
        "classes": list(train_set.classes),
        "widths": list(model.backbone.widths),
        "train_seed": TRAIN_SEED,
        "num_train_images": num_images,
        "steps": steps,
        "seed": seed,
        "batch_size": batch_size,
        "lr": lr,
        "final_loss": round(history.final(), 5),
        "train_seconds": round(history.seconds, 1),
        "render_seconds": round(render_seconds, 1),
        "accuracy_definitions": {
            "exact_match": "share of images whose 9 present/absent decisions (logit > 0) are all right",
            "mean_label_accuracy": "share of right present/absent decisions over images x classes",
        },
    }

    def scores(saved: nn.Module) -> dict:
        return {"heldout": {"seed": HELDOUT_SEED, "num_images": HELDOUT_IMAGES, **multilabel_accuracy(saved, heldout)},
                "check": {"seed": HELDOUT_SEED, "num_images": CHECK_IMAGES, **multilabel_accuracy(saved, check)}}

    return records.save_checkpoint(model, out, record, dtype="float32", scores=scores)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lessons_pkg.pretrain", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=PRETRAINED_BACKBONE,
                        help="the checkpoint to write (a JSON record goes beside it); default: the committed one")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    parser.add_argument("--steps", type=positive_int, default=DEFAULTS["steps"], help="optimizer steps")
    parser.add_argument("--seed", type=int, default=DEFAULTS["seed"], help="initial weights and batch order")
    parser.add_argument("--num-images", type=positive_int, default=DEFAULTS["num_images"],
                        help="training scenes, rendered once")
    parser.add_argument("--batch-size", type=positive_int, default=DEFAULTS["batch_size"])
    parser.add_argument("--lr", type=positive_float, default=DEFAULTS["lr"])
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    try:
        out = records.check_writable(args.out, args.overwrite)
    except FileExistsError as error:
        parser.error(str(error))
    # The exact command, with every setting spelled out, so the JSON says how to reproduce it.
    command = shlex.join(["python", "-m", "lessons_pkg.pretrain", "--out", records.display_path(out),
                          "--steps", str(args.steps), "--seed", str(args.seed), "--num-images", str(args.num_images),
                          "--batch-size", str(args.batch_size), "--lr", str(args.lr)])
    record = pretrain(out, args.steps, args.seed, args.num_images, args.batch_size, args.lr, command,
                      progress=not args.quiet)
    print(json.dumps({k: record[k] for k in ("heldout", "train_seconds", "final_loss")}))
    print(f"wrote {out} and {out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
