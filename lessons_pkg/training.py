"""One way to train a recipe and record it: :func:`run_training`, for both commands that train.

    python -m lessons_pkg.checkpoints NAME    # the committed checkpoint: shapes data, float16, val + test scores
    python -m lessons_pkg.train NAME --out D  # any data (COCO files too), one process or many, resumable

Both build the data (:class:`TrainingData`) and the settings (:class:`Settings`) their own way and
hand them to :func:`run_training`, which seeds, builds the recipe's model, trains it with
``train.fit`` (one process, or DDP under ``torchrun``), scores the weights *as saved* (after the
cast to the file's dtype) with :func:`lessons_pkg.evaluation.score`, and writes the checkpoint and
its record (:func:`lessons_pkg.records.save_checkpoint`). Optional on the way: the time-to-quality
curve (:class:`QualityCurve`), evaluations every N steps, and a resumable ``last.pt``.
"""
from __future__ import annotations

import math
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from . import evaluation, records
from .data import collate_detection, make_split, segmentation_augmentation
from .models import rcnn
from .recipes import Recipe, get, load, remake_command
from .train import distributed
from .train.distributed import Context
from .train.loop import BatchStream, History, fit, make_loader, rng_state, seed_everything, set_rng_state

WEIGHT_DECAY = 1e-4   # train.fit's default, which every recipe trained with


class Stopped(Exception):
    """``Settings.stop_after`` was reached (``last.pt`` is written)."""


# ----------------------------------------------------------------------------- what to train on
@dataclass
class TrainingData:
    """The images of one training run.

    ``train``: the training set (the recipe's task's target contract); ``score_sets``: the sets
    the final weights are scored on, name -> (the header the record keeps, e.g. {"split": "val",
    "num_images": 64}, the dataset); ``classes``: the class names; ``source``: what the record says
    the data was.
    """

    train: Dataset
    classes: tuple
    source: dict
    score_sets: dict[str, tuple[dict, Dataset]] = field(default_factory=dict)


def shapes_training_set(recipe: Recipe, num_images: int | None = None) -> Dataset:
    """The recipe's training data on the shapes ``train`` split (random crops for a segmentation
    recipe that trains on crops). R-CNN's and Fast R-CNN's proposals are added by :func:`shapes_data`."""
    crop = segmentation_augmentation((recipe.crop_size,) * 2) if recipe.crop_size else None
    return make_split("train", num_images or recipe.num_train_images, recipe.config, transforms=crop)


def shapes_data(recipe: Recipe, num_train_images: int | None = None, num_val_images: int | None = None,
                test: bool = True) -> TrainingData:
    """The recipe's shapes data: its training split, scored on the first ``num_val_images`` of
    ``val`` and (``test``) the records' ``TEST_IMAGES`` of ``test``."""
    train_set = shapes_training_set(recipe, num_train_images)
    classes = tuple(train_set.classes)
    if recipe.proposals:   # R-CNN and Fast R-CNN read selective-search proposals
        train_set = rcnn.WithProposals(train_set)
    sizes = {"val": num_val_images or evaluation.VAL_IMAGES, **({"test": evaluation.TEST_IMAGES} if test else {})}
    score_sets = {split: ({"split": split, "num_images": n, "config": recipe.config},
                          evaluation.evaluation_set(split, n, recipe.config, recipe.proposals))
                  for split, n in sizes.items()}
    return TrainingData(train_set, classes, {"shapes": recipe.config}, score_sets)


def make_train_loader(train_set: Dataset, batch_size: int, seed: int, context: Context, workers: int = 0):
    """One process: the loader every recipe trained with (shuffled by the global generator). Several:
    each process draws its share of every epoch from a DistributedSampler seeded with ``seed``."""
    if not context.distributed:
        return make_loader(train_set, batch_size, num_workers=workers)
    sampler = DistributedSampler(train_set, num_replicas=context.world_size, rank=context.rank, shuffle=True,
                                 seed=seed, drop_last=True)
    return DataLoader(train_set, batch_size=batch_size, sampler=sampler, collate_fn=collate_detection,
                      num_workers=workers, drop_last=True, pin_memory=context.device.type == "cuda")


# ----------------------------------------------------------------------------- how to train
@dataclass(frozen=True)
class Settings:
    """How one run trains and what it writes. ``steps`` ... ``seed``: the optimizer's budget
    (AdamW, cosine schedule after a linear warm-up; ``batch_size`` per process; ``lr`` the peak
    rate of the whole step at any world size: DDP averages the processes' gradients, so a step of
    W processes is one step on their W x ``batch_size`` images).

    ``out``: the checkpoint file (its record beside it), written in ``dtype``; None writes no file
    (the record is still returned). ``curve``: keep the time-to-quality curve (the ``"test"`` score
    set every ``recipe.curve_every`` steps). ``last``: the resumable state's file, written every
    ``save_every`` steps (None: none); ``resume`` continues from it; ``stop_after`` stops there
    (a job of a time-limited queue). ``eval_every``: score the ``"val"`` set every N steps too.
    ``render_first``: render (and propose) every training image before the clock starts.
    ``lr_scaling``: how ``lr`` was derived from the recipe's (:func:`scaled_lr`), for the record;
    None: ``lr`` as given, the learning rate of the whole step at any world size.
    """

    steps: int
    batch_size: int
    lr: float
    warmup_steps: int
    seed: int
    out: Path | None = None
    dtype: str = "float32"
    command: str = ""
    curve: bool = False
    last: Path | None = None
    save_every: int = 100
    resume: bool = False
    stop_after: int | None = None
    eval_every: int = 0
    amp: bool = False
    workers: int = 0
    progress: bool = True
    render_first: bool = False
    lr_scaling: dict | None = None

    @classmethod
    def of(cls, recipe: Recipe, **changes) -> "Settings":
        """The recipe's settings, with ``changes`` where they are not None (a flag given, else the
        recipe's value: the one place this is decided)."""
        base = {name: getattr(recipe, name) for name in ("steps", "batch_size", "lr", "warmup_steps", "seed")}
        return cls(**{**base, **{k: v for k, v in changes.items() if v is not None}})


LR_SCALING_RULES = ("linear", "sqrt")


def scaled_lr(rule: str, lr: float, effective_batch_size: int, reference_batch_size: int) -> tuple[float, dict]:
    """The peak learning rate for a step of ``effective_batch_size`` images (per-process batch x
    world size), from ``lr``, the rate for ``reference_batch_size`` images (the recipe's batch on
    one process), with ``k`` = the ratio of the two batches:

    - ``"linear"``: ``lr * k``, the rule of Goyal et al. 2017 ("Accurate, Large Minibatch SGD"),
      derived and tested there for SGD with momentum, which needs its gradual warm-up;
    - ``"sqrt"``: ``lr * sqrt(k)``, the learning-rate part of the square-root scaling rule of
      Malladi et al. 2022 ("On the SDEs and Scaling Rules for Adaptive Gradient Algorithms"),
      whose rule for Adam also scales 1 - β1 and 1 - β2 by k and ε by 1/√k; here only the rate
      changes (AdamW's other settings stay the recipe's).

    Either way the schedule keeps its linear warm-up (from ``lr / warmup_steps`` to the scaled
    peak), the gradual warm-up of Goyal et al. in form. Returns the rate and what the record keeps
    of its derivation.
    """
    if rule not in LR_SCALING_RULES:
        raise ValueError(f"--scale-lr must be one of {', '.join(LR_SCALING_RULES)}, got {rule!r}")
    k = effective_batch_size / reference_batch_size
    factor = k if rule == "linear" else math.sqrt(k)
    return lr * factor, {"rule": rule, "reference_lr": lr, "reference_batch_size": reference_batch_size,
                         "factor": factor}


class QualityCurve:
    """Records a training's test-split quality every ``recipe.curve_every`` steps, against the
    seconds spent training so far (the evaluations' own time left out), for ``fit``'s ``on_step``.

    The evaluation leaves the training as it would have been without it: the model's mode is
    restored by ``train.evaluate``, and every random state (Python, NumPy, torch) is put back, so
    a run with a curve trains the same weights as one without.
    """

    def __init__(self, recipe: Recipe, model: nn.Module, steps: int, dataset: Dataset | None = None,
                 context: Context | None = None):
        self.recipe, self.model, self.steps, self.context = recipe, model, steps, context
        self.dataset = dataset if dataset is not None else evaluation.evaluation_set(
            "test", evaluation.TEST_IMAGES, recipe.config, recipe.proposals)
        self.points: list[dict] = []
        self.eval_seconds = 0.0
        self.start = time.perf_counter()

    def training_seconds(self) -> float:
        return time.perf_counter() - self.start - self.eval_seconds

    def on_step(self, done: int) -> None:
        if done % self.recipe.curve_every or done >= self.steps:  # the last point is the saved weights'
            return
        seconds = self.training_seconds()
        began = time.perf_counter()
        state = rng_state()
        scored = evaluation.score(distributed.unwrap(self.model), self.dataset, self.recipe.task, context=self.context)
        set_rng_state(state)
        if scored:
            self.points.append({"step": done, "seconds": round(seconds, 1),
                                **evaluation.curve_point(self.recipe.task, scored)})
        self.eval_seconds += time.perf_counter() - began

    def finish(self, test_scores: dict, train_seconds: float) -> list[dict]:
        """The points, the last one the final weights' ``test_scores`` at ``train_seconds``."""
        last = {"step": self.steps, "seconds": round(train_seconds, 1),
                **evaluation.curve_point(self.recipe.task, test_scores)}
        return [*self.points, last]


# ----------------------------------------------------------------------------- resumable state
def model_generators(model: nn.Module) -> dict:
    """The random generators a model owns (e.g. the sliding-window detector's window sampler,
    ``module.generator``), by module name: their states belong to a resumable run too."""
    return {name: module.generator for name, module in distributed.unwrap(model).named_modules()
            if isinstance(getattr(module, "generator", None), torch.Generator)}


def save_last(path: Path, model: nn.Module, optimizer, step: int, history: History, batches: BatchStream,
              meta: dict, context: Context) -> None:
    """Write ``last.pt`` (rank 0; every process's RNG states, its own and its model's generators,
    are gathered into it). Written to a temporary file and renamed: an interrupted save leaves
    the previous one whole."""
    generators = {name: g.get_state() for name, g in model_generators(model).items()}
    states = distributed.all_gather({"rng": rng_state(), "stream": batches.state_dict(),
                                     "generators": generators}, context)
    if not context.is_main:
        return
    state = {"meta": meta, "step": step, "model": distributed.unwrap(model).state_dict(),
             "optimizer": optimizer.state_dict(),
             "history": {"steps": history.steps, "losses": history.losses, "lr": history.lr,
                         "seconds": history.seconds, "pending_steps": history.pending_steps,
                         "pending": {name: value.detach().cpu() for name, value in history.pending.items()}},
             "processes": states}
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_last(path: Path, meta: dict) -> dict:
    """The state of ``last.pt``, checked against this run's model and data (ValueError naming
    what differs)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch's own text is never relayed (records.why_unreadable)
        raise ValueError(f"{path}: not a readable last.pt: {records.why_unreadable(error)}; start again with "
                         "--overwrite") from None
    if not isinstance(state, dict) or "meta" not in state:
        raise ValueError(f"{path}: not a last.pt written by python -m lessons_pkg.train")
    for key in ("model", "num_classes", "classes", "steps", "world_size", "batch_size"):
        if state["meta"].get(key) != meta.get(key):
            raise ValueError(f"--resume: {path} was written with {key} = {state['meta'].get(key)!r}, this run has "
                             f"{meta.get(key)!r}; resume with the same settings, or start again with --overwrite")
    # the optimizer in the file keeps its learning rate: a different one asked for now would be ignored
    if "lr" in state["meta"] and state["meta"]["lr"] != meta.get("lr"):
        raise ValueError(f"--resume: {path} was written with lr = {state['meta']['lr']!r}, this run has "
                         f"{meta.get('lr')!r} (--lr, --scale-lr or the world size differ); resume with the same "
                         "settings, or start again with --overwrite")
    return state


def receive_last(path: Path, meta: dict, context: Context) -> dict:
    """The state of ``last.pt`` on every process, read by rank 0 alone (:func:`load_last`) and
    sent to the others (:func:`lessons_pkg.train.distributed.broadcast_state`): only rank 0's
    node needs the file, and every rank then takes its own RNG and data state from it. When
    rank 0 cannot read it, every rank raises (rank 0 with the reason), none waits forever."""
    state, error = None, None
    if context.is_main:
        try:
            state = load_last(path, meta)
        except ValueError as failure:
            error = failure
    state = distributed.broadcast_state(state, context)
    if error is not None:
        raise error
    if state is None:
        raise ValueError(f"--resume: rank 0 could not read its {path} (its error is on rank 0's stderr)")
    return state


# ----------------------------------------------------------------------------- the run
def run_training(name: str, recipe: Recipe, data: TrainingData, settings: Settings,
                 context: Context | None = None) -> dict | None:
    """Train recipe ``name`` on ``data`` as ``settings`` say, score the final weights as saved on
    every score set, and write the checkpoint (``settings.out``) and its record.

    Returns the record on rank 0 (None on the other ranks, and when ``stop_after`` stopped the
    run: ``last.pt`` then holds it). The record: the command, the recipe and its settings as run,
    the data, the world size and batches, the final loss, the training seconds (evaluations left
    out), the images per second, the scores, and the curve when asked for.
    """
    context = context if context is not None else Context()
    s = settings
    seed_everything(s.seed + context.rank)   # each process its own augmentations; the model below is rank 0's
    num_classes = len(data.classes)
    model = recipe.build(pretrained=True, num_classes=num_classes)
    render_seconds = None
    if s.render_first:   # render (and propose) once, up front, so the timing below is training only
        start = time.perf_counter()
        for i in range(len(data.train)):
            data.train[i]
        render_seconds = round(time.perf_counter() - start, 1)
    model = distributed.wrap(model, context)  # DDP broadcasts rank 0's initial weights to every process
    loader = make_train_loader(data.train, s.batch_size, s.seed, context, s.workers)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=s.lr,
                                  weight_decay=WEIGHT_DECAY)
    meta = {"model": name, "num_classes": num_classes, "classes": list(data.classes), "steps": s.steps,
            "world_size": context.world_size, "batch_size": s.batch_size, "lr": s.lr}
    batches, history, start_step = BatchStream(loader), History(), 0
    if s.resume:
        state = receive_last(s.last, meta, context)
        distributed.unwrap(model).load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        history = History(**state["history"])
        start_step = int(state["step"])
        mine = state["processes"][context.rank]
        batches.load_state_dict(mine["stream"])
        set_rng_state(mine["rng"])
        for module, generator in model_generators(model).items():
            generator.set_state(mine["generators"][module])
        if start_step >= s.steps:
            raise ValueError(f"--resume: {s.last} is at step {start_step}, the run has {s.steps} steps")

    curve = QualityCurve(recipe, model, s.steps, data.score_sets["test"][1], context) if s.curve else None
    evaluations, eval_seconds = [], [0.0]

    def on_step(done: int) -> None:
        if curve is not None:
            curve.on_step(done)
        if s.eval_every and done % s.eval_every == 0 and done < s.steps and "val" in data.score_sets:
            began = time.perf_counter()
            scores = evaluation.score(distributed.unwrap(model), data.score_sets["val"][1], recipe.task,
                                      num_classes=num_classes, context=context, device=context.device)
            eval_seconds[0] += time.perf_counter() - began
            if context.is_main:
                evaluations.append({"step": done, **scores})
                key = "miou" if "miou" in scores else "map_50"
                print(f"step {done}: val {key} {scores[key]:.4f}", flush=True)
        stop = s.stop_after is not None and done == s.stop_after and done < s.steps
        if s.last is not None and (done % s.save_every == 0 or done == s.steps or stop):
            save_last(s.last, model, optimizer, done, history, batches, meta, context)
        if stop:
            raise Stopped(done)

    seconds_before = history.seconds
    try:
        history = fit(model, loader, s.steps, lr=s.lr, optimizer=optimizer, warmup_steps=s.warmup_steps,
                      device=context.device, seed=None if s.resume else s.seed + context.rank, log_every=50,
                      progress=context.is_main and s.progress, desc=name, history=history,
                      start_step=start_step, batches=batches, amp=s.amp, on_step=on_step)
    except Stopped as stopped:
        if context.is_main:
            where = (f" on host {socket.gethostname()} (rank 0's node, where --resume reads it)"
                     if context.distributed else "")
            print(f"stopped after step {stopped.args[0]} of {s.steps}: {s.last} written{where}; "
                  "the same command with --resume continues", flush=True)
        return None
    eval_total = eval_seconds[0] + (curve.eval_seconds if curve is not None else 0.0)
    train_seconds = history.seconds - eval_total
    images_per_second = (s.steps - start_step) * s.batch_size * context.world_size / max(
        history.seconds - seconds_before - eval_total, 1e-9)

    # The scores are those of the weights as the file holds them: every process casts its copy
    # to the file's dtype (a float16 file scores what it holds, not what the float32 model scored).
    module = distributed.unwrap(model).eval()
    module.load_state_dict(records.cast_state(module.state_dict(), records.DTYPES[s.dtype]))
    scores = {key: {**header, **evaluation.score(module, dataset, recipe.task, num_classes=num_classes,
                                                  context=context, device=context.device)}
              for key, (header, dataset) in data.score_sets.items()}
    if not context.is_main:
        distributed.barrier(context)
        return None
    record = {"command": s.command, "recipe": name, **recipe.settings(),
              "steps": s.steps, "batch_size": s.batch_size, "lr": s.lr, "warmup_steps": s.warmup_steps,
              "effective_batch_size": s.batch_size * context.world_size,
              "seed": s.seed, "num_classes": num_classes, "classes": list(data.classes), "data": data.source,
              "num_train_images": len(data.train), "world_size": context.world_size,
              "device": str(context.device), "backend": context.backend, "amp": s.amp,
              "final_loss": round(history.final(), 5), "train_seconds": round(train_seconds, 1),
              "images_per_second": round(images_per_second, 2), "threads": torch.get_num_threads()}
    if s.lr_scaling is not None:
        record["lr_scaling"] = s.lr_scaling
    if render_seconds is not None:
        record["render_seconds"] = render_seconds
    if s.eval_every:
        record["evaluations"] = evaluations
    if s.out is not None:
        record = records.save_checkpoint(module, s.out, record, dtype=s.dtype, scores=lambda saved: scores)
    else:
        record.update(scores)
    if curve is not None:
        record["curve"] = curve.finish(record["test"], train_seconds)
        if s.out is not None:
            records.write_record(s.out, record)
    distributed.barrier(context)
    return record


# ----------------------------------------------------------------------------- the committed checkpoints
def make_checkpoint(name: str, out: str | Path | None = None, steps: int | None = None, seed: int | None = None,
                    overwrite: bool = False, curve_only: bool = False) -> dict:
    """Train recipe ``name`` (its steps and seed unless given), write ``out`` (default: the
    committed ``data/pretrained/NAME.pt``) in float16 and its record beside it; returns the record.

    The record keeps the time-to-quality ``"curve"`` (:class:`QualityCurve`):
    the test-split quality every ``curve_every`` steps against the training seconds, the last point
    the saved weights' own test scores. With ``curve_only`` the recipe is trained the same way but
    no weights are written: only the existing record's ``"curve"`` is replaced (``--curve``, for a
    checkpoint made before records kept curves).
    """
    recipe = get(name)
    steps = recipe.steps if steps is None else steps
    seed = recipe.seed if seed is None else seed
    out = records.default_path(name) if out is None else Path(out)
    if curve_only:
        existing = records.load_record(out)   # a clear error when there is no record to add to
        if (existing["steps"], existing["seed"]) != (steps, seed):
            raise ValueError(f"{out.with_suffix('.json')} was trained for {existing['steps']} steps with seed "
                             f"{existing['seed']}; its curve must come from the same run, not {steps} and {seed}")
    else:
        out = records.check_writable(out, overwrite)
    command = remake_command(name, out, steps, seed)
    settings = Settings.of(recipe, steps=steps, seed=seed, command=command, out=None if curve_only else out,
                           curve=True, render_first=True, dtype=existing["dtype"] if curve_only else "float16")
    data = shapes_data(recipe)
    if curve_only:   # only the test split is scored: the curve's last point
        data.score_sets = {"test": data.score_sets["test"]}
    record = run_training(name, recipe, data, settings)
    if curve_only:
        existing["curve"] = record["curve"]
        existing["curve_threads"] = torch.get_num_threads()
        existing["curve_made_by"] = (f"{command} --curve: the recipe trained again with torch {torch.__version__} "
                                     f"({torch.get_num_threads()} threads), no weights written; its last point "
                                     "scores that run's weights")
        records.write_record(out, existing)
        return existing
    return record


def rescore(name: str, path: str | Path | None = None) -> dict:
    """Recompute the val and test scores of checkpoint ``name`` (default: the committed one) and
    write them into its record (``--rescore``: the weights are not touched). Returns the record."""
    model, record = load(name, path)
    path = records.default_path(name) if path is None else Path(path)
    record.update(evaluation.record_scores(get(name), model))
    records.write_record(path, record)
    return record
