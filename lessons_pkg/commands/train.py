"""Train any model of the course on the shapes data or on your own COCO-format set, on one CPU
or on many GPUs: ``python -m lessons_pkg.train MODEL --out DIR``.

    python -m lessons_pkg.train ssd --out runs/ssd                        # the shapes data
    python -m lessons_pkg.train faster_rcnn --out runs/frcnn \\
        --images data/train_images --annotations data/train.json \\
        --val-images data/val_images --val-annotations data/val.json      # your COCO-format set
    torchrun --nproc_per_node=2 -m lessons_pkg.train ssd --out runs/ssd   # 2 processes (GPUs, or CPU)
    torchrun --nnodes=2 --nproc_per_node=8 --rdzv-backend=c10d --rdzv-endpoint=HOST:29500 \\
        -m lessons_pkg.train mask_rcnn --out runs/mrcnn ...               # 2 machines of 8 GPUs
    python -m lessons_pkg.train ssd --out runs/ssd --resume               # continue from runs/ssd/last.pt

MODEL is a recipe of :mod:`lessons_pkg.recipes` (its model, settings and defaults: steps,
batch size per process, learning rate, seed). The number of classes and their names come from
the data. It trains with :func:`lessons_pkg.training.run_training`, as
``python -m lessons_pkg.checkpoints`` does, and writes, from rank 0 only:

- ``DIR/model.pt``: the weights (float32), ``torch.load(..., weights_only=True)``;
- ``DIR/model.json``: the record, as the committed checkpoints have it (the command, the
  settings, the class names, the training time and throughput, the validation scores), so that
  ``recipes.load(MODEL, "DIR/model.pt")`` builds and loads the model;
- ``DIR/last.pt``: model, optimizer, step, history, the data position and every process's RNG
  states, saved every ``--save-every`` steps (by an atomic rename: an interrupted save leaves
  the previous one); ``--resume`` continues from it, and on one CPU process the result equals
  the uninterrupted run's bit for bit.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import torch

from .. import evaluation, records, training
from ..cli import nonnegative_int, positive_float, positive_int
from ..data import CocoDataset, detection_augmentation, resize_to_limits
from ..data.coco import SemanticTargets
from ..models import rcnn
from ..recipes import RECIPES, Recipe
from ..train import distributed


# ----------------------------------------------------------------------------- arguments
def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m lessons_pkg.train", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", choices=sorted(RECIPES), help="a recipe of lessons_pkg.recipes")
    p.add_argument("--out", type=Path, required=True, help="folder for model.pt, model.json and last.pt")
    data = p.add_argument_group("data (default: the shapes data of the course)")
    data.add_argument("--images", type=Path, help="folder the training annotations' file_names are relative to")
    data.add_argument("--annotations", type=Path, help="COCO annotation file of the training images")
    data.add_argument("--val-images", type=Path, help="folder of the validation images")
    data.add_argument("--val-annotations", type=Path, help="COCO annotation file of the validation images")
    data.add_argument("--min-size", type=positive_int, help="resize the shorter side to this (COCO data)")
    data.add_argument("--max-size", type=positive_int, help="and the longer side to at most this")
    data.add_argument("--num-train-images", type=positive_int, help="shapes data: training scenes (default: the recipe's)")
    data.add_argument("--num-val-images", type=positive_int, default=None,
                      help=f"shapes data: validation scenes (default: {evaluation.VAL_IMAGES})")
    run = p.add_argument_group("training (default: the recipe's)")
    run.add_argument("--steps", type=positive_int, help="optimizer steps")
    run.add_argument("--batch-size", type=positive_int, help="images per step and process")
    run.add_argument("--lr", type=positive_float, help="peak learning rate (AdamW, cosine schedule)")
    run.add_argument("--warmup-steps", type=nonnegative_int)
    run.add_argument("--seed", type=int)
    run.add_argument("--eval-every", type=nonnegative_int, default=0,
                     help="evaluate every N steps as well as at the end (0: at the end only)")
    run.add_argument("--save-every", type=positive_int, default=100, help="write last.pt every N steps")
    run.add_argument("--resume", action="store_true", help="continue from DIR/last.pt")
    run.add_argument("--stop-after", type=positive_int,
                     help="stop after this many steps, writing last.pt (a job of a time-limited queue; "
                          "--resume continues): the schedule is still that of --steps")
    run.add_argument("--overwrite", action="store_true", help="replace a finished run in DIR")
    run.add_argument("--amp", action="store_true", help="mixed precision (CUDA only)")
    run.add_argument("--device", choices=("cpu", "cuda"), help="default: CUDA when present")
    run.add_argument("--workers", type=nonnegative_int, default=0, help="DataLoader worker processes")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def check_arguments(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Everything that can be checked before any data is read, with the flag's name."""
    for a, b in (("images", "annotations"), ("val_images", "val_annotations")):
        if (getattr(args, a) is None) != (getattr(args, b) is None):
            p.error(f"--{a.replace('_', '-')} and --{b.replace('_', '-')} go together")
    if args.val_images is not None and args.images is None:
        p.error("--val-images/--val-annotations need --images/--annotations (your own training set)")
    for name in ("images", "val_images"):
        folder = getattr(args, name)
        if folder is not None and not folder.is_dir():
            p.error(f"--{name.replace('_', '-')} {folder}: not a folder")
    for name in ("annotations", "val_annotations"):
        file = getattr(args, name)
        if file is not None and not file.is_file():
            p.error(f"--{name.replace('_', '-')} {file}: no such file")
    if args.max_size is not None and (args.min_size is None or args.max_size <= args.min_size):
        p.error("--max-size needs --min-size, and must be larger than it")
    if (args.min_size is not None) and args.images is None:
        p.error("--min-size/--max-size resize your own (COCO) images; the shapes data has one size")
    if args.amp and (args.device == "cpu" or not torch.cuda.is_available()):
        p.error("--amp needs a CUDA device")
    if args.out.exists() and not args.out.is_dir():
        p.error(f"--out {args.out}: exists and is not a folder")
    if args.resume and not (args.out / "last.pt").is_file():
        p.error(f"--resume: {args.out / 'last.pt'} does not exist")
    try:
        records.refuse_overwrite((args.out / "model.pt", args.out / "last.pt"), args.resume or args.overwrite,
                                 f"--out {args.out} holds a run already: pass --resume to continue it, --overwrite "
                                 "to start again, or another --out")
    except FileExistsError as error:
        p.error(str(error))


# ----------------------------------------------------------------------------- data
def load_data(args: argparse.Namespace, recipe: Recipe) -> training.TrainingData:
    """The run's data: the shapes data, or the COCO-format sets of the flags, in the target
    contract of the recipe's task; scored on its validation set when there is one."""
    if args.images is None:
        return training.shapes_data(recipe, args.num_train_images, args.num_val_images, test=False)
    resize = {"min_size": args.min_size, "max_size": args.max_size} if args.min_size else {}
    train_set = CocoDataset(args.images, args.annotations, transforms=detection_augmentation(**resize))
    val_set = (CocoDataset(args.val_images, args.val_annotations,
                           transforms=resize_to_limits(args.min_size, args.max_size) if resize else None)
               if args.val_images is not None else None)
    classes = train_set.classes
    if val_set is not None and val_set.label_to_category_id != train_set.label_to_category_id:
        raise ValueError(f"{args.val_annotations}: its categories {val_set.label_to_category_id} differ from "
                         f"the training set's {train_set.label_to_category_id} (label -> category id)")
    if recipe.task in ("instance", "segmentation") and not train_set.has_masks:
        raise ValueError(f"{args.annotations}: {args.model} needs a 'segmentation' in every annotation "
                         "(polygons or RLE); this set has boxes only")
    if recipe.task == "segmentation":
        train_set = SemanticTargets(train_set)
        val_set = SemanticTargets(val_set) if val_set is not None else None
    if recipe.proposals:   # R-CNN and Fast R-CNN read selective-search proposals
        train_set = rcnn.WithProposals(train_set)
        val_set = rcnn.WithProposals(val_set) if val_set is not None else None
    if len(train_set) == 0:
        raise ValueError("the training set holds no images")
    source = {"images": str(args.images), "annotations": str(args.annotations),
              "val_images": str(args.val_images), "val_annotations": str(args.val_annotations)}
    score_sets = {"val": ({"num_images": len(val_set)}, val_set)} if val_set is not None else {}
    return training.TrainingData(train_set, tuple(classes), source, score_sets)


# ----------------------------------------------------------------------------- the command
def run(args: argparse.Namespace, argv: list[str]) -> dict | None:
    """Train as ``args`` say; returns the record on rank 0 (None on the other ranks)."""
    recipe = RECIPES[args.model]
    context = distributed.init(args.device)
    data = load_data(args, recipe)
    launcher = (["torchrun", f"--nproc_per_node={context.world_size}", "-m", "lessons_pkg.train"]
                if context.distributed else ["python", "-m", "lessons_pkg.train"])
    if context.is_main:
        args.out.mkdir(parents=True, exist_ok=True)
    settings = training.Settings.of(
        recipe, steps=args.steps, batch_size=args.batch_size, lr=args.lr, warmup_steps=args.warmup_steps,
        seed=args.seed, out=args.out / "model.pt", dtype="float32", command=shlex.join(launcher + argv),
        last=args.out / "last.pt", save_every=args.save_every, resume=args.resume, stop_after=args.stop_after,
        eval_every=args.eval_every, amp=args.amp, workers=args.workers, progress=not args.quiet)
    return training.run_training(args.model, recipe, data, settings, context)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    p = parser()
    args = p.parse_args(argv)
    check_arguments(p, args)
    try:
        record = run(args, argv)
    except (ValueError, FileNotFoundError) as error:   # bad data or settings: named, before training
        print(f"python -m lessons_pkg.train: error: {error}", file=sys.stderr)
        return 2
    finally:
        distributed.shutdown()
    if record is not None and "final_loss" in record:
        summary = {k: record[k] for k in ("final_loss", "train_seconds", "images_per_second") if k in record}
        print(json.dumps({**summary, "val": record.get("val", {})}))
        print(f"wrote {args.out / 'model.pt'}, {args.out / 'model.json'} and {args.out / 'last.pt'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
