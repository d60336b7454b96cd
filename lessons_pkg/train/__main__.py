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

MODEL is a recipe of :mod:`lessons_pkg.checkpoints` (its model, settings and defaults: steps,
batch size per process, learning rate, seed). The number of classes and their names come from
the data. Writes, from rank 0 only:

- ``DIR/model.pt``: the weights (float32), ``torch.load(..., weights_only=True)``;
- ``DIR/model.json``: the record, as the committed checkpoints have it (the command, the
  settings, the class names, the training time and throughput, the validation scores), so that
  ``checkpoints.load(MODEL, "DIR/model.pt")`` builds and loads the model;
- ``DIR/last.pt``: model, optimizer, step, history, the data position and every process's RNG
  states, saved every ``--save-every`` steps (by an atomic rename: an interrupted save leaves
  the previous one); ``--resume`` continues from it, and on one CPU process the result equals
  the uninterrupted run's bit for bit.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader, DistributedSampler, Subset

from .. import checkpoints, metrics, records
from ..cli import nonnegative_int, positive_float, positive_int
from ..data import (CocoDataset, collate_detection, detection_augmentation, make_split, resize_to_limits,
                    segmentation_augmentation)
from ..data.coco import SemanticTargets
from ..models import rcnn
from . import distributed
from .loop import BatchStream, History, evaluate, fit, make_loader, rng_state, seed_everything, set_rng_state

WEIGHT_DECAY = 1e-4   # train.fit's default, which every recipe trained with


class Stopped(Exception):
    """--stop-after was reached (last.pt is written)."""


# ----------------------------------------------------------------------------- arguments
def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m lessons_pkg.train", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", choices=sorted(checkpoints.RECIPES), help="a recipe of lessons_pkg.checkpoints")
    p.add_argument("--out", type=Path, required=True, help="folder for model.pt, model.json and last.pt")
    data = p.add_argument_group("data (default: the shapes data of the course)")
    data.add_argument("--images", type=Path, help="folder the training annotations' file_names are relative to")
    data.add_argument("--annotations", type=Path, help="COCO annotation file of the training images")
    data.add_argument("--val-images", type=Path, help="folder of the validation images")
    data.add_argument("--val-annotations", type=Path, help="COCO annotation file of the validation images")
    data.add_argument("--min-size", type=positive_int, help="resize the shorter side to this (COCO data)")
    data.add_argument("--max-size", type=positive_int, help="and the longer side to at most this")
    data.add_argument("--num-train-images", type=positive_int, help="shapes data: training scenes (default: the recipe's)")
    data.add_argument("--num-val-images", type=positive_int, default=checkpoints.VAL_IMAGES,
                      help="shapes data: validation scenes")
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
    if not args.resume and not args.overwrite and any((args.out / f).exists() for f in ("model.pt", "last.pt")):
        p.error(f"--out {args.out} holds a run already: pass --resume to continue it, --overwrite to start "
                "again, or another --out")


# ----------------------------------------------------------------------------- data
def shapes_training_set(recipe: checkpoints.Recipe, num_images: int | None = None):
    """The recipe's training data on the shapes ``train`` split (random crops for a segmentation
    recipe that trains on crops): what ``python -m lessons_pkg.checkpoints`` trains on too."""
    crop = segmentation_augmentation((recipe.crop_size,) * 2) if recipe.crop_size else None
    return make_split("train", num_images or recipe.num_train_images, recipe.config, transforms=crop)


def load_data(args: argparse.Namespace, recipe: checkpoints.Recipe):
    """(train set, val set, class names). Datasets in the target contract of the recipe's task."""
    if args.images is None:
        train_set = shapes_training_set(recipe, args.num_train_images)
        val_set = make_split("val", args.num_val_images, recipe.config)
        classes = tuple(train_set.classes)
    else:
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
    return train_set, val_set, classes


def make_train_loader(train_set, batch_size: int, seed: int, context: distributed.Context, workers: int):
    """One process: the loader every recipe trained with (shuffled by the global generator). Several:
    each process draws its share of every epoch from a DistributedSampler seeded with ``seed``."""
    if not context.distributed:
        return make_loader(train_set, batch_size, num_workers=workers)
    sampler = DistributedSampler(train_set, num_replicas=context.world_size, rank=context.rank, shuffle=True,
                                 seed=seed, drop_last=True)
    return DataLoader(train_set, batch_size=batch_size, sampler=sampler, collate_fn=collate_detection,
                      num_workers=workers, drop_last=True, pin_memory=context.device.type == "cuda")


# ----------------------------------------------------------------------------- evaluation
def evaluate_split(model, val_set, task: str, num_classes: int, context: distributed.Context) -> dict:
    """Scores on ``val_set``, split across processes: each evaluates every world_size-th image;
    detections are gathered on rank 0 and paired with their targets by image_id (COCO mAP, and
    mask mAP for instance segmentation); for semantic segmentation the confusion matrices are
    summed. Returns the scores on rank 0, {} elsewhere."""
    shard = Subset(val_set, range(context.rank, len(val_set), context.world_size))
    loader = make_loader(shard, batch_size=8, shuffle=False)
    module = distributed.unwrap(model)
    if task == "segmentation":
        meter = metrics.SegmentationMeter(num_classes + 1, ignore_index=255)
        preds, targets = evaluate(module, loader, device=context.device) if len(shard) else ([], [])
        for p, t in zip(preds, targets):
            meter.update(p["semantic"], t["semantic"])
        cm = meter.cm.to(context.device)
        if context.distributed:
            torch.distributed.all_reduce(cm)
        if not context.is_main:
            return {}
        scores = metrics.segmentation_scores(cm.cpu())
        return {"miou": round(scores["miou"], 6), "pixel_accuracy": round(scores["pixel_accuracy"], 6)}
    preds, targets = evaluate(module, loader, device=context.device) if len(shard) else ([], [])
    for p in preds:  # smaller to send: binary masks
        if "masks" in p:
            p["masks"] = (p["masks"] > 0.5).to(torch.uint8)
    everything = distributed.gather((preds, targets), context)
    if not context.is_main:
        return {}
    preds = [p for ps, _ in everything for p in ps]
    targets = [t for _, ts in everything for t in ts]
    for p, t in zip(preds, targets):
        p["image_id"] = t["image_id"]
    box = metrics.mean_average_precision(preds, targets)
    out = {k: round(float(box[k]), 6) for k in metrics.SUMMARY_KEYS}
    if task == "instance":
        mask = metrics.mean_average_precision(preds, targets, iou_type="segm")
        out["segm"] = {k: round(float(mask[k]), 6) for k in metrics.SUMMARY_KEYS}
    return out


# ----------------------------------------------------------------------------- resumable state
def model_generators(model) -> dict:
    """The random generators a model owns (e.g. the sliding-window detector's window sampler,
    ``module.generator``), by module name: their states belong to a resumable run too."""
    return {name: module.generator for name, module in distributed.unwrap(model).named_modules()
            if isinstance(getattr(module, "generator", None), torch.Generator)}


def save_last(path: Path, model, optimizer, step: int, history: History, batches: BatchStream, meta: dict,
              context: distributed.Context) -> None:
    """Write ``last.pt`` (rank 0; every process's RNG states, its own and its model's generators,
    are gathered into it). Written to a temporary file and renamed: an interrupted save leaves
    the previous one whole."""
    generators = {name: g.get_state() for name, g in model_generators(model).items()}
    states = distributed.all_gather({"rng": rng_state(), "stream": batches.state_dict(),
                                     "generators": generators}, context)
    if not context.is_main:
        return
    state = {"meta": meta, "step": step, "model": distributed.unwrap(model).state_dict(),
             "optimizer": optimizer.state_dict(),
             "history": {"steps": history.steps, "losses": history.losses, "lr": history.lr,
                         "seconds": history.seconds},
             "processes": states}
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_last(path: Path, meta: dict) -> dict:
    """The state of ``last.pt``, checked against this run's model and data (ValueError naming
    what differs)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(f"{path}: not a readable last.pt ({type(error).__name__}: {str(error)[:200]})") from None
    if not isinstance(state, dict) or "meta" not in state:
        raise ValueError(f"{path}: not a last.pt written by python -m lessons_pkg.train")
    for key in ("model", "num_classes", "classes", "steps", "world_size", "batch_size"):
        if state["meta"].get(key) != meta.get(key):
            raise ValueError(f"--resume: {path} was written with {key} = {state['meta'].get(key)!r}, this run has "
                             f"{meta.get(key)!r}; resume with the same settings, or start again with --overwrite")
    return state


# ----------------------------------------------------------------------------- the command
def run(args: argparse.Namespace, argv: list[str]) -> dict | None:
    """Train as ``args`` say; returns the record on rank 0 (None on the other ranks)."""
    recipe = checkpoints.RECIPES[args.model]
    context = distributed.init(args.device)
    steps = args.steps or recipe.steps
    batch_size = args.batch_size or recipe.batch_size
    lr = args.lr or recipe.lr
    warmup = recipe.warmup_steps if args.warmup_steps is None else args.warmup_steps
    seed = recipe.seed if args.seed is None else args.seed
    seed_everything(seed + context.rank)   # each process its own augmentations; the model below is rank 0's
    train_set, val_set, classes = load_data(args, recipe)
    num_classes = len(classes)
    model = recipe.build(pretrained=True, num_classes=num_classes)
    model = distributed.wrap(model, context)  # DDP broadcasts rank 0's initial weights to every process
    loader = make_train_loader(train_set, batch_size, seed, context, args.workers)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr,
                                  weight_decay=WEIGHT_DECAY)
    meta = {"model": args.model, "num_classes": num_classes, "classes": list(classes), "steps": steps,
            "world_size": context.world_size, "batch_size": batch_size}
    out = args.out
    if context.is_main:
        out.mkdir(parents=True, exist_ok=True)
    batches, history, start_step = BatchStream(loader), History(), 0
    if args.resume:
        state = load_last(out / "last.pt", meta)
        distributed.unwrap(model).load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        history = History(**state["history"])
        start_step = int(state["step"])
        mine = state["processes"][context.rank]
        batches.load_state_dict(mine["stream"])
        set_rng_state(mine["rng"])
        for name, generator in model_generators(model).items():
            generator.set_state(mine["generators"][name])
        if start_step >= steps:
            raise ValueError(f"--resume: {out / 'last.pt'} is at step {start_step}, the run has {steps} steps")

    evaluations = []

    def on_step(done: int) -> None:
        if args.eval_every and done % args.eval_every == 0 and done < steps and val_set is not None:
            scores = evaluate_split(model, val_set, recipe.task, num_classes, context)
            if context.is_main:
                evaluations.append({"step": done, **scores})
                key = "miou" if "miou" in scores else "map_50"
                print(f"step {done}: val {key} {scores[key]:.4f}", flush=True)
        stop = args.stop_after is not None and done == args.stop_after and done < steps
        if done % args.save_every == 0 or done == steps or stop:
            save_last(out / "last.pt", model, optimizer, done, history, batches, meta, context)
        if stop:
            raise Stopped(done)

    seconds_before = history.seconds
    try:
        history = fit(model, loader, steps, lr=lr, optimizer=optimizer, warmup_steps=warmup,
                      device=context.device, seed=None if args.resume else seed + context.rank, log_every=50,
                      progress=context.is_main and not args.quiet, desc=args.model, history=history,
                      start_step=start_step, batches=batches, amp=args.amp, on_step=on_step)
    except Stopped as stopped:
        if context.is_main:
            print(f"stopped after step {stopped.args[0]} of {steps}: {out / 'last.pt'} written; "
                  "the same command with --resume continues", flush=True)
        return None
    trained = history.seconds - seconds_before
    images_per_second = (steps - start_step) * batch_size * context.world_size / max(trained, 1e-9)
    scores = evaluate_split(model, val_set, recipe.task, num_classes, context) if val_set is not None else {}
    if not context.is_main:
        distributed.barrier(context)
        return None
    launcher = (["torchrun", f"--nproc_per_node={context.world_size}", "-m", "lessons_pkg.train"]
                if context.distributed else ["python", "-m", "lessons_pkg.train"])
    record = {"command": shlex.join(launcher + argv), "recipe": args.model, "task": recipe.task,
              "num_classes": num_classes, "classes": list(classes),
              "data": ({"images": str(args.images), "annotations": str(args.annotations),
                        "val_images": str(args.val_images), "val_annotations": str(args.val_annotations)}
                       if args.images is not None else {"shapes": recipe.config}),
              "num_train_images": len(train_set), "steps": steps, "batch_size": batch_size,
              "world_size": context.world_size, "device": str(context.device), "backend": context.backend,
              "lr": lr, "warmup_steps": warmup, "seed": seed, "amp": args.amp,
              "final_loss": round(history.final(), 5), "train_seconds": round(history.seconds, 1),
              "images_per_second": round(images_per_second, 2), "evaluations": evaluations}
    if scores:
        record["val"] = {"num_images": len(val_set), **scores}
    record = records.save_checkpoint(distributed.unwrap(model), out / "model.pt", record, dtype="float32")
    distributed.barrier(context)
    return record


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
