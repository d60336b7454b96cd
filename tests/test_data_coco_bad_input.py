"""The COCO reader against the bad files a user's own data brings: each gets a ValueError or
FileNotFoundError naming the file and the field, or a correct result; never a crash, never a
silent shift of labels, never a read outside the dataset root."""
import copy
import struct
import subprocess
import sys
import textwrap
import zlib

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from pycocotools import mask as mask_utils

from lessons_pkg import data


def read_all(tmp_path, path):
    ds = data.CocoDataset(tmp_path, path)
    return [ds[i] for i in range(len(ds))]


def set_in(doc, where, value):
    doc = copy.deepcopy(doc)
    *keys, last = where
    node = doc
    for k in keys:
        node = node[k]
    node[last] = value
    return doc


BAD = [  # (path in the document, value, what the message must say)
    (("annotations", 0, "segmentation"), [[1, 1, 5, 1, 5, float("inf")]], r"polygon 0 must hold finite numbers"),
    (("annotations", 0, "segmentation"), [[1, 1, 5, 1, 5, 1e15]], r"polygon 0 has coordinates .* far outside the 10x8 image"),
    (("annotations", 0, "segmentation"), [[1, 1, 5, 1, 5]], r"polygon 0 must hold an even number >= 6"),
    (("annotations", 0, "segmentation"), [[1, 1, 5, 1]], r"polygon 0 must hold an even number >= 6"),
    (("annotations", 0, "segmentation"), [["a", 1, 5, 1, 5, 4]], r"polygon 0 must hold finite numbers"),
    (("annotations", 0, "segmentation"), {"size": [8, 10], "counts": [0, 2, 6]}, r"'counts' cover 8 pixels, .* has 80"),
    (("annotations", 0, "segmentation"), {"size": [8, 10], "counts": "02"}, r"cover \d+ pixels, its size 8x10 has 80"),
    (("annotations", 0, "segmentation"), {"size": [8, 10], "counts": "\u00ff"}, r"'counts' is not valid"),
    (("annotations", 0, "segmentation"), {"size": [9, 10], "counts": [90]}, r"has size \[9, 10\], the image is \[8, 10\]"),
    (("annotations", 0, "segmentation"), {"counts": [80]}, r"needs 'size' \[height, width\]"),
    (("annotations", 0, "segmentation"), {"size": [8, 10], "counts": [-5, 85]}, r"non-negative integers"),
    (("annotations", 0, "bbox"), [1, 1, -4, 3], r"field 'bbox' .* negative size \(w=-4, h=3\)"),
    (("annotations", 0, "bbox"), [1, 1, 10**400, 3], r"field 'bbox' must be 4 finite numbers"),
    (("annotations", 0, "bbox"), [1, 1, True, 3], r"field 'bbox' must be 4 finite numbers"),
    (("annotations", 0, "image_id"), [1], r"field 'image_id' must be an integer"),
    (("annotations", 0, "id"), "one", r"field 'id' must be an integer"),
    (("annotations", 0, "iscrowd"), 2, r"field 'iscrowd' must be 0 or 1"),
    (("annotations", 0, "area"), "big", r"field 'area' must be a finite number"),
    (("images", 0, "id"), [1], r"images\[0\] field 'id' must be an integer"),
    (("images", 0, "id"), 10**400, r"images\[0\] field 'id' must be an integer"),
    (("images", 0, "file_name"), 5, r"field 'file_name' must be a non-empty string, got 5"),
    (("images", 0, "file_name"), "../outside.png", r"must be a path relative to the images root that stays inside"),
    (("images", 0, "file_name"), "img/../../outside.png", r"stays inside it"),
    (("images", 0, "file_name"), "/etc/passwd", r"stays inside it"),
    (("images", 0, "height"), -8, r"field 'height' must be an integer >= 1"),
    (("categories", 1, "id"), 7, r"categories\[1\] repeats category id 7 \(name 'dog'\)"),
    (("categories", 1, "name"), 3, r"categories\[1\] field 'name' must be a string"),
]


@pytest.mark.parametrize("where, value, message", BAD, ids=[m[:40] for _, _, m in BAD])
def test_each_bad_field_is_named_with_the_file(tmp_path, coco_document, write_coco, where, value, message):
    path = write_coco(tmp_path, set_in(coco_document(), where, value))
    with pytest.raises(ValueError, match=message) as info:
        read_all(tmp_path, path)
    assert str(path) in str(info.value)


def test_duplicate_annotation_ids_and_missing_id(tmp_path, coco_document, write_coco):
    doc = coco_document()
    doc["annotations"].append({**doc["annotations"][0]})
    with pytest.raises(ValueError, match=r"annotations\[1\] \(id 1\) repeats annotation id 1"):
        read_all(tmp_path, write_coco(tmp_path, doc))
    doc = coco_document()
    del doc["annotations"][0]["id"]
    with pytest.raises(ValueError, match=r"annotations\[0\] \(id '\?'\) has no field 'id'"):
        read_all(tmp_path, write_coco(tmp_path, doc))


def test_non_utf8_and_absurd_json(tmp_path):
    path = tmp_path / "ann.json"
    path.write_bytes(b'{"images": "\xff\xfe"}')
    with pytest.raises(ValueError, match=r"ann.json: not UTF-8 text"):
        data.CocoDataset(tmp_path, path)
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ValueError, match=r"ann.json: not readable as JSON|ann.json: the top level"):
        data.CocoDataset(tmp_path, path)
    path.write_text('{"images": [], "annotations": [], "categories": [{"id": ' + "9" * 5000 + ', "name": "x"}]}')
    with pytest.raises(ValueError, match=r"ann.json"):
        data.CocoDataset(tmp_path, path)


def test_sixteen_bit_and_palette_pngs_are_scaled_right(tmp_path, coco_document, write_coco):
    grey16 = np.full((8, 10), 32768, np.uint16)
    grey16[0, 0] = 65535
    (tmp_path / "img").mkdir()
    Image.fromarray(grey16).save(tmp_path / "img" / "1.png")
    image, _ = read_all(tmp_path, write_coco(tmp_path, coco_document()))[0]
    assert image.shape == (3, 8, 10) and image.dtype == torch.float32
    assert image[:, 1, 1].tolist() == pytest.approx([32768 / 65535] * 3) and image[0, 0, 0] == 1.0

    palette = Image.fromarray(np.arange(80, dtype=np.uint8).reshape(8, 10) % 4, mode="P")
    palette.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (768 - 12))
    palette.save(tmp_path / "img" / "1.png")
    image, _ = read_all(tmp_path, write_coco(tmp_path, coco_document()))[0]
    assert image[:, 0, 1].tolist() == [1.0, 0.0, 0.0] and image[:, 0, 3].tolist() == [0.0, 0.0, 1.0]


def png_header(width, height):
    """A PNG whose header claims width x height greyscale pixels, with no pixel data."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def test_a_broken_image_file_and_a_decompression_bomb_name_the_file(tmp_path, coco_document, write_coco):
    path = write_coco(tmp_path, coco_document())
    (tmp_path / "img" / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(ValueError, match=r"image id 1: cannot read .*1.png"):
        read_all(tmp_path, path)
    (tmp_path / "img" / "1.png").write_bytes(png_header(100_000, 100_000))  # 10^10 pixels, 60 bytes
    doc = set_in(set_in(coco_document(annotations=[]), ("images", 0, "height"), 100_000), ("images", 0, "width"), 100_000)
    with pytest.raises(ValueError, match=r"image id 1: .*decompression bomb"):
        read_all(tmp_path, write_coco(tmp_path, doc))


@pytest.mark.slow   # a subprocess that imports torch
def test_huge_polygons_run_in_a_subprocess_under_a_memory_limit(tmp_path, coco_document, write_coco):
    """Before this check a huge vertex ran pycocotools out of memory or crashed the
    interpreter: run in a child with 2 GB of address space to spare, it must exit with a named error."""
    doc = set_in(coco_document(), ("annotations", 0, "segmentation"), [[0, 0, 1e12, 0, 1e12, 1e12]])
    del doc["images"][0]["height"], doc["images"][0]["width"]   # only the image itself says its size
    path = write_coco(tmp_path, doc)
    code = textwrap.dedent(f"""
        import resource, sys
        from lessons_pkg import data
        size = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmSize"))
        limit = size * 1024 + (2 << 30)   # what is mapped now (torch is large) + 2 GB
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        ds = data.CocoDataset({str(tmp_path)!r}, {str(path)!r})
        try:
            ds[0]
        except ValueError as e:
            print("ValueError:", e)
            sys.exit(3)
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 3, result.stderr[-2000:]
    assert "far outside the 10x8 image" in result.stdout and str(path) in result.stdout


def test_a_polygon_slightly_outside_the_image_still_reads(tmp_path, coco_document, write_coco):
    doc = set_in(coco_document(), ("annotations", 0, "segmentation"), [[-2, -1, 12, -1, 12, 9, -2, 9]])
    _, target = read_all(tmp_path, write_coco(tmp_path, doc))[0]
    assert target["masks"].shape == (1, 8, 10) and target["masks"].sum() == 80


def test_compressed_rle_check_agrees_with_pycocotools():
    rng = np.random.default_rng(0)
    for _ in range(20):
        h, w = rng.integers(1, 40, size=2)
        mask = (rng.random((h, w)) < rng.random()).astype(np.uint8)
        counts = mask_utils.encode(np.asfortranarray(mask))["counts"].decode()
        assert data.coco._compressed_rle_total(counts) == h * w


# --------------------------------------------------------------------------- properties
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-10**30, 10**30) | st.floats(allow_nan=True) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.sampled_from(["size", "counts", "id"]), inner,
                                                                 max_size=3),
    max_leaves=12)
FIELDS = [("annotations", 0, "segmentation"), ("annotations", 0, "bbox"), ("annotations", 0, "image_id"),
          ("annotations", 0, "category_id"), ("annotations", 0, "id"), ("annotations", 0, "iscrowd"),
          ("images", 0, "id"), ("images", 0, "file_name"), ("images", 0, "height"), ("categories", 0, "id"),
          ("categories", 0, "name")]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(field=st.sampled_from(FIELDS), value=JSON_VALUES)
def test_any_malformed_field_gives_a_named_error_or_a_correct_read(tmp_path, coco_document, write_coco, field, value):
    path = write_coco(tmp_path, set_in(coco_document(), field, value))
    try:
        samples = read_all(tmp_path, path)
    except (ValueError, FileNotFoundError) as error:
        assert str(path) in str(error) or "ann.json" in str(error), str(error)
        return
    for image, target in samples:   # accepted: then it is in the contract
        assert image.shape == (3, 8, 10) and 0 <= image.min() and image.max() <= 1
        assert target["boxes"].shape[1] == 4 and torch.isfinite(target["boxes"]).all()
        assert (target["boxes"][:, 2:] > target["boxes"][:, :2]).all()
        assert set(target["labels"].tolist()) <= {1, 2}
        if "masks" in target:
            assert target["masks"].shape == (len(target["boxes"]), 8, 10)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(polygon=st.lists(st.floats(allow_nan=True, allow_infinity=True, width=64), min_size=0, max_size=12))
def test_any_polygon_gives_a_named_error_or_a_mask(tmp_path, coco_document, write_coco, polygon):
    path = write_coco(tmp_path, set_in(coco_document(), ("annotations", 0, "segmentation"), [polygon]))
    try:
        (_, target), = read_all(tmp_path, path)
    except ValueError as error:
        assert str(path) in str(error)
        return
    assert target["masks"].shape == (len(target["boxes"]), 8, 10)
