"""The exercise checkers accept right answers and point at the first wrong case."""
import pytest
import torch
import torchvision

from lessons_pkg import exercises, metrics


def test_check_visible_boxes_passes_the_solution_and_fails_planted_mistakes(capsys):
    from lessons_pkg.exercises import solutions

    assert exercises.check_visible_boxes(solutions.visible_boxes)
    assert "all 9 cases pass" in capsys.readouterr().out

    def plus_one_only(masks, min_visible):        # the whole silhouettes: no occlusion at all
        if masks.shape[0] == 0:
            return torch.zeros(0, 4)
        return torchvision.ops.masks_to_boxes(masks) + torch.tensor([0.0, 0, 1, 1])

    def earlier_on_top(masks, min_visible):       # the painting order reversed
        return solutions.visible_boxes(masks.flip(0), min_visible).flip(0)

    def last_index(masks, min_visible):           # torchvision's convention: x2 is the last pixel
        return solutions.visible_boxes(masks, min_visible) - torch.tensor([0.0, 0, 1, 1])

    def strictly_above(masks, min_visible):       # keeps only objects *above* min_visible
        return solutions.visible_boxes(masks, min_visible + 1e-6)

    assert not exercises.check_visible_boxes(plus_one_only)
    assert "half covered by a later one" in capsys.readouterr().out
    assert not exercises.check_visible_boxes(earlier_on_top)
    assert "cases wrong" in capsys.readouterr().out
    assert not exercises.check_visible_boxes(last_index)
    assert "a single pixel at row 3, column 5: a box of width 1" in capsys.readouterr().out
    assert not exercises.check_visible_boxes(strictly_above)
    assert "exactly 0.5: kept" in capsys.readouterr().out
    assert not exercises.check_visible_boxes(lambda m, v: 1 / 0)
    assert "raised ZeroDivisionError" in capsys.readouterr().out


def test_check_linear_to_conv(capsys):
    from torch import nn

    from lessons_pkg.models import sliding_window

    state = torch.random.get_rng_state()
    assert exercises.check_linear_to_conv(sliding_window.linear_to_conv)
    assert "all 5 cases pass" in capsys.readouterr().out
    assert torch.equal(torch.random.get_rng_state(), state)  # the checker leaves the reader's RNG alone

    def scrambled(linear, d, k):  # (out, k, k, D) order: a classic mistake
        conv = nn.Conv2d(d, linear.out_features, k, bias=linear.bias is not None)
        with torch.no_grad():
            conv.weight.copy_(linear.weight.view(-1, k, k, d).permute(0, 3, 1, 2))
            if linear.bias is not None:
                conv.bias.copy_(linear.bias)
        return conv

    assert not exercises.check_linear_to_conv(scrambled)
    assert "values differ" in capsys.readouterr().out

    def no_bias(linear, d, k):
        conv = sliding_window.linear_to_conv(linear, d, k)
        if conv.bias is not None:
            nn.init.zeros_(conv.bias)
        return conv

    assert not exercises.check_linear_to_conv(no_bias)
    assert "bias" in capsys.readouterr().out
    assert not exercises.check_linear_to_conv(lambda linear, d, k: nn.Conv2d(d, 1, k))
    assert "expected an output of shape" in capsys.readouterr().out


def test_check_miou(capsys):
    def right(pred, target, k):
        ious = []
        for c in range(k):
            inter = ((pred == c) & (target == c)).sum()
            union = ((pred == c) | (target == c)).sum()
            if union > 0:
                ious.append(inter / union)
        return torch.stack(ious).float().mean()

    assert exercises.check_miou(right)
    assert "all 6 cases pass" in capsys.readouterr().out

    def absent_as_zero(pred, target, k):
        ious = [((pred == c) & (target == c)).sum() / ((pred == c) | (target == c)).sum().clamp(min=1) for c in range(k)]
        return torch.stack(ious).float().mean()

    assert not exercises.check_miou(absent_as_zero)
    assert "left out of the mean" in capsys.readouterr().out
    assert not exercises.check_miou(lambda p, t, k: (p == t).float().mean())  # pixel accuracy is not mIoU
    assert "everything called background" in capsys.readouterr().out


def test_check_encode_boxes(capsys):
    from lessons_pkg import boxes

    assert exercises.check_encode_boxes(lambda g, p: boxes.encode_boxes(g, p))
    assert "all 5 cases pass" in capsys.readouterr().out

    def corners_not_centres(g, p):  # dx from the left edges instead of the centres
        pw, ph = p[:, 2] - p[:, 0], p[:, 3] - p[:, 1]
        gw, gh = g[:, 2] - g[:, 0], g[:, 3] - g[:, 1]
        return torch.stack([10 * (g[:, 0] - p[:, 0]) / pw, 10 * (g[:, 1] - p[:, 1]) / ph,
                            5 * torch.log(gw / pw), 5 * torch.log(gh / ph)], dim=1)

    assert not exercises.check_encode_boxes(corners_not_centres)
    assert "twice as tall" in capsys.readouterr().out
    assert not exercises.check_encode_boxes(lambda g, p: boxes.encode_boxes(g, p, (1.0, 1.0, 1.0, 1.0)))
    assert "dx = 10 * 8 / 40 = 2" in capsys.readouterr().out   # the weights (10, 10, 5, 5) forgotten


def upsample2(x, clamp=True):
    """Bilinear upsampling by 2 written out, with (or without) the border clamp."""
    def coords(n):
        src = (torch.arange(2 * n, dtype=torch.float32) + 0.5) / 2 - 0.5
        if clamp:
            src = src.clamp(min=0)
        lo = src.floor().long()
        return lo, (lo + 1).clamp(max=n - 1), src - lo
    (y0, y1, wy), (x0, x1, wx) = coords(x.shape[-2]), coords(x.shape[-1])
    rows = x[..., y0, :] * (1 - wy)[:, None] + x[..., y1, :] * wy[:, None]
    return rows[..., x0] * (1 - wx) + rows[..., x1] * wx


def test_check_bilinear_upsample(capsys):
    assert exercises.check_bilinear_upsample(upsample2)
    assert "all 5 cases pass" in capsys.readouterr().out
    assert not exercises.check_bilinear_upsample(lambda x: upsample2(x, clamp=False))  # index -1 wraps around
    assert "first wrong output pixel [0, 0, 0, 0]" in capsys.readouterr().out
    assert not exercises.check_bilinear_upsample(lambda x: x.repeat_interleave(2, -1).repeat_interleave(2, -2))
    assert "3 x 4 ramp" in capsys.readouterr().out


def test_check_pareto_front(capsys):
    assert exercises.check_pareto_front(metrics.pareto_front)
    assert "all 8 cases pass" in capsys.readouterr().out

    def strict_only(ms, acc):  # forgets that a tie on one axis still dominates
        return ~((ms[None, :] < ms[:, None]) & (acc[None, :] > acc[:, None])).any(dim=1)

    assert not exercises.check_pareto_front(strict_only)
    assert "equally fast, less accurate" in capsys.readouterr().out

    def no_worse_dominates(ms, acc):  # forgets "strictly better in one": identical ones knock each other out
        return ~((ms[None, :] <= ms[:, None]) & (acc[None, :] >= acc[:, None])).fill_diagonal_(False).any(dim=1)

    assert not exercises.check_pareto_front(no_worse_dominates)
    assert "two identical detectors" in capsys.readouterr().out


def test_check_hard_negatives_agrees_with_the_ssd_loss(capsys):
    """The checker's loop is the rule of ssd.ssd_loss(negatives="hard"): the loss over the
    positives and the negatives it picks equals the package's loss."""
    import torch.nn.functional as F

    from lessons_pkg.exercises.single_shot import _reference
    from lessons_pkg.models import ssd

    def vectorized(ce, positive, ratio):
        rank = ce.masked_fill(positive, -float("inf")).argsort(dim=1, descending=True).argsort(dim=1)
        return (rank < ratio * positive.sum(dim=1, keepdim=True)) & ~positive

    assert exercises.check_hard_negatives(vectorized)
    assert "all 5 cases pass" in capsys.readouterr().out
    assert not exercises.check_hard_negatives(lambda ce, pos, r: vectorized(ce, torch.zeros_like(pos), r) & ~pos)
    assert "should" in capsys.readouterr().out

    def over_the_batch(ce, positive, ratio):   # one ranking over all images, not per image
        flat = vectorized(ce.reshape(1, -1), positive.reshape(1, -1), ratio)
        return flat.view_as(positive)

    assert not exercises.check_hard_negatives(over_the_batch)
    assert "three images, one without objects" in capsys.readouterr().out

    torch.manual_seed(0)
    model = ssd.SSD(num_classes=4)
    defaults = model.default_boxes((128, 128))
    d = len(defaults)
    logits, deltas = torch.randn(2, d, 5), torch.randn(2, d, 4) * 0.1
    targets = [{"boxes": torch.tensor([[10.0, 12, 40, 50], [60, 60, 100, 90]]), "labels": torch.tensor([1, 3])},
               {"boxes": torch.tensor([[30.0, 30, 60, 70]]), "labels": torch.tensor([2])}]
    labels = torch.zeros(2, d, dtype=torch.int64)
    for i, t in enumerate(targets):
        m = ssd.match_default_boxes(t["boxes"], defaults)
        labels[i] = torch.where(m >= 0, t["labels"][m.clamp(min=0)], 0)
    ce = F.cross_entropy(logits.reshape(-1, 5), labels.reshape(-1), reduction="none").view(2, d)
    chosen = (labels > 0) | _reference(ce, labels > 0, 3)
    expected = ce[chosen].sum() / (labels > 0).sum()
    got = ssd.ssd_loss(logits, deltas, defaults, targets)["loss_cls"]
    torch.testing.assert_close(got, expected)


def test_check_mask_target(capsys):
    import torch.nn.functional as F

    def right(mask, box, size):
        h, w = mask.shape
        x1, y1, x2, y2 = box.tolist()
        t = (torch.arange(size) + 0.5) / size
        gx, gy = 2 * (x1 + t * (x2 - x1)) / w - 1, 2 * (y1 + t * (y2 - y1)) / h - 1
        grid = torch.stack(torch.meshgrid(gx, gy, indexing="xy"), dim=-1)[None]
        return F.grid_sample(mask[None, None], grid, align_corners=False, padding_mode="border")[0, 0]

    assert exercises.check_mask_target(right)
    assert "all 6 cases pass" in capsys.readouterr().out

    def corners(mask, box, size):  # align_corners=True: half a pixel off
        h, w = mask.shape
        x1, y1, x2, y2 = box.tolist()
        t = (torch.arange(size) + 0.5) / size
        gx, gy = 2 * (x1 + t * (x2 - x1)) / (w - 1) - 1, 2 * (y1 + t * (y2 - y1)) / (h - 1) - 1
        grid = torch.stack(torch.meshgrid(gx, gy, indexing="xy"), dim=-1)[None]
        return F.grid_sample(mask[None, None], grid, align_corners=True)[0, 0]

    assert not exercises.check_mask_target(corners)
    assert "should be" in capsys.readouterr().out

    def sampled(mask, box, size, **options):   # the right grid, grid_sample's options varied
        h, w = mask.shape
        x1, y1, x2, y2 = box.tolist()
        t = (torch.arange(size) + 0.5) / size
        gx, gy = 2 * (x1 + t * (x2 - x1)) / w - 1, 2 * (y1 + t * (y2 - y1)) / h - 1
        grid = torch.stack(torch.meshgrid(gx, gy, indexing="xy"), dim=-1)[None]
        return F.grid_sample(mask[None, None], grid, **options)[0, 0]

    # the pitfall the page warns about: the flag set to True, nothing else changed
    assert not exercises.check_mask_target(lambda *a: sampled(*a, align_corners=True, padding_mode="border"))
    assert "these are the values of align_corners=True" in capsys.readouterr().out
    # the default padding: zeros blend into the edge pixels' outer halves
    assert not exercises.check_mask_target(lambda *a: sampled(*a, align_corners=False))
    assert "padding_mode='zeros'" in capsys.readouterr().out


# ----------------------------------------------------------------------------- stub exercises
def stub(*args):
    raise NotImplementedError


@pytest.mark.parametrize("checker", sorted(exercises.CHECKERS))
def test_every_checker_reports_a_stub_as_not_implemented_yet(checker, capsys):
    assert getattr(exercises, checker)(stub) is False
    out = capsys.readouterr().out
    assert out.strip() == (f"{checker}: not implemented yet (the function still raises NotImplementedError): "
                           "write its body, then run the check again.")


def test_a_stub_is_not_implemented_yet_even_where_a_checker_catches_the_readers_errors(capsys):
    """check_miou and check_visible_boxes catch the reader's exceptions case by case; a stub
    still gets one verdict, not "N of N cases wrong" (the planted fault: a checker without the
    decorator would print that)."""
    from lessons_pkg.exercises import _report, segmentation

    assert not segmentation.check_miou.__wrapped__(stub)            # the undecorated checker
    assert "6 of 6 cases wrong" in capsys.readouterr().out
    assert not _report.checker(segmentation.check_miou.__wrapped__)(stub)
    assert "not implemented yet" in capsys.readouterr().out


def test_every_checker_has_a_test_that_fails_two_planted_wrong_solutions():
    """Counted in the tests' source: ``assert not exercises.check_X(...)`` on something else
    than the stub, at least twice for every checker."""
    import re
    from pathlib import Path

    sources = "\n".join(path.read_text() for path in Path(__file__).parent.glob("test_*.py"))
    for checker in exercises.CHECKERS:
        planted = re.findall(rf"assert not exercises\.{checker}\((?!stub\))", sources)
        assert len(planted) >= 2, f"{checker}: {len(planted)} planted wrong solution(s) proven to fail"


def test_check_diou_passes_the_solution_and_fails_planted_mistakes(capsys):
    from lessons_pkg.boxes import box_iou
    from lessons_pkg.exercises import solutions

    assert exercises.check_diou(solutions.diou)
    assert "all 9 cases pass" in capsys.readouterr().out

    def diou(a, b, enclosing=True, clamp=True):
        lt = torch.maximum(a[:, None, :2], b[None, :, :2])
        rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
        inter = (rb - lt).clamp(min=0).prod(-1) if clamp else (rb - lt).prod(-1)
        area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])
        iou = inter / (area(a)[:, None] + area(b)[None, :] - inter)
        rho2 = (((a[:, None, :2] + a[:, None, 2:]) - (b[None, :, :2] + b[None, :, 2:])) ** 2).sum(-1) / 4
        if enclosing:
            lt, rb = torch.minimum(a[:, None, :2], b[None, :, :2]), torch.maximum(a[:, None, 2:], b[None, :, 2:])
        return iou - rho2 / ((rb - lt) ** 2).sum(-1).clamp(min=1e-7)

    assert exercises.check_diou(diou)                                        # the harness itself is right
    capsys.readouterr()
    assert not exercises.check_diou(lambda a, b: diou(a, b, enclosing=False))   # the intersection's diagonal
    assert "half overlap" in capsys.readouterr().out
    assert not exercises.check_diou(lambda a, b: diou(a, b, clamp=False))       # IoU without the clamp
    assert "apart in x but overlapping in y" in capsys.readouterr().out
    assert not exercises.check_diou(box_iou)                                    # plain IoU
    assert "(their IoU is 0.3333), got 0.3333" in capsys.readouterr().out


def test_check_soft_nms_passes_the_solution_and_fails_planted_mistakes(capsys):
    import math

    from lessons_pkg.boxes import box_iou
    from lessons_pkg.exercises import solutions

    assert exercises.check_soft_nms(solutions.soft_nms)
    assert "all 9 cases pass" in capsys.readouterr().out
    # the checker's reference, by hand on the two-box case: 0.8 * exp(-0.5^2 / 0.5)
    two = solutions.soft_nms(torch.tensor([[0.0, 0, 12, 10], [4.0, 0, 16, 10]]), torch.tensor([0.9, 0.8]), 0.5)
    torch.testing.assert_close(two, torch.tensor([0.9, 0.8 * math.exp(-0.5)]))

    def soft(boxes, scores, sigma, resort=True, power=2, every=True):
        iou, current = box_iou(boxes, boxes), scores.clone().float()
        order = scores.argsort(descending=True, stable=True).tolist()
        chosen = torch.zeros(len(boxes), dtype=torch.bool)
        for n in range(len(boxes)):
            m = int(current.masked_fill(chosen, -math.inf).argmax()) if resort else order[n]
            chosen[m] = True
            if every or n == 0:
                current = torch.where(chosen, current, current * torch.exp(-iou[m] ** power / sigma))
        return current

    assert exercises.check_soft_nms(soft)                                      # the harness itself is right
    capsys.readouterr()
    assert not exercises.check_soft_nms(lambda *a: soft(*a, resort=False))     # the original order, never re-sorted
    assert "the best *current* score" in capsys.readouterr().out
    assert not exercises.check_soft_nms(lambda *a: soft(*a, power=1))          # exp(-IoU / sigma)
    assert "IoU 0.5" in capsys.readouterr().out
    assert not exercises.check_soft_nms(lambda *a: soft(*a, every=False))      # only the best box decays the others
    assert "box 1 (score 0.8500 before) should end with score 0.5743" in capsys.readouterr().out

    def hard(boxes, scores, sigma):                                            # greedy NMS: suppressed scores set to 0
        kept = torch.zeros(len(boxes), dtype=torch.bool)
        kept[solutions_nms(boxes, scores)] = True
        return torch.where(kept, scores, 0.0)

    def solutions_nms(boxes, scores):
        import torchvision
        return torchvision.ops.nms(boxes, scores, 0.3)

    assert not exercises.check_soft_nms(hard)
    assert "cases wrong" in capsys.readouterr().out


def test_check_roi_pool_box_passes_the_solution_and_fails_planted_mistakes(capsys):
    import math

    from lessons_pkg.exercises import solutions

    assert exercises.check_roi_pool_box(solutions.roi_pool_box)
    assert "all 7 cases pass" in capsys.readouterr().out

    def pool(feature, box, output_size, scale, rounding=solutions._round_half_away, inclusive=1, clip=True):
        c, h, w = feature.shape
        ph, pw = output_size
        x1, y1, x2, y2 = (rounding(v * scale) for v in box.tolist())
        rw, rh = max(x2 - x1 + inclusive, 1), max(y2 - y1 + inclusive, 1)
        out = feature.new_zeros(c, ph, pw)
        for i in range(ph):
            t, b = math.floor(i * rh / ph) + y1, math.ceil((i + 1) * rh / ph) + y1
            for j in range(pw):
                left, r = math.floor(j * rw / pw) + x1, math.ceil((j + 1) * rw / pw) + x1
                if clip:
                    t, b, left, r = max(min(t, h), 0), max(min(b, h), 0), max(min(left, w), 0), max(min(r, w), 0)
                if b > t and r > left:
                    out[:, i, j] = feature[:, t:b, left:r].amax(dim=(1, 2))
        return out

    assert exercises.check_roi_pool_box(pool)                                          # the harness itself is right
    capsys.readouterr()
    assert not exercises.check_roi_pool_box(lambda *a: pool(*a, rounding=round))       # Python's banker's rounding
    assert "round half away" in capsys.readouterr().out
    assert not exercises.check_roi_pool_box(lambda *a: pool(*a, inclusive=0))         # the end pixel left out
    assert "cases wrong" in capsys.readouterr().out
    assert not exercises.check_roi_pool_box(lambda *a: pool(*a, clip=False))          # no clipping to the map
    assert "outside the map" in capsys.readouterr().out


def test_check_anchor_labels_passes_the_solution_and_fails_planted_mistakes(capsys):
    from lessons_pkg.exercises import solutions

    assert exercises.check_anchor_labels(solutions.anchor_labels)
    assert "all 8 cases pass" in capsys.readouterr().out

    def labels(iou, high, low, low_quality=True, own_best=True, strict_low=True):
        if iou.shape[0] == 0:
            return torch.full((iou.shape[1],), -1)
        best, who = iou.max(dim=0)
        out = who.clone()
        out[(best < low) if strict_low else (best <= low)] = -1
        out[(best >= low) & (best < high) if strict_low else (best > low) & (best < high)] = -2
        if low_quality:
            top = iou == iou.max(dim=1, keepdim=True).values
            top &= iou.max(dim=1, keepdim=True).values > 0
            for g, a in top.nonzero().tolist():
                out[a] = who[a] if own_best else g
        return out

    assert exercises.check_anchor_labels(labels)
    capsys.readouterr()
    assert not exercises.check_anchor_labels(lambda i, h, lo: labels(i, h, lo, low_quality=False))
    assert "only 0.4 still gets it" in capsys.readouterr().out
    assert not exercises.check_anchor_labels(lambda i, h, lo: labels(i, h, lo, own_best=False))
    assert "keeps its own best object" in capsys.readouterr().out
    assert not exercises.check_anchor_labels(lambda i, h, lo: labels(i, h, lo, strict_low=False))
    assert "exactly at the low threshold" in capsys.readouterr().out


def test_check_yolo_targets_passes_the_solution_and_fails_planted_mistakes(capsys):
    from lessons_pkg.exercises import solutions

    assert exercises.check_yolo_targets(solutions.yolo_targets)
    assert "all 7 cases pass" in capsys.readouterr().out

    def first_listed_wins(boxes, labels, grid, image):   # no ordering by area
        out = solutions.yolo_targets(boxes[:0], labels[:0], grid, image)
        for n in range(len(boxes) - 1, -1, -1):            # earlier objects overwrite later ones
            one = solutions.yolo_targets(boxes[n:n + 1], labels[n:n + 1], grid, image)
            out = torch.where(one[..., 5:6] > 0, one, out)
        return out

    def plain_sizes(boxes, labels, grid, image):        # w / W instead of its square root
        out = solutions.yolo_targets(boxes, labels, grid, image)
        out[..., 2:4] = out[..., 2:4] ** 2
        return out

    assert not exercises.check_yolo_targets(first_listed_wins)
    assert "the larger box is kept" in capsys.readouterr().out
    assert not exercises.check_yolo_targets(plain_sizes)
    assert "sqrt(w / W)" in capsys.readouterr().out
    assert not exercises.check_yolo_targets(stub)
    assert "not implemented yet" in capsys.readouterr().out


@pytest.mark.parametrize("checker", sorted(exercises.CHECKERS))
def test_every_checker_has_a_worked_solution_that_passes(checker, capsys):
    from lessons_pkg.exercises import solutions

    assert checker in solutions.SOLUTIONS, f"{checker} has no worked solution in exercises.solutions"
    assert getattr(exercises, checker)(solutions.SOLUTIONS[checker])
    assert "pass" in capsys.readouterr().out


def test_check_centernet_heatmap_passes_the_solution_and_fails_planted_mistakes(capsys):
    import math

    from lessons_pkg.exercises import solutions
    from lessons_pkg.models.centernet import centernet_radius

    assert exercises.check_centernet_heatmap(solutions.centernet_heatmap)
    assert "all 8 cases pass" in capsys.readouterr().out

    def bumps(boxes, labels, num_classes, map_size, combine, round_centre=math.floor, window=True):
        h, w = map_size
        heat = torch.zeros(num_classes, h, w)
        for (x1, y1, x2, y2), label in zip(boxes.tolist(), labels.tolist()):
            col = min(max(round_centre((x1 + x2) / 8), 0), w - 1)
            row = min(max(round_centre((y1 + y2) / 8), 0), h - 1)
            size = torch.tensor([math.ceil((y2 - y1) / 4), math.ceil((x2 - x1) / 4)], dtype=torch.float32)
            r = max(math.floor(float(centernet_radius(size[:1], size[1:])[0])), 0)
            dy = torch.arange(h)[:, None] - row
            dx = torch.arange(w)[None, :] - col
            bump = torch.exp(-(dx ** 2 + dy ** 2) / (2 * ((2 * r + 1) / 6) ** 2))
            if window:
                bump = bump * ((dx.abs() <= r) & (dy.abs() <= r))
            heat[label - 1] = combine(heat[label - 1], bump)
        return heat

    summed = lambda *a: bumps(*a, combine=torch.add)                       # overlapping bumps add up
    rounded = lambda *a: bumps(*a, combine=torch.maximum, round_centre=round)   # round, not floor
    unwindowed = lambda *a: bumps(*a, combine=torch.maximum, window=False)      # the tail left everywhere
    assert not exercises.check_centernet_heatmap(summed)
    assert "maximum of their bumps" in capsys.readouterr().out
    assert not exercises.check_centernet_heatmap(rounded)
    assert "between cells" in capsys.readouterr().out
    assert not exercises.check_centernet_heatmap(unwindowed)
    assert "cases wrong" in capsys.readouterr().out


def test_check_shard_passes_the_solution_and_fails_planted_mistakes(capsys):
    import math

    from lessons_pkg.exercises import solutions

    assert exercises.check_shard(solutions.shard)
    assert "all 8 cases pass" in capsys.readouterr().out

    def order(n, seed):
        return torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()

    def padded(indices, w):
        total = math.ceil(len(indices) / w) * w
        while len(indices) < total:
            indices += indices[:total - len(indices)]
        return indices

    def per_rank_seed(n, w, r, e, s=0):           # each process its own permutation
        return torch.tensor(padded(order(n, s + e + r), w)[r::w])

    def same_every_epoch(n, w, r, e, s=0):        # the epoch forgotten
        return torch.tensor(padded(order(n, s), w)[r::w])

    def unshuffled_padding(n, w, r, e, s=0):      # pads with 0, 1, ... instead of the order's start
        indices = order(n, s + e)
        total = math.ceil(n / w) * w
        return torch.tensor((indices + list(range(total - n)))[r::w])

    def contiguous(n, w, r, e, s=0):              # blocks instead of every W-th position
        per = math.ceil(n / w)
        return torch.tensor(padded(order(n, s + e), w)[r * per:(r + 1) * per])

    def unshuffled(n, w, r, e, s=0):              # the text's unshuffled sampler
        return torch.tensor(padded(list(range(n)), w)[r::w])

    assert not exercises.check_shard(per_rank_seed)
    assert "every process must draw the same one" in capsys.readouterr().out
    assert not exercises.check_shard(same_every_epoch)
    assert "a different one each epoch" in capsys.readouterr().out
    assert not exercises.check_shard(unshuffled_padding)
    assert "right until the padding" in capsys.readouterr().out
    assert not exercises.check_shard(contiguous)
    assert "a block of consecutive positions" in capsys.readouterr().out
    assert not exercises.check_shard(unshuffled)
    assert "the unshuffled indices" in capsys.readouterr().out


def test_check_conv_transpose1d_fails_planted_mistakes(capsys):
    import torch.nn.functional as F

    from lessons_pkg.exercises import solutions

    def overwrite(x, w, stride, padding, output_padding):   # copies written over each other, not added
        full = x.new_zeros(x.shape[0], w.shape[1], (x.shape[-1] - 1) * stride + w.shape[-1] + output_padding)
        for i in range(x.shape[-1]):
            full[:, :, i * stride:i * stride + w.shape[-1]] = torch.einsum("bc,cok->bok", x[:, :, i], w)
        return full[:, :, padding:full.shape[-1] - padding]

    def flipped(x, w, stride, padding, output_padding):     # the kernel flipped (a convolution's habit)
        return solutions.conv_transpose1d(x, w.flip(-1), stride, padding, output_padding)

    def zeros_for_output_padding(x, w, stride, padding, output_padding):  # crop p both sides, then op zeros
        out = solutions.conv_transpose1d(x, w, stride, 0, 0)
        out = out[:, :, padding:out.shape[-1] - padding]
        return F.pad(out, (0, output_padding))

    def padding_at_the_end(x, w, stride, padding, output_padding):        # 2p cropped from the end
        out = solutions.conv_transpose1d(x, w, stride, 0, output_padding)
        return out[:, :, :out.shape[-1] - 2 * padding]

    assert exercises.check_conv_transpose1d(solutions.conv_transpose1d)
    capsys.readouterr()
    assert not exercises.check_conv_transpose1d(overwrite)
    assert "overlap" in capsys.readouterr().out
    assert not exercises.check_conv_transpose1d(flipped)
    assert "cases wrong" in capsys.readouterr().out
    assert not exercises.check_conv_transpose1d(zeros_for_output_padding)
    out = capsys.readouterr().out
    assert "2 of 6 cases wrong" in out and "output_padding 1 (the other doubling layer)" in out, out
    assert not exercises.check_conv_transpose1d(padding_at_the_end)
    assert "padding 1 (the usual doubling layer)" in capsys.readouterr().out
    assert not exercises.check_conv_transpose1d(
        lambda x, w, s, p, op: F.conv_transpose1d(x, w, stride=s, padding=p, output_padding=op)[..., 1:])
    assert "expected a result of shape" in capsys.readouterr().out
