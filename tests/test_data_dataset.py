"""The Dataset, splits, collate and transforms.v2 augmentation; the single-object tensors."""
import pytest
import torch
from torchvision.transforms import v2

from lessons_pkg import data
from lessons_pkg.data.shapes import masks_to_boxes_np


def test_splits_differ_and_are_reproducible():
    train, val = data.make_split("train", 4), data.make_split("val", 4)
    assert not torch.equal(train[0][0], val[0][0])
    assert torch.equal(val[2][0], data.make_split("val", 4)[2][0])
    with pytest.raises(ValueError, match="unknown split"):
        data.make_split("validation", 4)


def test_index_errors_and_lengths():
    ds = data.ShapesDataset(3)
    assert len(ds) == 3
    with pytest.raises(IndexError, match="out of range"):
        ds[3]
    with pytest.raises(ValueError, match="num_images"):
        data.ShapesDataset(-1)
    with pytest.raises(TypeError, match="ShapesConfig"):
        data.ShapesDataset(2, config=42)


def test_cache_returns_same_values_as_fresh_render():
    cached, fresh = data.ShapesDataset(3, seed=1), data.ShapesDataset(3, seed=1, cache=False)
    for i in range(3):
        assert torch.equal(cached[i][0], fresh[i][0])
        assert torch.equal(cached[i][0], cached[i][0])


def test_collate_stacks_same_size_and_lists_mixed_sizes():
    ds = data.ShapesDataset(3)
    images, targets = data.collate_detection([ds[0], ds[1], ds[2]])
    assert images.shape == (3, 3, 128, 128) and len(targets) == 3
    small = data.ShapesDataset(1, config=data.ShapesConfig(image_size=(64, 64), size_range=(8.0, 30.0)))
    images, _ = data.collate_detection([ds[0], small[0]])
    assert isinstance(images, list) and images[1].shape == (3, 64, 64)
    with pytest.raises(ValueError, match="empty batch"):
        data.collate_detection([])


def test_flips_move_boxes_and_masks_with_the_image():
    flip = v2.Compose([v2.RandomHorizontalFlip(p=1.0)])
    plain = data.ShapesDataset(5, seed=3)
    flipped = data.ShapesDataset(5, seed=3, transforms=flip)
    for i in range(5):
        (im, t), (fim, ft) = plain[i], flipped[i]
        assert torch.equal(fim, im.flip(-1))
        assert torch.equal(ft["masks"], t["masks"].flip(-1))
        assert torch.equal(ft["semantic"], t["semantic"].flip(-1))
        assert torch.equal(ft["boxes"], torch.from_numpy(masks_to_boxes_np(ft["masks"].numpy())))
        assert type(ft["boxes"]) is torch.Tensor and type(fim) is torch.Tensor  # plain tensors out


def test_augmentation_keeps_the_contract_and_drops_boxes_with_their_masks():
    torch.manual_seed(0)
    ds = data.ShapesDataset(30, seed=0, transforms=data.detection_augmentation(output_size=(96, 96), crop=True))
    for i in range(len(ds)):
        image, t = ds[i]
        n = len(t["labels"])
        assert image.shape == (3, 96, 96)
        assert t["boxes"].shape == (n, 4) and t["masks"].shape == (n, 96, 96) and t["semantic"].shape == (96, 96)
        assert ((t["boxes"][:, 2:] - t["boxes"][:, :2]) >= 1).all()


def test_class_counts():
    counts = data.class_counts(data.ShapesDataset(20), 4)
    assert counts[0] == 0 and counts.sum() == sum(len(data.ShapesDataset(20)[i][1]["labels"]) for i in range(20))


def test_segmentation_crops_cut_the_image_and_its_masks_alike():
    full = data.make_split("train", 3)
    cropped = data.make_split("train", 3, transforms=data.segmentation_augmentation((64, 48), flip=False))
    torch.manual_seed(0)
    for i in range(3):
        image, target = full[i]
        crop, ctarget = cropped[i]
        assert crop.shape == (3, 64, 48) and ctarget["semantic"].shape == (64, 48)
        # find where the crop came from, then the semantic map must be the same window
        windows = image.unfold(1, 64, 1).unfold(2, 48, 1)  # [3, H-63, W-47, 64, 48]
        match = (windows == crop[:, None, None]).flatten(3).all(-1).all(0).nonzero()
        assert len(match) >= 1
        y, x = match[0].tolist()
        assert torch.equal(ctarget["semantic"], target["semantic"][y:y + 64, x:x + 48])
        assert ctarget["masks"].shape[1:] == (64, 48) and len(ctarget["masks"]) == len(ctarget["boxes"])


# ----------------------------------------------------------------------------- single-object tensors
def test_single_object_tensors_move_the_box_with_the_pixels():
    """An image with one bright rectangle: after every random symmetry, the box is still the
    bounding box of the bright pixels."""
    image = torch.zeros(3, 32, 32)
    image[:, 4:10, 20:29] = 1.0  # rows 4..9, columns 20..28 -> xyxy (20, 4, 29, 10)
    source = [(image, {"boxes": torch.tensor([[20.0, 4.0, 29.0, 10.0]]), "labels": torch.tensor([2])})]
    ds = data.SingleObjectTensors(source)
    torch.manual_seed(0)
    seen = set()
    for _ in range(40):
        im, t = ds[0]
        rows, cols = im[0].any(dim=1).nonzero()[:, 0], im[0].any(dim=0).nonzero()[:, 0]
        truth = torch.tensor([[cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]], dtype=torch.float32)
        assert torch.equal(t["boxes"], truth) and t["labels"].tolist() == [2]
        seen.add(tuple(truth[0].tolist()))
    assert len(seen) == 8  # all eight symmetries of the square occur
    with pytest.raises(ValueError, match="image 0 holds 2 boxes"):
        data.SingleObjectTensors([(image, {"boxes": torch.zeros(2, 4), "labels": torch.tensor([1, 1])})])
