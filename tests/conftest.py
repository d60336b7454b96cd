"""Shared fixtures: the devices every device-agnostic test runs on, one thread for tiny tensors,
and the COCO files that several test modules read (the committed export, a set of images of
two sizes, and the smallest hand-written document with its image)."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request) -> torch.device:
    """Runs a test once on the CPU and once more on CUDA when a GPU is present."""
    return torch.device(request.param)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors gain nothing from intra-op threads, and on a busy 2-core machine OpenMP's
    spinning threads made such tests 50-100x slower (measured): a module that uses this fixture
    (``pytestmark = pytest.mark.usefixtures("one_thread")``) runs on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# The longest files, longest first (their times alone on one thread, about 130, 110, 65, 45, 40
# and 35 s). ``pytest -n 2 --dist loadfile`` hands a worker a whole file at a time, in collection
# order, whenever it finishes one: started last, a long file leaves one worker running alone at
# the end; started first, the short files even out the two workers' ends. The notebooks (about a
# minute each) go before all of them.
LONGEST_FILES = ("test_checkpoints_region_based.py", "test_checkpoints_dense.py", "test_train_command.py",
                 "test_multinode.py", "test_ablations.py", "test_architecture.py")


def run_order(item) -> int:
    """0 for a notebook, 1 + rank for the longest files, then every other file."""
    if item.path.suffix == ".ipynb":
        return 0
    if item.path.name in LONGEST_FILES:
        return 1 + LONGEST_FILES.index(item.path.name)
    return 1 + len(LONGEST_FILES)


def pytest_collection_modifyitems(config, items):
    """The longest files first (:data:`LONGEST_FILES`; a stable sort: every file keeps its tests'
    order). Tests marked ``cuda`` skip on machines without a GPU (CI has none)."""
    items.sort(key=run_order)
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


# ----------------------------------------------------------------------------- COCO files
@pytest.fixture(scope="session")
def shapes_coco() -> Path:
    """The committed COCO export of the shapes data (``make data``: 24 val images of 128 x 128,
    ``annotations.json`` beside ``images/``). Read it, never write into it."""
    return ROOT / "data" / "shapes_coco"


MIXED_SIZES = ((5, (96, 128)), (6, (128, 112)))  # (seed, (height, width)) of each half


@pytest.fixture(scope="session")
def mixed_size_coco(tmp_path_factory) -> Path:
    """A COCO set of 8 shapes images in two sizes (4 of 96 x 128, then 4 of 128 x 112): two
    exports merged into one ``annotations.json``, image and annotation ids renumbered so that
    none repeats. Returns the images root, which holds ``annotations.json``. Shared by the whole
    session: copy it before changing anything in it."""
    from lessons_pkg import data

    work = tmp_path_factory.mktemp("mixed_size_coco")
    root = work / "mixed"
    (root / "images").mkdir(parents=True)
    images, annotations = [], []
    for part, (seed, size) in enumerate(MIXED_SIZES):
        out = work / f"part{part}"
        data.export_coco(data.ShapesDataset(4, seed=seed, config=data.ShapesConfig(image_size=size)), out)
        document = json.loads((out / "annotations.json").read_text())
        for im in document["images"]:
            name = f"images/{part}_{Path(im['file_name']).name}"
            (root / name).write_bytes((out / im["file_name"]).read_bytes())
            images.append({**im, "id": 100 * part + im["id"], "file_name": name})
        for a in document["annotations"]:
            annotations.append({**a, "id": len(annotations) + 1, "image_id": 100 * part + a["image_id"]})
    (root / "annotations.json").write_text(json.dumps({"images": images, "annotations": annotations,
                                                       "categories": document["categories"]}))
    return root


@pytest.fixture(scope="session")
def coco_document():
    """A factory: ``coco_document(**changes)`` -> the smallest valid COCO document, a fresh
    dict each call: one 10 x 8 image ``img/1.png`` (id 1), categories 7 ("cat") and 3 ("dog")
    (so label 1 is "dog": labels follow sorted ids), one annotation of category 7 with a box
    and a polygon. ``changes`` replace top-level keys ("images", "annotations", ...)."""
    def make(**changes) -> dict:
        document = {
            "images": [{"id": 1, "file_name": "img/1.png", "height": 8, "width": 10}],
            "categories": [{"id": 7, "name": "cat"}, {"id": 3, "name": "dog"}],
            "annotations": [
                {"id": 1, "image_id": 1, "category_id": 7, "bbox": [1, 1, 4, 3], "iscrowd": 0,
                 "segmentation": [[1, 1, 5, 1, 5, 4, 1, 4]]},
            ],
        }
        document.update(changes)
        return document
    return make


@pytest.fixture(scope="session")
def write_coco():
    """A factory: ``write_coco(root, document, images=((1, 8, 10),))`` writes ``document`` (a
    dict, or a string written as it is) to ``root/ann.json`` and, for every (id, height,
    width) of ``images``, a grey RGB PNG ``root/img/ID.png`` unless that file exists already (a
    test may put its own pixels there first). Returns the path of ``ann.json``. Session-scoped
    and stateless, so that hypothesis may call it many times within one test."""
    def write(root: Path, document, images=((1, 8, 10),)) -> Path:
        (root / "img").mkdir(exist_ok=True)
        for image_id, height, width in images:
            path = root / "img" / f"{image_id}.png"
            if not path.exists():
                Image.fromarray(np.full((height, width, 3), 100, np.uint8)).save(path)
        annotations = root / "ann.json"
        annotations.write_text(document if isinstance(document, str) else json.dumps(document))
        return annotations
    return write
