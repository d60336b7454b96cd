"""torchvision's SSDLite in the course's contract: no weights downloaded, our losses' names,
eval output in the input's pixels, clear errors."""
import pytest
import torch

from contract import check_detections
from lessons_pkg import data
from lessons_pkg.models import reference

pytestmark = pytest.mark.usefixtures("one_thread")


def batch(n=2):
    ds = data.make_split("train", n)
    images, targets = data.collate_detection([ds[i] for i in range(n)])
    return images, targets


def test_our_loss_names_and_its_own_settings():
    """torchvision's losses under the course's names, every head weight trained; 20 detections
    per image at most when asked (the contract itself: tests/test_recipes.py)."""
    torch.manual_seed(0)
    model = reference.SSDLite(num_classes=4, detections_per_img=20)
    images, targets = batch()
    losses = model.train()(images, targets)                 # targets carry masks too: ignored
    assert set(losses) == {"loss_box", "loss_cls"} and all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in model.detector.head.parameters())
    with torch.no_grad():
        out = model.eval()(images)
    check_detections(out, images, "detection")
    assert all(0 < len(o["boxes"]) <= 20 for o in out)       # mapped back from 320 px to 128


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
