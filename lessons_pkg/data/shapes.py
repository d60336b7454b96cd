"""The shapes generator: synthetic scenes with exact boxes, instance masks and semantic masks.

A scene is a deterministic function of ``(config, seed, index)``: the same triple gives the
same pixels on every machine, so stored notebook outputs and committed data reproduce.

Shape key: H, W image size; N objects kept in the targets; C classes.

How a scene is made (painter's order, back to front):
1. a textured, noisy background (smooth colour blobs plus stripes);
2. 1..K class objects and a few *distractors* (shapes of no class) in random order, each with
   a random size, colour, rotation and position, shaded by a soft gradient;
3. each object's *visible* mask is what later shapes leave uncovered; an object whose visible
   part falls below ``min_visible`` of its full area is dropped from the targets (its pixels stay
   in the image and in the semantic mask, like a fragment no annotator would box);
4. Gaussian pixel noise, then quantization to uint8 like a real photograph.

Boxes are tight around the visible mask in COCO's pixel-edge convention: a mask that covers
columns 10..19 gives ``x1 = 10, x2 = 20`` (what ``pycocotools.mask.toBbox`` returns).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

# Every shape the generator can draw. A config picks its classes and distractors from these.
ALL_SHAPES = ("circle", "square", "triangle", "star", "hexagon", "cross", "ring", "crescent", "bar")


@dataclass(frozen=True)
class ShapesConfig:
    """Difficulty knobs of the generator. The defaults leave room between methods.

    Sizes are circumscribed diameters in pixels; a range is ``(low, high)`` inclusive.
    """

    image_size: tuple[int, int] = (128, 128)  # (H, W)
    classes: tuple[str, ...] = ("circle", "square", "triangle", "star")
    num_objects: tuple[int, int] = (1, 6)
    size_range: tuple[float, float] = (12.0, 48.0)
    max_overlap: float = 0.5  # largest IoU allowed between two placed shapes' boxes
    min_visible: float = 0.45  # objects less visible than this (fraction of area) are dropped
    min_pixels: int = 12  # ... and so are visible parts smaller than this many pixels
    distractors: tuple[str, ...] = ("ring", "cross", "bar")
    num_distractors: tuple[int, int] = (0, 2)
    texture: float = 0.35  # background texture amplitude in [0, 1]
    shading: float = 0.25  # strength of the gradient that shades each shape
    noise: float = 0.04  # std of the Gaussian pixel noise, in [0, 1] intensity units
    min_contrast: float = 0.3  # least RGB distance between a shape and the background under it
    single_object: bool = False  # exactly one fully visible class object (classification & localization)

    def __post_init__(self):
        h, w = self.image_size
        problems = []
        if h < 16 or w < 16:
            problems.append(f"image_size must be at least 16x16, got {self.image_size}")
        unknown = [s for s in self.classes + self.distractors if s not in ALL_SHAPES]
        if unknown:
            problems.append(f"unknown shapes {unknown}; choose from {ALL_SHAPES}")
        if not self.classes:
            problems.append("classes must name at least one shape")
        if set(self.classes) & set(self.distractors):
            problems.append(f"a shape cannot be both a class and a distractor: "
                            f"{sorted(set(self.classes) & set(self.distractors))}")
        lo, hi = self.num_objects
        if not 1 <= lo <= hi:
            problems.append(f"num_objects must satisfy 1 <= low <= high, got {self.num_objects}")
        lo, hi = self.size_range
        if not 4 <= lo <= hi <= min(h, w):
            problems.append(f"size_range must satisfy 4 <= low <= high <= min(image_size), got {self.size_range}")
        lo, hi = self.num_distractors
        if not 0 <= lo <= hi:
            problems.append(f"num_distractors must satisfy 0 <= low <= high, got {self.num_distractors}")
        if self.num_distractors[1] > 0 and not self.distractors:
            problems.append("num_distractors > 0 needs at least one distractor shape")
        for name in ("max_overlap", "min_visible", "texture", "shading"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                problems.append(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.noise < 0:
            problems.append(f"noise must be >= 0, got {self.noise}")
        if problems:
            raise ValueError("invalid ShapesConfig: " + "; ".join(problems))

    @property
    def num_classes(self) -> int:
        """C, the number of object classes (labels run 1..C; 0 is background)."""
        return len(self.classes)

    def replace(self, **changes) -> "ShapesConfig":
        """A copy with some knobs changed: ``config.replace(num_objects=(1, 3))``."""
        return dataclasses.replace(self, **changes)


def preset(name: str) -> ShapesConfig:
    """Named difficulty levels: ``easy``, ``default``, ``hard``, ``single`` and ``pretrain``.

    ``single`` is the classification & localization task (one class object per image);
    ``pretrain`` is a wider distribution (all nine shapes as classes, no distractors) for
    pretraining a backbone on a different task.
    """
    presets = {
        "easy": ShapesConfig(num_objects=(1, 3), size_range=(20.0, 48.0), distractors=(),
                             num_distractors=(0, 0), texture=0.1, noise=0.02, max_overlap=0.1),
        "default": ShapesConfig(),
        "hard": ShapesConfig(num_objects=(3, 10), size_range=(8.0, 40.0), max_overlap=0.7,
                             num_distractors=(1, 4), texture=0.5, noise=0.06, min_contrast=0.2),
        "single": ShapesConfig(num_objects=(1, 1), size_range=(24.0, 80.0), single_object=True,
                               num_distractors=(0, 1)),
        "pretrain": ShapesConfig(classes=ALL_SHAPES, distractors=(), num_distractors=(0, 0),
                                 num_objects=(1, 4), size_range=(16.0, 56.0)),
    }
    if name not in presets:
        raise ValueError(f"unknown preset {name!r}; choose from {sorted(presets)}")
    return presets[name]


@dataclass
class Scene:
    """One generated scene, as numpy arrays (the Dataset turns them into tensors).

    image (uint8[H, W, 3]); boxes (float32[N, 4]): xyxy, absolute pixels, tight around the
    visible mask; labels (int64[N]): 1..C; masks (uint8[N, H, W]): visible part only;
    semantic (int64[H, W]): 0 background, else the class of the topmost class shape.
    """

    image: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    masks: np.ndarray
    semantic: np.ndarray
    shapes: list[str] = field(default_factory=list)  # the kept objects' shape names
    visible: np.ndarray | None = None  # float32[N]: the visible fraction of each kept object's area


def _polygon(shape: str, rotation: float) -> np.ndarray | None:
    """Unit-circumradius vertices (float[V, 2], x right, y down) or None for round shapes."""
    if shape in ("circle", "ring", "crescent"):
        return None
    if shape == "square":
        angles, radii = np.pi / 4 + np.arange(4) * np.pi / 2, np.ones(4)
    elif shape == "triangle":
        angles, radii = -np.pi / 2 + np.arange(3) * 2 * np.pi / 3, np.ones(3)
    elif shape == "hexagon":
        angles, radii = np.arange(6) * np.pi / 3, np.ones(6)
    elif shape == "star":
        angles = -np.pi / 2 + np.arange(10) * np.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
    elif shape == "cross":  # a plus sign with arms of half-width a
        a = 0.3
        xy = np.array([[a, 1], [a, a], [1, a], [1, -a], [a, -a], [a, -1],
                       [-a, -1], [-a, -a], [-1, -a], [-1, a], [-a, a], [-a, 1]], dtype=np.float64)
        xy /= np.hypot(1, a)
        angles, radii = np.arctan2(xy[:, 1], xy[:, 0]), np.hypot(xy[:, 0], xy[:, 1])
    elif shape == "bar":  # a 4:1 rectangle
        half = np.array([[1.0, 0.25], [1.0, -0.25], [-1.0, -0.25], [-1.0, 0.25]]) / np.hypot(1, 0.25)
        angles, radii = np.arctan2(half[:, 1], half[:, 0]), np.hypot(half[:, 0], half[:, 1])
    else:  # pragma: no cover - guarded by ShapesConfig
        raise ValueError(f"unknown shape {shape!r}")
    angles = angles + rotation
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)


def shape_mask(shape: str, center: tuple[float, float], radius: float, rotation: float,
               canvas: tuple[int, int]) -> np.ndarray:
    """Rasterize one shape. Returns bool[h, w] for ``canvas = (h, w)``; center is (x, y)."""
    h, w = canvas
    img = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(img)
    cx, cy = center

    def disc(r, dx=0.0, dy=0.0, fill=1):
        draw.ellipse([cx + dx - r, cy + dy - r, cx + dx + r, cy + dy + r], fill=fill)

    poly = _polygon(shape, rotation)
    if poly is not None:
        draw.polygon([(cx + radius * x, cy + radius * y) for x, y in poly], fill=1)
    elif shape == "circle":
        disc(radius)
    elif shape == "ring":
        disc(radius)
        disc(radius * 0.55, fill=0)
    elif shape == "crescent":
        disc(radius)
        disc(radius * 0.8, 0.45 * radius * math.cos(rotation), 0.45 * radius * math.sin(rotation), fill=0)
    return np.asarray(img, dtype=bool)


def _smooth_noise(rng: np.random.Generator, size: tuple[int, int], cells: int) -> np.ndarray:
    """Low-frequency noise in [0, 1]: a cells x cells random grid resized bilinearly to size (h, w)."""
    grid = rng.random((cells, cells), dtype=np.float32)
    return np.asarray(Image.fromarray(grid, mode="F").resize(size[::-1], Image.BILINEAR))


def _background(rng: np.random.Generator, config: ShapesConfig) -> np.ndarray:
    """float32[H, W, 3] in [0, 1]: a base colour, colour blobs and stripes of random orientation."""
    h, w = config.image_size
    base = rng.uniform(0.15, 0.85, size=3).astype(np.float32)
    blobs = np.stack([_smooth_noise(rng, (h, w), int(rng.integers(3, 7))) for _ in range(3)], axis=-1) - 0.5
    theta, period = rng.uniform(0, np.pi), rng.uniform(6, 24)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    stripes = np.sin(2 * np.pi * (xx * np.cos(theta) + yy * np.sin(theta)) / period)
    stripe_colour = rng.uniform(-0.5, 0.5, size=3).astype(np.float32)
    texture = 0.6 * blobs + 0.4 * stripes[..., None] * stripe_colour
    return np.clip(base + config.texture * texture, 0, 1)


def _colour_with_contrast(rng: np.random.Generator, reference: np.ndarray, min_contrast: float) -> np.ndarray:
    """A random saturated colour at least min_contrast away from ``reference`` (float[3]).

    Falls back to the most distant of the candidates drawn when none is far enough.
    """
    candidates = []
    for _ in range(12):
        hue, sat, val = rng.random(), rng.uniform(0.45, 1.0), rng.uniform(0.35, 1.0)
        colour = np.array(_hsv_to_rgb(hue, sat, val), dtype=np.float32)
        distance = float(np.linalg.norm(colour - reference))
        if distance >= min_contrast:
            return colour
        candidates.append((distance, colour))
    return max(candidates, key=lambda c: c[0])[1]


def _hsv_to_rgb(h: float, s: float, v: float) -> tuple[float, float, float]:
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    return [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]


def _box_iou_xyxy(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of one box a (float[4]) against boxes b (float[M, 4])."""
    lt, rb = np.maximum(a[:2], b[:, :2]), np.minimum(a[2:], b[:, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=1)
    area = lambda x: (x[..., 2] - x[..., 0]) * (x[..., 3] - x[..., 1])
    return inter / (area(a) + area(b) - inter)


def _place(rng: np.random.Generator, config: ShapesConfig, radius: float, placed: list[np.ndarray],
           fully_inside: bool) -> tuple[float, float] | None:
    """A center (x, y) whose box overlaps each placed box by at most max_overlap, or None."""
    h, w = config.image_size
    # Shapes may stick out of the image by up to half their radius (cut by the border), unless
    # they must be fully visible.
    margin = radius + 1 if fully_inside else radius * 0.5
    for _ in range(30):
        x, y = rng.uniform(margin, w - margin), rng.uniform(margin, h - margin)
        box = np.array([x - radius, y - radius, x + radius, y + radius])
        if not placed or _box_iou_xyxy(box, np.stack(placed)).max() <= config.max_overlap:
            placed.append(box)
            return x, y
    return None


def _draw_scene(rng: np.random.Generator, config: ShapesConfig) -> Scene:
    h, w = config.image_size
    image = _background(rng, config)
    n_objects = int(rng.integers(config.num_objects[0], config.num_objects[1] + 1))
    n_distractors = int(rng.integers(config.num_distractors[0], config.num_distractors[1] + 1))
    # Painter's order: which entries are class objects and which distractors. In single-object
    # mode the object is drawn last, so nothing covers it.
    kinds = ["object"] * n_objects + ["distractor"] * n_distractors
    if config.single_object:
        kinds = ["distractor"] * n_distractors + ["object"]
    else:
        rng.shuffle(kinds)

    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    lo, hi = config.size_range
    placed_boxes: list[np.ndarray] = []
    drawn = []  # (shape, label or 0, full-area, mask) in painter's order
    for kind in kinds:
        shape = (config.classes[int(rng.integers(len(config.classes)))] if kind == "object"
                 else config.distractors[int(rng.integers(len(config.distractors)))])
        radius = float(np.exp(rng.uniform(np.log(lo), np.log(hi)))) / 2
        rotation = float(rng.uniform(0, 2 * np.pi))
        center = _place(rng, config, radius, placed_boxes, fully_inside=config.single_object and kind == "object")
        if center is None:
            continue
        # Rasterize on a canvas padded by the radius so that the full area counts the part
        # outside the image too; then crop back to the image.
        pad = int(math.ceil(radius)) + 1
        full = shape_mask(shape, (center[0] + pad, center[1] + pad), radius, rotation, (h + 2 * pad, w + 2 * pad))
        mask = full[pad:pad + h, pad:pad + w]
        if not mask.any():
            continue
        colour = _colour_with_contrast(rng, image[mask].mean(axis=0), config.min_contrast)
        # A soft linear gradient across the shape, so shapes are not flat stickers.
        gx, gy = math.cos(rotation), math.sin(rotation)
        ramp = ((xx - center[0]) * gx + (yy - center[1]) * gy) / max(radius, 1.0)
        shaded = np.clip(colour[None, None, :] * (1 + config.shading * 0.5 * ramp[..., None]), 0, 1)
        image[mask] = shaded[mask]
        label = config.classes.index(shape) + 1 if kind == "object" else 0
        drawn.append((shape, label, int(full.sum()), mask))

    # Visible masks: what later shapes leave uncovered (walk back to front from the top).
    covered = np.zeros((h, w), dtype=bool)
    semantic = np.zeros((h, w), dtype=np.int64)
    kept = []
    for shape, label, full_area, mask in reversed(drawn):
        visible = mask & ~covered
        covered |= mask
        if label == 0:
            continue
        semantic[visible] = label
        area = int(visible.sum())
        if area >= config.min_pixels and area >= config.min_visible * full_area:
            kept.append((shape, label, visible, area / full_area))
    kept.reverse()  # back in painter's order

    if config.noise > 0:
        image = image + rng.normal(0, config.noise, size=image.shape).astype(np.float32)
    image_u8 = np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)

    masks = np.stack([k[2] for k in kept]).astype(np.uint8) if kept else np.zeros((0, h, w), np.uint8)
    return Scene(image=image_u8, boxes=masks_to_boxes_np(masks),
                 labels=np.array([k[1] for k in kept], dtype=np.int64).reshape(-1),
                 masks=masks, semantic=semantic, shapes=[k[0] for k in kept],
                 visible=np.array([k[3] for k in kept], dtype=np.float32))


def masks_to_boxes_np(masks: np.ndarray) -> np.ndarray:
    """Tight xyxy boxes (float32[N, 4], pixel-edge convention) of binary masks uint8[N, H, W].

    A mask covering columns x0..x1 and rows y0..y1 gives (x0, y0, x1 + 1, y1 + 1).
    """
    n = masks.shape[0]
    if n == 0:
        return np.zeros((0, 4), np.float32)
    rows, cols = masks.any(axis=2), masks.any(axis=1)  # [N, H], [N, W]
    h, w = masks.shape[1:]
    y0, y1 = rows.argmax(axis=1), h - rows[:, ::-1].argmax(axis=1)
    x0, x1 = cols.argmax(axis=1), w - cols[:, ::-1].argmax(axis=1)
    return np.stack([x0, y0, x1, y1], axis=1).astype(np.float32)


def render_scene(config: ShapesConfig, seed: int, index: int) -> Scene:
    """The scene for ``(seed, index)``: deterministic, independent of any other index.

    Scenes whose objects were all dropped (rare: heavy occlusion) are redrawn with the next
    attempt number, so every scene has at least one object.
    """
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be non-negative, got seed={seed}, index={index}")
    for attempt in range(100):
        scene = _draw_scene(np.random.default_rng([seed, index, attempt]), config)
        if len(scene.labels) > 0:
            return scene
    raise RuntimeError(f"could not place any object in 100 attempts with {config}; "
                       "loosen max_overlap or size_range")
