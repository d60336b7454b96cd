"""Several processes, one training: ``torch.distributed`` as ``torchrun`` sets it up.

``torchrun --nproc_per_node=N -m lessons_pkg.train ...`` starts N copies of the command and
gives each its ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` (and the rendezvous address) in the
environment; :func:`init` reads them and joins the process group: gloo on the CPU, NCCL on CUDA
(one GPU per process, ``LOCAL_RANK``). Started without torchrun, the command is one process and
nothing here does anything. Several machines are torchrun's business too (``--nnodes``,
``--rdzv-endpoint``); nothing here is home-made.

What DistributedDataParallel needs from the command, and where it is:

- each process sees its own share of every epoch: a ``DistributedSampler`` seeded with the run's
  seed and told the epoch (:class:`lessons_pkg.train.BatchStream` calls ``set_epoch``);
- gradients are averaged across processes during ``backward`` (DDP itself);
- one process (rank 0) writes files, logs and shows the progress bar; it alone reads
  ``last.pt`` on ``--resume`` and sends the state to the others (:func:`broadcast_state`), so
  the nodes need no shared folder;
- evaluation is split across processes, each on every N-th image, and the predictions are
  gathered on rank 0 (:func:`gather`), which scores them;
- BatchNorm statistics: ``SyncBatchNorm`` on CUDA (its kernels are CUDA-only), each process's
  own on the CPU (DDP broadcasts rank 0's buffers at every forward).
"""
from __future__ import annotations

import datetime
import io
import os
import warnings
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class Context:
    """Where this process stands: its rank among ``world_size``, its device, the backend."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init(device: str | None = None) -> Context:
    """Join the process group that torchrun describes in the environment (or stay a single
    process without it). ``device``: "cpu" or "cuda" (default: CUDA when present)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    use_cuda = torch.cuda.is_available() if device is None else device == "cuda"
    if device not in (None, "cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    if use_cuda and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available")
    if world_size == 1:
        return Context(device=torch.device("cuda" if use_cuda else "cpu"))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if use_cuda else "gloo"
    if use_cuda:
        if local_rank >= torch.cuda.device_count():
            raise ValueError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} CUDA devices: "
                             "start at most one process per GPU (--nproc_per_node)")
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=10))
    return Context(rank, world_size, local_rank,
                   torch.device("cuda", local_rank) if use_cuda else torch.device("cpu"), backend)


def shutdown() -> None:
    """Leave the process group (on success and on error alike: torchrun then exits cleanly)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def wrap(model: nn.Module, context: Context) -> nn.Module:
    """``model`` on the context's device, inside DistributedDataParallel when there are several
    processes (with SyncBatchNorm on CUDA). One process: the model itself."""
    model = model.to(context.device)
    if not context.distributed:
        return model
    # The backbone runs channels-last, so a 1x1 convolution's gradient is laid out unlike DDP's
    # flat bucket and DDP copies it (and says so once, at length): known, and cheap at this size.
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    # A detector leaves some parameters out of a step's loss (Mask R-CNN's mask head on a batch
    # without a positive RoI): DDP must then look for them instead of waiting for their gradients.
    if context.device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return nn.parallel.DistributedDataParallel(model, device_ids=[context.local_rank],
                                                   find_unused_parameters=True)
    return nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside DDP (what is saved and evaluated)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def gather(obj, context: Context) -> list | None:
    """Every process's ``obj`` (any picklable value) on rank 0, in rank order; None elsewhere."""
    if not context.distributed:
        return [obj]
    out = [None] * context.world_size if context.is_main else None
    dist.gather_object(obj, out, dst=0)
    return out


def all_gather(obj, context: Context) -> list:
    """Every process's ``obj`` on every process, in rank order."""
    if not context.distributed:
        return [obj]
    out = [None] * context.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(context: Context) -> None:
    if context.distributed:
        dist.barrier()


def broadcast_state(state: dict | None, context: Context) -> dict | None:
    """Rank 0's ``state`` on every process: a dict of tensors and plain values, as
    ``torch.save`` writes it (a ``last.pt``). Rank 0 passes it (None: it has none to send, e.g.
    its file was unreadable); the others pass None and get a copy, on the CPU, or None when
    rank 0 sent none. One process: ``state`` itself.

    Sent as bytes, not as pickled objects: rank 0 ``torch.save``s the state, the bytes travel as
    a uint8 tensor (its length first, -1 for "none"; on the context's device, as NCCL needs),
    and every receiver reads them with ``torch.load(..., weights_only=True)``, which builds
    tensors and plain values only. ``broadcast_object_list`` would unpickle whatever arrives.
    """
    if not context.distributed:
        return state
    # gloo sends CPU tensors; NCCL only tensors on this process's GPU
    device = context.device if context.backend == "nccl" else torch.device("cpu")
    payload = None
    if context.is_main and state is not None:
        buffer = io.BytesIO()
        torch.save(state, buffer)
        payload = torch.frombuffer(bytearray(buffer.getbuffer()), dtype=torch.uint8).to(device)
    length = torch.tensor([payload.numel() if payload is not None else -1], dtype=torch.int64, device=device)
    dist.broadcast(length, src=0)
    if int(length.item()) < 0:
        return None
    if payload is None:
        payload = torch.empty(int(length.item()), dtype=torch.uint8, device=device)
    dist.broadcast(payload, src=0)
    if context.is_main:
        return state
    return torch.load(io.BytesIO(payload.cpu().numpy().tobytes()), map_location="cpu", weights_only=True)
