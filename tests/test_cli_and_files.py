"""Files and command lines: nothing overwritten without being asked, corrupt files named,
counts of 0 or less refused before any work."""
import json
import time

import pytest
import torch

from lessons_pkg import recipes, records
from lessons_pkg.commands import bench, checkpoints, detector_speed
from lessons_pkg.commands import data_export as data_cli
from lessons_pkg.commands import pretrain as pretrain_command
from lessons_pkg.data import export_coco, make_split


@pytest.mark.parametrize("main, argv, option", [
    (checkpoints.main, ["ssd", "--steps", "0"], "--steps"),
    (checkpoints.main, ["ssd", "--steps", "-3"], "--steps"),
    (pretrain_command.main, ["--steps", "0"], "--steps"),
    (pretrain_command.main, ["--num-images", "0"], "--num-images"),
    (pretrain_command.main, ["--batch-size", "-1"], "--batch-size"),
    (pretrain_command.main, ["--lr", "0"], "--lr"),
    (pretrain_command.main, ["--lr", "nan"], "--lr"),
    (detector_speed.main, ["--images", "0"], "--images"),
    (bench.main, ["ops", "--repeats", "0"], "--repeats"),
    (bench.main, ["ops", "--warmup", "-1"], "--warmup"),
    (data_cli.main, ["export", "/tmp/never-written", "--num-images", "0"], "--num-images"),
])
def test_counts_of_zero_or_less_are_refused_at_once(main, argv, option, capsys):
    start = time.perf_counter()
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert option in capsys.readouterr().err
    assert time.perf_counter() - start < 5   # refused by argparse, before rendering or training


def test_export_refuses_to_overwrite_a_dataset(tmp_path, capsys):
    out = tmp_path / "set"
    data_cli.main(["export", str(out), "--num-images", "2"])
    before = (out / "annotations.json").read_bytes()
    with pytest.raises(SystemExit):
        data_cli.main(["export", str(out), "--num-images", "3"])
    assert "already holds a dataset; pass overwrite=True (--overwrite" in capsys.readouterr().err
    assert (out / "annotations.json").read_bytes() == before
    with pytest.raises(FileExistsError, match="already holds a dataset"):
        export_coco(make_split("val", 1), out)
    data_cli.main(["export", str(out), "--num-images", "1", "--overwrite"])
    assert len(json.loads((out / "annotations.json").read_text())["images"]) == 1
    assert len(list((out / "images").glob("*.png"))) == 1   # no stale images of the bigger export


@pytest.fixture
def weights(tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"w": torch.ones(2)}, path)
    path.with_suffix(".json").write_text(json.dumps({"command": "x"}))
    return path


# torch's own words when weights_only refuses a file: advice to turn it off, never to be relayed
TORCH_ADVICE = ("weights_only", "can still be loaded", "trust the source")


@pytest.mark.parametrize("content, message", [
    (b"", "the checkpoint file is empty"),
    (b"not a zip file at all", "not a torch file"),
    (None, "truncated"),
])
def test_corrupt_weights_are_named_without_advising_weights_only_false(weights, content, message):
    if content is None:
        content = weights.read_bytes()[: len(weights.read_bytes()) // 2]
    weights.write_bytes(content)
    with pytest.raises(ValueError, match=message) as info:
        records.load_weights(weights)
    assert str(weights) in str(info.value) and "command in its record" in str(info.value)
    assert not any(words in str(info.value) for words in TORCH_ADVICE), str(info.value)


def test_a_pickled_object_is_refused_not_run(weights):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))
    torch.save({"w": Evil()}, weights)
    with pytest.raises(ValueError, match="Python objects besides tensors") as info:
        records.load_weights(weights)
    assert not any(words in str(info.value) for words in TORCH_ADVICE), str(info.value)
    torch.save([torch.ones(1)], weights)
    with pytest.raises(ValueError, match="expected a state_dict"):
        records.load_weights(weights)
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        records.load_weights(weights.with_name("missing.pt"))


@pytest.mark.parametrize("content, message", [
    (b"{\"command\": ", r"model.json: not valid JSON \(line 1"),
    (b"\xff\xfe{}", r"model.json: not UTF-8 text"),
    (b"[1, 2]", r"model.json: a record must be a JSON object"),
])
def test_corrupt_records_are_named(weights, content, message):
    weights.with_suffix(".json").write_bytes(content)
    with pytest.raises(ValueError, match=message):
        records.load_record(weights)


def test_checkpoint_load_names_a_corrupt_file(tmp_path):
    bad = tmp_path / "ssd.pt"
    bad.write_bytes(b"garbage")
    bad.with_suffix(".json").write_text("{}")
    with pytest.raises(ValueError, match=r"ssd.pt: not a readable checkpoint"):
        recipes.load("ssd", bad)
