"""Benchmarks of the package against its references: ``python -m lessons_pkg.bench ops``.

Each group is an argparse subcommand whose function returns a list of :class:`Case`; add a
group by writing such a function and registering it in ``GROUPS``. Timings are honest by
construction: the default thread count, warm-up runs, ours and the reference interleaved
repeat by repeat (so a noisy neighbour slows both), medians, and a CUDA sync around each
run on a GPU. Each case also checks once that both give the same result.
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch



@dataclass
class Case:
    """One row of a benchmark table."""
    name: str
    ours: Callable[[], object]
    ref: Callable[[], object]
    target: float | None = None        # the largest acceptable ours/ref ratio, if any
    same: Callable[[object, object], bool] | None = None   # compares the two outputs


@dataclass
class Row:
    name: str
    ours_ms: float
    ref_ms: float
    target: float | None
    same: bool | None

    @property
    def ratio(self) -> float:
        return self.ours_ms / self.ref_ms if self.ref_ms > 0 else float("inf")


def _time_ms(fn: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) * 1e3


def measure(case: Case, device: torch.device, repeats: int = 7, warmup: int = 2) -> Row:
    """Median milliseconds of ``case.ours`` and ``case.ref``, interleaved."""
    same = case.same(case.ours(), case.ref()) if case.same else None
    for _ in range(warmup):
        case.ours(), case.ref()
    ours, ref = [], []
    for _ in range(repeats):
        ours.append(_time_ms(case.ours, device))
        ref.append(_time_ms(case.ref, device))
    return Row(case.name, statistics.median(ours), statistics.median(ref), case.target, same)


def format_table(rows: list[Row], ref_name: str = "torchvision") -> str:
    head = (f"{'case':<34}{'ours ms':>10}{ref_name + ' ms':>17}{'ratio':>8}  "
            f"{'target':<12}{'same':<5}")
    lines = [head, "-" * len(head)]
    for r in rows:
        target = "" if r.target is None else f"<= {r.target:g} " + \
            ("ok" if r.ratio <= r.target else "MISS")
        same = "" if r.same is None else ("yes" if r.same else "NO")
        lines.append(f"{r.name:<34}{r.ours_ms:>10.2f}{r.ref_ms:>17.2f}{r.ratio:>8.2f}  "
                     f"{target:<12}{same:<5}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- data
def clustered_boxes(n: int, image_size: float = 800.0, per_cluster: int = 10,
                    generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """Tensor[n, 4] xyxy boxes like a detector's raw output: clusters of about
    ``per_cluster`` jittered copies of one box (many overlaps), sizes 16 to image_size / 4."""
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    n_clusters = max(1, n // per_cluster)
    centre = torch.rand(n_clusters, 2, generator=g) * image_size
    size = 16 + torch.rand(n_clusters, 2, generator=g) * (image_size / 4)
    which = torch.randint(n_clusters, (n,), generator=g)
    xy = centre[which] + 0.15 * size[which] * torch.randn(n, 2, generator=g)
    wh = size[which] * (1 + 0.2 * torch.randn(n, 2, generator=g)).clamp(0.5, 1.5)
    boxes = torch.cat((xy - wh / 2, xy + wh / 2), 1).clamp(0, image_size)
    return boxes.to(device)


def random_rois(k: int, batch: int, image_size: float = 800.0,
                generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """Tensor[k, 5] RoIs (batch index, x1, y1, x2, y2), 16 to 400 px wide, some past the edge."""
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    xy = torch.rand(k, 2, generator=g) * image_size * 0.9
    wh = 16 + torch.rand(k, 2, generator=g) * (image_size / 2 - 16)
    idx = torch.randint(batch, (k, 1), generator=g).float()
    return torch.cat((idx, xy, xy + wh), 1).to(device)


# ----------------------------------------------------------------------------- groups
def ops_cases(device: torch.device, tiny: bool = False) -> list[Case]:
    """lessons_pkg.ops (and boxes.box_iou) against torchvision.ops, at the sizes of the targets (or
    tiny ones)."""
    import torchvision

    from . import boxes as box_ops
    from . import ops
    tv = torchvision.ops
    g = torch.Generator().manual_seed(0)
    equal = torch.equal
    cases = []

    n_iou = 50 if tiny else 2000
    a = clustered_boxes(n_iou, generator=g, device=device)
    b = clustered_boxes(n_iou, generator=g, device=device)
    cases.append(Case(f"box_iou {n_iou}x{n_iou}", lambda: box_ops.box_iou(a, b),
                      lambda: tv.box_iou(a, b), 1.0, equal))

    def same_set(x, y):   # torchvision may order equal scores otherwise (see ops.batched_nms)
        return equal(x.sort()[0], y.sort()[0])

    # On CUDA torchvision's NMS sorts equal scores unstably: compare the kept sets there.
    same_nms = equal if device.type == "cpu" else same_set

    for n in ((100, 300) if tiny else (5000, 20000)):
        boxes = clustered_boxes(n, generator=g, device=device)
        scores = torch.rand(n, generator=g).to(device)
        classes = torch.randint(20, (n,), generator=g).to(device)
        label = f"{n // 1000}k" if n % 1000 == 0 else str(n)
        cases.append(Case(f"nms {label}", lambda bx=boxes, s=scores: ops.nms(bx, s, 0.5),
                          lambda bx=boxes, s=scores: tv.nms(bx, s, 0.5), 2.0, same_nms))
        cases.append(Case(f"batched_nms {label} (20 classes)",
                          lambda bx=boxes, s=scores, c=classes: ops.batched_nms(bx, s, c, 0.5),
                          lambda bx=boxes, s=scores, c=classes: tv.batched_nms(bx, s, c, 0.5),
                          2.0, same_set))

    close = lambda x, y: torch.allclose(x, y, atol=1e-5, rtol=1e-5)  # noqa: E731
    channels, side = (8, 12) if tiny else (256, 50)
    feats = torch.randn(1, channels, side, side, generator=g).to(device)
    for k in ((16,) if tiny else (512, 2000)):
        rois = random_rois(k, 1, image_size=side * 16, generator=g, device=device)
        for sr, target in ((2, 2.0), (-1, None)):
            cases.append(Case(
                f"roi_align {k} RoIs, sampling {sr}",
                lambda r=rois, s=sr: ops.roi_align(feats, r, 7, 1 / 16, s),
                lambda r=rois, s=sr: tv.roi_align(feats, r, 7, 1 / 16, s), target, close))
    k = 16 if tiny else 512
    rois = random_rois(k, 1, image_size=side * 16, generator=g, device=device)
    cases.append(Case(f"roi_pool {k} RoIs", lambda: ops.roi_pool(feats, rois, 7, 1 / 16),
                      lambda: tv.roi_pool(feats, rois, 7, 1 / 16), None, close))
    leaf = feats.clone().requires_grad_()
    grad = torch.randn(k, channels, 7, 7, generator=g).to(device)

    def backward(fn):
        leaf.grad = None
        fn(leaf, rois, 7, 1 / 16, 2).backward(grad)
        return leaf.grad

    cases.append(Case(f"roi_align {k} RoIs, fwd+bwd", lambda: backward(ops.roi_align),
                      lambda: backward(tv.roi_align), None, None))
    if tiny:   # the targets are about the real sizes; tiny ones only exercise the code
        for case in cases:
            case.target = None
    return cases


GROUPS: dict[str, Callable[..., list[Case]]] = {"ops": ops_cases}


if __name__ == "__main__":   # python -m lessons_pkg.bench: the command is commands/bench.py
    from lessons_pkg.commands.bench import main
    main()
