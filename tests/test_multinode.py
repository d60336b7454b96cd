"""python -m lessons_pkg.train on two torchrun nodes that share no folder: two working
directories of one machine, each node with its own copy of the data at the same relative path
and its own relative --out, rendezvous over c10d on 127.0.0.1 (gloo, one process per node).

Which node is rank 0 is torchrun's choice: its c10d rendezvous numbers the nodes in the order of
their addresses (``--local-addr``, by default the machine's name; then the agent's process id).
Two machines have two names; the two folders of one machine are given two addresses
(127.0.0.1 sorts before localhost), so that node 0's folder is rank 0's at every start, as the
machine of the first name would be.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import torch

from test_train_command import ROOT, torchrun

pytestmark = pytest.mark.slow   # torchrun: five runs of two processes (75 s on 2 cores, measured alone)

ADDRESSES = ("127.0.0.1", "localhost")   # node 0's, node 1's: c10d makes the first rank 0
COCO = ["--images", "data", "--annotations", "data/annotations.json"]   # relative: each node its own copy
TRAINING = ["--steps", "4", "--batch-size", "2", "--save-every", "100", "--quiet", "--device", "cpu"]
RUN = ["ssd", "--out", "run", *COCO, *TRAINING]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_command(port: int, run_id: str, address: str) -> list[str]:
    """One node's launcher: the README's and the book page's multi-node line, with 1 process."""
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
            "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", run_id,
            "--local-addr", address, "-m", "lessons_pkg.train"]


def two_nodes(folders, args, addresses=ADDRESSES, timeout=240) -> list[subprocess.CompletedProcess]:
    """Start the train command on two nodes at once (node i in ``folders[i]``, its address
    ``addresses[i]``) and wait for both; a node still running after ``timeout`` seconds (a hang)
    fails the test, its process group killed."""
    port, run_id = free_port(), f"test-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    nodes = [subprocess.Popen([*node_command(port, run_id, address), *args], cwd=folder, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
             for folder, address in zip(folders, addresses)]
    results = []
    try:
        for node in nodes:
            out, err = node.communicate(timeout=timeout)
            results.append(subprocess.CompletedProcess(node.args, node.returncode, out, err))
    except subprocess.TimeoutExpired:
        for node in nodes:
            if node.poll() is None:
                os.killpg(node.pid, signal.SIGKILL)
        pytest.fail(f"the two nodes did not finish in {timeout} s (a node waiting for the other?)")
    return results


def node_folders(tmp_path, with_data=(True, True)) -> list[Path]:
    """Two working directories, each with its own copy of the data (the committed COCO export)
    under data/ where ``with_data`` says so."""
    folders = []
    for i, has_data in enumerate(with_data):
        folder = tmp_path / f"node{i}"
        folder.mkdir()
        if has_data:
            shutil.copytree(ROOT / "data" / "shapes_coco", folder / "data")
        folders.append(folder)
    return folders


def test_resume_on_two_nodes_that_share_no_folder(tmp_path):
    """Stop after 2 of 4 steps, then --resume on both nodes with last.pt on rank 0's node only
    (node 1 holds a garbage last.pt, which must not be read): model.pt is written once, in node 0's
    folder, equal bit for bit to an uninterrupted run of 2 processes on one node.

    The reference is 1 node x 2 processes, not 1 process x 4 images: the SSD trains with
    BatchNorm in train mode in each process (SyncBatchNorm has no CPU kernels) and a loss
    normalized by each process's matches, so a step of 2 processes of 2 images is not a step of
    one process on 4 (tests/test_train_command.py shows the BatchNorm part). With 2 processes
    each BatchNorm sees the same 2 images, the sampler gives each rank the same share, and gloo
    sums the same two gradients: equal bit for bit, wherever the ranks run."""
    node0, node1 = node_folders(tmp_path)
    stopped = two_nodes((node0, node1), [*RUN, "--stop-after", "2"])
    assert all(r.returncode == 0 for r in stopped), stopped[0].stderr[-3000:] + stopped[1].stderr[-3000:]
    assert (node0 / "run" / "last.pt").is_file() and not (node0 / "run" / "model.pt").exists()
    assert not (node1 / "run").exists()   # rank 1 writes nothing

    # rank 0 on the node without last.pt (addresses swapped): an error naming the path and host, and
    # where the file is; both nodes exit, neither waits for the other
    swapped = two_nodes((node0, node1), [*RUN, "--resume"], addresses=ADDRESSES[::-1])
    assert all(r.returncode != 0 for r in swapped)
    message = swapped[1].stderr
    host = socket.gethostname()
    assert f"--resume: run/last.pt ({node1 / 'run' / 'last.pt'}) does not exist on rank 0's node" in message
    assert f"(rank 0 on host {host})" in message and f"run/last.pt is on rank 1 on host {host}" in message

    stale = b"not a checkpoint: node 1's copy is never read"
    (node1 / "run").mkdir()
    (node1 / "run" / "last.pt").write_bytes(stale)
    resumed = two_nodes((node0, node1), [*RUN, "--resume"])
    assert all(r.returncode == 0 for r in resumed), resumed[0].stderr[-3000:] + resumed[1].stderr[-3000:]
    assert resumed[0].stdout.count("wrote ") == 1 and "wrote " not in resumed[1].stdout
    assert [p.name for p in (node1 / "run").iterdir()] == ["last.pt"]   # node 1 wrote nothing
    assert (node1 / "run" / "last.pt").read_bytes() == stale
    assert torch.load(node0 / "run" / "last.pt", weights_only=True)["step"] == 4

    data = node0 / "data"
    reference = torchrun(["-m", "lessons_pkg.train", "ssd", "--out", str(tmp_path / "whole"), "--images", str(data),
                          "--annotations", str(data / "annotations.json"), *TRAINING])
    assert reference.returncode == 0, reference.stderr[-3000:]
    whole = torch.load(tmp_path / "whole" / "model.pt", weights_only=True)
    split = torch.load(node0 / "run" / "model.pt", weights_only=True)
    assert whole.keys() == split.keys()
    for key, value in whole.items():
        assert torch.equal(value, split[key]), key
    record = json.loads((node0 / "run" / "model.json").read_text())
    assert record["final_loss"] == json.loads((tmp_path / "whole" / "model.json").read_text())["final_loss"]
    assert record["world_size"] == 2 and record["batch_size"] == 2 and record["effective_batch_size"] == 4
    assert record["command"].startswith("torchrun --nnodes=2 --nproc_per_node=1 -m lessons_pkg.train ssd")


def test_a_node_without_the_data_stops_every_node_naming_path_flag_rank_and_host(tmp_path):
    node0, node1 = node_folders(tmp_path, with_data=(True, False))
    val = ["--val-images", "data", "--val-annotations", "data/annotations.json"]
    results = two_nodes((node0, node1), [*RUN, *val], timeout=120)
    assert all(r.returncode != 0 for r in results)
    message, host = results[0].stderr, socket.gethostname()   # rank 0's
    for line in ("--images data: not a folder", "--annotations data/annotations.json: no such file",
                 "--val-images data: not a folder", "--val-annotations data/annotations.json: no such file"):
        assert f"{line} (rank 1 on host {host})" in message, message[-3000:]
    assert "rank 0 on host" not in message
    assert not (node0 / "run" / "model.pt").exists()
