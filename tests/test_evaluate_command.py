"""``python -m lessons_pkg.evaluate``: COCO's numbers for a checkpoint on a COCO-format set, and a
results file that pycocotools' loadRes + COCOeval score the same."""
import contextlib
import io
import json

import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from lessons_pkg import metrics
from lessons_pkg.commands import evaluate


@pytest.fixture(scope="module")
def crowded_coco(shapes_coco, tmp_path_factory):
    """The committed shapes export with every fifth object turned into a crowd region and COCO's
    area scaled for every third (as in a real file, sizes then differ from the boxes')."""
    document = json.loads((shapes_coco / "annotations.json").read_text())
    for k, ann in enumerate(document["annotations"]):
        ann["iscrowd"] = int(k % 5 == 0)
        if k % 3 == 0:
            ann["area"] = ann["area"] * 2.5
    path = tmp_path_factory.mktemp("crowded") / "annotations.json"
    path.write_text(json.dumps(document))
    return shapes_coco, path


def cocoeval(ann_file, results_file, iou_type) -> list[float]:
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(ann_file))
        e = COCOeval(gt, gt.loadRes(str(results_file)), iou_type)
        e.evaluate()
        e.accumulate()
        e.summarize()
    return [float(v) for v in e.stats]


def run(argv, capsys) -> tuple[int, str, str]:
    code = evaluate.main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.slow
@pytest.mark.parametrize("name, resize", [("ssd", []), ("mask_rcnn", []), ("faster_rcnn", ["--min-size", "160"])])
def test_results_file_scores_the_same_in_pycocotools(name, resize, crowded_coco, tmp_path, capsys):
    """Box (and mask) numbers printed = COCOeval on the results file, crowd regions and areas
    included; with --min-size the detections come back to the file's frame."""
    images, ann_file = crowded_coco
    results = tmp_path / "results.json"
    code, out, err = run([name, "--images", str(images), "--annotations", str(ann_file),
                          "--results", str(results), "--json", *resize], capsys)
    assert code == 0, err
    block = json.loads(out)
    assert cocoeval(ann_file, results, "bbox") == pytest.approx([block[k] for k in metrics.SUMMARY_KEYS], abs=1e-6)
    if name == "mask_rcnn":
        segm = tmp_path / "results_segm.json"
        assert cocoeval(ann_file, segm, "segm") == pytest.approx([block["segm"][k] for k in metrics.SUMMARY_KEYS],
                                                                 abs=1e-6)
    entry = json.loads(results.read_text())[0]
    assert set(entry) == {"image_id", "category_id", "bbox", "score"}


def test_refuses_to_overwrite_results_and_names_bad_flags(crowded_coco, tmp_path, capsys):
    images, ann_file = crowded_coco
    results = tmp_path / "r.json"
    results.write_text("[]")
    with pytest.raises(SystemExit):
        evaluate.main(["ssd", "--images", str(images), "--annotations", str(ann_file), "--results", str(results)])
    assert "r.json exists" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        evaluate.main(["fcn", "--images", str(images), "--annotations", str(ann_file), "--results", str(results)])
    assert "semantic segmentation" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        evaluate.main(["ssd", "--images", str(tmp_path / "nope"), "--annotations", str(ann_file)])
    assert "--images" in capsys.readouterr().err


def test_classes_must_be_the_files(crowded_coco, tmp_path, capsys):
    images, ann_file = crowded_coco
    document = json.loads(ann_file.read_text())
    document["categories"] = document["categories"][:3]
    document["annotations"] = [a for a in document["annotations"] if a["category_id"] <= 3]
    fewer = tmp_path / "three.json"
    fewer.write_text(json.dumps(document))
    code, _, err = run(["ssd", "--images", str(images), "--annotations", str(fewer)], capsys)
    assert code == 2 and "4 classes" in err and "three.json has 3" in err


@pytest.mark.slow
def test_semantic_model_reports_miou(crowded_coco, capsys):
    images, ann_file = crowded_coco
    code, out, err = run(["fcn", "--images", str(images), "--annotations", str(ann_file)], capsys)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("mIoU ") and len(lines) == 1 + 5   # background and the 4 shapes
    miou = float(lines[0].split()[1])
    per_class = [float(line.split(":")[1]) for line in lines[1:]]
    assert miou == pytest.approx(sum(per_class) / len(per_class), abs=2e-3)


@pytest.mark.slow
def test_the_train_commands_validation_scores_equal_cocoeval_on_its_results(crowded_coco, tmp_path, capsys):
    """The train command's validation mAP on a COCO file with crowd regions equals COCOeval's on
    the --results file it writes (a 3-step run: what matters is the scoring, not the model)."""
    from lessons_pkg.commands import train as train_command
    images, ann_file = crowded_coco
    out, results = tmp_path / "run", tmp_path / "val_results.json"
    code = train_command.main(["ssd", "--out", str(out), "--images", str(images), "--annotations", str(ann_file),
                               "--val-images", str(images), "--val-annotations", str(ann_file), "--steps", "3",
                               "--batch-size", "2", "--quiet", "--device", "cpu", "--results", str(results)])
    assert code == 0, capsys.readouterr().err
    record = json.loads((out / "model.json").read_text())
    assert cocoeval(ann_file, results, "bbox") == pytest.approx([record["val"][k] for k in metrics.SUMMARY_KEYS],
                                                                abs=1e-6)
    assert record["val"]["map"] != record["val"]["mar_100"]   # a real score, not an empty one


def test_the_train_commands_results_flag_is_checked_at_once(crowded_coco, tmp_path, capsys):
    from lessons_pkg.commands import train as train_command
    images, ann_file = crowded_coco
    coco = ["--images", str(images), "--annotations", str(ann_file)]
    for extra, words in (([], "needs --val-images"), (["--val-images", str(images), "--val-annotations", str(ann_file)],
                                                        "semantic segmentation")):
        model = "ssd" if not extra else "fcn"
        with pytest.raises(SystemExit):
            train_command.main([model, "--out", str(tmp_path / "o"), *coco, *extra, "--results", str(tmp_path / "r.json")])
        assert words in capsys.readouterr().err
