"""Detection ops written from scratch: NMS and RoI pooling, with torchvision.ops signatures.

The box functions (IoU, formats, coding) live in :mod:`lessons_pkg.boxes`, their one home.

Shape key
    N   boxes given to NMS             K   RoIs (regions of interest)
    B   images in a batch              C   feature channels
    H, W  feature-map height, width    PH, PW  output bins (``output_size``)
    SH, SW  bilinear samples per bin (RoI Align)
Boxes are xyxy; RoIs are Tensor[K, 5] rows (batch index, x1, y1, x2, y2) in image pixels,
mapped onto the feature map by ``spatial_scale`` (1/16 for a stride-16 backbone).

Host-device syncs: greedy NMS is sequential by nature, so NMS runs a loop on the host with
a few syncs per block of 128-256 boxes (never one per box). RoI Pool and adaptive RoI Align
sync once to size their work. Because they pay a sync anyway, NMS and RoI Pool check
finiteness on every device. RoI Align with a fixed sampling_ratio has no sync, so it checks
RoIs (finite, valid batch indices) on CPU only; on CUDA it trusts them, and a NaN coordinate
behaves as in torchvision's kernel: that sample contributes 0.

Threads: the loops (NMS blocks, RoI Pool groups, RoI Align when it runs several grid groups
or chunks) run on one CPU thread; see _one_thread_on_cpu for why. Single big ops (fixed-grid
RoI Align) use torch's thread count.
"""
from __future__ import annotations

import contextlib
import math
import numbers

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import boxes as box_ops
from .inputs import as_pair

__all__ = ["nms", "batched_nms", "roi_pool", "roi_align", "RoIPool", "RoIAlign"]

# Block sizes of the blocked greedy NMS (see _nms_sorted_groups), tuned on a 2-core CPU.
BLOCK = 128
PACK = 256
# RoI Align builds at most this many (feature row, weight) entries at a time.
MAX_ENTRIES = 2**22
MAX_ROI_ENTRIES = 2**25  # one RoI's adaptive grid beyond this (~400 MB of indices and weights) is refused
# At most this many channels, RoI Align with a fixed sampling ratio uses F.grid_sample where it
# can (measured on the CPU, 600 RoIs, 32 x 32 bins: 2.2x faster with 3 channels, 12x slower with 128).
GRID_SAMPLE_MAX_CHANNELS = 4


@contextlib.contextmanager
def _one_thread_on_cpu(device: torch.device):
    """Run a loop of many mid-sized ops on one CPU thread.

    With several OpenMP threads every op ends at a barrier. When the machine is busy (another
    process, pytest-xdist, a notebook kernel next door) a barrier can wait for a descheduled
    thread for a whole time slice: measured on 2 busy cores, NMS ran 10-40x slower. One
    thread has no barrier and, on a quiet machine, costs at most 2x. (torch's thread count
    is global: other Python threads using torch meanwhile run single-threaded too.)"""
    threads = torch.get_num_threads()
    if device.type != "cpu" or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


# ============================================================================= NMS
def _check_nms_inputs(boxes: Tensor, scores: Tensor, iou_threshold: float) -> None:
    box_ops.check_boxes(boxes, "boxes", ndim=2, finite=False)
    if not isinstance(scores, Tensor) or scores.dim() != 1 or len(scores) != len(boxes):
        shape = list(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__
        raise ValueError(f"scores must have shape [N] = [{len(boxes)}] to match boxes, "
                         f"got {shape}")
    if not (isinstance(iou_threshold, numbers.Real) and iou_threshold >= 0):   # NaN fails too
        raise ValueError(f"iou_threshold must be a number >= 0, got {iou_threshold!r}")
    # NMS syncs anyway (its loop runs on the host), so one more sync for this check is noise.
    if boxes.numel() and not bool(torch.isfinite(boxes).all()):
        raise ValueError("boxes must be finite, got NaN or inf")


def _threshold(iou_threshold: float, dtype: torch.dtype, device) -> Tensor:
    """The largest value of ``dtype`` that is <= iou_threshold.

    torchvision compares a float32 IoU with a float64 threshold. Rounding the threshold to
    float32 can round it up (then an IoU equal to the rounded value would escape); rounding
    down keeps ``iou > t`` exactly as in float64, bit for bit."""
    t = torch.tensor(iou_threshold, dtype=torch.float64).to(dtype)
    if t.double() > iou_threshold:
        t = torch.nextafter(t, torch.tensor(-math.inf, dtype=dtype))
    return t.to(device)


def _iou_exceeds(a: Tensor, b: Tensor, thr: Tensor) -> Tensor:
    """Tensor[5, n] and Tensor[5, m] rows (x1, y1, x2, y2, area) -> bool Tensor[n, m] of
    IoU > thr.

    Rows are contiguous columns of coordinates (about 2x faster to broadcast than the
    strided columns of a Tensor[n, 4]); in-place ops avoid temporaries. The arithmetic is
    torchvision's kernel's, operation by operation, so the comparisons agree bit for bit."""
    ax1, ay1, ax2, ay2, aa = (c[:, None] for c in a.unbind(0))
    bx1, by1, bx2, by2, ba = b.unbind(0)
    w = torch.minimum(ax2, bx2).sub_(torch.maximum(ax1, bx1)).clamp_(min=0)
    h = torch.minimum(ay2, by2).sub_(torch.maximum(ay1, by1)).clamp_(min=0)
    inter = w.mul_(h)
    return inter.div_((aa + ba).sub_(inter)) > thr


def _greedy_in_block(m: Tensor) -> Tensor:
    """Greedy NMS inside one block: bool Tensor[b, b], m[i, j] = "i suppresses j if kept"
    (strictly upper triangular) -> bool Tensor[b] of kept boxes.

    Only the overlapping pairs are visited, in row-major order, so when the pair (i, j) is
    reached every box before i is already decided: i's own fate is final."""
    rows, cols = m.nonzero(as_tuple=True)
    removed = bytearray(m.shape[0])
    for i, j in zip(rows.tolist(), cols.tolist()):
        if not removed[i]:
            removed[j] = 1
    return torch.frombuffer(removed, dtype=torch.bool).to(m.device).logical_not_()


def _nms_sorted_groups(boxes: Tensor, groups: Tensor | None, counts: list[int],
                       thr: Tensor) -> Tensor:
    """Greedy NMS of boxes sorted by (group, score descending), independent per group.

    Args:
        boxes (Tensor[5, N]): rows x1, y1, x2, y2, area; columns in processing order.
        groups (Tensor[N] or None): group (class) ids, non-decreasing; None: one group.
        counts (list[int]): sizes of the consecutive groups.
        thr (Tensor[]): IoU threshold in the boxes' dtype (see _threshold).
    Returns:
        bool Tensor[N], True where a box is kept.

    Work proceeds in blocks. Whole groups that fit share one block (PACK boxes at most) and
    are finished by it: the IoU matrix of the block, masked to same-group pairs, is all
    greedy NMS needs. A group larger than that is taken BLOCK candidates at a time: the kept
    boxes of a block suppress the group's remaining candidates, which shrink before the
    next block, so the IoU work follows the kept boxes like the greedy algorithm, vectorized.
    """
    keep = torch.zeros(boxes.shape[1], dtype=torch.bool, device=boxes.device)
    cand = torch.arange(boxes.shape[1], device=boxes.device)
    counts = counts[::-1]                          # a stack: the next group is at the end
    while counts:
        end = n_groups = 0
        while n_groups < len(counts) and end + counts[-1 - n_groups] <= PACK:
            end += counts[-1 - n_groups]
            n_groups += 1
        end = end or min(BLOCK, counts[-1])        # or a partial block of a large group
        blk = cand[:end]
        bb = boxes[:, blk]
        m = _iou_exceeds(bb, bb, thr)
        if n_groups > 1:
            gb = groups[blk]
            m &= gb[:, None] == gb[None, :]
        kb = _greedy_in_block(m.triu_(1))
        keep[blk[kb]] = True
        if n_groups:
            del counts[len(counts) - n_groups:]
            cand = cand[end:]
        else:
            group_end = counts[-1]
            rest, far = cand[end:group_end], cand[group_end:]
            rest = rest[~_iou_exceeds(bb[:, kb], boxes[:, rest], thr).any(0)]
            counts[-1] = len(rest)
            if not counts[-1]:
                counts.pop()
            cand = torch.cat((rest, far))
    return keep


def _run_nms(boxes: Tensor, scores: Tensor, groups: Tensor | None, iou_threshold: float) -> Tensor:
    if boxes.dtype not in (torch.float32, torch.float64):
        boxes = boxes.float()
    # Stable sorts: equal scores keep ascending index order, as torchvision's CPU kernel.
    order = torch.sort(scores, descending=True, stable=True)[1]
    if groups is None:
        by_group, groups_sorted, counts, position = order, None, [len(order)], None
    else:
        g = groups[order]
        position = torch.sort(g, stable=True)[1]           # score order -> group order
        groups_sorted = g[position]
        counts = torch.unique_consecutive(groups_sorted, return_counts=True)[1].tolist()
        by_group = order[position]
    b = boxes[by_group].T
    cols = torch.cat((b, ((b[2] - b[0]) * (b[3] - b[1]))[None]), 0).contiguous()
    keep = _nms_sorted_groups(cols, groups_sorted, counts,
                              _threshold(iou_threshold, cols.dtype, cols.device))
    if position is None:
        return order[keep]
    # Back to one list in decreasing score: kept positions in the score order, ascending.
    return order[torch.sort(position[keep])[0]]


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy non-maximum suppression: keep the best box, drop every box whose IoU with it
    is > iou_threshold (an IoU exactly at the threshold survives), repeat.

    Args:
        boxes (Tensor[N, 4]): xyxy, absolute pixels.
        scores (Tensor[N]): higher is better.
        iou_threshold (float): >= 0.
    Returns:
        int64 Tensor[K]: indices of kept boxes in decreasing score; equal scores in
        ascending index (a stable sort, as torchvision on the CPU).
    """
    _check_nms_inputs(boxes, scores, iou_threshold)
    if len(boxes) == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    with _one_thread_on_cpu(boxes.device):
        return _run_nms(boxes, scores, None, iou_threshold)


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """NMS within each category: boxes of different ``idxs`` never suppress each other.

    torchvision (on small inputs) shifts each class by a coordinate offset and runs one
    NMS; the offsets change the rounding of coordinates (and so, rarely, a decision at the
    threshold).
    Here boxes are grouped by class instead, with the same effect and exact arithmetic:
    several small classes share one block, a large class gets blocks of its own.

    Args:
        boxes (Tensor[N, 4]): xyxy.  scores (Tensor[N]).  idxs (Tensor[N]): integer classes.
        iou_threshold (float): >= 0.
    Returns:
        int64 Tensor[K]: kept indices in decreasing score, equal scores in ascending index
        (torchvision's large-input path sorts with an unstable sort, so its order of equal
        scores is unspecified; the set is the same).
    """
    _check_nms_inputs(boxes, scores, iou_threshold)
    if not isinstance(idxs, Tensor) or idxs.shape != scores.shape:
        shape = list(idxs.shape) if isinstance(idxs, Tensor) else type(idxs).__name__
        raise ValueError(f"idxs must have shape [N] = [{len(boxes)}] to match boxes, got {shape}")
    if idxs.is_floating_point() or idxs.is_complex():
        raise ValueError(f"idxs must hold integer class ids, got dtype {idxs.dtype}")
    if len(boxes) == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    with _one_thread_on_cpu(boxes.device):
        return _run_nms(boxes, scores, idxs, iou_threshold)


# ============================================================================= RoI ops
def _rois(input: Tensor, boxes, spatial_scale: float) -> Tensor:
    """Validate the RoI-op inputs; return rois Tensor[K, 5] in the input's dtype."""
    if not isinstance(input, Tensor) or input.dim() != 4:
        shape = list(input.shape) if isinstance(input, Tensor) else type(input).__name__
        raise ValueError(f"input must have shape [B, C, H, W], got {shape}")
    if not (isinstance(spatial_scale, numbers.Real) and 0 < spatial_scale < math.inf):
        raise ValueError(f"spatial_scale must be a positive number, got {spatial_scale!r}")
    if isinstance(boxes, (list, tuple)):
        for i, b in enumerate(boxes):
            box_ops.check_boxes(b, f"boxes[{i}]", ndim=2, finite=False)
        if len(boxes) > len(input):
            raise ValueError(f"boxes has {len(boxes)} tensors but input has only "
                             f"{len(input)} images")
        if not boxes:
            return input.new_zeros((0, 5))
        ids = [torch.full((len(b), 1), i, dtype=b.dtype, device=b.device)
               for i, b in enumerate(boxes)]
        rois = torch.cat((torch.cat(ids), torch.cat(list(boxes))), 1)
    else:
        box_ops.check_boxes(boxes, "boxes", ndim=2, width=5, finite=False)
        rois = boxes
    rois = rois.to(dtype=input.dtype, device=input.device)
    if rois.device.type == "cpu" and len(rois):   # free on CPU; a sync on CUDA (see top)
        box_ops.check_finite(rois, "boxes")
        b = rois[:, 0]
        if bool((b < 0).any() | (b >= len(input)).any() | (b != b.floor()).any()):
            raise ValueError(f"boxes[:, 0] must hold batch indices in [0, {len(input) - 1}]")
    return rois


def _axis_samples(start: Tensor, bin_size: Tensor, bins: int, grid: int, size: int):
    """Bilinear taps along one axis for all RoIs at once.

    start, bin_size (Tensor[k]) -> lo, hi (int64 Tensor[k, bins, grid]) neighbour indices and
    w_lo, w_hi their weights; samples outside [-1, size] get weight 0, as in torchvision."""
    dt = start.dtype
    p = torch.arange(bins, dtype=dt, device=start.device)[None, :, None]
    i = torch.arange(grid, dtype=dt, device=start.device)[None, None, :] + 0.5
    s = start[:, None, None] + p * bin_size[:, None, None] + i * bin_size[:, None, None] / grid
    inside = (s >= -1.0) & (s <= size)                 # False for NaN too
    s = torch.where(inside, s, 0).clamp_(min=0)
    lo = s.long()
    at_edge = lo >= size - 1                            # sample on the last row: no neighbour
    lo = lo.clamp_(max=size - 1)
    hi = torch.where(at_edge, lo, lo + 1)
    frac = torch.where(at_edge, 0, s - lo)
    return lo, hi, (1 - frac) * inside, frac * inside


def _roi_align_grid(feats, batch, x1, y1, bin_w, bin_h, out_hw, grid, hw):
    """RoIs that share one sampling grid (SH, SW) -> Tensor[k, PH, PW, C].

    Every output bin is a weighted sum of 4 * SH * SW feature vectors: a bag of rows of the
    channels-last feature matrix, which F.embedding_bag sums with per-row weights in one
    fused, vectorised kernel (and whose backward scatters the gradient back)."""
    (ph, pw), (sh, sw), (H, W) = out_hw, grid, hw
    k = len(batch)
    ylo, yhi, wy0, wy1 = _axis_samples(y1, bin_h, ph, sh, H)      # [k, PH, SH]
    xlo, xhi, wx0, wx1 = _axis_samples(x1, bin_w, pw, sw, W)      # [k, PW, SW]
    # Bag layout per bin: [SH, 2 (low/high row), SW, 2 (low/high column)].
    rows = torch.stack((ylo, yhi), -1) * W + (batch * (H * W))[:, None, None, None]
    cols = torch.stack((xlo, xhi), -1)
    idx = rows[:, :, None, :, :, None, None] + cols[:, None, :, None, None, :, :]
    wy = torch.stack((wy0, wy1), -1) / max(sh * sw, 1)             # average over samples
    wx = torch.stack((wx0, wx1), -1)
    w = wy[:, :, None, :, :, None, None] * wx[:, None, :, None, None, :, :]
    bag = 4 * sh * sw
    offsets = torch.arange(0, k * ph * pw * bag, bag, device=feats.device) if bag else \
        torch.zeros(k * ph * pw, dtype=torch.long, device=feats.device)
    out = F.embedding_bag(idx.reshape(-1), feats, offsets, mode="sum",
                          per_sample_weights=w.reshape(-1).to(feats.dtype))
    return out.reshape(k, ph, pw, feats.shape[1])


def roi_align(input: Tensor, boxes: Tensor | list[Tensor], output_size,
              spatial_scale: float = 1.0, sampling_ratio: int = -1,
              aligned: bool = False) -> Tensor:
    """RoI Align (Mask R-CNN): average of bilinear samples in each of PH x PW bins.

    Args:
        input (Tensor[B, C, H, W]): feature maps.
        boxes (Tensor[K, 5] or list of Tensor[L, 4]): (batch index, x1, y1, x2, y2) rows, or
            one Tensor of xyxy boxes per image; image pixels.
        output_size (int or (PH, PW)): bins per RoI.
        spatial_scale (float): feature pixels per image pixel.
        sampling_ratio (int): SH = SW samples per bin side; <= 0: adaptive,
            ceil(roi_height / PH) and ceil(roi_width / PW) per RoI.
        aligned (bool): shift the RoI by -0.5 feature pixels so that pixel centres align
            (Detectron2); without it a RoI is at least 1 x 1 feature pixel.
    Returns:
        Tensor[K, C, PH, PW]. Samples outside [-1, H] x [-1, W] count as 0, samples in
        [-1, 0) are clamped to the border, as in torchvision.
    """
    rois = _rois(input, boxes, spatial_scale)
    out_hw = as_pair(output_size, "output_size", positive=True)
    if isinstance(sampling_ratio, bool) or not isinstance(sampling_ratio, int):
        raise ValueError(f"sampling_ratio must be an int, got {sampling_ratio!r}")
    B, C, H, W = input.shape
    batch = rois[:, 0].long()
    x1, y1, x2, y2 = (rois[:, 1:] * spatial_scale - (0.5 if aligned else 0.0)).unbind(1)
    roi_w, roi_h = x2 - x1, y2 - y1
    if not aligned:
        roi_w, roi_h = roi_w.clamp(min=1.0), roi_h.clamp(min=1.0)
    bin_h, bin_w = roi_h / out_hw[0], roi_w / out_hw[1]
    if (sampling_ratio > 0 and C <= GRID_SAMPLE_MAX_CHANNELS and input.device.type == "cpu"
            and H > 1 and W > 1 and len(rois)):
        # Few channels (crops of images): RoIs whose samples all fall in [-1, H] x [-1, W] are
        # bilinear samples with the border clamped, which F.grid_sample computes faster.
        fast = (_samples_inside(y1, bin_h, out_hw[0], sampling_ratio, H)
                & _samples_inside(x1, bin_w, out_hw[1], sampling_ratio, W))
        if bool(fast.any()):
            out = input.new_empty((len(rois), C) + out_hw)
            sel, rest = fast.nonzero().squeeze(1), (~fast).nonzero().squeeze(1)
            out.index_copy_(0, sel, _roi_align_by_grid_sample(
                input, batch[sel], x1[sel], y1[sel], bin_w[sel], bin_h[sel], out_hw, sampling_ratio))
            if len(rest):
                out.index_copy_(0, rest, _roi_align_bags(
                    input, batch[rest], x1[rest], y1[rest], bin_w[rest], bin_h[rest], roi_w[rest],
                    roi_h[rest], out_hw, sampling_ratio))
            return out
    return _roi_align_bags(input, batch, x1, y1, bin_w, bin_h, roi_w, roi_h, out_hw, sampling_ratio)


def _samples_inside(start: Tensor, bin_size: Tensor, bins: int, ratio: int, size: int) -> Tensor:
    """Tensor[k] bool: every sample of the RoI along one axis lies in [-1, size], where RoI Align
    reads the border for samples in [-1, 0) and beyond size - 1 (and 0 further out)."""
    first = start + 0.5 * bin_size / ratio
    last = start + bins * bin_size - 0.5 * bin_size / ratio
    return (torch.minimum(first, last) >= -1) & (torch.maximum(first, last) <= size)


def _roi_align_by_grid_sample(input, batch, x1, y1, bin_w, bin_h, out_hw, ratio) -> Tensor:
    """RoIs whose samples lie in [-1, H] x [-1, W] (:func:`_samples_inside`), a fixed ``ratio``
    -> Tensor[k, C, PH, PW]: the ratio x ratio samples of each bin by F.grid_sample (bilinear,
    border clamped, pixel centres at -1 and 1: align_corners=True), averaged by avg_pool2d."""
    (ph, pw), (_, C, H, W) = out_hw, input.shape
    k = len(batch)
    ty = (torch.arange(ph * ratio, device=input.device, dtype=input.dtype) + 0.5) / ratio   # in bins
    tx = (torch.arange(pw * ratio, device=input.device, dtype=input.dtype) + 0.5) / ratio
    gy = (y1[:, None] + ty * bin_h[:, None]) * (2 / (H - 1)) - 1                           # [k, PH r]
    gx = (x1[:, None] + tx * bin_w[:, None]) * (2 / (W - 1)) - 1                           # [k, PW r]
    grid = torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), -1)     # [k, PH r, PW r, 2]
    out = input.new_empty((k, C, ph, pw))
    for b in batch.unique().tolist():   # one call per image: its map expanded (not copied) per RoI
        sel = (batch == b).nonzero().squeeze(1)
        samples = F.grid_sample(input[b:b + 1].expand(len(sel), C, H, W), grid[sel], mode="bilinear",
                                padding_mode="border", align_corners=True)       # [n, C, PH r, PW r]
        out.index_copy_(0, sel, F.avg_pool2d(samples, ratio))
    return out


def _roi_align_bags(input, batch, x1, y1, bin_w, bin_h, roi_w, roi_h, out_hw, sampling_ratio) -> Tensor:
    """RoI Align by bags of rows (:func:`_roi_align_grid`) -> Tensor[K, C, PH, PW], every case."""
    B, C, H, W = input.shape
    # One contiguous row per feature pixel. (For B = 1 the reshape alone is a column-major
    # view, and embedding_bag on it is 30x slower.)
    feats = input.permute(0, 2, 3, 1).reshape(B * H * W, C).contiguous()
    if sampling_ratio > 0 or len(batch) == 0:
        grids = [(torch.arange(len(batch), device=input.device), (max(sampling_ratio, 0),) * 2)]
    else:   # grids differ per RoI: each distinct (SH, SW) is one vectorised group
        gh, gw = torch.ceil(bin_h).long(), torch.ceil(bin_w).long()
        per_roi = gh * gw * (out_hw[0] * out_hw[1] * 4)           # (index, weight) entries of one RoI
        if bool((per_roi > MAX_ROI_ENTRIES).any()):                 # a huge box would need terabytes
            k = int((per_roi > MAX_ROI_ENTRIES).nonzero()[0])
            raise ValueError(f"roi_align: RoI {k} is {roi_h[k].item():.4g} x {roi_w[k].item():.4g} feature pixels; "
                             f"the adaptive grid (sampling_ratio <= 0) would take {int(gh[k])} x {int(gw[k])} "
                             f"samples per bin, more than {MAX_ROI_ENTRIES:,} entries for one RoI. Check the boxes "
                             "(image pixels, scaled by spatial_scale) or pass a fixed sampling_ratio, e.g. 2")
        key = gh * (gw.max() + 1) + gw
        groups = (torch.nonzero(key == k).squeeze(1) for k in torch.unique(key).tolist())
        grids = [(sel, (int(gh[sel[0]]), int(gw[sel[0]]))) for sel in groups]
    # Bound the (index, weight) tensors: huge adaptive grids or many RoIs go in chunks.
    chunks = [(chunk, grid) for sel, grid in grids
              for chunk in sel.split(max(1, MAX_ENTRIES // (out_hw[0] * out_hw[1] * 4
                                                            * grid[0] * grid[1] or 1)))]
    with _one_thread_on_cpu(input.device) if len(chunks) > 1 else contextlib.nullcontext():
        parts = [_roi_align_grid(feats, batch[c], x1[c], y1[c], bin_w[c], bin_h[c], out_hw, grid,
                                 (H, W)).permute(0, 3, 1, 2) for c, grid in chunks]
        if len(parts) == 1:                 # all RoIs in order (keeps K = 0 in the graph too)
            return parts[0].contiguous()
        # Each part lands in its rows, transposed to [k, C, PH, PW] by the same copy.
        out = input.new_empty((len(batch), C) + out_hw)
        for (c, _), part in zip(chunks, parts):
            out.index_copy_(0, c, part)
    return out


def _round_half_away(x: Tensor) -> Tensor:
    # C's round(): 2.5 -> 3, -2.5 -> -3 (torch.round rounds half to even: 2.5 -> 2).
    t = torch.trunc(x)
    return torch.where((x - t).abs() >= 0.5, t + torch.sign(x), t)


def roi_pool(input: Tensor, boxes: Tensor | list[Tensor], output_size,
             spatial_scale: float = 1.0) -> Tensor:
    """RoI max pooling (Fast R-CNN) on integer bins.

    The RoI is rounded to feature pixels (half away from zero), at least 1 x 1, cut into
    PH x PW bins with floor/ceil boundaries (neighbouring bins may share a pixel), clipped to
    the map; each bin takes the max of its pixels, an empty bin gives 0. The gradient flows
    to the first maximal pixel of each bin (row-major), as in torchvision.

    Args:
        input (Tensor[B, C, H, W]); boxes (Tensor[K, 5] or list of Tensor[L, 4]);
        output_size (int or (PH, PW)); spatial_scale (float).
    Returns:
        Tensor[K, C, PH, PW].
    """
    rois = _rois(input, boxes, spatial_scale)
    ph, pw = as_pair(output_size, "output_size", positive=True)
    B, C, H, W = input.shape
    if rois.device.type != "cpu" and len(rois) and not bool(torch.isfinite(rois).all()):
        raise ValueError("boxes must be finite, got NaN or inf")   # we sync below anyway
    dt, dev = input.dtype, input.device
    start = _round_half_away(rois[:, 1:3] * spatial_scale).long()   # (x1, y1)
    size = (_round_half_away(rois[:, 3:5] * spatial_scale).long() - start + 1).clamp(min=1)

    def bins(n: int, axis: int, limit: int) -> tuple[Tensor, Tensor]:
        bin_size = size[:, axis].to(dt)[:, None] / n                   # [K, 1]
        p = torch.arange(n, dtype=dt, device=dev)[None]
        lo = torch.floor(p * bin_size).long() + start[:, axis, None]
        hi = torch.ceil((p + 1) * bin_size).long() + start[:, axis, None]
        return lo.clamp(0, limit), hi.clamp(0, limit)                  # [K, n]

    (y0, y1), (x0, x1) = bins(ph, 1, H), bins(pw, 0, W)
    # Every bin as a row: its first pixel (flat index into the batch) and its window shape.
    first = (rois[:, 0].long() * (H * W))[:, None, None] + (y0 * W)[:, :, None] + x0[:, None, :]
    bin_h = (y1 - y0).clamp(min=0)[:, :, None].expand(-1, -1, pw).reshape(-1)
    bin_w = (x1 - x0).clamp(min=0)[:, None, :].expand(-1, ph, -1).reshape(-1)
    first = first.reshape(-1)
    feats = input.detach().permute(0, 2, 3, 1).reshape(B * H * W, C).contiguous()
    has_nan = bool(torch.isnan(feats).any()) if feats.is_floating_point() else False
    lowest = -torch.finfo(torch.float32).max       # torchvision's initial max, also for float64
    # Without a gradient to route (inference), the maxima themselves are kept, not their pixels.
    track = input.requires_grad and torch.is_grad_enabled()
    if track:
        arg = torch.full((len(first), C), -1, dtype=torch.long, device=dev)
    else:
        out = torch.where((bin_h * bin_w == 0)[:, None], 0.0, lowest).to(dt).expand(-1, C).contiguous()
    # Bins of one window shape (h, w) are gathered into a Tensor[n, h * w, C] and reduced at
    # once; a handful of shapes occur. torch.max returns the first maximum, in row-major
    # window order, like the kernel's strict ">" scan.
    shape = bin_h * (int(bin_w.max()) + 1 if len(bin_w) else 1) + bin_w
    with _one_thread_on_cpu(dev):
        for key in torch.unique(shape).tolist():
            sel = torch.nonzero(shape == key).squeeze(1)
            h, w = int(bin_h[sel[0]]), int(bin_w[sel[0]])
            if h * w == 0:
                continue                               # an empty bin: stays -1, gives 0
            window = (torch.arange(h, device=dev)[:, None] * W
                      + torch.arange(w, device=dev)).reshape(-1)      # row-major offsets
            for chunk in sel.split(max(1, 2**24 // (h * w * max(C, 1)))):
                pos = first[chunk, None] + window                      # [n, h * w]
                vals = feats.index_select(0, pos.reshape(-1)).view(len(chunk), h * w, C)
                if has_nan:                            # the kernel's ">" never picks a NaN
                    vals = vals.masked_fill(vals.isnan(), -math.inf)
                if not track:                          # below the initial max: the initial max
                    out[chunk] = vals.amax(dim=1).clamp(min=lowest)
                    continue
                best, i = vals.max(dim=1)
                # Only values above the kernel's initial max are ever picked.
                arg[chunk] = torch.where(best > lowest, pos.gather(1, i), -1)
    if track:
        # Re-read the winners from the differentiable input: gather's backward adds the gradient
        # to exactly those pixels.
        src = input.permute(0, 2, 3, 1).reshape(B * H * W, C)
        out = src.gather(0, arg.clamp(min=0))
        fill = torch.where((bin_h * bin_w == 0)[:, None], 0.0, lowest).to(dt)
        out = torch.where(arg >= 0, out, fill)
    return out.reshape(len(rois), ph, pw, C).permute(0, 3, 1, 2).contiguous()


class RoIAlign(nn.Module):
    """Holds the settings of :func:`roi_align`; see there."""

    def __init__(self, output_size, spatial_scale: float, sampling_ratio: int,
                 aligned: bool = False):
        super().__init__()
        self.output_size, self.spatial_scale = as_pair(output_size, "output_size", positive=True), spatial_scale
        self.sampling_ratio, self.aligned = sampling_ratio, aligned

    def forward(self, input: Tensor, rois: Tensor | list[Tensor]) -> Tensor:
        return roi_align(input, rois, self.output_size, self.spatial_scale,
                         self.sampling_ratio, self.aligned)

    def extra_repr(self) -> str:
        return (f"output_size={self.output_size}, spatial_scale={self.spatial_scale}, "
                f"sampling_ratio={self.sampling_ratio}, aligned={self.aligned}")


class RoIPool(nn.Module):
    """Holds the settings of :func:`roi_pool`; see there."""

    def __init__(self, output_size, spatial_scale: float):
        super().__init__()
        self.output_size, self.spatial_scale = as_pair(output_size, "output_size", positive=True), spatial_scale

    def forward(self, input: Tensor, rois: Tensor | list[Tensor]) -> Tensor:
        return roi_pool(input, rois, self.output_size, self.spatial_scale)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}, spatial_scale={self.spatial_scale}"
