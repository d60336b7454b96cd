"""Region proposals by selective search (Uijlings et al., IJCV 2013).

Instead of classifying every window (``sliding_window``), propose a few hundred boxes likely to
hold an object. Selective search groups an over-segmentation bottom-up; every region the
grouping makes, at every level of the hierarchy, is a proposal. The algorithm:

  1. over-segment the image (Felzenszwalb & Huttenlocher graph segmentation, scale k);
  2. describe every segment: colour and texture histograms, size, bounding box, neighbours;
  3. score every pair of neighbours: a sum of colour, texture, size and fill similarities;
  4. merge the most similar pair; the new region's features follow from its two parts
     (size-weighted histograms, summed size, union box, union of neighbours);
  5. score the new region against its neighbours; repeat 4-5 until one region is left;
  6. diversify: one hierarchy per (colour space, k, similarity strategy);
  7. rank: in each hierarchy the last region made (the whole image) has position 1, earlier
     ones larger positions; priority = position x RND, sort all ascending, drop duplicates.

Shape key
    H, W   image height and width          R   segments of one over-segmentation
    C      channels of a colour space (3)  D   histogram bins per region (colour 75, texture 240)
    P      pairs of adjacent segments      K   proposals
Boxes are float32 xyxy in absolute pixels with pixel edges: a region covering columns c0..c1
and rows r0..r1 has the box (c0, r0, c1 + 1, r1 + 1).
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage
from skimage import color
from skimage.segmentation import felzenszwalb
from torch import Tensor


COLOUR_SPACES = ("rgb", "hsv", "lab")
SIMILARITIES = ("colour", "texture", "size", "fill")
COLOUR_BINS = 25      # per channel (the paper's)
TEXTURE_BINS = 10     # per channel and orientation
ORIENTATIONS = 8      # Gaussian derivatives (sigma = 1) at multiples of 45 degrees


@dataclass(frozen=True)
class SelectiveSearchConfig:
    """Settings of :func:`selective_search`; one hierarchy per (colour space, scale, strategy).

    scales: Felzenszwalb's k, in units of 0-255 intensities: larger k, larger segments.
    sigma: Gaussian smoothing before the over-segmentation (pixels).
    min_size: smallest segment in pixels. 20 suits 128 x 128 images: a segment is then at
        least a 5 x 4 patch, small next to the shapes' objects (>= about 10 x 10) but large
        enough that background noise does not shatter into hundreds of specks.
    colour_spaces: among "rgb", "hsv", "lab" (skimage.color); segmentation and histograms both
        use the space.
    similarities: diversification strategies, each a tuple of names among "colour", "texture",
        "size", "fill" whose similarities are summed.
    max_proposals: keep at most this many of the best-ranked boxes (None keeps all).
    min_box_size: drop boxes with a side shorter than this many pixels (0 keeps all).
    """
    scales: tuple[float, ...] = (50.0, 100.0, 200.0)
    sigma: float = 0.8
    min_size: int = 20
    colour_spaces: tuple[str, ...] = ("rgb", "hsv")
    similarities: tuple[tuple[str, ...], ...] = (("colour", "texture", "size", "fill"),
                                                 ("texture", "size", "fill"))
    max_proposals: int | None = None
    min_box_size: int = 0

    def __post_init__(self):
        if not self.scales or any(not float(k) > 0 for k in self.scales):
            raise ValueError(f"scales must be a non-empty tuple of positive numbers, got {self.scales}")
        if not self.sigma >= 0:
            raise ValueError(f"sigma must be >= 0, got {self.sigma}")
        if self.min_size < 1:
            raise ValueError(f"min_size must be >= 1 pixel, got {self.min_size}")
        if not self.colour_spaces or any(cs not in COLOUR_SPACES for cs in self.colour_spaces):
            raise ValueError(f"unknown colour space in {self.colour_spaces}; choose from {COLOUR_SPACES}")
        if not self.similarities:
            raise ValueError("similarities must hold at least one strategy")
        for strategy in self.similarities:
            _check_strategy(strategy)
        if self.max_proposals is not None and self.max_proposals < 1:
            raise ValueError(f"max_proposals must be None or >= 1, got {self.max_proposals}")
        if self.min_box_size < 0:
            raise ValueError(f"min_box_size must be >= 0, got {self.min_box_size}")


def _check_strategy(strategy) -> None:
    if isinstance(strategy, str) or not strategy or any(s not in SIMILARITIES for s in strategy):
        raise ValueError(f"unknown similarity strategy {strategy!r}: a non-empty tuple of names "
                         f"among {SIMILARITIES}")


# ----------------------------------------------------------------------------- inputs
def as_float_image(image) -> np.ndarray:
    """Tensor[3, H, W] float in [0, 1], or np.ndarray uint8[H, W, 3] -> float32[H, W, 3] in [0, 1].

    A float np.ndarray[H, W, 3] in [0, 1] is accepted too. uint8 is divided by 255 in float32,
    the way ``tensor.float() / 255`` does, so both inputs of the same picture give equal arrays.
    """
    if isinstance(image, Tensor):
        if image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(f"image as a Tensor must have shape [3, H, W], got {list(image.shape)}")
        if not image.is_floating_point():
            raise ValueError(f"image as a Tensor must be floating point in [0, 1], got dtype "
                             f"{image.dtype} (divide uint8 images by 255)")
        array = image.detach().cpu().float().permute(1, 2, 0).numpy()
    elif isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"image as an np.ndarray must have shape [H, W, 3], got {list(image.shape)}")
        if image.dtype == np.uint8:
            array = image.astype(np.float32) / np.float32(255)
        elif np.issubdtype(image.dtype, np.floating):
            array = image.astype(np.float32)
        else:
            raise ValueError(f"image as an np.ndarray must be uint8 or float in [0, 1], got dtype {image.dtype}")
    else:
        raise ValueError(f"image must be a Tensor[3, H, W] or an np.ndarray[H, W, 3], got {type(image).__name__}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"image is empty: height {array.shape[0]}, width {array.shape[1]}")
    if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
        raise ValueError("float image values must be finite and in [0, 1]")
    return np.ascontiguousarray(array)


def convert_colour(image: np.ndarray, space: str) -> np.ndarray:
    """float[H, W, 3] RGB in [0, 1] -> float[H, W, 3] in ``space``, every channel in [0, 1]."""
    if space == "rgb":
        return image
    if space == "hsv":
        return color.rgb2hsv(image).astype(np.float32)
    if space == "lab":  # L in [0, 100], a and b in about [-128, 127]
        lab = color.rgb2lab(image)
        lab = (lab + np.array([0.0, 128.0, 128.0])) / np.array([100.0, 255.0, 255.0])
        return np.clip(lab, 0, 1).astype(np.float32)
    raise ValueError(f"unknown colour space {space!r}; choose from {COLOUR_SPACES}")


# ----------------------------------------------------------------------------- region features
@dataclass
class RegionFeatures:
    """What the grouping knows of each region (row r describes region r).

    colour (float64[R, C * 25]) and texture (float64[R, C * 8 * 10]): L1-normalised histograms;
    size (int64[R]): pixels; boxes (int64[R, 4]): xyxy pixel edges; pairs (int64[P, 2]):
    adjacent regions (i < j); image_size: H * W pixels.
    """
    colour: np.ndarray
    texture: np.ndarray
    size: np.ndarray
    boxes: np.ndarray
    pairs: np.ndarray
    image_size: int


def texture_responses(image: np.ndarray) -> np.ndarray:
    """float[H, W, C] -> float[H, W, C, 8] in [0, 1]: Gaussian derivatives (sigma = 1) in 8
    orientations, half-wave rectified (orientation t keeps edges that rise along t, t + 180
    degrees the others) and scaled by the image's largest response."""
    theta = (np.arange(ORIENTATIONS) * (2 * np.pi / ORIENTATIONS)).astype(np.float32)
    image = image.astype(np.float32)
    dx = np.stack([ndimage.gaussian_filter(image[..., c], 1.0, order=(0, 1)) for c in range(image.shape[2])], -1)
    dy = np.stack([ndimage.gaussian_filter(image[..., c], 1.0, order=(1, 0)) for c in range(image.shape[2])], -1)
    resp = np.maximum(dx[..., None] * np.cos(theta) + dy[..., None] * np.sin(theta), 0)
    return resp / max(float(resp.max()), 1e-12)


def _histograms(segments: np.ndarray, values: np.ndarray, bins: int, num_regions: int) -> np.ndarray:
    """int labels[H, W], values[H, W, F] in [0, 1] -> float64[R, F * bins], each row L1-normalised:
    one np.bincount over (region, feature, bin) indices."""
    feats = values.reshape(segments.size, -1)
    num_feats = feats.shape[1]  # int32 indices where they fit: half the memory traffic of int64
    itype = np.int32 if num_regions * num_feats * bins < 2**31 else np.int64
    idx = (feats * np.float32(bins)).astype(itype)
    np.minimum(idx, bins - 1, out=idx)
    idx += np.arange(num_feats, dtype=itype) * bins
    idx += (segments.reshape(-1, 1) * (num_feats * bins)).astype(itype)
    hist = np.bincount(idx.ravel(), minlength=num_regions * num_feats * bins).astype(np.float64)
    hist = hist.reshape(num_regions, num_feats * bins)
    return hist / hist.sum(1, keepdims=True)


def adjacent_pairs(segments: np.ndarray) -> np.ndarray:
    """int labels[H, W] -> int64[P, 2]: the pairs (i < j) of labels that touch horizontally or
    vertically, each once."""
    seg = segments.astype(np.int64)
    a = np.concatenate([seg[:, :-1].ravel(), seg[:-1, :].ravel()])
    b = np.concatenate([seg[:, 1:].ravel(), seg[1:, :].ravel()])
    keep = a != b
    lo, hi = np.minimum(a[keep], b[keep]), np.maximum(a[keep], b[keep])
    n = int(seg.max()) + 1
    codes = np.unique(lo * n + hi)
    return np.stack([codes // n, codes % n], 1)


def region_features(segments: np.ndarray, image: np.ndarray, texture: np.ndarray | None = None) -> RegionFeatures:
    """Features of every segment, all vectorized over pixels.

    Args:
        segments (int[H, W]): labels 0..R-1, every label present.
        image (float[H, W, C]): in [0, 1], in the colour space the histograms describe.
        texture (float[H, W, C, 8] | None): :func:`texture_responses` of ``image`` (computed
            here when None; pass it to share it among several segmentations).
    """
    segments = _check_segments(segments)
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[:2] != segments.shape:
        raise ValueError(f"image must be an np.ndarray[H, W, C] of the segments' size {segments.shape}, "
                         f"got {getattr(image, 'shape', type(image).__name__)}")
    if not np.issubdtype(image.dtype, np.floating) or image.min() < 0 or image.max() > 1:
        raise ValueError("image must be float in [0, 1] (see as_float_image)")
    num = int(segments.max()) + 1
    if texture is None:
        texture = texture_responses(image)
    slices = ndimage.find_objects(segments + 1)  # (rows, cols) per label
    boxes = np.array([[s[1].start, s[0].start, s[1].stop, s[0].stop] for s in slices], dtype=np.int64)
    return RegionFeatures(colour=_histograms(segments, image, COLOUR_BINS, num),
                          texture=_histograms(segments, texture, TEXTURE_BINS, num),
                          size=np.bincount(segments.ravel(), minlength=num).astype(np.int64),
                          boxes=boxes, pairs=adjacent_pairs(segments), image_size=segments.size)


def _check_segments(segments) -> np.ndarray:
    if not isinstance(segments, np.ndarray) or segments.ndim != 2 or segments.size == 0 \
            or not np.issubdtype(segments.dtype, np.integer):
        raise ValueError("segments must be a non-empty integer np.ndarray[H, W] of labels")
    if segments.min() < 0 or np.bincount(segments.ravel()).min() == 0:
        raise ValueError("segment labels must be 0..R-1 with every label present")
    return segments


# ----------------------------------------------------------------------------- similarities
def colour_similarity(hist_i: np.ndarray, hist_j: np.ndarray) -> np.ndarray:
    """Histogram intersection of L1-normalised colour histograms float[..., D] -> float[...] in
    [0, 1]: 1 for equal histograms, 0 for disjoint ones."""
    return np.minimum(hist_i, hist_j).sum(-1)


def texture_similarity(hist_i: np.ndarray, hist_j: np.ndarray) -> np.ndarray:
    """Histogram intersection of L1-normalised texture histograms, as :func:`colour_similarity`."""
    return np.minimum(hist_i, hist_j).sum(-1)


def size_similarity(size_i, size_j, image_size: int):
    """1 - (s_i + s_j) / s_im: near 1 while both regions are small, so small regions merge
    first, all over the image, and no one region swallows the rest one segment at a time."""
    return 1.0 - (np.asarray(size_i) + np.asarray(size_j)) / image_size


def fill_similarity(box_i: np.ndarray, box_j: np.ndarray, size_i, size_j, image_size: int):
    """1 - (area(union box) - s_i - s_j) / s_im for xyxy boxes [..., 4]: 1 when the two regions
    fill their joint bounding box, low when merging them leaves a large gap (one region
    inside a hole of the other scores high: they fit)."""
    lo, hi = np.minimum(box_i[..., :2], box_j[..., :2]), np.maximum(box_i[..., 2:], box_j[..., 2:])
    area = np.prod(hi - lo, -1)
    return 1.0 - (area - np.asarray(size_i) - np.asarray(size_j)) / image_size


def region_similarity(features: RegionFeatures, i, j, similarity: tuple[str, ...]) -> np.ndarray:
    """The summed similarities of ``similarity`` between regions i and j (ints or int arrays of
    one shape, broadcast) -> float64 of that shape, in [0, len(similarity)]."""
    f, total = features, 0.0
    if "colour" in similarity:
        total = total + colour_similarity(f.colour[i], f.colour[j])
    if "texture" in similarity:
        total = total + texture_similarity(f.texture[i], f.texture[j])
    if "size" in similarity:
        total = total + size_similarity(f.size[i], f.size[j], f.image_size)
    if "fill" in similarity:
        total = total + fill_similarity(f.boxes[i], f.boxes[j], f.size[i], f.size[j], f.image_size)
    return np.asarray(total, dtype=np.float64)


# ----------------------------------------------------------------------------- grouping
@dataclass
class Hierarchy:
    """The result of one greedy grouping of R segments: 2R - 1 regions, the segments first
    (0..R-1) and then the merged regions in the order they were made; region R + t comes from
    merging ``merges[t]``. boxes int64[2R - 1, 4] xyxy pixel edges; sizes int64[2R - 1];
    merges int64[R - 1, 2]; scores float64[R - 1]: the similarity of each merged pair."""
    boxes: np.ndarray
    sizes: np.ndarray
    merges: np.ndarray
    scores: np.ndarray


def hierarchical_grouping(segments: np.ndarray, features: RegionFeatures,
                          similarity: tuple[str, ...] = SIMILARITIES) -> Hierarchy:
    """The greedy merge loop of one strategy: merge the most similar neighbours until one region
    is left (R - 1 merges for R segments). A heap holds the pair similarities; pairs with a
    merged-away region are skipped when popped (lazy deletion).

    Args:
        segments (int[H, W]): labels 0..R-1 (all present), e.g. from ``felzenszwalb``.
        features: :func:`region_features` of ``segments``.
        similarity: names among "colour", "texture", "size", "fill", summed.
    """
    _check_strategy(similarity)
    segments = _check_segments(segments)
    num = int(segments.max()) + 1
    if features.size.shape[0] != num or features.image_size != segments.size:
        raise ValueError(f"features describe {features.size.shape[0]} regions of a {features.image_size}-pixel "
                         f"image, segments have {num} labels and {segments.size} pixels")
    total = 2 * num - 1  # room for every region the grouping makes

    def grow(a):
        return np.concatenate([a, np.zeros((total - num,) + a.shape[1:], a.dtype)])
    f = RegionFeatures(grow(features.colour), grow(features.texture), grow(features.size),
                       grow(features.boxes), features.pairs, features.image_size)
    neighbours = [set() for _ in range(num)]
    for a, b in features.pairs.tolist():
        neighbours[a].add(b)
        neighbours[b].add(a)
    pairs = features.pairs
    sims = region_similarity(f, pairs[:, 0], pairs[:, 1], similarity)
    heap = list(zip((-sims).tolist(), pairs[:, 0].tolist(), pairs[:, 1].tolist()))
    heapq.heapify(heap)
    alive = np.zeros(total, dtype=bool)
    alive[:num] = True
    merges, scores = [], []
    for t in range(num, total):
        while True:  # the best pair whose regions both still exist
            neg, i, j = heapq.heappop(heap)
            if alive[i] and alive[j]:
                break
        si, sj = f.size[i], f.size[j]
        f.size[t] = si + sj
        f.colour[t] = (si * f.colour[i] + sj * f.colour[j]) / (si + sj)
        f.texture[t] = (si * f.texture[i] + sj * f.texture[j]) / (si + sj)
        f.boxes[t, :2] = np.minimum(f.boxes[i, :2], f.boxes[j, :2])
        f.boxes[t, 2:] = np.maximum(f.boxes[i, 2:], f.boxes[j, 2:])
        alive[[i, j]] = False
        alive[t] = True
        nb = (neighbours[i] | neighbours[j]) - {i, j}
        neighbours.append(nb)
        for n in nb:
            neighbours[n] -= {i, j}
            neighbours[n].add(t)
        if nb:
            js = np.fromiter(sorted(nb), dtype=np.int64, count=len(nb))
            for s, n in zip(region_similarity(f, t, js, similarity).tolist(), js.tolist()):
                heapq.heappush(heap, (-s, n, t))  # n < t: older regions have smaller indices
        merges.append((i, j))
        scores.append(-neg)
    return Hierarchy(boxes=f.boxes, sizes=f.size, merges=np.array(merges, dtype=np.int64).reshape(-1, 2),
                     scores=np.array(scores, dtype=np.float64))


# ----------------------------------------------------------------------------- selective search
def selective_search(image, config: SelectiveSearchConfig | None = None, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Proposals of one image, best first.

    Args:
        image: Tensor[3, H, W] float in [0, 1] (the torchvision contract) or np.ndarray
            uint8[H, W, 3] (float[H, W, 3] in [0, 1] also works).
        config: the hierarchies to build (defaults: :class:`SelectiveSearchConfig`).
        seed: seeds the RND of the ranking (numpy Generator): equal seeds, equal output.
    Returns:
        boxes (Tensor[K, 4]): float32 xyxy pixel edges (see the module docstring), no two equal.
        priority (Tensor[K]): float32 position x RND of each box, ascending (lower is better).
    """
    cfg = config if config is not None else SelectiveSearchConfig()
    rgb = as_float_image(image)
    rng = np.random.default_rng(seed)
    all_boxes, all_priority = [], []
    for space in cfg.colour_spaces:
        img = convert_colour(rgb, space)
        texture = texture_responses(img)
        for k in cfg.scales:
            segments = felzenszwalb(img, scale=float(k), sigma=cfg.sigma, min_size=int(cfg.min_size),
                                    channel_axis=-1)
            if (np.bincount(segments.ravel()) == 0).any():  # labels 0..R-1, all present
                segments = np.unique(segments, return_inverse=True)[1].reshape(segments.shape)
            features = region_features(segments, img, texture)
            for strategy in cfg.similarities:
                hierarchy = hierarchical_grouping(segments, features, strategy)
                n = len(hierarchy.boxes)
                position = n - np.arange(n)  # the last region made (the whole image) is 1
                all_boxes.append(hierarchy.boxes)
                all_priority.append(position * rng.random(n))
    boxes, priority = np.concatenate(all_boxes), np.concatenate(all_priority)
    order = np.argsort(priority, kind="stable")
    boxes, priority = boxes[order], priority[order]
    first = np.sort(np.unique(boxes, axis=0, return_index=True)[1])  # best-ranked copy of each box
    boxes, priority = boxes[first], priority[first]
    if cfg.min_box_size > 0:
        keep = ((boxes[:, 2:] - boxes[:, :2]) >= cfg.min_box_size).all(1)
        boxes, priority = boxes[keep], priority[keep]
    if cfg.max_proposals is not None:
        boxes, priority = boxes[:cfg.max_proposals], priority[:cfg.max_proposals]
    return torch.from_numpy(boxes.astype(np.float32)), torch.from_numpy(priority.astype(np.float32))


class SelectiveSearch:
    """Holds a config and a seed; ``SelectiveSearch()(image)`` -> boxes Tensor[K, 4], best first.
    See :func:`selective_search`."""

    def __init__(self, config: SelectiveSearchConfig | None = None, seed: int = 0):
        self.config = config if config is not None else SelectiveSearchConfig()
        self.seed = seed

    def __call__(self, image) -> Tensor:
        return selective_search(image, self.config, self.seed)[0]

    def __repr__(self) -> str:
        return f"SelectiveSearch({self.config}, seed={self.seed})"
