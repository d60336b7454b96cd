"""Evaluation metrics, all in one module: COCO mAP and VOC AP for detection, the recall of
ranked region proposals, confusion matrix and mIoU for semantic segmentation, accuracy and IoU
for classification & localization, and the speed/accuracy Pareto front of a set of detectors.

Shape key:
    I: images              N: ground-truth objects (gts)      M: detections (dets)
    T: IoU thresholds      R: recall thresholds                K: classes
    A: area ranges         L: max-detection limits (1, 10, 100)
    C: classes of a semantic segmentation (0..C-1), B, H, W: batch, height, width

Detection inputs follow the package contract (README, "the target contract"): two lists, one dict per
image, paired by "image_id" when every dict of both lists has one, else by position. A target holds "boxes" float[N, 4] (xyxy, absolute pixels) and
"labels" int64[N] in 1..K (0 is background, never a class), optionally "masks" uint8[N, H, W],
"iscrowd" bool/int[N] and "area" float[N]. A prediction holds "boxes", "labels", "scores"
float[M] and, for masks, "masks": uint8/bool[M, H, W], or float probabilities (also torchvision's
[M, 1, H, W]) that count as foreground above 0.5. VOC's "difficult" bool[N] is read by
voc_average_precision only, "iscrowd" by the COCO functions only. Tensors may live on any
device; detection metrics move them to the CPU and work in float64, like the reference.

`mean_average_precision` reproduces pycocotools' COCOeval (evaluate, accumulate, summarize)
without using it; tests/test_metrics.py checks the two agree.
"""
import numpy as np
import torch
from torch import Tensor

from . import boxes as box_ops
from . import inputs

# COCOeval's parameters, built as it builds them (np.linspace: torch.linspace rounds the last
# bits differently, and a threshold one ulp off flips matches made at exactly IoU = t).
IOU_THRESHOLDS = torch.from_numpy(np.linspace(0.5, 0.95, 10))  # Tensor[T]
RECALL_THRESHOLDS = torch.from_numpy(np.linspace(0.0, 1.0, 101))  # Tensor[R]
AREA_RANGES = {"all": (0.0, 1e10), "small": (0.0, 32.0**2),
               "medium": (32.0**2, 96.0**2), "large": (96.0**2, 1e10)}  # A, pixels², inclusive
MAX_DETS = (1, 10, 100)  # L
# The twelve numbers COCOeval.summarize prints, in its order (its `stats`).
SUMMARY_KEYS = ("map", "map_50", "map_75", "map_small", "map_medium", "map_large",
                "mar_1", "mar_10", "mar_100", "mar_small", "mar_medium", "mar_large")

_AREA_LO = torch.tensor([lo for lo, _ in AREA_RANGES.values()], dtype=torch.float64)[:, None]
_AREA_HI = torch.tensor([hi for _, hi in AREA_RANGES.values()], dtype=torch.float64)[:, None]


# ---------------------------------------------------------------- inputs

def _image(d: dict, i: int, side: str, iou_type: str) -> dict:
    """Checks one image's dict with the contract's checks (:mod:`lessons_pkg.inputs`, naming
    ``side[i]`` and the key) and returns CPU tensors: labels int64[N], scores float64[N] (preds),
    regions (float64[N, 4] boxes for "bbox", bool[N, H, W] masks for "segm"), area float64[N],
    crowd bool[N], difficult bool[N].

    Looser than a model's targets where COCO is: labels of any integer dtype, boxes of any dtype
    (and ``torch.zeros(0)`` for none), degenerate boxes (zero-area predictions are scored, as
    COCOeval scores them), masks of any size, float mask probabilities and torchvision's
    [N, 1, H, W] masks."""
    where = f"{side}[{i}]"
    need = ("labels", "boxes" if iou_type == "bbox" else "masks") + (("scores",) if side == "preds" else ())
    inputs.check_target_dict(d, need, where, f"for iou_type={iou_type!r}")
    x = {k: torch.as_tensor(v).detach().cpu() for k, v in d.items()
         if k in ("labels", "boxes", "masks", "scores", "iscrowd", "area", "difficult")}
    labels = x["labels"].long()
    inputs.check_labels(labels, where)
    n = len(labels)
    inputs.check_per_object(x, ("scores", "iscrowd", "area", "difficult"), n, where)
    if "scores" in x and x["scores"].numel() and not bool(torch.isfinite(x["scores"].double()).all()):
        raise ValueError(f"{where} 'scores': expected finite values (a NaN score cannot be ranked), got "
                         f"{x['scores'][~torch.isfinite(x['scores'])][:3].tolist()}")
    boxes = masks = None
    if "boxes" in x:
        boxes = x["boxes"].double()
        if boxes.numel() == 0:  # torch.zeros(0) is a common way to say "no boxes"
            boxes = boxes.reshape(0, 4)
        inputs.check_box_rows(boxes, where, n, ordered=False)
    if "masks" in x:
        masks = x["masks"]
        if masks.dim() == 4 and masks.shape[1] == 1:  # torchvision's Mask R-CNN gives [M, 1, H, W]
            masks = masks[:, 0]
        inputs.check_masks(masks, where, n)
        masks = masks > 0.5 if masks.is_floating_point() else masks != 0
    box_area = None if boxes is None else (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    mask_area = None if masks is None else masks.flatten(1).sum(1).double()
    if side == "preds":  # what COCO.loadRes computes for results
        area = box_area if iou_type == "bbox" else mask_area
    else:  # the annotation's "area": given, else the mask's, else the box's
        area = x["area"].double() if "area" in x else mask_area if masks is not None else box_area
    zeros = torch.zeros(n, dtype=torch.bool)
    return {"labels": labels, "scores": x["scores"].double() if "scores" in x else None,
            "regions": boxes if iou_type == "bbox" else masks, "area": area,
            "crowd": x["iscrowd"].bool() if "iscrowd" in x and side == "targets" else zeros,
            "difficult": x["difficult"].bool() if "difficult" in x else zeros}


def _image_id(d, i: int, side: str):
    value = d["image_id"]
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(f"{side}[{i}]['image_id'] must be one id, got a tensor of shape {tuple(value.shape)}")
        value = value.item()
    try:
        hash(value)
    except TypeError:
        raise ValueError(f"{side}[{i}]['image_id'] must be an int or a str, got {type(value).__name__}") from None
    return value


def pair_by_image_id(preds: list, targets: list) -> list:
    """``preds`` in the order of ``targets``: matched by "image_id" when every dict of both lists
    has one (a ValueError names an id that is repeated or missing on one side), by position
    otherwise."""
    if not (all(isinstance(d, dict) and "image_id" in d for d in preds)
            and all(isinstance(d, dict) and "image_id" in d for d in targets)):
        return list(preds)
    by_id = {}
    for i, p in enumerate(preds):
        key = _image_id(p, i, "preds")
        if key in by_id:
            raise ValueError(f"preds[{i}] repeats image_id {key!r}: one prediction dict per image")
        by_id[key] = p
    ordered = []
    for i, t in enumerate(targets):
        key = _image_id(t, i, "targets")
        if key not in by_id:
            raise ValueError(f"targets[{i}] has image_id {key!r} but no prediction has it "
                             "(give one dict per image, even with no detections)")
        ordered.append(by_id.pop(key))
    if by_id:
        raise ValueError(f"preds hold image_id(s) {sorted(map(str, by_id))[:5]} that no target has")
    return ordered


def _prepare(preds: list, targets: list, iou_type: str) -> tuple[list, list]:
    """Validates both lists (ValueError naming the image and key) and converts them; pairs
    them by "image_id" when both carry it (:func:`pair_by_image_id`)."""
    if iou_type not in ("bbox", "segm"):
        raise ValueError(f"iou_type must be 'bbox' or 'segm', got {iou_type!r}")
    if len(preds) != len(targets):
        raise ValueError(f"preds has {len(preds)} images but targets has {len(targets)}")
    preds = pair_by_image_id(preds, targets)
    P = [_image(p, i, "preds", iou_type) for i, p in enumerate(preds)]
    G = [_image(t, i, "targets", iou_type) for i, t in enumerate(targets)]
    if iou_type == "segm":
        for i, (p, g) in enumerate(zip(P, G)):
            # an empty side holds no pixels, so its H, W need not agree
            if len(p["regions"]) and len(g["regions"]) and p["regions"].shape[1:] != g["regions"].shape[1:]:
                raise ValueError(f"image {i}: preds masks are {tuple(p['regions'].shape[1:])} "
                                 f"but targets masks are {tuple(g['regions'].shape[1:])} (H, W)")
    return P, G


# ---------------------------------------------------------------- IoU, as COCO computes it

def _overlap_to_iou(inter: Tensor, area_d: Tensor, area_g: Tensor, crowd: Tensor) -> Tensor:
    """inter Tensor[M, N], areas Tensor[M] and Tensor[N] -> IoU Tensor[M, N]. A crowd gt
    covers many objects, so a det inside it is judged by intersection / area(det)."""
    union = torch.where(crowd[None, :], area_d[:, None], area_d[:, None] + area_g[None, :] - inter)
    return torch.where(union > 0, inter / union, 0.0)


def _box_iou(dets: Tensor, gts: Tensor, crowd: Tensor) -> Tensor:
    """dets Tensor[M, 4], gts Tensor[N, 4] (xyxy, float64), crowd bool[N] -> Tensor[M, N].
    No +1 on widths: pycocotools' xywh IoU is the same continuous-box IoU."""
    wh = (torch.minimum(dets[:, None, 2:], gts[None, :, 2:])
          - torch.maximum(dets[:, None, :2], gts[None, :, :2])).clamp(min=0)
    area = lambda b: (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return _overlap_to_iou(wh[..., 0] * wh[..., 1], area(dets), area(gts), crowd)


def _mask_iou(dets: Tensor, gts: Tensor, crowd: Tensor) -> Tensor:
    """dets bool[M, H, W], gts bool[N, H, W], crowd bool[N] -> Tensor[M, N] float64.
    Intersections are one matmul of the flattened masks; float32 counts pixels exactly
    below 2**24, so this equals pycocotools' RLE IoU."""
    if len(dets) == 0 or len(gts) == 0:  # then H, W may differ
        return torch.zeros(len(dets), len(gts), dtype=torch.float64)
    d, g = dets.flatten(1).float(), gts.flatten(1).float()
    return _overlap_to_iou((d @ g.T).double(), d.sum(1).double(), g.sum(1).double(), crowd)


# ---------------------------------------------------------------- COCO matching and accumulation

def _greedy_match(ious: Tensor, gt_ignore: Tensor, crowd: Tensor, thresholds: Tensor):
    """COCOeval.evaluateImg's matching, batched over images, area ranges and thresholds.

    Detections take turns, best score first (COCO defines the matching as sequential); each
    takes the untaken gt of highest IoU >= t, preferring gts that are not ignored; on equal
    IoU the later gt wins (COCOeval's `<` test). Crowd gts are never used up.

    Args:
        ious (Tensor[I, M, N]): -1 where a det may not meet a gt (other class, padding).
        gt_ignore (Tensor[I, A, N] bool), crowd (Tensor[I, N] bool), thresholds (Tensor[T]).
    Returns:
        matched, on_ignored (Tensor[I, A, T, M] bool): the det took a gt; that gt is ignored.
    """
    I, M, N = ious.shape
    A, T = gt_ignore.shape[1], len(thresholds)
    matched = torch.zeros(I, A, T, M, dtype=torch.bool)
    on_ignored = torch.zeros_like(matched)
    if M == 0 or N == 0:
        return matched, on_ignored
    taken = torch.zeros(I, A, T, N, dtype=torch.bool)
    ignore = gt_ignore[:, :, None, :].expand(I, A, T, N)
    reusable = crowd[:, None, None, :]
    for m in range(M):
        iou = ious[:, m, None, None, :]  # [I, 1, 1, N]
        free = (iou >= thresholds[:, None]) & (~taken | reusable)  # [I, A, T, N]
        regular = free & ~ignore
        free = torch.where(regular.any(-1, keepdim=True), regular, free)
        best = torch.where(free, iou, -torch.inf)
        j = N - 1 - best.flip(-1).argmax(-1, keepdim=True)  # the last of equal IoUs
        found = free.any(-1, keepdim=True)
        taken.scatter_(-1, j, taken.gather(-1, j) | found)
        matched[..., m] = found[..., 0]
        on_ignored[..., m] = (found & ignore.gather(-1, j))[..., 0]
    return matched, on_ignored


def _match(P: list, G: list, iou_type: str, thresholds: Tensor) -> dict:
    """Matches every image and class (COCOeval.evaluate).

    Returns the dets in COCO's accumulation order (image by image, best score first):
    labels int64[M], scores float64[M], rank int64[M] (place among its image's dets of its
    class), matched and ignored bool[A, T, M]; and the gts: gt_labels int64[N], gt_ignore bool[A, N].
    """
    iou_fn = _box_iou if iou_type == "bbox" else _mask_iou
    kept, ious, gt_ignore = [], [], []
    for p, g in zip(P, G):
        order = torch.sort(p["scores"], descending=True, stable=True).indices
        labels = p["labels"][order]
        rank = (labels[:, None] == labels[None, :]).tril(-1).sum(1)
        order, rank = order[rank < MAX_DETS[-1]], rank[rank < MAX_DETS[-1]]  # COCO keeps 100 per class
        iou = iou_fn(p["regions"][order], g["regions"], g["crowd"])
        iou[p["labels"][order, None] != g["labels"][None, :]] = -1  # a det meets only its class
        kept.append((order, rank))
        ious.append(iou)
        gt_ignore.append(g["crowd"] | (g["area"] < _AREA_LO) | (g["area"] > _AREA_HI))
    A, I = len(AREA_RANGES), len(P)
    Mx, Nx = max([len(o) for o, _ in kept], default=0), max([len(g["labels"]) for g in G], default=0)
    pad_iou = torch.full((I, Mx, Nx), -1.0, dtype=torch.float64)
    pad_ignore = torch.ones(I, A, Nx, dtype=torch.bool)
    pad_crowd = torch.zeros(I, Nx, dtype=torch.bool)
    for i, (iou, ign, g) in enumerate(zip(ious, gt_ignore, G)):
        pad_iou[i, :iou.shape[0], :iou.shape[1]] = iou
        pad_ignore[i, :, :ign.shape[1]] = ign
        pad_crowd[i, :len(g["crowd"])] = g["crowd"]
    matched, on_ignored = _greedy_match(pad_iou, pad_ignore, pad_crowd, thresholds)
    out = {k: [] for k in ("labels", "scores", "rank", "matched", "ignored")}
    for i, (p, (order, rank)) in enumerate(zip(P, kept)):
        hit = matched[i, ..., :len(order)]
        area = p["area"][order]
        outside = (area < _AREA_LO) | (area > _AREA_HI)  # [A, M]: unmatched ones there don't count
        out["ignored"].append(on_ignored[i, ..., :len(order)] | (~hit & outside[:, None, :]))
        out["matched"].append(hit)
        out["labels"].append(p["labels"][order])
        out["scores"].append(p["scores"][order])
        out["rank"].append(rank)
    out = {k: torch.cat(v, dim=-1) if v else torch.zeros(0) for k, v in out.items()}
    if not P:
        out["matched"] = out["ignored"] = torch.zeros(A, len(thresholds), 0, dtype=torch.bool)
    out["gt_labels"] = torch.cat([g["labels"] for g in G]) if G else torch.zeros(0, dtype=torch.long)
    out["gt_ignore"] = torch.cat(gt_ignore, dim=1) if G else torch.zeros(A, 0, dtype=torch.bool)
    return out


def _curves(matched: Tensor, ignored: Tensor, num_gts: Tensor) -> tuple[Tensor, Tensor]:
    """Cumulative recall and precision of dets already sorted by score.

    matched, ignored bool[..., M]; num_gts Tensor[...] -> recall, precision Tensor[..., M].
    Ignored dets add neither a TP nor an FP, so they repeat the previous point."""
    tp = (matched & ~ignored).cumsum(-1).double()
    fp = (~matched & ~ignored).cumsum(-1).double()
    return tp / num_gts[..., None], tp / (fp + tp + torch.finfo(torch.float64).eps)


def _accumulate(m: dict, classes: Tensor) -> tuple[Tensor, Tensor]:
    """COCOeval.accumulate: precision Tensor[T, R, K, A, L] (interpolated at RECALL_THRESHOLDS)
    and recall Tensor[T, K, A, L], both -1 where class k has no counted gt in area range a."""
    A, T = m["matched"].shape[:2]
    K, R, L = len(classes), len(RECALL_THRESHOLDS), len(MAX_DETS)
    precision = torch.zeros(K, A, L, T, R, dtype=torch.float64)
    recall = torch.zeros(K, A, L, T, dtype=torch.float64)
    for k, c in enumerate(classes.tolist()):
        num_gts = (~m["gt_ignore"][:, m["gt_labels"] == c]).sum(1)  # [A]
        sel = (m["labels"] == c).nonzero()[:, 0]
        # a stable sort of dets in image order: COCO breaks score ties by image, then rank
        order = sel[torch.sort(m["scores"][sel], descending=True, stable=True).indices]
        D = len(order)
        if D:
            # a det past its image's first maxDet of the class adds neither TP nor FP: it repeats
            # the previous point, which leaves the interpolated precision as if it were absent
            beyond = m["rank"][order] >= torch.tensor(MAX_DETS)[:, None]  # [L, D]
            ignored = m["ignored"][:, None, :, order] | beyond[None, :, None, :]  # [A, L, T, D]
            matched = m["matched"][:, None, :, order].expand_as(ignored)
            rc, pr = _curves(matched, ignored, num_gts[:, None, None].double())
            pr = pr.flip(-1).cummax(-1).values.flip(-1)  # best precision at this recall or higher
            idx = torch.searchsorted(rc, RECALL_THRESHOLDS.expand(A, L, T, R).contiguous())
            precision[k] = torch.where(idx < D, pr.gather(-1, idx.clamp(max=D - 1)), 0.0)
            recall[k] = rc[..., -1]
        precision[k][num_gts == 0] = -1
        recall[k][num_gts == 0] = -1
    return precision.permute(3, 4, 0, 1, 2), recall.permute(3, 0, 1, 2)


def _mean_valid(x: Tensor) -> float:
    """COCOeval.summarize's mean over entries that are not -1 (-1 when there are none)."""
    x = x[x > -1]
    return x.mean().item() if x.numel() else -1.0


def _classes(P: list, G: list) -> Tensor:
    """Tensor[K]: every label that appears in preds or targets, sorted."""
    return torch.cat([d["labels"] for d in P + G] + [torch.zeros(0, dtype=torch.long)]).unique()


def mean_average_precision(preds: list[dict], targets: list[dict], iou_type: str = "bbox",
                           class_names=None) -> dict:
    """COCO's AP and AR, computed as pycocotools' COCOeval does (evaluate, accumulate, summarize).

    Rules: IoU thresholds .50:.05:.95, 101-point interpolated precision, at most 100 dets per
    image and class, area ranges all/small (< 32²)/medium/large (> 96²) judged on the gt's
    area (its "area" key, else its mask's area, else its box's; a det's area is its box's for
    "bbox", its mask's for "segm"). Crowd gts ("iscrowd") and gts outside the area range are
    ignored: a det that lands on them is neither TP nor FP, and they are never missed.

    Args:
        preds, targets (list[dict]): one per image, same order; see the module docstring.
        iou_type: "bbox" (IoU of boxes) or "segm" (IoU of masks).
        class_names: optional list (or dict) indexed by label, so a list's [0] names the
            background; when given, map_per_class is keyed by name instead of label.
    Returns:
        dict with the twelve SUMMARY_KEYS as floats (map, map_50, map_75, map_small,
        map_medium, map_large, mar_1, mar_10, mar_100, mar_small, mar_medium, mar_large),
        "map_per_class" {label or name: float} (AP@[.5:.95], all areas, 100 dets),
        "classes" Tensor[K] (the labels seen in preds or targets, the K axis below),
        "precision" Tensor[T, R, K, A, L] and "recall" Tensor[T, K, A, L] (COCOeval.eval's
        arrays; axes: IOU_THRESHOLDS, RECALL_THRESHOLDS, classes, AREA_RANGES, MAX_DETS).
        As in COCO, a value that has no gt to measure (e.g. a class found only in preds) is -1.
    """
    P, G = _prepare(preds, targets, iou_type)
    classes = _classes(P, G)
    precision, recall = _accumulate(_match(P, G, iou_type, IOU_THRESHOLDS), classes)
    t50, t75 = 0, 5  # indices of IoU .50 and .75
    out = {"map": _mean_valid(precision[..., 0, 2]),
           "map_50": _mean_valid(precision[t50, ..., 0, 2]),
           "map_75": _mean_valid(precision[t75, ..., 0, 2])}
    for a, name in enumerate(AREA_RANGES):
        if name != "all":
            out[f"map_{name}"] = _mean_valid(precision[..., a, 2])
    for j, limit in enumerate(MAX_DETS):
        out[f"mar_{limit}"] = _mean_valid(recall[..., 0, j])
    for a, name in enumerate(AREA_RANGES):
        if name != "all":
            out[f"mar_{name}"] = _mean_valid(recall[..., a, 2])
    names = classes.tolist() if class_names is None else [class_names[c] for c in classes.tolist()]
    out["map_per_class"] = {n: _mean_valid(precision[:, :, k, 0, 2]) for k, n in enumerate(names)}
    out.update(classes=classes, precision=precision, recall=recall)
    return out


def recall_at_iou(preds: list[dict], targets: list[dict], iou_threshold: float = 0.5, max_dets: int = 100,
                  iou_type: str = "bbox") -> float:
    """COCO's recall at one IoU threshold: the share of gts that some det matches at IoU >=
    ``iou_threshold`` (one of IOU_THRESHOLDS), by COCO's greedy matching, the ``max_dets``
    (one of MAX_DETS) best dets per image and class counted, area "all", averaged over the
    classes that have gts. ``mar_100`` is this averaged over the ten thresholds .50:.95, so it
    rewards tight boxes; at 0.5 it counts the objects found. pycocotools:
    mean of ``E.eval["recall"][t, k, 0, l]`` over the classes k where it is not -1."""
    matches = torch.isclose(IOU_THRESHOLDS, torch.tensor(float(iou_threshold), dtype=torch.float64))
    if not matches.any():
        raise ValueError(f"iou_threshold must be one of COCO's {[round(t, 2) for t in IOU_THRESHOLDS.tolist()]}, "
                         f"got {iou_threshold}")
    if max_dets not in MAX_DETS:
        raise ValueError(f"max_dets must be one of {MAX_DETS}, got {max_dets}")
    recall = mean_average_precision(preds, targets, iou_type)["recall"]     # [T, K, A, L]
    return _mean_valid(recall[int(matches.nonzero()[0, 0]), :, 0, MAX_DETS.index(max_dets)])


def precision_recall_curve(preds: list[dict], targets: list[dict], iou_threshold: float = 0.5,
                           label: int | None = None, iou_type: str = "bbox"):
    """The raw precision-recall curve that COCO's AP summarizes, at one IoU threshold.

    The dets of class `label` (all classes pooled into one when None, like COCOeval's
    useCats=0) from every image, best score first, at most 100 per image, matched by COCO's
    rules (area "all"); dets on crowd regions are left out, as COCO ignores them.
    AP at this threshold is the mean over RECALL_THRESHOLDS r of max(precision[recall >= r])
    (0 where recall never reaches r): mean_average_precision's precision[t, :, k, 0, 2].

    Returns:
        precision, recall, scores (Tensor[D] float64 each): the curve after each det in turn.
    """
    if not 0.0 <= iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must lie in [0, 1], got {iou_threshold}")
    P, G = _prepare(preds, targets, iou_type)
    if label is None:
        for d in P + G:
            d["labels"] = torch.ones_like(d["labels"])
    m = _match(P, G, iou_type, torch.tensor([float(iou_threshold)], dtype=torch.float64))
    c = 1 if label is None else label
    num_gts = (~m["gt_ignore"][0, m["gt_labels"] == c]).sum()
    if num_gts == 0:
        raise ValueError(f"targets hold no countable gt of class {c}: recall is undefined")
    sel = ((m["labels"] == c) & ~m["ignored"][0, 0]).nonzero()[:, 0]
    order = sel[torch.sort(m["scores"][sel], descending=True, stable=True).indices]
    rc, pr = _curves(m["matched"][0, 0, order], m["ignored"][0, 0, order], num_gts.double())
    return pr, rc, m["scores"][order]


# ---------------------------------------------------------------- right box, wrong class

CONFUSION_SIZE_EDGES = (0.0, 20.0, 32.0, float("inf"))  # pixels of sqrt(box area): under 20, 20 to 32, 32 and more


def detection_confusions(preds: list[dict], targets: list[dict], iou_threshold: float = 0.5,
                         size_edges=CONFUSION_SIZE_EDGES) -> dict:
    """Class confusions by object size: objects that a detector boxes well enough but names wrong.

    How an object is counted. For each object (a target box; crowd regions, ``"iscrowd"``, are
    not objects and are skipped) every detection of its image whose box has IoU >=
    ``iou_threshold`` with it is a candidate, **whatever the detection's class**. The object is

    - *missed* when it has no candidate;
    - *confused* when its candidate of highest score (the first in the given order on equal
      scores) carries another label than the object's: the right box, the wrong class;
    - *right* otherwise (its best candidate has its label).

    No score threshold is applied (a detector's own ``score_threshold`` has cut its list already),
    and a detection may be the best candidate of several objects: this is a count of what the
    detector says most confidently at each object, not COCO's one-to-one matching.

    How size is measured: ``sqrt(w * h)`` of the object's box in pixels (a square box's side), the
    quantity COCO's area ranges bin (its "small" is sqrt(area) < 32), here always the box's own
    area, never the ``"area"`` key or a mask's. Bin ``b`` holds sizes in ``[size_edges[b],
    size_edges[b + 1])``; sizes outside every bin are not counted.

    Args:
        preds, targets (list[dict]): one per image, as :func:`mean_average_precision` takes them
            (paired by "image_id" when every dict has one, else by position).
        iou_threshold: in (0, 1].
        size_edges: increasing bin edges in pixels, at least two.
    Returns:
        {"edges": list[float] (the S + 1 edges), "objects", "missed", "confused", "right":
        int64 Tensor[S] each (per size bin; objects = missed + confused + right), "by_class":
        int64 Tensor[S, K + 1, K + 1], [bin, true label, detected label] of the confused objects
        (K the largest label seen)}.
    """
    if not 0.0 < iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must lie in (0, 1], got {iou_threshold}")
    edges = torch.as_tensor(size_edges, dtype=torch.float64)
    if edges.dim() != 1 or len(edges) < 2 or not bool((edges[1:] > edges[:-1]).all()):
        raise ValueError(f"size_edges must be at least two increasing numbers, got {list(size_edges)}")
    P, G = _prepare(preds, targets, "bbox")
    num_bins = len(edges) - 1
    num_labels = int(max([int(d["labels"].max()) for d in P + G if len(d["labels"])], default=0)) + 1
    missed, confused, right = (torch.zeros(num_bins, dtype=torch.int64) for _ in range(3))
    by_class = torch.zeros(num_bins, num_labels, num_labels, dtype=torch.int64)
    for p, g in zip(P, G):
        keep = ~g["crowd"]
        boxes, labels = g["regions"][keep], g["labels"][keep]
        if not len(boxes):
            continue
        size = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).clamp(min=0).sqrt()
        bins = torch.bucketize(size, edges, right=True) - 1                        # [N]; -1 or S: outside
        inside = (bins >= 0) & (bins < num_bins)
        iou = _box_iou(p["regions"], boxes, torch.zeros(len(boxes), dtype=torch.bool))   # [M, N]
        candidate = iou >= iou_threshold
        # the best candidate of each object: highest score, the first detection on a tie
        score = torch.where(candidate, p["scores"][:, None], -torch.inf)            # [M, N]
        has = candidate.any(0)
        best = score.argmax(0) if len(score) else torch.zeros(len(boxes), dtype=torch.int64)
        said = p["labels"][best] if len(score) else labels
        wrong = has & (said != labels)
        for b in range(num_bins):
            here = inside & (bins == b)
            missed[b] += int((here & ~has).sum())
            confused[b] += int((here & wrong).sum())
            right[b] += int((here & has & ~wrong).sum())
            for t, d in zip(labels[here & wrong].tolist(), said[here & wrong].tolist()):
                by_class[b, t, d] += 1
    return {"edges": edges.tolist(), "objects": missed + confused + right, "missed": missed,
            "confused": confused, "right": right, "by_class": by_class}


# ---------------------------------------------------------------- PASCAL VOC

def _all_point_ap(recall: Tensor, precision: Tensor) -> float:
    """VOC2010+ AP: the area under the precision envelope, recall Tensor[D], precision Tensor[D]."""
    zero, one = torch.zeros(1, dtype=torch.float64), torch.ones(1, dtype=torch.float64)
    mrec, mpre = torch.cat([zero, recall, one]), torch.cat([zero, precision, zero])
    mpre = mpre.flip(0).cummax(0).values.flip(0)
    return ((mrec[1:] - mrec[:-1]) * mpre[1:]).sum().item()


def voc_average_precision(preds: list[dict], targets: list[dict], iou_threshold: float = 0.5,
                          class_names=None) -> dict:
    """PASCAL VOC's AP (all-point interpolation, VOC2010 onward) per class, and their mean.

    VOC's rules, which differ from COCO's: one IoU threshold, to be exceeded (IoU > t); each det,
    best score first over the whole data set (stable order on ties), looks only at the gt of
    its class with the highest IoU in its image; if another det took that gt first, it is a
    false positive. Gts flagged "difficult" (optional bool[N] in targets) are not positives,
    and dets on them count neither way. No area ranges, no limit on dets. Boxes are continuous
    (no +1 pixel on widths, unlike the devkit's integer boxes).

    Args: as mean_average_precision's (boxes only).
    Returns:
        {"map": float, the mean over classes with a gt; "ap_per_class": {label or name: float},
        NaN for a class that has no non-difficult gt (found only in preds)}.
    """
    if not 0.0 <= iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must lie in [0, 1], got {iou_threshold}")
    P, G = _prepare(preds, targets, "bbox")
    labels, scores, claim, on_difficult, gt_index, offset = [], [], [], [], [], 0
    for p, g in zip(P, G):
        n = len(g["labels"])
        iou = _box_iou(p["regions"], g["regions"], torch.zeros(n, dtype=torch.bool))
        iou[p["labels"][:, None] != g["labels"][None, :]] = -1
        # one more column, "no gt", keeps argmax defined on images without gts; never a hit
        iou = torch.cat([iou, torch.full((len(iou), 1), -1.0, dtype=torch.float64)], 1)
        j = iou.argmax(1)  # the first of equal IoUs, as np.argmax in the devkit
        hit = iou.gather(1, j[:, None])[:, 0] > iou_threshold
        difficult = torch.cat([g["difficult"], torch.zeros(1, dtype=torch.bool)])[j]
        labels.append(p["labels"])
        scores.append(p["scores"])
        claim.append(hit & ~difficult)
        on_difficult.append(hit & difficult)
        gt_index.append(j + offset)
        offset += n + 1
    cat = lambda xs, dtype: torch.cat(xs) if xs else torch.zeros(0, dtype=dtype)
    labels, scores, gt_index = cat(labels, torch.long), cat(scores, torch.float64), cat(gt_index, torch.long)
    claim, on_difficult = cat(claim, torch.bool), cat(on_difficult, torch.bool)
    gt_labels = cat([g["labels"] for g in G], torch.long)
    is_difficult = cat([g["difficult"] for g in G], torch.bool)
    ap = {}
    for c in _classes(P, G).tolist():
        sel = (labels == c).nonzero()[:, 0]
        order = sel[torch.sort(scores[sel], descending=True, stable=True).indices]
        j, claimed = gt_index[order], claim[order]
        # the first claim on a gt, in score order, is the true positive; later ones are duplicates
        pos = torch.arange(len(order))
        first = torch.full((offset,), len(order), dtype=torch.long)
        first.scatter_reduce_(0, j[claimed], pos[claimed], "amin")
        tp = claimed & (first[j] == pos)
        num_gts = ((gt_labels == c) & ~is_difficult).sum()
        tp_sum, fp_sum = tp.cumsum(0).double(), (~tp & ~on_difficult[order]).cumsum(0).double()
        precision = tp_sum / (tp_sum + fp_sum).clamp(min=torch.finfo(torch.float64).eps)
        ap[c] = _all_point_ap(tp_sum / num_gts, precision) if num_gts else float("nan")
    values = torch.tensor(list(ap.values()), dtype=torch.float64)
    names = list(ap) if class_names is None else [class_names[c] for c in ap]
    return {"map": values.nanmean().item() if len(values) else float("nan"),
            "ap_per_class": dict(zip(names, ap.values()))}


# ---------------------------------------------------------------- semantic segmentation

def confusion_matrix(pred: Tensor, target: Tensor, num_classes: int, ignore_index: int | None = None) -> Tensor:
    """Pixel counts of (true class, predicted class), on the inputs' device.

    Args:
        pred (Tensor[B, H, W] or Tensor[H, W], int): predicted class per pixel, 0..C-1; scores
            Tensor[B, C, H, W] (or [C, H, W]) are turned into classes by argmax.
        target (Tensor like pred, int): true class per pixel, 0..C-1 or ignore_index.
        ignore_index: target value whose pixels are left out (e.g. ``inputs.IGNORE_INDEX``, 255, VOC's
            object borders).
    Returns:
        Tensor[C, C] int64: row = target class, column = predicted class (the layout of
        torchvision's references/segmentation ConfusionMatrix).
    """
    if pred.is_floating_point() and pred.dim() == target.dim() + 1:
        pred = pred.argmax(-3)
    if pred.shape != target.shape or pred.dim() not in (2, 3):
        raise ValueError(f"pred and target must share one shape [B, H, W] or [H, W], "
                         f"got {tuple(pred.shape)} and {tuple(target.shape)}")
    if pred.is_floating_point() or target.is_floating_point():
        raise ValueError("pred and target must hold integer class indices")
    inputs.check_classes(target, "target", num_classes, ignore_index)
    inputs.check_classes(pred, "pred", num_classes)
    keep = target != ignore_index if ignore_index is not None else torch.ones_like(target, dtype=torch.bool)
    t, p = target[keep].long(), pred[keep].long()
    return torch.bincount(t * num_classes + p, minlength=num_classes**2).reshape(num_classes, num_classes)


def segmentation_scores(cm: Tensor) -> dict:
    """From a confusion matrix Tensor[C, C] (rows: target) to
    {"miou": float, "iou_per_class": Tensor[C] float64, "pixel_accuracy": float}.
    A class absent from both target and pred has IoU 0/0 = NaN and is left out of the mean
    (torchvision's references give the same NaN)."""
    cm = cm.double().cpu()
    tp = cm.diag()
    iou = tp / (cm.sum(0) + cm.sum(1) - tp)
    return {"miou": iou.nanmean().item(), "iou_per_class": iou,
            "pixel_accuracy": (tp.sum() / cm.sum()).item()}


def mean_iou(pred: Tensor, target: Tensor, num_classes: int,
             ignore_index: int | None = inputs.IGNORE_INDEX) -> dict:
    """Mean IoU over classes, per-class IoU and pixel accuracy of a semantic segmentation:
    segmentation_scores(confusion_matrix(pred, target, num_classes, ignore_index))."""
    return segmentation_scores(confusion_matrix(pred, target, num_classes, ignore_index))


class SegmentationMeter:
    """Streaming mean_iou for eval loops: update(pred, target) per batch, compute() at the end.
    It sums one confusion matrix, so the result equals mean_iou on all the pixels at once."""

    def __init__(self, num_classes: int, ignore_index: int | None = inputs.IGNORE_INDEX):
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.reset()

    def reset(self) -> None:
        self.cm = torch.zeros(self.num_classes, self.num_classes, dtype=torch.long)

    def update(self, pred: Tensor, target: Tensor) -> None:
        self.cm += confusion_matrix(pred, target, self.num_classes, self.ignore_index).cpu()

    def compute(self) -> dict:
        return segmentation_scores(self.cm)


def segmentation_metrics(predictions: list[dict], targets: list[dict], num_classes: int = 4) -> dict:
    """mIoU, per-class IoU and pixel accuracy of "semantic" predictions against targets, over all
    pixels of all images (one confusion matrix): ``SegmentationMeter`` with C + 1 classes."""
    if len(predictions) != len(targets):
        raise ValueError(f"got {len(predictions)} predictions for {len(targets)} targets")
    meter = SegmentationMeter(num_classes + 1, ignore_index=inputs.IGNORE_INDEX)
    for p, t in zip(predictions, targets):
        meter.update(p["semantic"].cpu(), t["semantic"].cpu())
    return meter.compute()


# ============================================================================ proposals
def proposal_recall(proposals: list[Tensor], gt_boxes: list[Tensor], iou_thresholds=(0.5, 0.7),
                    counts=(10, 30, 100, 300, None)) -> dict:
    """Recall of ranked proposals (selective search, sliding windows, an RPN, ...).

    For each count k and IoU threshold t: the fraction of all ground-truth boxes (over every
    image) that at least one of their image's top-k proposals overlaps with IoU >= t.

    Args:
        proposals (list of Tensor[K_i, 4]): per image, xyxy, best first.
        gt_boxes (list of Tensor[G_i, 4]): per image, xyxy.
        iou_thresholds: values in (0, 1].
        counts: positive ints; None stands for all proposals (the largest K_i).
    Returns:
        {"counts": int64 Tensor[N], "recall": {t: float32 Tensor[N] for each t}, "num_gt": int};
        recall is NaN when there is no ground-truth box at all.
    """
    if len(proposals) != len(gt_boxes):
        raise ValueError(f"got proposals for {len(proposals)} images and ground truth for {len(gt_boxes)}")
    for p, g in zip(proposals, gt_boxes):
        box_ops.check_boxes(p, "proposals", ndim=2)
        box_ops.check_boxes(g, "gt_boxes", ndim=2)
    if not iou_thresholds or any(not 0 < t <= 1 for t in iou_thresholds):
        raise ValueError(f"iou_thresholds must be in (0, 1], got {iou_thresholds}")
    most = max((len(p) for p in proposals), default=0)
    if not counts or any(c is not None and (int(c) != c or c < 1) for c in counts):
        raise ValueError(f"counts must be positive ints or None, got {counts}")
    ks = torch.tensor([most if c is None else int(c) for c in counts], dtype=torch.int64)
    thresholds = torch.tensor([float(t) for t in iou_thresholds])
    covered = torch.zeros(len(thresholds), len(ks))
    num_gt = 0
    for p, g in zip(proposals, gt_boxes):
        num_gt += len(g)
        if len(g) == 0 or len(p) == 0:
            continue
        iou = box_ops.box_iou(g.float().cpu(), p.float().cpu())  # [G, K]
        hit = iou[None] >= thresholds[:, None, None]  # [T, G, K]
        never = torch.tensor(int(ks.max()) + 1)  # beyond every k: no proposal reaches t
        first = torch.where(hit.any(2), hit.to(torch.uint8).argmax(2), never)  # [T, G]
        covered += (first[..., None] < ks).sum(1)  # first hit within the top k
    recall = covered / num_gt if num_gt else torch.full_like(covered, float("nan"))
    return {"counts": ks, "recall": {t: recall[n] for n, t in enumerate(iou_thresholds)}, "num_gt": num_gt}


# ============================================================================ localization
def localization_metrics(predictions: list[dict], targets: list[dict], iou_threshold: float = 0.5) -> dict[str, float]:
    """Scores of one-box predictions against one-object targets (lists of dicts, one per image).

    Returns {"accuracy": share of right labels, "mean_iou": mean IoU of predicted and true box,
    "acc_at_iou": share with the right label *and* IoU >= iou_threshold (a correct localization
    in the sense of ImageNet's localization task)}.
    """
    if len(predictions) != len(targets) or not targets:
        raise ValueError(f"need as many predictions as targets (at least one), got {len(predictions)} and {len(targets)}")
    pred_boxes = torch.cat([p["boxes"] for p in predictions]).float().cpu()
    true_boxes = torch.cat([t["boxes"] for t in targets]).float().cpu()
    if pred_boxes.shape[0] != len(targets) or true_boxes.shape[0] != len(targets):
        raise ValueError("every prediction and every target must hold exactly one box")
    ious = box_ops.box_iou(pred_boxes, true_boxes).diagonal()
    right = torch.cat([p["labels"] for p in predictions]).cpu() == torch.cat([t["labels"] for t in targets]).cpu()
    return {"accuracy": right.float().mean().item(), "mean_iou": ious.mean().item(),
            "acc_at_iou": (right & (ious >= iou_threshold)).float().mean().item()}


# ============================================================================ multi-label classification
def multilabel_accuracy(logits: Tensor, targets: Tensor) -> dict[str, float]:
    """Scores of C present/absent decisions per image: ``logits`` float[N, C] (present when > 0),
    ``targets`` {0, 1}[N, C]. Returns {"exact_match": share of images with all C decisions
    right, "mean_label_accuracy": share of right decisions}."""
    if logits.shape != targets.shape or logits.dim() != 2:
        raise ValueError(f"logits and targets must both be [N, C], got {tuple(logits.shape)} and "
                         f"{tuple(targets.shape)}")
    right = (logits > 0).float() == targets.float()
    return {"exact_match": right.all(dim=1).float().mean().item(), "mean_label_accuracy": right.float().mean().item()}


# ============================================================================ speed against accuracy
def pareto_front(ms: torch.Tensor, accuracy: torch.Tensor) -> torch.Tensor:
    """bool[N]: True for the detectors that no other detector beats on both axes.

    Detector j dominates detector i when it is at least as fast (ms_j <= ms_i) and at least as
    accurate (accuracy_j >= accuracy_i), and strictly better on one of the two. The front is
    the set of sensible choices: for any other detector, one on the front is faster and better.

    Args:
        ms (Tensor[N]): milliseconds per image.  accuracy (Tensor[N]): e.g. mAP.
    """
    ms, accuracy = torch.as_tensor(ms, dtype=torch.float64), torch.as_tensor(accuracy, dtype=torch.float64)
    if ms.dim() != 1 or ms.shape != accuracy.shape:
        raise ValueError(f"ms and accuracy must be Tensor[N] of one length, got {tuple(ms.shape)} "
                         f"and {tuple(accuracy.shape)}")
    no_worse = (ms[None, :] <= ms[:, None]) & (accuracy[None, :] >= accuracy[:, None])      # [i, j]: j vs i
    better = (ms[None, :] < ms[:, None]) | (accuracy[None, :] > accuracy[:, None])
    return ~(no_worse & better).any(dim=1)
