"""Scoring a model: one function, :func:`score`, for every block a record keeps (checkpoints, the
train command's validation, the quality curve, challenges, ablations).

    block = evaluation.score(model, dataset, "detection")   # {"map", "map_50", ... (12 numbers)}

A *block* is what a record keeps for one set of images, rounded to 6 decimals:

- ``"detection"``: COCO's 12 summary numbers (:data:`metrics.SUMMARY_KEYS`);
- ``"instance"``: the same for the boxes, and the masks' under ``"segm"``;
- ``"segmentation"``: ``"miou"``, ``"pixel_accuracy"``, ``"iou_per_class"`` (one confusion matrix
  over every pixel, the background class first);
- ``"localization"``: ``"accuracy"``, ``"mean_iou"``, ``"acc_at_iou"`` (one object per image).

Under ``torchrun`` (``context`` of :mod:`lessons_pkg.train.distributed`) each process scores every
world_size-th image, the detections are gathered on rank 0 and the confusion matrices summed;
rank 0 gets the block, the others ``{}``. The committed records score the first ``VAL_IMAGES``
images of the shapes ``val`` split (what development looked at) and the first ``TEST_IMAGES`` of
``test`` (the headline numbers and the quality bars): :func:`record_scores`.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from . import metrics, records
from .data import coco_results, make_split, to_original_size
from .inputs import IGNORE_INDEX
from .models import rcnn
from .train import evaluate, make_loader
from .train.distributed import Context, gather

VAL_IMAGES = 64     # the validation images that development looked at
TEST_IMAGES = 300   # the test images that no choice looked at: headline numbers and quality bars
TASKS = ("detection", "instance", "segmentation", "localization")
# Images per forward pass. The records were scored at these sizes; a batched convolution can
# differ from another batch size's in the last bits, so they stay fixed.
BATCH_SIZE = {"localization": 128}
DEFAULT_BATCH_SIZE = 16
# Selective search was the slowest step of scoring R-CNN and Fast R-CNN (a fraction of a second an image):
# the evaluation sets' proposals are made once and committed (tests/test_evaluation.py
# recomputes a sample and checks every file's hash).
PROPOSALS_DIR = records.PRETRAINED_DIR.parent / "proposals"


def _rounded(scores: dict) -> dict:
    return {k: round(float(scores[k]), 6) for k in metrics.SUMMARY_KEYS}


def block(task: str, preds: list[dict], targets: list[dict], num_classes: int) -> dict:
    """The record block of ``task`` from predictions and their targets (one dict each per image)."""
    if task == "segmentation":
        r = metrics.segmentation_metrics(preds, targets, num_classes)
        return {"miou": round(r["miou"], 6), "pixel_accuracy": round(r["pixel_accuracy"], 6),
                "iou_per_class": [round(float(v), 6) for v in r["iou_per_class"]]}
    if task == "localization":
        return {k: round(v, 6) for k, v in metrics.localization_metrics(preds, targets).items()}
    out = _rounded(metrics.mean_average_precision(preds, targets))
    if task == "instance":   # box mAP at the top level (as for every detector), mask mAP under "segm"
        out["segm"] = _rounded(metrics.mean_average_precision(preds, targets, iou_type="segm"))
    return out


def predictions(model: nn.Module, dataset: Dataset, task: str = "detection", device: torch.device | str | None = None,
                batch_size: int | None = None) -> tuple[list[dict], list[dict]]:
    """(predictions, targets) of ``model`` on every image of ``dataset``, one dict each per image,
    on the CPU: the model in eval mode without gradients, in batches of ``batch_size`` (default:
    the task's, :data:`BATCH_SIZE`), left in the mode it was in. Predictions on images that
    :class:`lessons_pkg.data.ResizedImages` resized are mapped back to the targets' frame."""
    loader = make_loader(dataset, batch_size=batch_size or BATCH_SIZE.get(task, DEFAULT_BATCH_SIZE), shuffle=False)
    with torch.inference_mode():
        preds, targets = evaluate(model, loader, device=device) if len(dataset) else ([], [])
    # images resized for the model (data.ResizedImages): predictions back to the targets' frame
    preds = [to_original_size(p, t["size"], t["orig_size"]) if "orig_size" in t else p for p, t in zip(preds, targets)]
    return preds, targets


def score(model: nn.Module, dataset: Dataset, task: str, *, num_classes: int | None = None,
          context: Context | None = None, device: torch.device | str | None = None,
          batch_size: int | None = None) -> dict:
    """The record block of ``model`` on every image of ``dataset`` (in the target contract of
    ``task``; see the module's docstring). The model is run in eval mode without gradients and
    left in the mode it was in.

    ``num_classes``: the object classes (default: ``model.num_classes``), for the segmentation
    confusion matrix. ``context``: split the images across the processes of a ``torchrun`` run
    (rank 0 returns the block, the others ``{}``). ``device``: default the context's, else CUDA
    when present.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    context = context if context is not None else Context()
    device = device if device is not None else (context.device if context.distributed else None)
    num_classes = num_classes if num_classes is not None else int(model.num_classes)
    shard = dataset if not context.distributed else Subset(dataset, range(context.rank, len(dataset),
                                                                          context.world_size))
    preds, targets = predictions(model, shard, task, device, batch_size)
    if not context.distributed:
        return block(task, preds, targets, num_classes)
    if task == "segmentation":   # one confusion matrix, summed over the processes
        meter = metrics.SegmentationMeter(num_classes + 1, ignore_index=IGNORE_INDEX)
        for p, t in zip(preds, targets):
            meter.update(p["semantic"], t["semantic"])
        cm = meter.cm.to(context.device)
        torch.distributed.all_reduce(cm)
        if not context.is_main:
            return {}
        r = metrics.segmentation_scores(cm.cpu())
        return {"miou": round(r["miou"], 6), "pixel_accuracy": round(r["pixel_accuracy"], 6),
                "iou_per_class": [round(float(v), 6) for v in r["iou_per_class"]]}
    for p in preds:  # smaller to send: binary masks (the metric reads a mask as foreground above 0.5)
        if "masks" in p:
            p["masks"] = (p["masks"] > 0.5).to(torch.uint8)
    everything = gather((preds, targets), context)
    if not context.is_main:
        return {}
    preds = [p for ps, _ in everything for p in ps]
    targets = [t for _, ts in everything for t in ts]
    for p, t in zip(preds, targets):   # gathered in rank order: pair them by their image's id
        if "image_id" in t:
            p["image_id"] = t["image_id"]
    return block(task, preds, targets, num_classes)


# ----------------------------------------------------------------------------- COCO's results files
def results_paths(path: str | Path, task: str) -> dict[str, Path]:
    """Where :func:`write_results` writes: {"bbox": path} and, for an instance model, {"segm":
    path's name + "_segm"} (two files: see :func:`lessons_pkg.data.coco_results`)."""
    path = Path(path)
    if task not in ("detection", "instance"):
        raise ValueError(f"COCO results files hold detections: a {task} model has none")
    paths = {"bbox": path}
    if task == "instance":
        paths["segm"] = path.with_name(f"{path.stem}_segm{path.suffix or '.json'}")
    return paths


def write_results(predictions: list[dict], targets: list[dict], label_to_category_id: dict[int, int],
                  path: str | Path, task: str, overwrite: bool = False) -> dict[str, Path]:
    """Write the detections in COCO's results format (``COCO.loadRes`` reads them), in the
    annotation file's frame, with its category ids: :func:`results_paths`. Each prediction
    takes its image's ``image_id`` from its target. Refuses to replace a file unless
    ``overwrite``. Returns the paths written, by iou type."""
    paths = results_paths(path, task)
    records.refuse_overwrite(paths.values(), overwrite, "pass --overwrite to replace it, or another --results")
    with_ids = [{**p, "image_id": t["image_id"]} for p, t in zip(predictions, targets)]
    for iou_type, file in paths.items():
        records.write_json(file, coco_results(with_ids, label_to_category_id, iou_type))
    return paths


# ----------------------------------------------------------------------------- the records' images
def proposals_file(split: str, config: str = "default") -> Path:
    """Where the committed selective-search proposals of ``split`` (preset ``config``) live."""
    return PROPOSALS_DIR / f"{config}-{split}.pt"


def write_stored_proposals(split: str, num_images: int, config: str = "default", top_k: int = 300,
                           overwrite: bool = False) -> Path:
    """Run selective search on the first ``num_images`` images of ``split`` and write the best
    ``top_k`` proposals of each to :func:`proposals_file` (int16 pixel coordinates: selective
    search's boxes are whole pixels) with a JSON record beside it (the command, the sizes and the
    file's SHA-256). Refuses to replace the file unless ``overwrite``."""
    path = records.check_writable(proposals_file(split, config), overwrite)
    dataset = rcnn.WithProposals(make_split(split, num_images, config), top_k=top_k)
    boxes = [dataset[i][1]["proposals"] for i in range(len(dataset))]
    if any(not torch.equal(b, b.round()) or b.abs().max() > torch.iinfo(torch.int16).max for b in boxes if len(b)):
        raise ValueError("selective search returned boxes that are not whole pixels within int16: not stored")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"boxes": torch.cat(boxes).to(torch.int16), "counts": torch.tensor([len(b) for b in boxes])}, path)
    records.write_record(path, {"command": f"python -m lessons_pkg.commands.proposals --split {split} "
                                           f"--num-images {num_images} --config {config}",
                                "split": split, "num_images": num_images, "config": config, "top_k": top_k,
                                "torch": torch.__version__, "sha256": records.sha256(path)})
    return path


def stored_proposals(split: str, num_images: int, config: str = "default") -> list[torch.Tensor] | None:
    """The committed proposals of the first ``num_images`` images of ``split`` (Tensor[K, 4] each,
    best first), or None when no committed file covers them."""
    path = proposals_file(split, config)
    if not path.is_file():
        return None
    stored = records.load_weights(path)
    counts = stored["counts"].tolist()
    if len(counts) < num_images:
        return None
    return list(stored["boxes"].float().split(counts))[:num_images]


def evaluation_set(split: str, num_images: int, config: str = "default", proposals: bool = False) -> Dataset:
    """The first ``num_images`` images of ``split`` (preset ``config``); with ``proposals``, each
    image's selective-search proposals in its target (the committed ones where they exist,
    else computed once and kept)."""
    dataset = make_split(split, num_images, config)
    if not proposals:
        return dataset
    return rcnn.WithProposals(dataset, proposals=stored_proposals(split, num_images, config))


def split_size(split: str) -> int:
    """How many images of ``split`` a record scores: ``VAL_IMAGES`` or ``TEST_IMAGES``."""
    sizes = {"val": VAL_IMAGES, "test": TEST_IMAGES}
    if split not in sizes:
        raise ValueError(f"a record scores the 'val' or the 'test' split, not {split!r}")
    return sizes[split]


def split_scores(task: str, model: nn.Module, split: str, num_images: int | None = None,
                 config: str = "default", proposals: bool = False, dataset: Dataset | None = None) -> dict:
    """The scores a checkpoint's record keeps for one split of the shapes data (and its test
    recomputes): {"split", "num_images", "config", and the :func:`score` block}. ``dataset``:
    that split's :func:`evaluation_set`, when kept between calls."""
    num_images = split_size(split) if num_images is None else num_images
    dataset = evaluation_set(split, num_images, config, proposals) if dataset is None else dataset
    return {"split": split, "num_images": num_images, "config": config, **score(model, dataset, task)}


def record_scores(recipe, model: nn.Module) -> dict:
    """What a checkpoint's record keeps: {"val": ..., "test": ...}, the :func:`split_scores` of
    ``recipe`` (a :class:`lessons_pkg.recipes.Recipe`) on ``VAL_IMAGES`` and ``TEST_IMAGES``."""
    return {split: split_scores(recipe.task, model, split, config=recipe.config, proposals=recipe.proposals)
            for split in ("val", "test")}


def curve_point(task: str, scores: dict) -> dict:
    """The few numbers a point of the time-to-quality curve keeps from a block: mAP@0.5 and mAP
    (box; and the mask's for instance segmentation) or mIoU."""
    if task == "segmentation":
        return {"miou": scores["miou"]}
    point = {"map_50": scores["map_50"], "map": scores["map"]}
    if task == "instance":
        point.update(mask_map_50=scores["segm"]["map_50"], mask_map=scores["segm"]["map"])
    return point
