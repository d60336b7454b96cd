"""The course's target contract (README, "The target contract"), checked on a model's outputs:
what every model returns in eval mode for its task, and in train mode. Used by
tests/test_recipes.py (every recipe's model) and by the model tests that build variants."""
import torch

NUM_CLASSES = 4  # the shapes data's classes, labels 1..4 (0 is background)


def check_detections(out, images: torch.Tensor, task: str) -> None:
    """The eval-mode contract of a detector ("detection") or an instance segmenter ("instance"):
    one dict per image with exactly "boxes" float32[N, 4] (finite xyxy pixels inside the image,
    x1 <= x2 and y1 <= y2), "labels" int64[N] in 1..C, "scores" float[N] in [0, 1] best first,
    and for "instance" "masks" float[N, H, W] in [0, 1] (the image's size); on the images' device."""
    height, width = images.shape[-2:]
    keys = {"boxes", "labels", "scores"} | ({"masks"} if task == "instance" else set())
    assert isinstance(out, list) and len(out) == len(images), f"expected a list of {len(images)} dicts"
    for i, d in enumerate(out):
        assert isinstance(d, dict) and set(d) == keys, f"image {i}: keys {sorted(d)}, expected {sorted(keys)}"
        boxes, labels, scores = d["boxes"], d["labels"], d["scores"]
        n = len(boxes)
        assert boxes.dtype == torch.float32 and boxes.shape == (n, 4), f"image {i} boxes: {boxes.dtype} {boxes.shape}"
        assert labels.dtype == torch.int64 and labels.shape == (n,), f"image {i} labels: {labels.dtype} {labels.shape}"
        assert scores.is_floating_point() and scores.shape == (n,), f"image {i} scores: {scores.dtype} {scores.shape}"
        assert all(v.device == images.device for v in d.values()), f"image {i}: not on {images.device}"
        if task == "instance":
            masks = d["masks"]
            assert masks.is_floating_point() and masks.shape == (n, height, width), f"image {i} masks: {masks.shape}"
        if n == 0:
            continue
        x1, y1, x2, y2 = boxes.unbind(1)
        inside = (0 <= x1) & (x1 <= x2) & (x2 <= width) & (0 <= y1) & (y1 <= y2) & (y2 <= height)
        assert torch.isfinite(boxes).all() and inside.all(), f"image {i}: boxes {boxes[~inside][:3].tolist()}"
        assert 1 <= labels.min() and labels.max() <= NUM_CLASSES, f"image {i}: labels {labels.unique().tolist()}"
        assert 0 <= scores.min() and scores.max() <= 1, f"image {i}: scores in [{scores.min()}, {scores.max()}]"
        assert (scores[:-1] >= scores[1:]).all(), f"image {i}: scores not sorted best first"
        if task == "instance":
            assert 0 <= d["masks"].min() and d["masks"].max() <= 1, f"image {i}: mask values outside [0, 1]"


def check_segmentation(out, images: torch.Tensor) -> None:
    """The eval-mode contract of a semantic segmenter: one dict per image with exactly
    "semantic" int64[H, W] of classes 0..C (0 background; never the ignore label) and "scores"
    float[C + 1, H, W], finite, of which "semantic" is the argmax; on the images' device."""
    height, width = images.shape[-2:]
    assert isinstance(out, list) and len(out) == len(images), f"expected a list of {len(images)} dicts"
    for i, d in enumerate(out):
        assert isinstance(d, dict) and set(d) == {"semantic", "scores"}, f"image {i}: keys {sorted(d)}"
        semantic, scores = d["semantic"], d["scores"]
        assert semantic.dtype == torch.int64 and semantic.shape == (height, width), f"image {i}: {semantic.shape}"
        assert scores.is_floating_point() and scores.shape == (NUM_CLASSES + 1, height, width), \
            f"image {i} scores: {scores.shape}"
        assert semantic.device == scores.device == images.device
        assert 0 <= semantic.min() and semantic.max() <= NUM_CLASSES, f"image {i}: classes {semantic.unique().tolist()}"
        assert torch.isfinite(scores).all() and torch.equal(semantic, scores.argmax(0)), f"image {i}"


def check_losses(losses) -> None:
    """The train-mode contract: a non-empty dict of named losses ("loss_..."), each a finite
    float scalar (what ``train.fit`` sums and logs)."""
    assert isinstance(losses, dict) and losses, f"expected a dict of losses, got {type(losses).__name__}"
    for name, value in losses.items():
        assert name.startswith("loss_"), name
        assert isinstance(value, torch.Tensor) and value.dim() == 0 and value.is_floating_point(), name
        assert torch.isfinite(value), f"{name} = {value.item()}"
