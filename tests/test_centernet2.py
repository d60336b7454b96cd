"""CenterNet2 (a second stage on CenterNet's peaks): the proposals are the class-agnostic peaks,
a detection's score is objectness x class probability, a frozen first stage is CenterNet's
checkpoint and stays as it is, crowd regions are never a negative, settings are checked, and it
overfits a batch (its eval and train contract, as every recipe's model's: tests/test_recipes.py)."""
import pytest
import torch

from lessons_pkg import data, metrics, recipes, records, train
from lessons_pkg.models import centernet2 as c2

pytestmark = pytest.mark.usefixtures("one_thread")


def outputs_with_bumps(peaks: list[tuple[int, int, int, float]], num_classes: int = 3, side: int = 16) -> dict:
    """CenterNet's raw outputs on a side x side map holding one single-cell peak per (class,
    row, col, probability); every box 4 x 4 cells (16 pixels), centred in its cell."""
    heat = torch.full((1, num_classes, side, side), 1e-4)
    for c, i, j, p in peaks:
        heat[0, c, i, j] = p
    return {"heatmap": torch.log(heat / (1 - heat)), "size": torch.full((1, 2, side, side), 4.0),
            "offset": torch.full((1, 2, side, side), 0.5)}


def test_proposals_are_the_peaks_of_the_largest_class_probability():
    """Three peaks on three channels: each is a proposal, its objectness the peak's probability
    (not the sum over classes, nor channel 0's value), ranked across channels; a weaker peak on
    another channel at the same cell is no second proposal; the box is CenterNet's."""
    out = outputs_with_bumps([(0, 2, 3, 0.9), (1, 8, 8, 0.6), (2, 12, 4, 0.3), (2, 2, 3, 0.5)])
    (boxes,), (objectness,) = c2.propose(out, (64, 64), k=3)
    torch.testing.assert_close(objectness, torch.tensor([0.9, 0.6, 0.3]))
    centre = torch.tensor([3.5, 2.5]) * 4
    torch.testing.assert_close(boxes[0], torch.cat([centre - 8, centre + 8]))
    (boxes,), (objectness,) = c2.propose(out, (64, 64), k=5)   # then the background cells, in any order
    assert len(boxes) == 5 and torch.allclose(objectness[3:], torch.tensor(1e-4))
    out["size"].zero_()                                        # no size: one cell (4 pixels) about the centre
    (boxes,), _ = c2.propose(out, (64, 64), k=1)
    torch.testing.assert_close(boxes[0], torch.cat([centre - 2, centre + 2]))


def test_a_detections_score_is_objectness_times_class_probability():
    """joint_log_probs' softmax is P(O) P(c | O) for the classes and the rest for background, and
    RoIHeads' decoding then scores each detection so (planted fault: the second stage's
    probability alone, or the objectness alone, gives other scores)."""
    logits = torch.tensor([[0.0, 2.0, -1.0], [1.0, -0.5, 0.5]])
    objectness = torch.tensor([0.8, 0.3])
    joint = c2.joint_log_probs(logits, objectness).softmax(dim=1)
    conditional = logits.softmax(dim=1)
    torch.testing.assert_close(joint[:, 1:], objectness[:, None] * conditional[:, 1:])
    torch.testing.assert_close(joint.sum(dim=1), torch.ones(2))
    model = c2.CenterNet2(2, score_threshold=0.0)
    boxes = [torch.tensor([[0.0, 0.0, 20.0, 20.0], [60.0, 60.0, 90.0, 80.0]])]
    (det,) = model.roi_heads.postprocess(c2.joint_log_probs(logits, objectness), torch.zeros(2, 12), boxes,
                                         (128, 128))
    expected = sorted((objectness[:, None] * conditional[:, 1:]).flatten().tolist(), reverse=True)
    torch.testing.assert_close(det["scores"], torch.tensor(expected))


def test_eval_scores_come_from_both_stages():
    """The whole model in eval mode: every detection's score is the objectness of a proposal
    times that proposal's second-stage probability of the detection's class."""
    torch.manual_seed(0)
    model = c2.CenterNet2(4, score_threshold=0.0).eval()
    heat, size = model.first_stage.heatmap_head[-1], model.first_stage.size_head[-1]
    with torch.no_grad():   # objectness near 0.27, well below 1 (a product differs from its
        heat.weight.mul_(0.01)   # factors), and boxes about 4 x 4 cells: an untrained size head
        heat.bias.fill_(-1.0)    # gives boxes of no size, which decoding drops
        size.weight.mul_(0.01)
        size.bias.fill_(4.0)
    images = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        (det,) = model(images)
        features, outputs = model.first_look(images)
        (boxes,), (objectness,) = c2.propose(outputs, (64, 64), model.config.proposals_per_image)
        logits, _ = model.roi_heads.box_head(model.roi_heads.pooler(features, [boxes]))
    assert objectness.max() < 0.5 and len(det["scores"]) > 10
    products = objectness[:, None] * logits.softmax(dim=1)[:, 1:]                 # [K, C]
    for score, label in zip(det["scores"], det["labels"]):
        assert torch.isclose(products[:, label - 1], score, rtol=1e-4, atol=1e-7).any()


def test_a_frozen_first_stage_is_centernets_checkpoint_and_stays_so():
    """Built pretrained with first_stage_checkpoint, the first stage's weights are the committed
    CenterNet's and its raw outputs CenterNet's; training steps leave its weights and BatchNorm
    statistics alone and train the second stage."""
    model = c2.CenterNet2(4, pretrained_backbone=True, channels=32, first_stage_checkpoint="centernet")
    committed = records.load_weights(records.default_path("centernet"))
    assert all(torch.equal(v.to(committed[k].dtype), committed[k]) for k, v in model.first_stage.state_dict().items())
    images, targets = data.collate_detection([data.make_split("train", 2)[i] for i in range(2)])
    centernet_model, _ = recipes.load("centernet")
    with torch.no_grad():
        _, outputs = model.eval().first_look(images)
        reference = centernet_model.outputs(images)
    assert all(torch.equal(outputs[k], reference[k]) for k in reference)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    assert not model.first_stage.training and model.roi_heads.training
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    for _ in range(2):
        losses = model(images, targets)
        assert set(losses) == {"loss_cls", "loss_box"}
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("first_stage."))
    assert not all(torch.equal(before[k], after[k]) for k in before if k.startswith("roi_heads."))


def test_end_to_end_trains_both_stages():
    model = c2.CenterNet2(4, freeze_first_stage=False).train()
    images, targets = data.collate_detection([data.make_split("train", 2)[i] for i in range(2)])
    losses = model(images, targets)
    assert set(losses) == {"loss_heatmap", "loss_size", "loss_offset", "loss_cls", "loss_box"}
    sum(losses.values()).backward()
    assert model.first_stage.heatmap_head[-1].weight.grad.abs().sum() > 0
    assert model.roi_heads.box_head.cls_score.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("frozen", [True, False])
def test_nothing_inside_a_crowd_region_is_a_negative(frozen):
    """An image that is all one crowd region costs nothing in either stage; the same image as
    plain background costs something (so a model that dropped the region would fail)."""
    def losses(crowded):
        torch.manual_seed(0)
        model = c2.CenterNet2(4, freeze_first_stage=frozen).train()
        boxes = torch.tensor([[0.0, 0.0, 128.0, 128.0]]) if crowded else torch.zeros(0, 4)
        target = {"boxes": boxes, "labels": torch.ones(len(boxes), dtype=torch.int64),
                  "iscrowd": torch.ones(len(boxes), dtype=torch.uint8)}
        return {k: float(v.detach()) for k, v in model(torch.rand(2, 3, 128, 128), [target, target]).items()}

    assert sum(losses(False).values()) > 0
    assert all(v == 0 for v in losses(True).values())


def test_settings_are_checked_by_name():
    with pytest.raises(ValueError, match="proposal_per_image"):
        c2.CenterNet2(4, proposal_per_image=10)             # misspelt
    with pytest.raises(ValueError, match="roi_map"):
        c2.CenterNet2(4, roi_map="stride16")
    with pytest.raises(ValueError, match="proposals_per_image"):
        c2.CenterNet2Config(proposals_per_image=0)
    with pytest.raises(ValueError, match="not both"):
        c2.CenterNet2(4, config=c2.CenterNet2Config(), channels=16)
    with pytest.raises(ValueError, match="num_classes"):
        c2.CenterNet2(0)
    assert c2.CenterNet2(4).roi_heads.box_head.fc6.in_features == 64 * 7 * 7                # stride 8
    assert c2.CenterNet2(4, roi_map="stride4", channels=16).roi_heads.box_head.fc6.in_features == 16 * 7 * 7


@pytest.mark.slow   # trains until it overfits
def test_overfits_one_batch():
    """Four easy images, both stages trained from the pretrained backbone: they are found again."""
    torch.manual_seed(0)
    ds = data.ShapesDataset(4, seed=3, config="easy")
    model = c2.CenterNet2(4, pretrained_backbone=True, channels=32, freeze_first_stage=False)
    loader = train.make_loader(ds, batch_size=4)
    history = train.fit(model, loader, steps=100, lr=3e-3, progress=False, log_every=50)
    assert history.final() < history.losses["total"][0] / 3
    preds, targets = train.evaluate(model, train.make_loader(ds, 4, shuffle=False))
    assert metrics.mean_average_precision(preds, targets)["map_50"] > 0.9
