"""The training loop every chapter uses: ``fit`` for a number of steps, ``evaluate`` for predictions.

Models follow the target contract (README): in train mode ``model(images, targets)`` returns a
dict of named losses (summed for the backward pass); in eval mode ``model(images)`` returns one
dict of predictions per image.

Training runs for a fixed number of *steps*, never for a number of seconds, so results are the
same on a laptop and on a GPU; the wall time is measured and reported, not used to stop.
"""
from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ..data.dataset import collate_detection
from ..inputs import check_image_values


def default_device() -> torch.device:
    """CUDA when present, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and PyTorch (all devices) so a run repeats exactly on one machine."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """This process's random states, in types that ``weights_only=True`` reads back."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {"python": [version, list(internal), gauss], "torch": torch.get_rng_state(),
            "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "cached": float(cached)},
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` returned (Python, NumPy, PyTorch and every CUDA device)."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = state["numpy"]
    np.random.set_state(("MT19937", np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def make_loader(dataset: Dataset, batch_size: int, shuffle: bool = True, num_workers: int = 0,
                collate_fn: Callable = collate_detection, drop_last: bool = False) -> DataLoader:
    """A DataLoader with the detection collate (images, list of targets).

    The shuffle draws from PyTorch's global generator, which ``fit(seed=...)`` seeds, so the
    order of batches repeats with the seed of the run.
    """
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle,
                      num_workers=num_workers, collate_fn=collate_fn, drop_last=drop_last,
                      pin_memory=torch.cuda.is_available())


def move_to(obj, device: torch.device):
    """Move tensors, and lists/tuples/dicts of them, to ``device`` (other values unchanged)."""
    if isinstance(obj, Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, dict):
        return {k: move_to(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(move_to(v, device) for v in obj)
    return obj


class BatchStream:
    """Batches from ``loader``, epoch after epoch (a new shuffle each epoch), with a position
    that can be saved and restored so that a resumed run sees the batches it would have seen.

    A new epoch's order is drawn from PyTorch's global generator when its iterator is made
    (``DataLoader(shuffle=True)``), or from ``sampler.set_epoch(epoch)`` (``DistributedSampler``).
    :meth:`state_dict` keeps the epoch, the batches taken from it and the generator's state at
    the epoch's start; :meth:`load_state_dict` makes the same iterator again and skips as many
    batches (it loads them: simple, and cheap next to training on them).
    """

    def __init__(self, loader: Iterable):
        self.loader = loader
        self.epoch, self.position = 0, 0
        self._iterator: Iterator | None = None
        self._epoch_rng: Tensor | None = None

    def _start_epoch(self) -> None:
        sampler = getattr(self.loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(self.epoch)
        self._epoch_rng = torch.get_rng_state()
        self._iterator = iter(self.loader)

    def __iter__(self) -> "BatchStream":
        return self

    def __next__(self):
        for _ in range(2):  # at most one epoch boundary per batch
            if self._iterator is None:
                self._start_epoch()
            try:
                batch = next(self._iterator)
            except StopIteration:
                if self.position == 0:
                    break
                self._iterator, self.epoch, self.position = None, self.epoch + 1, 0
                continue
            self.position += 1
            return batch
        raise ValueError("the training loader yields no batches (an empty dataset, or drop_last "
                         "with fewer samples than one batch)")

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position, "epoch_rng": self._epoch_rng}

    def load_state_dict(self, state: dict) -> None:
        """Continue where ``state`` left off. The global generator is left as it was before the
        call (the caller restores the step's RNG state afterwards anyway)."""
        current = torch.get_rng_state()
        self.epoch, self.position = int(state["epoch"]), 0
        if state.get("epoch_rng") is not None and int(state["position"]) > 0:
            torch.set_rng_state(state["epoch_rng"])
            self._start_epoch()
            for _ in range(int(state["position"])):
                next(self._iterator)
            self.position = int(state["position"])
        else:
            self._iterator = None
        torch.set_rng_state(current)


@dataclass
class History:
    """What ``fit`` measured: mean losses per logging interval, the learning rate, the time.

    ``losses["total"]`` is the sum of the model's named losses; ``steps[i]`` is the last step of
    the interval that ``losses[...][i]`` averages. ``pending``: the sums of each loss (0-dim
    tensors) over the ``pending_steps`` steps of the interval not logged yet, so that a run
    stopped inside an interval and resumed logs the interval's mean as the uninterrupted run does.
    """

    steps: list[int] = field(default_factory=list)
    losses: dict[str, list[float]] = field(default_factory=dict)
    lr: list[float] = field(default_factory=list)
    seconds: float = 0.0
    pending: dict[str, Tensor] = field(default_factory=dict)
    pending_steps: int = 0

    @property
    def last_step(self) -> int:
        return self.steps[-1] if self.steps else 0

    def final(self, key: str = "total") -> float:
        """The last logged value of a loss."""
        return self.losses[key][-1]


def _make_optimizer(optimizer: str | torch.optim.Optimizer, params: list, lr: float,
                    weight_decay: float) -> torch.optim.Optimizer:
    if isinstance(optimizer, torch.optim.Optimizer):
        return optimizer
    if optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {optimizer!r}; use 'adamw', 'sgd' or a torch.optim.Optimizer")


def lr_factor(schedule: str, step: int, steps: int, warmup_steps: int) -> float:
    """Multiplier of the base learning rate at ``step`` (0-based) of ``steps``: linear warm-up over
    ``warmup_steps``, then ``schedule`` ("cosine", "linear" or "constant"). What ``fit`` applies;
    a chapter draws a recipe's schedule with it."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = (step - warmup_steps) / max(1, steps - warmup_steps)
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * progress))
    if schedule == "linear":
        return 1.0 - progress
    raise ValueError(f"unknown schedule {schedule!r}; use 'cosine', 'linear' or 'constant'")


def fit(model: nn.Module, loader: Iterable, steps: int, *, lr: float = 1e-3,
        optimizer: str | torch.optim.Optimizer = "adamw", weight_decay: float = 1e-4,
        schedule: str = "cosine", warmup_steps: int = 0, grad_clip: float | None = None,
        device: torch.device | str | None = None, seed: int | None = 0, log_every: int = 10,
        progress: bool = True, desc: str = "train", history: History | None = None,
        start_step: int = 0, batches: BatchStream | None = None, amp: bool = False,
        on_step: Callable[[int], None] | None = None) -> History:
    """Train ``model`` for ``steps`` optimizer steps on batches of ``loader`` (cycled).

    Args:
        model: returns a dict of named losses for ``model(images, targets)`` in train mode.
        loader: yields ``(images, targets)``: images Tensor[B, 3, H, W] or a list of Tensor[3, H, W],
            targets a list of dicts (see the README's target contract), or any (inputs, targets) pair the model takes.
        steps: the budget (the stopping rule: results do not depend on the machine's speed).
        optimizer: "adamw", "sgd" or a ready optimizer (then lr and weight_decay are its own).
            Only parameters with ``requires_grad`` are optimized: freeze a backbone by turning it off.
        schedule: "cosine", "linear" or "constant", after ``warmup_steps`` of linear warm-up.
        device: defaults to CUDA when present; the model is moved there.
        seed: seeds everything before training (None leaves the random state alone).
        log_every: steps per logged interval. Losses are summed on the device and read back once
            per interval, so the loop does not wait for the GPU every step.
        history: continue a previous History (steps keep counting), e.g. after unfreezing.
        start_step: resume at this step of ``steps`` (the schedule continues where it was); pass
            the resumed optimizer, ``batches`` and ``history``, and ``seed=None`` after restoring
            the RNG states (``python -m lessons_pkg.train --resume`` does all of it).
        batches: the :class:`BatchStream` to draw from (default: a new one over ``loader``).
        amp: mixed precision on CUDA (``torch.autocast`` in float16 and a ``GradScaler``, whose
            skipped steps on overflow are normal and not reported); ignored on the CPU.
        on_step: called with the number of steps done after every step (evaluation, saving).

    Returns:
        the History.

    Raises:
        FloatingPointError at the first step whose loss or gradients are not finite, naming the
        step and every loss term. That step is not taken: the optimizer never steps on it and
        the BatchNorm statistics its forward pass changed are put back, so the model keeps the
        last finite weights (in eval mode, as after a finished run). The check reads one
        scalar per step: free on the CPU, a wait for the device on a GPU.
        ValueError when a batch's images are not finite floats in [0, 1] (checked on the CPU,
        before they reach the model).
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if not 0 <= start_step < steps:
        raise ValueError(f"start_step must be in 0..{steps - 1}, got {start_step}")
    if log_every < 1:
        raise ValueError(f"log_every must be >= 1, got {log_every}")
    device = torch.device(device) if device is not None else default_device()
    if seed is not None:
        seed_everything(seed)
    model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no parameter with requires_grad=True: nothing to train")
    opt = _make_optimizer(optimizer, params, lr, weight_decay)
    # The schedule scales each group's first learning rate (kept in the optimizer's state, so a
    # resumed or reused optimizer keeps its base, not the last scheduled value).
    base_lrs = [group.setdefault("initial_lr", group["lr"]) for group in opt.param_groups]
    history = history if history is not None else History()
    # step numbers: continuing a History (e.g. after unfreezing) counts on; a resumed run
    # (start_step > 0) counts as the run it resumes
    first_step = 0 if start_step > 0 else history.last_step
    use_amp = amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    # a resumed run continues the interval it stopped in (empty after a finished fit: its last step logs)
    running: dict[str, Tensor] = {name: value.to(device) for name, value in history.pending.items()}
    interval = history.pending_steps
    shown = start_step   # steps the progress bar counts (a resumed run's pending ones among them)
    batches = batches if batches is not None else BatchStream(loader)
    bar = tqdm(total=steps, initial=start_step, desc=desc, disable=not progress, leave=True)
    start = time.perf_counter()
    for step in range(start_step, steps):
        factor = lr_factor(schedule, step, steps, warmup_steps)
        for group, base in zip(opt.param_groups, base_lrs):
            group["lr"] = base * factor
        inputs, targets = next(batches)
        _check_batch_images(inputs, first_step + step + 1)
        inputs, targets = move_to((inputs, targets), device)
        buffers = [b.detach().clone() for b in model.buffers()]  # BatchNorm statistics, to undo a bad step
        with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
            losses = model(inputs, targets)
        if not isinstance(losses, dict) or not losses:
            raise TypeError("in train mode the model must return a non-empty dict of named losses "
                            f"(the target contract in the README), got {type(losses).__name__}")
        total = sum(v.float() for v in losses.values())
        opt.zero_grad(set_to_none=True)
        scaler.scale(total).backward()
        scaler.unscale_(opt)  # (a no-op without AMP) the norm below is of the true gradients
        if grad_clip is not None:
            grad_norm = nn.utils.clip_grad_norm_(params, grad_clip)
        else:
            grad_norm = nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
        if use_amp:  # an overflow is the scaler's business (it skips the step); a NaN loss is not
            grad_norm = torch.zeros((), device=device)
        if not bool(torch.isfinite(total) & torch.isfinite(grad_norm)):  # one scalar read per step
            with torch.no_grad():
                for saved, b in zip(buffers, model.buffers()):
                    b.copy_(saved)
            opt.zero_grad(set_to_none=True)
            bar.close()
            model.eval()
            shown = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in losses.items())
            what = "loss" if not torch.isfinite(total) else "gradient norm"
            raise FloatingPointError(
                f"the {what} is not finite at step {first_step + step + 1} (total={float(total.detach()):.4g}: {shown}; "
                f"gradient norm {float(grad_norm):.4g}); the step was not taken and the model keeps the "
                "weights of the step before. Lower the learning rate, clip gradients (grad_clip) or check "
                "the targets of this batch")
        scaler.step(opt)
        scaler.update()

        for name, value in {**losses, "total": total}.items():
            running[name] = running.get(name, 0.0) + value.detach()
        interval += 1
        if interval == log_every or step == steps - 1:
            means = {name: float(value) / interval for name, value in running.items()}  # one sync
            history.steps.append(first_step + step + 1)
            for name, value in means.items():
                history.losses.setdefault(name, []).append(value)
            history.lr.append(opt.param_groups[0]["lr"])
            bar.set_postfix(loss=f"{means['total']:.4f}")
            bar.update(step + 1 - shown)
            shown = step + 1
            running, interval = {}, 0
        history.pending, history.pending_steps = running, interval
        if on_step is not None:
            on_step(step + 1)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    history.seconds += time.perf_counter() - start
    bar.close()
    model.eval()
    return history


def _check_batch_images(inputs, step: int) -> None:
    """The image check of the contract, on the CPU batch before it moves to the device (on a GPU
    the model itself cannot read values without waiting): a NaN pixel must be refused before
    any BatchNorm statistic changes."""
    images = inputs if isinstance(inputs, (list, tuple)) else [inputs]
    for i, im in enumerate(images):
        if isinstance(im, Tensor) and im.is_floating_point() and im.dim() in (3, 4):
            try:
                check_image_values(im[None] if im.dim() == 3 else im)
            except ValueError as error:
                where = f"image {i} of " if im.dim() == 3 else ""
                raise ValueError(f"step {step}: {where}the batch: {error}") from None


@torch.no_grad()
def predict(model: nn.Module, images, device: torch.device | str | None = None, **inputs) -> list[dict]:
    """Eval-mode predictions for a batch (Tensor[B, 3, H, W] or a list), returned on the CPU,
    computed without gradients (nothing to learn from them; RoI pooling then skips the
    bookkeeping of where each maximum came from). ``inputs``: further keyword inputs of the
    model's forward (e.g. R-CNN's ``proposals``)."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.eval()
    with torch.no_grad():
        return move_to(model(move_to(images, device), **move_to(inputs, device)), torch.device("cpu"))


def evaluate(model: nn.Module, loader: Iterable, device: torch.device | str | None = None,
             metric: Callable[[list, list], dict] | None = None, progress: bool = False):
    """Run the model in eval mode over ``loader``.

    Returns ``(predictions, targets)`` (lists of dicts on the CPU, one per image), or
    ``metric(predictions, targets)`` when a metric is given (e.g. metrics.mean_average_precision).
    The model's train/eval mode is restored afterwards. Targets that carry ``"proposals"``
    (:class:`lessons_pkg.models.rcnn.WithProposals`) hand them to the model, as training does:
    R-CNN and Fast R-CNN then score the proposals the data holds instead of searching again.
    """
    device = torch.device(device) if device is not None else default_device()
    was_training = model.training
    model.to(device)
    predictions, targets = [], []
    for images, batch_targets in tqdm(loader, desc="eval", disable=not progress):
        given = bool(batch_targets) and all("proposals" in t for t in batch_targets)
        inputs = {"proposals": [t["proposals"] for t in batch_targets]} if given else {}
        predictions.extend(predict(model, images, device, **inputs))
        targets.extend(batch_targets)
    model.train(was_training)
    return metric(predictions, targets) if metric is not None else (predictions, targets)
