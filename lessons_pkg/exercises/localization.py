"""Exercise checkers of the chapter "Classification & localization"."""
from __future__ import annotations

from typing import Callable

import torch

from ._report import checker, report
from ..models.localizer import multitask_loss

def _loss_cases() -> list[tuple[str, tuple]]:
    """(name, (class_logits [B, C], pred_boxes [B, 4], labels [B], gt_boxes [B, 4], λ))."""
    g = torch.Generator().manual_seed(2024)

    def boxes(n):  # normalized xyxy with x1 < x2, y1 < y2
        corner = torch.rand(n, 2, generator=g) * 0.6
        return torch.cat([corner, corner + 0.1 + torch.rand(n, 2, generator=g) * 0.3], dim=1)

    cases = []
    logits = torch.randn(4, 4, generator=g)
    cases.append(("one image of each label 1..4, λ = 1", (logits, boxes(4), torch.tensor([1, 2, 3, 4]), boxes(4), 1.0)))
    gt = boxes(6)
    cases.append(("λ = 10: the box term is multiplied by λ",
                  (torch.randn(6, 4, generator=g), gt + 0.05, torch.tensor([2, 2, 1, 3, 1, 2]), gt, 10.0)))
    cases.append(("λ = 0: no box term at all", (torch.randn(3, 4, generator=g), boxes(3), torch.tensor([3, 1, 2]), boxes(3), 0.0)))
    gt = boxes(2)
    cases.append(("perfect boxes: the box loss is 0", (torch.randn(2, 4, generator=g), gt.clone(), torch.tensor([1, 3]), gt, 1.0)))
    apart = boxes(5)
    cases.append(("boxes that do not overlap (GIoU < 0, so 1 - GIoU > 1)",
                  (torch.randn(5, 4, generator=g), apart * 0.3, torch.tensor([4, 4, 1, 2, 3]), apart * 0.3 + 0.65, 1.0)))
    cases.append(("a batch of one image, 9 classes", (torch.randn(1, 9, generator=g), boxes(1), torch.tensor([9]), boxes(1), 0.5)))
    return cases


@checker
def check_multitask_loss(fn: Callable) -> bool:
    """Checks ``fn(class_logits, pred_boxes, labels, gt_boxes, box_weight) -> dict`` against
    :func:`lessons_pkg.models.localizer.multitask_loss`: {"loss_cls": cross-entropy with labels
    1..C (logit k scores label k + 1), "loss_box": box_weight * mean(1 - GIoU(pred_boxes[i],
    gt_boxes[i]))}, both scalar Tensors that gradients flow through."""
    failures = []
    cases = _loss_cases()
    for name, (logits, pred, labels, gt, weight) in cases:
        expected = multitask_loss(logits, pred, labels, gt, box_weight=weight, box_loss="giou")
        logits_in, pred_in = logits.clone().requires_grad_(), pred.clone().requires_grad_()
        try:
            got = fn(logits_in, pred_in, labels.clone(), gt.clone(), weight)
        except Exception as e:  # the reader's bug, shown rather than raised
            failures.append(f"{name}: raised {type(e).__name__}: {e}")
            continue
        if not isinstance(got, dict) or set(got) != {"loss_cls", "loss_box"}:
            keys = sorted(got) if isinstance(got, dict) else type(got).__name__
            failures.append(f"{name}: expected a dict with keys ['loss_box', 'loss_cls'], got {keys}")
            continue
        for key in ("loss_cls", "loss_box"):
            value = got[key]
            if not isinstance(value, torch.Tensor) or value.dim() != 0:
                shown = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
                failures.append(f"{name}: {key!r} must be a scalar Tensor (train.fit sums and backpropagates it), got {shown}")
                break
            source, what = (logits_in, "the logits") if key == "loss_cls" else (pred_in, "the predicted boxes")
            needs_gradient = key == "loss_cls" or weight != 0
            if needs_gradient and (not value.requires_grad or torch.autograd.grad(
                    value, source, retain_graph=True, allow_unused=True)[0] is None):
                failures.append(f"{name}: {key!r} does not depend on {what}: no gradient would flow "
                                "(computed with .item(), numpy or under no_grad?)")
                break
            if not torch.allclose(value.detach().float(), expected[key], rtol=1e-4, atol=1e-6):
                failures.append(f"{name}: {key!r} expected {expected[key].item():.6f}, got {value.item():.6f}")
                break
    return report("check_multitask_loss", failures, len(cases))
