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
