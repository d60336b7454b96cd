"""Score a checkpoint on a COCO-format set as COCO scores it: ``python -m lessons_pkg.evaluate``.

    python -m lessons_pkg.evaluate faster_rcnn --checkpoint runs/frcnn/model.pt \\
        --images data/val_images --annotations data/val.json --results runs/frcnn/val_results.json
    python -m lessons_pkg.evaluate ssd --images D --annotations F     # the committed data/pretrained/ssd.pt

MODEL is a recipe of :mod:`lessons_pkg.recipes`; ``--checkpoint`` a ``model.pt`` of
``python -m lessons_pkg.train`` (or a committed one; default ``data/pretrained/MODEL.pt``), whose
classes must be the annotation file's. Detectors print COCO's 12 summary numbers (box, and mask
for instance models), computed by :func:`lessons_pkg.evaluation.score` with COCO's rules
(crowd regions ignored, sizes judged on each annotation's ``area``) in the annotation file's
frame: with ``--min-size``, the model sees resized images and its detections are mapped back.
Semantic segmentation models print mIoU and each class's IoU.

``--results OUT.json`` also writes the detections in COCO's results format (the file's category
ids, [x, y, w, h] boxes); an instance model's masks go to ``OUT_segm.json`` (compressed RLE),
so that pycocotools' ``COCO.loadRes`` + ``COCOeval`` give the numbers printed here.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from .. import evaluation, metrics, recipes
from ..cli import positive_int
from ..data import CocoDataset, ResizedImages
from ..data.coco import SemanticTargets
from ..models import rcnn
from ..recipes import RECIPES

# COCOeval.summarize's lines, in SUMMARY_KEYS' order
SUMMARY_LINES = ("AP @[ IoU=0.50:0.95 | area=   all | maxDets=100 ]", "AP @[ IoU=0.50      | area=   all | maxDets=100 ]",
                 "AP @[ IoU=0.75      | area=   all | maxDets=100 ]", "AP @[ IoU=0.50:0.95 | area= small | maxDets=100 ]",
                 "AP @[ IoU=0.50:0.95 | area=medium | maxDets=100 ]", "AP @[ IoU=0.50:0.95 | area= large | maxDets=100 ]",
                 "AR @[ IoU=0.50:0.95 | area=   all | maxDets=  1 ]", "AR @[ IoU=0.50:0.95 | area=   all | maxDets= 10 ]",
                 "AR @[ IoU=0.50:0.95 | area=   all | maxDets=100 ]", "AR @[ IoU=0.50:0.95 | area= small | maxDets=100 ]",
                 "AR @[ IoU=0.50:0.95 | area=medium | maxDets=100 ]", "AR @[ IoU=0.50:0.95 | area= large | maxDets=100 ]")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m lessons_pkg.evaluate", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", choices=sorted(RECIPES), help="a recipe of lessons_pkg.recipes")
    p.add_argument("--checkpoint", type=Path, help="model.pt (default: the committed data/pretrained/MODEL.pt)")
    p.add_argument("--images", type=Path, required=True, help="folder the annotations' file_names are relative to")
    p.add_argument("--annotations", type=Path, required=True, help="COCO annotation file")
    p.add_argument("--results", type=Path, help="write the detections in COCO's results format here")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --results file")
    p.add_argument("--min-size", type=positive_int, help="resize the shorter side to this for the model")
    p.add_argument("--max-size", type=positive_int, help="and the longer side to at most this")
    p.add_argument("--batch-size", type=positive_int, help="images per forward pass")
    p.add_argument("--device", choices=("cpu", "cuda"), help="default: CUDA when present")
    p.add_argument("--json", action="store_true", help="print the scores as one JSON object instead")
    return p


def check_arguments(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """What can be checked before any file is read, naming the flag."""
    if not args.images.is_dir():
        p.error(f"--images {args.images}: not a folder")
    if not args.annotations.is_file():
        p.error(f"--annotations {args.annotations}: no such file")
    if args.checkpoint is not None and not args.checkpoint.is_file():
        p.error(f"--checkpoint {args.checkpoint}: no such file")
    if args.max_size is not None and (args.min_size is None or args.max_size <= args.min_size):
        p.error("--max-size needs --min-size, and must be larger than it")
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device here")
    task = RECIPES[args.model].task
    if args.results is not None:
        if task == "segmentation":
            p.error(f"--results: {args.model} is a semantic segmentation model; COCO results files hold detections")
        try:
            evaluation.records.refuse_overwrite(evaluation.results_paths(args.results, task).values(),
                                                args.overwrite, "pass --overwrite to replace it, or another --results")
        except FileExistsError as error:
            p.error(f"--results: {error}")


def evaluation_set(args: argparse.Namespace, coco: CocoDataset):
    """The set in the recipe's target contract, resized for the model if asked."""
    recipe = RECIPES[args.model]
    dataset = ResizedImages(coco, args.min_size, args.max_size) if args.min_size else coco
    if recipe.task in ("instance", "segmentation") and not coco.has_masks:
        raise ValueError(f"{args.annotations}: {args.model} needs a 'segmentation' in every annotation")
    if recipe.task == "segmentation":
        dataset = SemanticTargets(dataset)
    if recipe.proposals:   # R-CNN and Fast R-CNN read selective-search proposals
        dataset = rcnn.WithProposals(dataset)
    return dataset


def check_classes(model_record: dict, checkpoint: str, coco: CocoDataset, annotations: Path) -> None:
    """The checkpoint's classes must be the file's (same number; same names when recorded)."""
    count = int(model_record.get("num_classes", 4))
    names = model_record.get("classes")
    if count != len(coco.classes) or (names is not None and tuple(names) != tuple(coco.classes)):
        raise ValueError(f"{checkpoint} was trained on {count} classes {names or ''} but {annotations} has "
                         f"{len(coco.classes)}: {list(coco.classes)} (sorted by category id)")


def report(task: str, block: dict, classes: tuple) -> str:
    """The scores as text: COCOeval's summary lines, or mIoU and each class's IoU."""
    if task == "segmentation":
        names = ("background",) + tuple(classes)
        lines = [f"mIoU {block['miou']:.3f}   pixel accuracy {block['pixel_accuracy']:.3f}"]
        lines += [f"  IoU {name:>12}: {v:.3f}" for name, v in zip(names, block["iou_per_class"])]
        return "\n".join(lines)
    parts = [("box", block)] + ([("mask", block["segm"])] if task == "instance" else [])
    lines = []
    for kind, scores in parts:
        lines.append(f"{kind}:")
        lines += [f" Average {'Precision' if line.startswith('AP') else 'Recall   '}  ({line[:2]}) {line[3:]} = "
                  f"{scores[key]:.3f}" for key, line in zip(metrics.SUMMARY_KEYS, SUMMARY_LINES)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    check_arguments(p, args)
    recipe = RECIPES[args.model]
    try:
        coco = CocoDataset(args.images, args.annotations)
        model, record = recipes.load(args.model, args.checkpoint)
        check_classes(record, str(args.checkpoint or f"data/pretrained/{args.model}.pt"), coco, args.annotations)
        dataset = evaluation_set(args, coco)
    except (ValueError, FileNotFoundError) as error:
        print(f"python -m lessons_pkg.evaluate: error: {error}", file=sys.stderr)
        return 2
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    preds, targets = evaluation.predictions(model, dataset, recipe.task, device, args.batch_size)
    block = evaluation.block(recipe.task, preds, targets, len(coco.classes))
    print(json.dumps(block) if args.json else report(recipe.task, block, coco.classes))
    if args.results is not None:
        written = evaluation.write_results(preds, targets, coco.label_to_category_id, args.results, recipe.task,
                                           args.overwrite)
        print("wrote " + " and ".join(f"{path} ({kind})" for kind, path in written.items()), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
