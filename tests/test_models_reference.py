"""torchvision's SSDLite in the course's contract: no weights downloaded, our losses' names,
eval output in the input's pixels, clear errors."""
import pytest
import torch

from lessons_pkg import data
from lessons_pkg.models import reference

pytestmark = pytest.mark.usefixtures("one_thread")


def batch(n=2):
    ds = data.make_split("train", n)
    images, targets = data.collate_detection([ds[i] for i in range(n)])
    return images, targets


def test_train_losses_and_eval_contract():
    torch.manual_seed(0)
    model = reference.SSDLite(num_classes=4, detections_per_img=20)
    images, targets = batch()
    losses = model.train()(images, targets)                 # targets carry masks too: ignored
    assert set(losses) == {"loss_box", "loss_cls"} and all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in model.detector.head.parameters())
    with torch.no_grad():
        out = model.eval()(images)
    assert len(out) == 2
    for o in out:
        assert set(o) == {"boxes", "labels", "scores"} and len(o["boxes"]) <= 20
        if len(o["boxes"]):
            assert o["boxes"].min() >= 0 and o["boxes"].max() <= 128       # mapped back from 320 px
            assert o["labels"].min() >= 1 and o["labels"].max() <= 4


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="trains from scratch"):
        reference.SSDLite(pretrained_backbone="data/pretrained/backbone.pt")
    model = reference.SSDLite(num_classes=4).train()
    images, targets = batch()
    with pytest.raises(ValueError, match="needs targets"):
        model(images)
    targets[1]["labels"] = targets[1]["labels"] + 10
    with pytest.raises(ValueError, match="target 1 'labels'"):
        model(images, targets)
