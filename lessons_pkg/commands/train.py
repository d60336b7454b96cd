"""Train any model of the course on the shapes data or on your own COCO-format set, on one CPU
or on many GPUs: ``python -m lessons_pkg.train MODEL --out DIR``.

    python -m lessons_pkg.train ssd --out runs/ssd                        # the shapes data
    python -m lessons_pkg.train faster_rcnn --out runs/frcnn \\
        --images data/train_images --annotations data/train.json \\
        --val-images data/val_images --val-annotations data/val.json      # your COCO-format set
    torchrun --nproc_per_node=2 -m lessons_pkg.train ssd --out runs/ssd   # 2 processes (GPUs, or CPU)
    torchrun --nnodes=2 --nproc_per_node=8 --rdzv-backend=c10d --rdzv-endpoint=HOST:29500 \\
        --rdzv-id=mrcnn -m lessons_pkg.train mask_rcnn --out runs/mrcnn ...  # 2 machines of 8 GPUs
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
  the uninterrupted run's bit for bit. Only rank 0's node needs it: rank 0 reads it and sends
  the state to every process (the nodes share no folder; each reads the data at the same path);
- with ``--results FILE``: the validation set's detections in COCO's results format (the
  file's category ids and frame), which pycocotools scores as the record's "val" block does.

A COCO validation set is scored as COCO scores it (crowd regions ignored, sizes judged on each
annotation's ``area``), in the annotation file's frame: with ``--min-size``, the model sees
resized images (:class:`lessons_pkg.data.ResizedImages`) and its detections are mapped back.

The learning rate (``--lr``, else the recipe's) is that of the whole step at any number of
processes; ``--scale-lr linear|sqrt`` scales it from the recipe's batch on one process to
``--batch-size`` x the processes (:func:`lessons_pkg.training.scaled_lr`), and the record keeps
the rate used, the per-process and the effective batch.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import socket
import sys
from pathlib import Path

import torch

from .. import evaluation, recipes, records, training
from ..cli import nonnegative_int, positive_float, positive_int
from ..data import CocoDataset, ResizedImages, detection_augmentation
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
    data.add_argument("--results", type=Path,
                      help="also write the validation set's detections here, in COCO's results format (with "
                           "--val-images; an instance model's masks go to NAME_segm.json)")
    data.add_argument("--min-size", type=positive_int, help="resize the shorter side to this (COCO data)")
    data.add_argument("--max-size", type=positive_int, help="and the longer side to at most this")
    data.add_argument("--num-train-images", type=positive_int, help="shapes data: training scenes (default: the recipe's)")
    data.add_argument("--num-val-images", type=positive_int, default=None,
                      help=f"shapes data: validation scenes (default: {evaluation.VAL_IMAGES})")
    run = p.add_argument_group("training (default: the recipe's)")
    run.add_argument("--steps", type=positive_int, help="optimizer steps")
    run.add_argument("--batch-size", type=positive_int, help="images per step and process")
    run.add_argument("--lr", type=positive_float,
                     help="peak learning rate of the whole step, at any number of processes "
                          "(AdamW, cosine schedule)")
    run.add_argument("--scale-lr", choices=training.LR_SCALING_RULES,
                     help="scale --lr (else the recipe's) from the recipe's batch on one process to this run's "
                          "batch x processes: linear (Goyal et al. 2017, for SGD) or sqrt (the learning-rate part of "
                          "Malladi et al. 2022's rule for Adam-type optimizers, as the recipes' AdamW; only the "
                          "rate is scaled); the schedule's warm-up stays")
    run.add_argument("--warmup-steps", type=nonnegative_int)
    run.add_argument("--seed", type=int)
    run.add_argument("--eval-every", type=nonnegative_int, default=0,
                     help="evaluate every N steps as well as at the end (0: at the end only)")
    run.add_argument("--save-every", type=positive_int, default=100, help="write last.pt every N steps")
    run.add_argument("--resume", action="store_true",
                     help="continue from DIR/last.pt (on rank 0's node: it reads the file and sends the state to "
                          "every process)")
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
    """The flags alone, with the flag's name: the same answer on every node. What depends on a
    node's files (the data, --out, last.pt) is :func:`check_nodes`', after the process group is
    joined: a node that stopped here alone would leave the others waiting for it."""
    for a, b in (("images", "annotations"), ("val_images", "val_annotations")):
        if (getattr(args, a) is None) != (getattr(args, b) is None):
            p.error(f"--{a.replace('_', '-')} and --{b.replace('_', '-')} go together")
    if args.val_images is not None and args.images is None:
        p.error("--val-images/--val-annotations need --images/--annotations (your own training set)")
    if args.max_size is not None and (args.min_size is None or args.max_size <= args.min_size):
        p.error("--max-size needs --min-size, and must be larger than it")
    if (args.min_size is not None) and args.images is None:
        p.error("--min-size/--max-size resize your own (COCO) images; the shapes data has one size")
    if args.amp and (args.device == "cpu" or not torch.cuda.is_available()):
        p.error("--amp needs a CUDA device")
    if args.results is not None and args.val_images is None:
        p.error("--results writes the validation set's detections: it needs --val-images/--val-annotations")
    if args.results is not None and RECIPES[args.model].task == "segmentation":
        p.error(f"--results: {args.model} is a semantic segmentation model; COCO results files hold detections")
    if args.scale_lr is not None and args.warmup_steps == 0:
        p.error("--scale-lr needs a warm-up (--warmup-steps >= 1): the rule ramps up to the scaled rate")


# ----------------------------------------------------------------------------- every node's files
DATA_FLAGS = {"images": "folder", "annotations": "file", "val_images": "folder", "val_annotations": "file"}


def data_problems(args: argparse.Namespace) -> list[str]:
    """The data flags' paths that this process cannot read, one line each, naming the flag:
    every node reads its own copy of the data, at the same path."""
    problems = []
    for name, kind in DATA_FLAGS.items():
        path = getattr(args, name)
        flag = f"--{name.replace('_', '-')} {path}"
        if path is None:
            continue
        if kind == "folder" and not path.is_dir():
            problems.append(f"{flag}: not a folder")
        elif kind == "file" and not path.is_file():
            problems.append(f"{flag}: no such file")
        elif not os.access(path, os.R_OK | (os.X_OK if kind == "folder" else 0)):
            problems.append(f"{flag}: not readable")
    return problems


def output_problems(args: argparse.Namespace) -> list[str]:
    """What keeps rank 0 from writing --out (only rank 0 writes) or from resuming: a file in
    the way, a finished run not to be overwritten, no last.pt to resume from."""
    out, last = args.out, args.out / "last.pt"
    if out.exists() and not out.is_dir():
        return [f"--out {out}: exists and is not a folder"]
    if args.resume and not last.is_file():
        return [f"--resume: {last} ({last.absolute()}) does not exist on rank 0's node, which reads it"]
    if args.results is not None:
        try:
            records.refuse_overwrite(evaluation.results_paths(args.results, RECIPES[args.model].task).values(),
                                     args.overwrite, "pass --overwrite to replace it, or another --results")
        except FileExistsError as error:
            return [f"--results: {error}"]
    try:
        records.refuse_overwrite((out / "model.pt", last), args.resume or args.overwrite,
                                 f"--out {out} holds a run already: pass --resume to continue it, --overwrite "
                                 "to start again, or another --out")
    except FileExistsError as error:
        return [str(error)]
    return []


def check_nodes(args: argparse.Namespace, context: distributed.Context) -> None:
    """Every process checks the data paths it needs, rank 0 --out and last.pt too
    (:func:`raise_together`). When rank 0 lacks last.pt, its message also says which nodes
    hold one."""
    mine = data_problems(args) + (output_problems(args) if context.is_main else [])

    def where_last_is(reports: list[dict]) -> list[str]:
        holders = [f"rank {rank} on host {r['host']}" for rank, r in enumerate(reports) if r["last"]]
        if not (args.resume and holders and not reports[0]["last"]):
            return []
        return [f"  {args.out / 'last.pt'} is on {', '.join(holders)}: copy it to rank 0's node, or make that node "
                "rank 0 (torchrun's c10d rendezvous does not promise which node is; its static one does: "
                "--node-rank 0 there)"]

    raise_together(mine, context, advice=where_last_is, last=(args.out / "last.pt").is_file())


def raise_together(mine: list[str], context: distributed.Context, advice=None, **facts) -> None:
    """Gather every process's problems (``mine``: lines naming a flag and a path) and raise a
    ValueError on every process when any has one, instead of one stopping while the others wait
    for it. Rank 0's message names every problem with its rank and host (and what
    ``advice(reports)`` adds: each report holds the process's host, problems and ``facts``);
    another rank's names its own. One process: its lines, without rank or host."""
    reports = distributed.all_gather({"host": socket.gethostname(), "problems": mine, **facts}, context)
    if not any(report["problems"] for report in reports):
        return
    if not context.distributed:
        raise ValueError("\n".join(mine))
    ranks = range(context.world_size) if context.is_main else [context.rank]
    lines = [f"{problem} (rank {rank} on host {reports[rank]['host']})"
             for rank in ranks for problem in reports[rank]["problems"]]
    if context.is_main and advice is not None:
        lines += advice(reports)
    raise ValueError("\n".join(lines or ["another process found a problem: rank 0's error names it"]))


# ----------------------------------------------------------------------------- data
def load_data(args: argparse.Namespace, recipe: Recipe) -> training.TrainingData:
    """The run's data: the shapes data, or the COCO-format sets of the flags, in the target
    contract of the recipe's task; scored on its validation set when there is one."""
    if args.images is None:
        return training.shapes_data(recipe, args.num_train_images, args.num_val_images, test=False)
    resize = {"min_size": args.min_size, "max_size": args.max_size} if args.min_size else {}
    train_set = CocoDataset(args.images, args.annotations, transforms=detection_augmentation(**resize))
    # scored in the annotation file's frame, as COCO scores: only the model sees resized images
    val_set = CocoDataset(args.val_images, args.val_annotations) if args.val_images is not None else None
    if val_set is not None and resize:
        val_set = ResizedImages(val_set, args.min_size, args.max_size)
    classes = train_set.classes
    if val_set is not None and coco_of(val_set).label_to_category_id != train_set.label_to_category_id:
        raise ValueError(f"{args.val_annotations}: its categories {coco_of(val_set).label_to_category_id} differ "
                         f"from the training set's {train_set.label_to_category_id} (label -> category id)")
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


def coco_of(dataset) -> CocoDataset:
    """The CocoDataset under a set's wrappers (ResizedImages, SemanticTargets, WithProposals)."""
    while not isinstance(dataset, CocoDataset):
        dataset = dataset.dataset
    return dataset


def write_val_results(args: argparse.Namespace, recipe: Recipe, data: training.TrainingData) -> dict:
    """``--results``: the saved weights' detections on the validation set, in COCO's results
    format (the same predictions its record's "val" block scores: the weights as saved, the
    file's frame). Rank 0, after training."""
    model, _ = recipes.load(args.model, args.out / "model.pt")
    val_set = data.score_sets["val"][1]
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    preds, targets = evaluation.predictions(model, val_set, recipe.task, device)
    return evaluation.write_results(preds, targets, coco_of(val_set).label_to_category_id, args.results,
                                    recipe.task, overwrite=True)   # refused before training unless --overwrite


def load_data_everywhere(args: argparse.Namespace, recipe: Recipe,
                         context: distributed.Context) -> training.TrainingData:
    """:func:`load_data` on every process: each reads its own node's copy, and a copy that one
    process finds wrong stops every process together (:func:`raise_together`)."""
    if not context.distributed:
        return load_data(args, recipe)
    data, mine = None, []
    try:
        data = load_data(args, recipe)
    except (ValueError, FileNotFoundError) as error:
        mine = [str(error)]
    raise_together(mine, context)
    return data


# ----------------------------------------------------------------------------- the command
def run(args: argparse.Namespace, argv: list[str]) -> dict | None:
    """Train as ``args`` say; returns the record on rank 0 (None on the other ranks)."""
    recipe = RECIPES[args.model]
    context = distributed.init(args.device)
    check_nodes(args, context)
    data = load_data_everywhere(args, recipe, context)
    if context.is_main:
        args.out.mkdir(parents=True, exist_ok=True)
    settings = training.Settings.of(
        recipe, steps=args.steps, batch_size=args.batch_size, lr=args.lr, warmup_steps=args.warmup_steps,
        seed=args.seed, out=args.out / "model.pt", dtype="float32", command=shlex.join(launcher(context) + argv),
        last=args.out / "last.pt", save_every=args.save_every, resume=args.resume, stop_after=args.stop_after,
        eval_every=args.eval_every, amp=args.amp, workers=args.workers, progress=not args.quiet)
    if args.scale_lr is not None:   # from the recipe's batch on one process to this run's whole step
        lr, scaling = training.scaled_lr(args.scale_lr, settings.lr, settings.batch_size * context.world_size,
                                         recipe.batch_size)
        settings = dataclasses.replace(settings, lr=lr, lr_scaling=scaling)
    record = training.run_training(args.model, recipe, data, settings, context)
    if record is not None and args.results is not None and "final_loss" in record:
        record["results"] = {kind: str(path) for kind, path in write_val_results(args, recipe, data).items()}
    return record


def launcher(context: distributed.Context) -> list[str]:
    """How this process was started, for the record's command (torchrun's rendezvous flags,
    which the process does not see, left out)."""
    if not context.distributed:
        return ["python", "-m", "lessons_pkg.train"]
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", context.world_size))
    nodes = [f"--nnodes={context.world_size // per_node}"] if per_node < context.world_size else []
    return ["torchrun", *nodes, f"--nproc_per_node={per_node}", "-m", "lessons_pkg.train"]


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
        where = f" on host {socket.gethostname()}" if record["world_size"] > 1 else ""
        print(f"wrote {args.out / 'model.pt'}, {args.out / 'model.json'} and {args.out / 'last.pt'}{where}")
        if "results" in record:
            print("wrote " + " and ".join(record["results"].values()) + " (the validation set's detections)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
