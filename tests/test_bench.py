"""Smoke tests of the benchmark machinery at tiny sizes (no timing assertions)."""
import time

import torch

from lessons_pkg import bench
from lessons_pkg import boxes as box_ops
from lessons_pkg.commands import bench as bench_command


def test_ops_group_runs_at_tiny_sizes(capsys):
    rows = bench_command.main(["ops", "--tiny", "--repeats", "1", "--warmup", "0", "--device", "cpu"])
    out = capsys.readouterr().out
    assert "device: cpu" in out and "torchvision ms" in out
    names = [r.name for r in rows]
    assert any(n.startswith("box_iou") for n in names)
    assert any(n.startswith("batched_nms") for n in names)
    assert any(n.startswith("roi_align") for n in names)
    assert all(r.same is not False for r in rows)        # ours agrees with torchvision
    assert all(r.ours_ms >= 0 and r.ref_ms >= 0 for r in rows)
    assert all(r.target is None for r in rows)            # targets are for the real sizes


def test_only_filters_cases(capsys):
    rows = bench_command.main(["ops", "--tiny", "--repeats", "1", "--warmup", "0", "--only", "box_iou"])
    assert [r.name for r in rows] == ["box_iou 50x50"]


def test_measure_interleaves_and_takes_medians():
    calls = []
    case = bench.Case("sleepy", lambda: calls.append("ours"), lambda: (calls.append("ref"),
                                                                        time.sleep(0.002)),
                      target=1.0, same=lambda a, b: True)
    row = bench.measure(case, torch.device("cpu"), repeats=3, warmup=1)
    assert calls == ["ours", "ref"] * 5                  # check, warm-up, 3 repeats
    assert row.ref_ms >= 2 and row.ratio < 1 and row.same is True


def test_format_table_marks_targets():
    rows = [bench.Row("fast", 1.0, 2.0, 2.0, True), bench.Row("slow", 5.0, 1.0, 2.0, False),
            bench.Row("free", 3.0, 1.0, None, None)]
    table = bench.format_table(rows)
    lines = table.splitlines()
    assert "ok" in lines[2] and "yes" in lines[2]
    assert "MISS" in lines[3] and "NO" in lines[3]
    assert lines[4].split()[-1] == "3.00"


def test_an_unknown_group_is_refused_by_name(capsys):
    import pytest
    with pytest.raises(SystemExit):
        bench_command.main(["boxes", "--tiny"])
    assert "boxes" in capsys.readouterr().err


def test_clustered_boxes_are_valid_and_overlap():
    b = bench.clustered_boxes(400, image_size=300.0)
    assert b.shape == (400, 4)
    assert (b[:, 2:] >= b[:, :2]).all() and (b >= 0).all() and (b <= 300).all()
    iou = box_ops.box_iou(b, b).fill_diagonal_(0)
    assert (iou > 0.5).any(1).float().mean() > 0.3         # realistic: many near-duplicates
