"""Worked solutions of the exercises where the reader writes a function from a stub.

They are here, not in the chapter, so that a reader who wants to try first does not see them
while scrolling; each is written the way the chapter teaches it (loops where they make the idea
plain), not the way the package computes it, and each passes its ``exercises.check_*``
(tests/test_exercises.py proves it, and that planted wrong versions fail).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from ..boxes import box_iou


def soft_nms(boxes: Tensor, scores: Tensor, sigma: float) -> Tensor:
    """Gaussian Soft-NMS (Bodla et al. 2017): Tensor[N, 4] xyxy, Tensor[N] -> Tensor[N], every
    box's score after the decay, in the input's order. Greedy NMS removes the boxes that overlap
    a chosen one; Soft-NMS multiplies their scores by exp(-IoU^2 / sigma) instead."""
    iou = box_iou(boxes, boxes)                       # [N, N], computed once
    current = scores.clone().float()
    chosen = torch.zeros(len(boxes), dtype=torch.bool)
    for _ in range(len(boxes)):
        # the best *current* score among the boxes not chosen yet (argmax: the lower index on ties)
        m = int(current.masked_fill(chosen, -float("inf")).argmax())
        chosen[m] = True
        decay = torch.exp(-iou[m] ** 2 / sigma)
        current = torch.where(chosen, current, current * decay)   # chosen boxes keep their score
    return current


def _round_half_away(x: float) -> int:
    """C's round(): 2.5 -> 3, -2.5 -> -3 (Python's round would give 2)."""
    return int(math.floor(abs(x) + 0.5)) * (1 if x >= 0 else -1)


def roi_pool_box(feature: Tensor, box: Tensor, output_size: tuple[int, int], spatial_scale: float) -> Tensor:
    """RoI Pool of one box: feature Tensor[C, H, W], box Tensor[4] xyxy in image pixels ->
    Tensor[C, PH, PW], Fast R-CNN's (and torchvision's) rules: the box rounded to feature
    pixels, both ends included; bins cut with floor/ceil, shifted by the box's corner and
    clipped to the map; each bin the max of its pixels, an empty bin 0."""
    channels, height, width = feature.shape
    ph, pw = output_size
    x1, y1, x2, y2 = (_round_half_away(v * spatial_scale) for v in box.tolist())
    roi_w, roi_h = max(x2 - x1 + 1, 1), max(y2 - y1 + 1, 1)
    bin_h, bin_w = roi_h / ph, roi_w / pw
    out = feature.new_zeros(channels, ph, pw)
    for i in range(ph):
        top = min(max(math.floor(i * bin_h) + y1, 0), height)
        bottom = min(max(math.ceil((i + 1) * bin_h) + y1, 0), height)
        for j in range(pw):
            left = min(max(math.floor(j * bin_w) + x1, 0), width)
            right = min(max(math.ceil((j + 1) * bin_w) + x1, 0), width)
            if bottom > top and right > left:
                out[:, i, j] = feature[:, top:bottom, left:right].amax(dim=(1, 2))
    return out


def anchor_labels(iou: Tensor, high: float, low: float) -> Tensor:
    """Faster R-CNN's anchor labels from the IoU matrix Tensor[G, A]: int64 Tensor[A], the best
    object's index where its IoU >= high, -1 (background) below low, -2 (ignored) in between;
    then every object's best anchors (ties included, IoU > 0) become positives, each matched to
    its own best object."""
    num_objects, num_anchors = iou.shape
    if num_objects == 0:
        return torch.full((num_anchors,), -1, dtype=torch.int64)
    best_iou, best_object = iou.max(dim=0)                     # per anchor
    labels = best_object.clone()
    labels[best_iou < low] = -1
    labels[(best_iou >= low) & (best_iou < high)] = -2
    best_per_object = iou.max(dim=1, keepdim=True).values      # [G, 1]
    promoted = ((iou == best_per_object) & (best_per_object > 0)).any(dim=0)
    labels[promoted] = best_object[promoted]
    return labels


def yolo_targets(boxes: Tensor, labels: Tensor, grid_size: tuple[int, int], image_size: tuple[int, int]) -> Tensor:
    """YOLOv1's target grid Tensor[S_h, S_w, 6] of one image: per object cell (x, y, sqrt(w / W),
    sqrt(h / H), label - 1, 1), elsewhere (0, 0, 0, 0, -1, 0); the largest box wins a cell."""
    (s_h, s_w), (height, width) = grid_size, image_size
    grid = torch.zeros(s_h, s_w, 6)
    grid[..., 4] = -1
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    for n in torch.sort(areas, descending=True, stable=True).indices.tolist():   # largest first
        x1, y1, x2, y2 = boxes[n].tolist()
        cx, cy = (x1 + x2) / 2 * s_w / width, (y1 + y2) / 2 * s_h / height      # in cells
        col, row = min(max(math.floor(cx), 0), s_w - 1), min(max(math.floor(cy), 0), s_h - 1)
        if grid[row, col, 5]:
            continue                                                            # a larger one is there
        grid[row, col] = torch.tensor([min(max(cx - col, 0.0), 1.0), min(max(cy - row, 0.0), 1.0),
                                       math.sqrt(min(max((x2 - x1) / width, 0.0), 1.0)),
                                       math.sqrt(min(max((y2 - y1) / height, 0.0), 1.0)),
                                       float(labels[n] - 1), 1.0])
    return grid


# ----------------------------------------------------------------------------- the chapters' other exercises
def visible_boxes(masks: Tensor, min_visible: float) -> Tensor:
    """The targets' boxes of a scene from its silhouettes uint8 Tensor[N, H, W] in painting order
    (the last on top): each object's visible part is what the later masks leave uncovered; the
    objects with at least min_visible of their silhouette visible (and one pixel) are kept, in
    painting order, each as the tight xyxy box of its visible part (pixel-edge convention)."""
    masks = masks.bool()
    boxes = []
    for i in range(len(masks)):
        visible = masks[i] & ~masks[i + 1:].any(dim=0)         # only later masks cover it
        area = int(visible.sum())
        if area == 0 or area < min_visible * int(masks[i].sum()):
            continue                                           # dropped only *below* the rule
        rows = visible.any(dim=1).nonzero().flatten()
        cols = visible.any(dim=0).nonzero().flatten()
        # the last index + 1: pixel x covers [x, x + 1), so a one-pixel object has width 1
        boxes.append([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1])
    return torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)


def diou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise Distance-IoU of xyxy boxes (Zheng et al. 2020): IoU - rho^2 / c^2, rho the
    distance between the centres, c the diagonal of the smallest enclosing box."""
    iou = box_iou(boxes1, boxes2)                                          # [N, M]
    centre1 = (boxes1[:, :2] + boxes1[:, 2:]) / 2
    centre2 = (boxes2[:, :2] + boxes2[:, 2:]) / 2
    rho2 = ((centre1[:, None] - centre2[None]) ** 2).sum(-1)
    # the *enclosing* box: the smaller top-left corner, the larger bottom-right one
    lt = torch.minimum(boxes1[:, None, :2], boxes2[None, :, :2])
    rb = torch.maximum(boxes1[:, None, 2:], boxes2[None, :, 2:])
    c2 = ((rb - lt) ** 2).sum(-1)
    return iou - rho2 / c2.clamp(min=1e-7)


def multitask_loss(class_logits: Tensor, pred_boxes: Tensor, labels: Tensor, gt_boxes: Tensor,
                   box_weight: float) -> dict[str, Tensor]:
    """Classification & localization's loss: cross-entropy on labels 1..C (logit k is label k + 1)
    and box_weight x mean(1 - GIoU) of each prediction with its own image's box."""
    import torch.nn.functional as F

    from ..boxes import generalized_box_iou

    loss_cls = F.cross_entropy(class_logits, labels - 1)
    giou = generalized_box_iou(pred_boxes, gt_boxes).diagonal()
    return {"loss_cls": loss_cls, "loss_box": box_weight * (1 - giou).mean()}


def linear_to_conv(linear, in_channels: int, kernel_size: int):
    """The fully connected layer over a flattened (D, k, k) block as a k x k convolution with the
    same weights (OverFeat's trick)."""
    from torch import nn

    conv = nn.Conv2d(in_channels, linear.out_features, kernel_size, bias=linear.bias is not None)
    with torch.no_grad():
        # Tensor.flatten(1) on [L, D, k, k] orders a block channel first: (D, k, k)
        conv.weight.copy_(linear.weight.view(linear.out_features, in_channels, kernel_size, kernel_size))
        if linear.bias is not None:
            conv.bias.copy_(linear.bias)
    return conv


def encode_boxes(gt: Tensor, proposals: Tensor) -> Tensor:
    """Fast R-CNN's box deltas of gt relative to proposals (Tensor[K, 4] xyxy each), with the
    weights (10, 10, 5, 5) of torchvision's box coder."""
    pw, ph = proposals[:, 2] - proposals[:, 0], proposals[:, 3] - proposals[:, 1]
    gw, gh = gt[:, 2] - gt[:, 0], gt[:, 3] - gt[:, 1]
    px, py = proposals[:, 0] + pw / 2, proposals[:, 1] + ph / 2   # centres, not edges
    gx, gy = gt[:, 0] + gw / 2, gt[:, 1] + gh / 2
    return torch.stack([10 * (gx - px) / pw, 10 * (gy - py) / ph, 5 * torch.log(gw / pw),
                        5 * torch.log(gh / ph)], dim=1)


def hard_negatives(ce: Tensor, positive: Tensor, ratio: int) -> Tensor:
    """SSD's hard negatives: per image, the ratio x P negatives of highest loss (bool [B, D])."""
    ce = ce.masked_fill(positive, -float("inf"))   # a positive must not take a negative's place
    rank = ce.argsort(dim=1, descending=True).argsort(dim=1)
    return (rank < ratio * positive.sum(dim=1, keepdim=True)) & ~positive


def pareto_front(ms: Tensor, accuracy: Tensor) -> Tensor:
    """bool Tensor[N]: True for the detectors no other is at least as fast and as accurate as,
    and strictly better in one."""
    no_worse = (ms[None, :] <= ms[:, None]) & (accuracy[None, :] >= accuracy[:, None])
    strictly = (ms[None, :] < ms[:, None]) | (accuracy[None, :] > accuracy[:, None])
    return ~(no_worse & strictly).any(dim=1)   # ties on one axis count too


def mask_target(mask: Tensor, box: Tensor, size: int) -> Tensor:
    """Mask R-CNN's mask target: the image-size mask Tensor[H, W] sampled bilinearly at the
    centres of a size x size grid over the box -> Tensor[size, size]."""
    import torch.nn.functional as F

    height, width = mask.shape
    x1, y1, x2, y2 = box.tolist()
    t = (torch.arange(size) + 0.5) / size
    xs, ys = x1 + t * (x2 - x1), y1 + t * (y2 - y1)
    # align_corners=False: -1 and 1 are the outer *edges* of the image (pixel-edge coordinates)
    gx, gy = 2 * xs / width - 1, 2 * ys / height - 1
    grid = torch.stack(torch.meshgrid(gx, gy, indexing="xy"), dim=-1)[None]
    # border: a sample in the outer half pixel takes the edge pixel's value (as RoI Align does)
    return F.grid_sample(mask[None, None].float(), grid, align_corners=False,
                         padding_mode="border")[0, 0]


def miou(pred: Tensor, target: Tensor, num_classes: int) -> Tensor:
    """Mean IoU over the classes present in the prediction or the target."""
    ious = []
    for k in range(num_classes):
        inter = ((pred == k) & (target == k)).sum()
        union = ((pred == k) | (target == k)).sum()
        if union > 0:  # a class in neither map is left out, not scored 0
            ious.append(inter / union)
    return torch.stack(ious).float().mean()


def conv_transpose1d(x: Tensor, weight: Tensor, stride: int, padding: int, output_padding: int) -> Tensor:
    """Transposed convolution as scatter-add: each input value adds a scaled copy of the kernel
    at stride steps; padding crops the sum of copies, output_padding returns op more of it.
    x Tensor[B, Cin, L], weight Tensor[Cin, Cout, k] -> Tensor[B, Cout, (L - 1) s - 2p + k + op]."""
    b, _, length = x.shape
    cout, k = weight.shape[1], weight.shape[2]
    # the whole sum of copies, and op zeros after it (where no copy reaches)
    out = x.new_zeros(b, cout, (length - 1) * stride + k + output_padding)
    for i in range(length):
        copy = torch.einsum("bc,cok->bok", x[:, :, i], weight)
        out[:, :, i * stride:i * stride + k] += copy            # overlapping copies add up
    size = (length - 1) * stride - 2 * padding + k + output_padding
    # p cropped at the start; at the end p - op of the sum cropped (the op positions are the
    # sum's own, or zeros past its end)
    return out[:, :, padding:padding + size]


def upsample2(x: Tensor) -> Tensor:
    """Bilinear upsampling by 2 with align_corners=False (PyTorch's default): Tensor[B, C, H, W]
    -> Tensor[B, C, 2H, 2W]."""
    def coords(n):
        src = ((torch.arange(2 * n, dtype=torch.float32) + 0.5) / 2 - 0.5).clamp(min=0)  # not row -1
        lo = src.floor().long()
        return lo, (lo + 1).clamp(max=n - 1), src - lo

    (y0, y1, wy), (x0, x1, wx) = coords(x.shape[-2]), coords(x.shape[-1])
    rows = x[..., y0, :] * (1 - wy)[:, None] + x[..., y1, :] * wy[:, None]
    return rows[..., x0] * (1 - wx) + rows[..., x1] * wx


def centernet_heatmap(boxes: Tensor, labels: Tensor, num_classes: int, map_size: tuple[int, int]) -> Tensor:
    """CenterNet's heatmap target of one image: Tensor[C, h, w] on the stride-4 map, one Gaussian
    bump per object on its class's channel, peak 1 at its centre cell, the maximum where bumps meet."""
    from ..models.centernet import STRIDE, centernet_radius

    h, w = map_size
    heat = torch.zeros(num_classes, h, w)
    for (x1, y1, x2, y2), label in zip(boxes.tolist(), labels.tolist()):
        col = min(max(math.floor((x1 + x2) / 2 / STRIDE), 0), w - 1)     # the centre's cell
        row = min(max(math.floor((y1 + y2) / 2 / STRIDE), 0), h - 1)
        size = torch.tensor([math.ceil((y2 - y1) / STRIDE), math.ceil((x2 - x1) / STRIDE)], dtype=torch.float32)
        radius = max(math.floor(float(centernet_radius(size[:1], size[1:])[0])), 0)
        sigma = (2 * radius + 1) / 6
        dy = torch.arange(h, dtype=torch.float32)[:, None] - row
        dx = torch.arange(w, dtype=torch.float32)[None, :] - col
        bump = torch.exp(-(dx ** 2 + dy ** 2) / (2 * sigma ** 2))
        bump = bump * ((dx.abs() <= radius) & (dy.abs() <= radius))   # only inside the (2r + 1) square
        heat[label - 1] = torch.maximum(heat[label - 1], bump)          # overlapping bumps: the maximum
    return heat


def shard(num_samples: int, world_size: int, rank: int, epoch: int, seed: int = 0) -> Tensor:
    """The indices process ``rank`` of ``world_size`` reads in epoch ``epoch``, shuffled: one
    permutation that every process draws alike (a generator seeded with what they all know,
    ``seed + epoch``), padded by repeating its start to a multiple of the world size, then
    every ``world_size``-th position from ``rank`` (what DistributedSampler does)."""
    generator = torch.Generator().manual_seed(seed + epoch)              # not the rank: one order for all
    order = torch.randperm(num_samples, generator=generator).tolist()
    total = math.ceil(num_samples / world_size) * world_size
    while len(order) < total:                                            # pad: every process the same count
        order += order[:total - len(order)]
    return torch.tensor(order[rank:total:world_size], dtype=torch.int64)


SOLUTIONS = {  # checker -> its worked solution
    "check_visible_boxes": visible_boxes, "check_diou": diou, "check_soft_nms": soft_nms,
    "check_multitask_loss": multitask_loss, "check_linear_to_conv": linear_to_conv,
    "check_encode_boxes": encode_boxes, "check_roi_pool_box": roi_pool_box,
    "check_anchor_labels": anchor_labels, "check_hard_negatives": hard_negatives,
    "check_yolo_targets": yolo_targets, "check_pareto_front": pareto_front,
    "check_mask_target": mask_target, "check_miou": miou, "check_conv_transpose1d": conv_transpose1d,
    "check_bilinear_upsample": upsample2, "check_centernet_heatmap": centernet_heatmap, "check_shard": shard,
}
HELPERS = {"check_roi_pool_box": (_round_half_away,)}  # functions a solution calls, shown before it
