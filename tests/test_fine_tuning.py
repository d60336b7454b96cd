"""lessons_pkg.fine_tuning: the four ways to train a localizer on (or without) the pretrained
backbone."""
import pytest
import torch

from lessons_pkg import data, fine_tuning
from lessons_pkg.models.backbone import build_backbone


@pytest.mark.parametrize("workflow", fine_tuning.WORKFLOWS)
def test_each_workflow_starts_and_trains_the_backbone_as_named(workflow):
    """Where each workflow's backbone starts (pretrained or random) and whether it moved: the
    fourth workflow, "pretrained, unfrozen", is "scratch" with the pretrained weights (a
    workflow that forgot to load them, or froze them, fails here)."""
    dataset = data.SingleObjectTensors(data.make_split("train", 8, config="single"), augment=False)
    pretrained = build_backbone(pretrained_backbone=True).state_dict()
    model, history = fine_tuning.train_workflow(dataset, workflow, steps=4, batch_size=4)
    weights = {k: v for k, v in model.backbone.state_dict().items() if v.is_floating_point()
               and "running" not in k}
    same = [torch.equal(v, pretrained[k]) for k, v in weights.items() if k in pretrained]
    assert history.last_step == 4 and len(same) == len(weights) > 10
    if workflow == "frozen":
        assert all(same)                      # pretrained, never moved
    else:
        assert not any(same)                  # moved (or never pretrained: scratch)
    if workflow == "pretrained, unfrozen":    # started pretrained: close to it after 4 steps
        moved = max((v - pretrained[k]).abs().max().item() for k, v in weights.items())
        scratch, _ = fine_tuning.train_workflow(dataset, "scratch", steps=4, batch_size=4)
        far = max((v - pretrained[k]).abs().max().item()
                  for k, v in scratch.backbone.state_dict().items() if k in weights)
        assert moved < far / 2
    with pytest.raises(ValueError, match="unknown workflow"):
        fine_tuning.train_workflow(dataset, "pretrained, frozen forever")


def test_shared_frozen_features_change_nothing_but_the_backbone_passes():
    """Three box weights of "frozen, then fine-tuned" sharing one FrozenFeatures (the chapter's
    λ runs): every weight, buffer and logged loss equal to the runs without it, bit for bit,
    while the frozen phase's backbone passes run once for all three (the runs' batches are the
    same). A replay of the wrong features, or of a stale batch, fails here."""
    dataset = data.SingleObjectTensors(data.make_split("train", 16, config="single"))
    store = fine_tuning.FrozenFeatures()
    for box_weight in (1.0, 0.1, 10.0):
        alone, alone_history = fine_tuning.train_workflow(
            dataset, "frozen, then fine-tuned", box_weight=box_weight, steps=8, batch_size=4)
        shared, shared_history = fine_tuning.train_workflow(
            dataset, "frozen, then fine-tuned", box_weight=box_weight, steps=8, batch_size=4,
            frozen_features=store)
        expected = alone.state_dict()
        assert shared.state_dict().keys() == expected.keys()
        for name, value in shared.state_dict().items():
            assert torch.equal(value, expected[name]), (box_weight, name)
        assert shared_history.losses == alone_history.losses and shared_history.steps == alone_history.steps
    assert store.computed == len(store.features) == 4  # the 4 frozen steps, computed once


def test_shared_frozen_features_refuse_another_backbone():
    """Features computed with one backbone are not replayed for another (here: scratch's
    random backbone, frozen by hand)."""
    dataset = data.SingleObjectTensors(data.make_split("train", 8, config="single"), augment=False)
    store = fine_tuning.FrozenFeatures()
    fine_tuning.train_workflow(dataset, "frozen", steps=2, batch_size=4, frozen_features=store)
    other = build_backbone(pretrained_backbone=None)
    with pytest.raises(ValueError, match="frozen_features: backbone tensor .* differs"):
        store.check_backbone(other)
