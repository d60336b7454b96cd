"""Images of different sizes: padded into one batch, predictions back in each image's frame,
and the README's own-data recipe on a COCO set whose images differ in size."""
import pytest
import torch

from lessons_pkg import batching, data, metrics, recipes, train
from lessons_pkg.inputs import IGNORE_INDEX
from lessons_pkg.models import fcn, mask_rcnn, ssd, yolo

pytestmark = pytest.mark.usefixtures("one_thread")


def test_pad_batch_fills_with_the_image_mean_and_pads_targets():
    a, b = torch.rand(3, 20, 30), torch.rand(3, 26, 18)
    targets = [{"boxes": torch.tensor([[1.0, 2.0, 9.0, 12.0]]), "masks": torch.ones(1, 20, 30, dtype=torch.uint8),
                "semantic": torch.ones(20, 30, dtype=torch.int64)},
               {"boxes": torch.zeros(0, 4), "masks": torch.zeros(0, 26, 18, dtype=torch.uint8),
                "semantic": torch.zeros(26, 18, dtype=torch.int64)}]
    batch, padded, sizes = batching.pad_batch([a, b], targets)
    assert batch.shape == (2, 3, 26, 30) and sizes == [(20, 30), (26, 18)]
    assert torch.equal(batch[0, :, :20, :30], a) and torch.equal(batch[1, :, :26, :18], b)
    torch.testing.assert_close(batch[0, :, 20:, :], a.mean(dim=(1, 2))[:, None, None].expand(3, 6, 30))
    # the per-image mean the backbone subtracts is the image's own
    torch.testing.assert_close(batch[0].mean(dim=(1, 2)), a.mean(dim=(1, 2)))
    assert padded[0]["masks"].shape == (1, 26, 30) and padded[0]["masks"][:, 20:].sum() == 0
    assert (padded[1]["semantic"][:, 18:] == IGNORE_INDEX).all() and (padded[0]["semantic"][20:] == IGNORE_INDEX).all()
    assert torch.equal(padded[0]["boxes"], targets[0]["boxes"])
    assert targets[0]["masks"].shape == (1, 20, 30)  # the caller's targets are untouched


def test_restore_sizes_clips_boxes_and_crops_maps():
    preds = [{"boxes": torch.tensor([[-3.0, 5.0, 40.0, 29.0]]), "scores": torch.tensor([0.9]),
              "masks": torch.ones(1, 1, 26, 30), "semantic": torch.zeros(26, 30, dtype=torch.int64)}]
    (p,) = batching.restore_sizes(preds, [(20, 25)])
    assert p["boxes"].tolist() == [[0.0, 5.0, 25.0, 20.0]] and p["scores"].shape == (1,)
    assert p["masks"].shape == (1, 1, 20, 25) and p["semantic"].shape == (20, 25)


@pytest.mark.parametrize("name", ["ssd", "yolo", "mask_rcnn", "fcn"])
def test_trained_models_take_images_of_different_sizes(name):
    """The largest image needs no padding, so in a mixed batch its predictions equal its own;
    the others' predictions lie inside their own frame."""
    model, _ = recipes.load(name)
    ds = data.make_split("val", 3)
    big = ds[0][0]
    images = [big, big[:, :96, :80].contiguous(), big[:, 20:, 30:110].contiguous()]
    with torch.no_grad():
        mixed = model(images)
        alone = model(big[None])[0]
    assert len(mixed) == 3
    for key, value in alone.items():
        torch.testing.assert_close(mixed[0][key], value, msg=key)
    for p, im in zip(mixed, images):
        h, w = im.shape[-2:]
        if "boxes" in p and len(p["boxes"]):
            assert p["boxes"][:, 0::2].max() <= w and p["boxes"][:, 1::2].max() <= h
        if "masks" in p:
            assert p["masks"].shape[-2:] == (h, w)
        if "semantic" in p:
            assert p["semantic"].shape == (h, w) and p["scores"].shape[-2:] == (h, w)


@pytest.mark.parametrize("build", [lambda: ssd.SSD(4), lambda: yolo.YOLO(4), lambda: mask_rcnn.MaskRCNN(4),
                                   lambda: fcn.BackboneFCN(4)])
def test_models_train_on_images_of_different_sizes(build):
    torch.manual_seed(0)
    ds = data.make_split("train", 2)
    (a, ta), (b, tb) = ds[0], ds[1]
    crop = {k: (v[..., :96, :112] if k in ("masks", "semantic") else v) for k, v in tb.items()}
    keep = (crop["boxes"][:, 2] <= 112) & (crop["boxes"][:, 3] <= 96)
    crop.update(boxes=crop["boxes"][keep], labels=crop["labels"][keep], masks=crop["masks"][keep])
    model = build().train()
    losses = model([a, b[:, :96, :112]], [ta, crop])
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()


def test_readme_recipe_runs_on_a_coco_set_of_mixed_sizes(mixed_size_coco):
    """README, "Your own COCO-format dataset": CocoDataset + detection_augmentation +
    make_loader(ds, 8) + fit, then evaluate, on images of two sizes."""
    root = mixed_size_coco
    ds = data.CocoDataset(root, root / "annotations.json", transforms=data.detection_augmentation())
    assert {tuple(ds[i][0].shape[-2:]) for i in range(len(ds))} == {(96, 128), (128, 112)}
    loader = train.make_loader(ds, batch_size=8)
    model = ssd.SSD(num_classes=len(ds.classes), pretrained_backbone=True)
    history = train.fit(model, loader, steps=3, lr=1e-3, progress=False)
    assert len(history.steps) == 1 and torch.isfinite(torch.tensor(history.final()))
    val = data.CocoDataset(root, root / "annotations.json")
    scores = train.evaluate(model, train.make_loader(val, 8, shuffle=False), metric=metrics.mean_average_precision)
    assert 0 <= scores["map_50"] <= 1


def test_resize_to_limits_keeps_the_aspect_and_the_boxes():
    image, target = data.make_split("val", 1)[0]
    resize = data.resize_to_limits(64, max_size=100)
    out, t = data.apply_transforms(resize, image, target)
    assert min(out.shape[-2:]) == 64 and max(out.shape[-2:]) <= 100
    torch.testing.assert_close(t["boxes"], target["boxes"] * 0.5, atol=0.6, rtol=0)
    with pytest.raises(ValueError, match="max_size must be an int > min_size"):
        data.resize_to_limits(64, max_size=32)


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.tuples(st.integers(1, 40), st.integers(1, 40)), min_size=1, max_size=4),
       divisible=st.sampled_from([1, 8, 32]))
def test_padding_then_restoring_gives_each_image_back(sizes, divisible):
    images = [torch.rand(3, h, w) for h, w in sizes]
    targets = [{"semantic": torch.randint(0, 5, (h, w)), "masks": torch.randint(0, 2, (2, h, w), dtype=torch.uint8),
                "boxes": torch.tensor([[0.0, 0.0, float(w), float(h)], [1.0, 1.0, 2.0 * w, 3.0 * h]])}
               for h, w in sizes]
    batch, padded, got = batching.pad_batch(images, targets, divisible)
    assert got == sizes and batch.shape[-2] % divisible == 0 and batch.shape[-1] % divisible == 0
    preds = [{"boxes": t["boxes"], "semantic": p["semantic"], "masks": p["masks"],
              "scores": torch.rand(2)} for t, p in zip(targets, padded)]
    for image, target, b, p in zip(images, targets, batch, batching.restore_sizes(preds, sizes)):
        h, w = image.shape[-2:]
        assert torch.equal(b[:, :h, :w], image)
        assert torch.equal(p["semantic"], target["semantic"]) and torch.equal(p["masks"], target["masks"])
        assert (p["boxes"][:, 0::2] <= w).all() and (p["boxes"][:, 1::2] <= h).all() and p["scores"].shape == (2,)
