"""Every recipe's model speaks the course's target contract (README, "The target contract"):
untrained, on two shapes images, eval mode returns one dict per image in the contract of the
recipe's task, and train mode a dict of finite scalar losses, with or without objects in an
image. One test for every model, parametrized over ``lessons_pkg.recipes.RECIPES``."""
import dataclasses

import pytest
import torch
from torch import nn

from contract import NUM_CLASSES, check_detections, check_losses, check_segmentation
from lessons_pkg import data, recipes, train

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def batch() -> tuple[torch.Tensor, list[dict]]:
    """Two val images of 128 x 128 (Tensor[2, 3, 128, 128]) and their targets (boxes, labels,
    masks, semantic)."""
    return data.collate_detection([data.make_split("val", 2)[i] for i in range(2)])


def untrained(name: str) -> nn.Module:
    """Recipe ``name``'s model from seed 0, keeping every candidate detection (score threshold 0
    where its config has one): an untrained SSD or sliding window detects nothing at its own
    threshold, and an empty list would pass any check of boxes, labels and scores."""
    recipe = recipes.RECIPES[name]
    torch.manual_seed(0)
    model = recipe.build()
    if "score_threshold" in {f.name for f in dataclasses.fields(model.config)}:
        torch.manual_seed(0)
        model = recipe.model(num_classes=NUM_CLASSES, **{**recipe.model_settings, "score_threshold": 0.0})
    return model


@pytest.mark.parametrize("name", sorted(recipes.RECIPES))
def test_eval_mode_returns_the_contract_of_the_recipes_task(name, batch, device):
    """On the two images as they are (128 x 128) and cut to 96 x 112, a height other than the
    width (so that "inside the image" tells x from y; YOLO needs multiples of 16)."""
    model = untrained(name).to(device).eval()
    task = recipes.RECIPES[name].task
    for images in (batch[0].to(device), batch[0][..., :96, :112].to(device)):
        with torch.no_grad():
            out = model(images)
        if task == "segmentation":
            check_segmentation(out, images)
        else:
            check_detections(out, images, task)
            assert sum(len(d["boxes"]) for d in out) > 0, "no detection at all: nothing of the contract was checked"


@pytest.mark.parametrize("name", sorted(recipes.RECIPES))
def test_train_mode_returns_finite_scalar_losses_with_or_without_objects(name, batch, device):
    """The second image's target emptied (no boxes, no masks, background everywhere): the
    losses stay finite and the backward pass reaches the weights."""
    images, targets = train.move_to(batch, device)
    model = untrained(name).to(device).train()
    losses = model(images, targets)
    check_losses(losses)
    sum(losses.values()).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters()), "no gradient"

    height, width = images.shape[-2:]
    empty = {"boxes": torch.zeros(0, 4, device=device), "labels": torch.zeros(0, dtype=torch.int64, device=device),
             "masks": torch.zeros(0, height, width, dtype=torch.uint8, device=device),
             "semantic": torch.zeros(height, width, dtype=torch.int64, device=device)}
    check_losses(model(images, [targets[0], empty]))
