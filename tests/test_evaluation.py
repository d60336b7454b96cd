"""The one scorer (lessons_pkg.evaluation): what it returns for each task, the same numbers split
across processes, and the committed selective-search proposals it scores R-CNN with."""
from __future__ import annotations

import json
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from lessons_pkg import evaluation, metrics, records, recipes
from lessons_pkg.commands import proposals as proposals_command
from lessons_pkg.data import make_split
from lessons_pkg.models import proposals as proposal_methods
from lessons_pkg.train import distributed

pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------- the committed proposals
@pytest.mark.parametrize("split", ["val", "test"])
def test_the_committed_proposals_are_the_files_their_records_describe(split):
    path = evaluation.proposals_file(split)
    record = records.load_record(path)
    assert records.sha256(path) == record["sha256"], f"{path} changed since its record was written"
    assert record["num_images"] == evaluation.split_size(split) and record["top_k"] == 300
    assert record["command"] == (f"python -m lessons_pkg.commands.proposals --split {split} "
                                 f"--num-images {record['num_images']} --config default")
    stored = evaluation.stored_proposals(split, record["num_images"])
    assert len(stored) == record["num_images"] and all(p.shape[1] == 4 and len(p) <= 300 for p in stored)


@pytest.mark.parametrize("split, index", [("val", 0), ("val", 63), ("test", 0), ("test", 150), ("test", 299)])
def test_a_sample_of_the_committed_proposals_is_recomputed_exactly(split, index):
    image, _ = make_split(split, index + 1)[index]
    fresh = proposal_methods.selective_search(image)[0][:300]
    assert torch.equal(evaluation.stored_proposals(split, index + 1)[index], fresh)


def test_the_evaluation_sets_read_the_committed_proposals_and_run_no_search(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("selective search ran on an image whose proposals are committed")

    monkeypatch.setattr(proposal_methods, "selective_search", forbidden)
    dataset = evaluation.evaluation_set("val", 4, proposals=True)
    assert [len(dataset[i][1]["proposals"]) for i in range(4)] == [
        len(p) for p in evaluation.stored_proposals("val", 4)]
    # scoring hands them to the model (as training does): no search runs in the forward either
    model, _ = recipes.load("fast_rcnn")
    assert set(evaluation.score(model, dataset, "detection")) == set(metrics.SUMMARY_KEYS)
    # beyond the committed images (or another preset), the search runs as before
    assert evaluation.stored_proposals("val", 65) is None and evaluation.stored_proposals("val", 4, "hard") is None


def test_the_proposals_command_refuses_to_replace_a_committed_file(capsys):
    with pytest.raises(SystemExit):
        proposals_command.main(["--split", "val"])
    assert "exists; pass --overwrite" in capsys.readouterr().err


# ----------------------------------------------------------------------------- score
def test_a_detection_block_is_cocos_twelve_numbers_of_the_predictions():
    model, _ = recipes.load("ssd")
    dataset = make_split("val", 8)
    block = evaluation.score(model, dataset, "detection")
    preds, targets = evaluation.predictions(model, dataset)
    expected = metrics.mean_average_precision(preds, targets)
    assert set(block) == set(metrics.SUMMARY_KEYS)
    assert all(block[k] == round(float(expected[k]), 6) for k in metrics.SUMMARY_KEYS)


def test_every_task_gives_its_block_and_a_wrong_task_is_named():
    seg, _ = recipes.load("fcn")
    block = evaluation.score(seg, make_split("val", 4), "segmentation")
    assert set(block) == {"miou", "pixel_accuracy", "iou_per_class"} and len(block["iou_per_class"]) == 5
    inst, _ = recipes.load("mask_rcnn")
    block = evaluation.score(inst, make_split("val", 4), "instance")
    assert set(block["segm"]) == set(metrics.SUMMARY_KEYS) and "map" in block
    with pytest.raises(ValueError, match="task must be one of"):
        evaluation.score(seg, make_split("val", 1), "semantic")
    with pytest.raises(ValueError, match="'val' or the 'test' split"):
        evaluation.split_size("train")


def test_the_model_keeps_its_mode():
    model, _ = recipes.load("yolo")
    model.train()
    evaluation.score(model, make_split("val", 2), "detection")
    assert model.training


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _score_in_a_group(rank: int, world_size: int, port: int, task: str, recipe: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size))
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        context = distributed.Context(rank, world_size, 0, torch.device("cpu"), "gloo")
        model, _ = recipes.load(recipe)
        block = evaluation.score(model, make_split("val", 7), task, context=context)
        if rank == 0:
            with open(out, "w") as f:
                json.dump(block, f)
        else:
            assert block == {}
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("task, recipe", [("instance", "mask_rcnn"), ("segmentation", "fcn")])
def test_two_processes_score_what_one_process_scores(tmp_path, task, recipe):
    """Each process scores every 2nd image (7 images: 4 and 3); rank 0 gathers the detections
    (or sums the confusion matrices): the same block as one process on all 7."""
    out = tmp_path / "block.json"
    mp.spawn(_score_in_a_group, args=(2, _free_port(), task, recipe, str(out)), nprocs=2, join=True)
    model, _ = recipes.load(recipe)
    assert json.loads(out.read_text()) == evaluation.score(model, make_split("val", 7), task)
