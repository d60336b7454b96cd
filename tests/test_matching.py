"""lessons_pkg.matching against torchvision's Matcher and BalancedPositiveNegativeSampler."""
import pytest
import torch
from torchvision.models.detection._utils import BalancedPositiveNegativeSampler, Matcher

from lessons_pkg import boxes, matching

pytestmark = pytest.mark.usefixtures("one_thread")


def random_boxes(n, generator, size=100.0):
    xy = torch.rand(n, 2, generator=generator) * size
    return torch.cat([xy, xy + 2 + torch.rand(n, 2, generator=generator) * size / 3], dim=1)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("high, low, low_quality", [(0.7, 0.3, True), (0.5, 0.5, False), (0.5, 0.4, False), (0.6, 0.1, True)])
def test_match_boxes_equals_torchvision(seed, high, low, low_quality, device):
    g = torch.Generator().manual_seed(seed)
    gt, refs = random_boxes(5, g), random_boxes(300, g)
    gt[0] = refs[7]  # an exact match, and IoU ties through duplicates
    refs[8] = refs[7]
    iou = boxes.box_iou(gt, refs).to(device)
    assert (iou.max(dim=1).values > 0).all()  # torchvision promotes zero-overlap ties; see the next test
    expected = Matcher(high, low, allow_low_quality_matches=low_quality)(iou)
    assert torch.equal(matching.match_boxes(iou, high, low, low_quality), expected)


def test_low_quality_matches_skip_objects_without_any_overlap():
    iou = torch.tensor([[0.0, 0.0, 0.0], [0.2, 0.4, 0.1]])  # object 0 overlaps nothing
    matches = matching.match_boxes(iou, 0.7, 0.3, allow_low_quality=True)
    # reference 1 is object 1's best (0.4 < 0.7, promoted); object 0 promotes nothing
    assert matches.tolist() == [matching.NEGATIVE, 1, matching.NEGATIVE]


def test_no_ground_truth_means_all_negative():
    matches = matching.match_boxes(torch.zeros(0, 6), 0.7, 0.3, allow_low_quality=True)
    assert matches.tolist() == [matching.NEGATIVE] * 6
    assert matching.match_boxes(torch.zeros(3, 0), 0.5, 0.5).shape == (0,)


def test_thresholds_are_inclusive_at_high():
    iou = torch.tensor([[0.5, 0.4999, 0.3, 0.2999]])
    assert matching.match_boxes(iou, 0.5, 0.3).tolist() == [0, matching.IGNORED, matching.IGNORED, matching.NEGATIVE]


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"iou must be a Tensor\[G, A\]"):
        matching.match_boxes(torch.zeros(4), 0.5, 0.5)
    with pytest.raises(ValueError, match="0 <= low <= high <= 1"):
        matching.match_boxes(torch.zeros(1, 4), 0.3, 0.5)
    with pytest.raises(ValueError, match="batch_size >= 1"):
        matching.sample_balanced(torch.zeros(4, dtype=torch.int64), 0, 0.5)


@pytest.mark.parametrize("num_pos, num_neg", [(3, 500), (100, 500), (0, 40), (30, 0)])
def test_sample_balanced_counts_like_torchvision(num_pos, num_neg):
    matches = torch.cat([torch.randint(0, 4, (num_pos,)), torch.full((num_neg,), matching.NEGATIVE),
                         torch.full((17,), matching.IGNORED)])
    matches = matches[torch.randperm(len(matches), generator=torch.Generator().manual_seed(0))]
    pos, neg = matching.sample_balanced(matches, 256, 0.25, generator=torch.Generator().manual_seed(1))
    labels = torch.where(matches >= 0, 1, torch.where(matches == matching.NEGATIVE, 0, -1))
    (tv_pos,), (tv_neg,) = BalancedPositiveNegativeSampler(256, 0.25)([labels])
    assert len(pos) == int(tv_pos.sum()) and len(neg) == int(tv_neg.sum())
    assert (matches[pos] >= 0).all() and (matches[neg] == matching.NEGATIVE).all()
    assert len(set(pos.tolist())) == len(pos) and len(set(neg.tolist())) == len(neg)
    again = matching.sample_balanced(matches, 256, 0.25, generator=torch.Generator().manual_seed(1))
    assert torch.equal(again[0], pos) and torch.equal(again[1], neg)


def test_hungarian_match_is_the_cheapest_one_to_one_assignment():
    import itertools

    g = torch.Generator().manual_seed(4)
    for _ in range(5):
        cost = torch.rand(6, 3, generator=g)
        p, o = matching.hungarian_match(cost)
        assert torch.equal(o, torch.arange(3)) and len(set(p.tolist())) == 3
        best = min(sum(cost[q, j] for j, q in enumerate(perm)) for perm in itertools.permutations(range(6), 3))
        assert float(cost[p, o].sum()) == pytest.approx(float(best))
    with pytest.raises(ValueError, match="at least as many predictions"):
        matching.hungarian_match(torch.rand(2, 3))


def test_set_prediction_cost_by_hand():
    pred = torch.tensor([[0.0, 0.0, 10.0, 10.0], [50.0, 50.0, 70.0, 90.0]])
    gt = torch.tensor([[0.0, 0.0, 10.0, 20.0]])
    probs = torch.tensor([[0.1, 0.7, 0.2], [0.5, 0.1, 0.4]])
    cost = matching.set_prediction_cost(pred, probs, gt, torch.tensor([1]), (100, 100))
    # prediction 0: p = 0.7; cxcywh (5, 5, 10, 10) vs (5, 10, 10, 20), /100 -> L1 0.15; GIoU = IoU = 0.5
    assert cost[0, 0].item() == pytest.approx(-0.7 + 5 * 0.15 - 2 * 0.5)
    assert cost[1, 0] > cost[0, 0]
