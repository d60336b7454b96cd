"""COCO format both ways: export, read through pycocotools, the committed copy, bad files."""
import copy
import filecmp
import json

import numpy as np
import pytest
import torch
from PIL import Image

from lessons_pkg import data
from lessons_pkg.commands.data_export import main as cli


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("coco")
    data.export_coco(data.ShapesDataset(10, seed=1), out)
    return out


def test_round_trip_gives_identical_tensors(exported):
    coco, original = data.CocoDataset(exported), data.ShapesDataset(10, seed=1)
    assert coco.classes == original.classes and len(coco) == 10
    for i in range(10):
        (im_a, t_a), (im_b, t_b) = coco[i], original[i]
        assert torch.equal(im_a, im_b)
        for key in ("boxes", "labels", "masks"):
            assert torch.equal(t_a[key], t_b[key]), key
            assert t_a[key].dtype == t_b[key].dtype
        assert t_a["image_id"] == i


def test_committed_copy_is_reproduced_byte_for_byte(tmp_path, shapes_coco):
    document = json.loads((shapes_coco / "annotations.json").read_text())
    args = document["info"]["command"].split()[5:]  # after "python -m lessons_pkg.data export OUT_DIR"
    cli(["export", str(tmp_path), *args])
    committed = sorted(p.relative_to(shapes_coco) for p in shapes_coco.rglob("*") if p.is_file())
    fresh = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert committed == fresh
    _, mismatch, errors = filecmp.cmpfiles(shapes_coco, tmp_path, [str(p) for p in committed], shallow=False)
    assert not mismatch and not errors, f"differ from the committed copy: {mismatch + errors}"


def test_committed_copy_is_small(shapes_coco):
    size = sum(p.stat().st_size for p in shapes_coco.rglob("*") if p.is_file())
    assert size < 3_000_000


# What a real file brings beside coco_document's one annotation (conftest): a crowd region (RLE)
# (kept, flagged iscrowd) and a box of zero width (left out).
CROWD_AND_ZERO_SIZE = (
    {"id": 2, "image_id": 1, "category_id": 3, "bbox": [0, 0, 2, 2], "iscrowd": 1,
     "segmentation": {"size": [8, 10], "counts": [0, 2, 6, 2, 70]}},
    {"id": 3, "image_id": 1, "category_id": 3, "bbox": [6, 2, 0, 3], "iscrowd": 0,
     "segmentation": [[6, 2, 6, 5, 7, 5]]},
)


@pytest.fixture
def document(coco_document) -> dict:
    """conftest's one-image document with a crowd region and a zero-width box added (a fresh dict)."""
    document = coco_document()
    document["annotations"] += copy.deepcopy(list(CROWD_AND_ZERO_SIZE))
    return document


def test_real_style_file_remaps_ids_keeps_crowd_flagged_and_drops_zero_size(tmp_path, write_coco, document):
    ds = data.CocoDataset(tmp_path, write_coco(tmp_path, document))
    assert ds.classes == ("dog", "cat")  # sorted by category id: 3 -> 1, 7 -> 2
    assert ds.label_to_category_id == {1: 3, 2: 7}
    image, t = ds[0]
    assert image.shape == (3, 8, 10)
    # the crowd region stays, flagged (evaluation ignores what lands on it); the zero-width box goes
    torch.testing.assert_close(t["boxes"], torch.tensor([[1.0, 1.0, 5.0, 4.0], [0.0, 0.0, 2.0, 2.0]]))
    assert t["labels"].tolist() == [2, 1] and t["iscrowd"].tolist() == [0, 1]
    assert t["iscrowd"].dtype == torch.uint8 and t["area"].dtype == torch.float64
    assert t["masks"].shape == (2, 8, 10) and t["masks"].dtype == torch.uint8
    assert t["masks"][0, 2, 2] == 1 and t["masks"][0, 7, 9] == 0
    # area: the annotation's own when given, else the mask's pixel count
    assert t["area"].tolist() == [float(document["annotations"][0].get("area", t["masks"][0].sum())),
                                  float(t["masks"][1].sum())]


def test_area_is_the_annotations_own_else_the_masks_else_the_boxes(tmp_path, write_coco, document):
    document["annotations"] = document["annotations"][:1]
    document["annotations"][0]["area"] = 123.5
    _, t = data.CocoDataset(tmp_path, write_coco(tmp_path, document))[0]
    assert t["area"].tolist() == [123.5]
    document["annotations"][0].pop("area")
    document["annotations"][0]["segmentation"] = [[1, 1, 5, 1, 1, 4]]   # a triangle in the 4 x 3 box
    _, t = data.CocoDataset(tmp_path, write_coco(tmp_path, document))[0]
    assert t["area"].tolist() == [float(t["masks"][0].sum())] and t["area"].item() != 12.0
    document["annotations"][0].pop("segmentation")
    _, t = data.CocoDataset(tmp_path, write_coco(tmp_path, document))[0]
    assert t["area"].tolist() == [12.0]   # the 4 x 3 box


def test_transforms_keep_crowd_flags_with_their_boxes(tmp_path, write_coco, document):
    """A flip keeps area; a resize drops it (its pixels are the original image's); a crop that
    removes a box removes its label and crowd flag too."""
    from torchvision.transforms import v2
    path = write_coco(tmp_path, document)
    _, t = data.CocoDataset(tmp_path, path, transforms=v2.RandomHorizontalFlip(1.0))[0]
    assert t["iscrowd"].tolist() == [0, 1] and "area" in t
    _, t = data.CocoDataset(tmp_path, path, transforms=data.resize_to_limits(16))[0]
    assert t["iscrowd"].tolist() == [0, 1] and "area" not in t
    crop = v2.Compose([v2.RandomCrop((4, 4)), v2.ClampBoundingBoxes(),
                       v2.SanitizeBoundingBoxes(labels_getter=data.dataset.per_object_values)])
    torch.manual_seed(0)
    for _ in range(20):
        _, t = data.CocoDataset(tmp_path, path, transforms=crop)[0]
        assert len(t["boxes"]) == len(t["labels"]) == len(t["iscrowd"]) == len(t["masks"])
    plain = v2.Compose([v2.RandomCrop((4, 4)), v2.ClampBoundingBoxes(), v2.SanitizeBoundingBoxes()])
    with pytest.raises(ValueError, match="per_object_values"):
        for _ in range(20):   # a crop that drops a box, with torchvision's default getter: named
            data.CocoDataset(tmp_path, path, transforms=plain)[0]


def test_images_without_annotations_are_kept_with_empty_targets(tmp_path, write_coco, document):
    document["images"] = [{"id": 1, "file_name": "img/1.png"}, {"id": 2, "file_name": "img/2.png"}]
    ds = data.CocoDataset(tmp_path, write_coco(tmp_path, document, images=((1, 8, 10), (2, 6, 6))))
    _, t = ds[1]
    assert len(ds) == 2 and t["boxes"].shape == (0, 4) and t["labels"].shape == (0,)
    assert t["masks"].shape == (0, 6, 6) and t["image_id"] == 2


def test_boxes_only_dataset_has_no_made_up_masks(tmp_path, write_coco, document):
    for ann in document["annotations"]:
        ann.pop("segmentation")
    _, t = data.CocoDataset(tmp_path, write_coco(tmp_path, document))[0]
    assert "masks" not in t and t["boxes"].shape == (2, 4)   # the object and the crowd region


def test_boxes_are_clipped_to_the_image(tmp_path, write_coco, document):
    document["annotations"][0]["bbox"] = [-3, 2, 20, 3]
    _, t = data.CocoDataset(tmp_path, write_coco(tmp_path, document))[0]
    assert t["boxes"][0].tolist() == [0.0, 2.0, 10.0, 5.0]


@pytest.mark.parametrize("mutate, error, message", [
    (lambda d: d.pop("annotations"), ValueError, "missing top-level field 'annotations'"),
    (lambda d: d["images"][0].pop("file_name"), ValueError, r"images\[0\] has no field 'file_name'"),
    (lambda d: d["annotations"][0].update(image_id=99), ValueError, "image_id 99, which is not in 'images'"),
    (lambda d: d["annotations"][0].update(category_id=5), ValueError, "category_id 5, which is not in 'categories'"),
    (lambda d: d["annotations"][0].pop("bbox"), ValueError, r"annotations\[0\] \(id 1\) has no field 'bbox'"),
    (lambda d: d["annotations"][0].update(bbox=[1, 2, 3]), ValueError, "field 'bbox' must be 4 finite numbers"),
    (lambda d: d["images"][0].update(file_name="img/missing.png"), FileNotFoundError, "missing.png"),
])
def test_bad_files_name_the_file_and_field(tmp_path, write_coco, document, mutate, error, message):
    mutate(document)
    path = write_coco(tmp_path, document)
    with pytest.raises(error, match=message) as info:
        data.CocoDataset(tmp_path, path)
    assert "ann.json" in str(info.value)


def test_malformed_json_and_missing_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": [}')
    with pytest.raises(ValueError, match=r"bad.json: not valid JSON \(line 1"):
        data.CocoDataset(tmp_path, bad)
    with pytest.raises(FileNotFoundError, match="annotation file not found"):
        data.CocoDataset(tmp_path, tmp_path / "nope.json")
    bad.write_text("[1, 2]")
    with pytest.raises(ValueError, match="top level must be a JSON object"):
        data.CocoDataset(tmp_path, bad)


def test_image_deleted_after_loading_and_wrong_size(tmp_path, write_coco, document):
    path = write_coco(tmp_path, document)
    ds = data.CocoDataset(tmp_path, path)
    (tmp_path / "img" / "1.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"image id 1: file not found: .*1.png"):
        ds[0]
    Image.fromarray(np.zeros((5, 5, 3), np.uint8)).save(tmp_path / "img" / "1.png")
    with pytest.raises(ValueError, match="height/width say 8x10"):
        ds[0]


def test_undecodable_segmentation_is_named(tmp_path, write_coco, document):
    document["annotations"][0]["segmentation"] = {"size": [8, 10], "counts": 12}
    with pytest.raises(ValueError, match=r"annotations\[0\] \(id 1\) field 'segmentation' \(RLE\) 'counts' must be"):
        data.CocoDataset(tmp_path, write_coco(tmp_path, document))


def test_transforms_apply_to_coco_samples(exported):
    from torchvision.transforms import v2
    plain = data.CocoDataset(exported)
    flipped = data.CocoDataset(exported, transforms=v2.RandomHorizontalFlip(p=1.0))
    (im, t), (fim, ft) = plain[0], flipped[0]
    assert torch.equal(fim, im.flip(-1)) and torch.equal(ft["masks"], t["masks"].flip(-1))


def test_resized_images_keep_the_files_frame_and_predictions_come_back(shapes_coco):
    """data.ResizedImages: the model sees the resized image, the target stays in the file's
    pixels; to_original_size maps a prediction made at the model's size back to them."""
    import torch.nn.functional as F
    coco = data.CocoDataset(shapes_coco)
    image, target = data.ResizedImages(coco, 64)[0]
    original_image, original = coco[0]
    assert image.shape[-2:] == (64, 64) and target["orig_size"] == (128, 128) and target["size"] == (64, 64)
    torch.testing.assert_close(target["boxes"], original["boxes"])
    assert torch.equal(target["masks"], original["masks"])
    at_model_size = {"boxes": original["boxes"] / 2, "labels": original["labels"],
                     "masks": F.interpolate(original["masks"][:, None].float(), size=(64, 64))[:, 0]}
    back = data.to_original_size(at_model_size, (64, 64), (128, 128))
    torch.testing.assert_close(back["boxes"], original["boxes"])
    assert back["masks"].shape == original["masks"].shape
    agreement = ((back["masks"] > 0.5) == original["masks"].bool()).float().mean()
    assert agreement > 0.98
