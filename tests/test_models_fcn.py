"""Tests of lessons_pkg.models.fcn: the model contract, sizes, every upsampling kind, overfitting."""
from pathlib import Path

import pytest
import torch

from lessons_pkg import data, metrics, train
from lessons_pkg.models import fcn


pytestmark = pytest.mark.usefixtures("one_thread")


def batch(b=2, h=37, w=51, num_classes=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(b, 3, h, w, generator=g)
    targets = [{"semantic": torch.randint(0, num_classes + 1, (h, w), generator=g)} for _ in range(b)]
    return images, targets


@pytest.mark.parametrize("upsampling", fcn.UPSAMPLING)
@pytest.mark.parametrize("skips", [False, True])
def test_every_variant_trains_and_predicts_at_odd_sizes(upsampling, skips, device):
    torch.manual_seed(0)
    model = fcn.FCN(widths=(4, 8, 8), upsampling=upsampling, skips=skips).to(device)
    images, targets = batch(h=37, w=51)
    images, targets = train.move_to((images, targets), device)
    losses = model(images, targets)
    assert set(losses) == {"loss_seg"} and torch.isfinite(losses["loss_seg"])
    losses["loss_seg"].backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)
    model.eval()
    with torch.no_grad():
        out = model(images)
    assert len(out) == 2
    for pred in out:
        assert pred["semantic"].shape == (37, 51) and pred["semantic"].dtype == torch.int64
        assert pred["scores"].shape == (5, 37, 51)
        torch.testing.assert_close(pred["scores"].sum(0), torch.ones(37, 51, device=device))
        assert torch.equal(pred["semantic"], pred["scores"].argmax(0))


@pytest.mark.parametrize("size", [(1, 1), (7, 5), (16, 16), (33, 18)])
def test_output_size_equals_input_size(size):
    model = fcn.FCN(widths=(4, 8, 8, 8), upsampling="max_unpool", skips=True).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, *size))
    assert out[0]["semantic"].shape == size and out[0]["scores"].shape == (5, *size)


def test_ignore_index_pixels_are_left_out():
    torch.manual_seed(0)
    model = fcn.FCN(widths=(4, 8))
    images, targets = batch(b=1, h=16, w=16)
    all_ignored = [{"semantic": torch.full((16, 16), fcn.IGNORE_INDEX)}]
    assert torch.isnan(model(images, all_ignored)["loss_seg"])   # nothing to average: cross_entropy gives NaN
    half = targets[0]["semantic"].clone()
    half[:8] = fcn.IGNORE_INDEX
    assert torch.isfinite(model(images, [{"semantic": half}])["loss_seg"])


@pytest.mark.slow   # trains until it overfits
def test_overfits_four_images():
    torch.manual_seed(0)
    config = data.preset("easy").replace(image_size=(48, 48), size_range=(16.0, 36.0))
    dataset = data.ShapesDataset(4, seed=123, config=config)
    images = torch.stack([dataset[i][0] for i in range(4)])
    targets = [dataset[i][1] for i in range(4)]
    model = fcn.FCN(widths=(8, 16, 32), upsampling="nearest", skips=True)
    history = train.fit(model, [(images, targets)], steps=80, lr=1e-2, progress=False, log_every=20, device="cpu")
    assert history.losses["loss_seg"][-1] < 0.5 * history.losses["loss_seg"][0]
    scores = metrics.segmentation_metrics(train.predict(model, images), targets)
    assert scores["pixel_accuracy"] > 0.9 and scores["miou"] > 0.5


def test_segmentation_metrics_perfect_and_mismatched():
    targets = [{"semantic": torch.randint(0, 5, (8, 8))} for _ in range(3)]
    perfect = metrics.segmentation_metrics([{"semantic": t["semantic"]} for t in targets], targets)
    assert perfect["miou"] == 1.0 and perfect["pixel_accuracy"] == 1.0
    with pytest.raises(ValueError, match="got 2 predictions for 3 targets"):
        metrics.segmentation_metrics([{"semantic": t["semantic"]} for t in targets[:2]], targets)


def test_bad_input_gets_a_clear_error():
    model = fcn.FCN(widths=(4, 8))
    images, targets = batch(b=2, h=16, w=16)
    with pytest.raises(ValueError, match=r"images must be a Tensor\[B, 3, H, W\], got \(3, 16, 16\)"):
        model(images[0], targets)
    with pytest.raises(ValueError, match="images must be floating point"):
        model((images * 255).to(torch.uint8), targets)
    with pytest.raises(ValueError, match="train mode the model needs targets"):
        model(images)
    with pytest.raises(ValueError, match="targets must be a list of 2 dicts"):
        model(images, targets[:1])
    with pytest.raises(ValueError, match=r"target 0: expected a dict with 'semantic', got \['boxes'\]"):
        model(images, [{"boxes": torch.zeros(0, 4)}, targets[1]])
    with pytest.raises(ValueError, match=r"target 1 'semantic': expected the image's size \[16, 16\], got \[8, 8\]"):
        model(images, [targets[0], {"semantic": torch.zeros(8, 8, dtype=torch.int64)}])
    with pytest.raises(ValueError, match="target 0 'semantic': expected an int64"):
        model(images, [{"semantic": targets[0]["semantic"].float()}, targets[1]])
    with pytest.raises(ValueError, match=r"expected classes 0..4 \(or 255, ignored\), got 7"):
        model(images, [{"semantic": torch.full((16, 16), 7)}, targets[1]])
    with pytest.raises(ValueError, match="unknown upsampling 'deconv'; choose from"):
        fcn.FCN(upsampling="deconv")
    with pytest.raises(ValueError, match="widths must hold at least 2"):
        fcn.FCN(widths=(8,))
    with pytest.raises(ValueError, match=r"either config=FCNConfig\(...\) or keyword settings"):
        fcn.FCN(config=fcn.FCNConfig(), skips=True)


BACKBONE = Path(__file__).resolve().parents[1] / "data" / "pretrained" / "backbone.pt"


@pytest.mark.parametrize("upsampling", [u for u in fcn.UPSAMPLING if u != "max_unpool"])
def test_backbone_fcn_contract_at_odd_sizes(upsampling, device):
    torch.manual_seed(0)
    # 8 channels, not 4: a 4-channel stem crashed torch 2.14.1's one-thread CPU backward (double free)
    model = fcn.BackboneFCN(num_classes=4, upsampling=upsampling, widths=(8, 8, 8, 8)).to(device)
    images, targets = train.move_to(batch(h=37, w=51), device)
    losses = model(images, targets)
    assert set(losses) == {"loss_seg"} and torch.isfinite(losses["loss_seg"])
    losses["loss_seg"].backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    with torch.no_grad():
        out = model.eval()(images)
    assert [o["semantic"].shape for o in out] == [(37, 51)] * 2
    assert out[0]["scores"].shape == (5, 37, 51)


def test_backbone_fcn_starts_from_the_pretrained_backbone():
    model = fcn.BackboneFCN(pretrained_backbone=BACKBONE)
    state = torch.load(BACKBONE, map_location="cpu", weights_only=True)
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(value, state["backbone." + key]), key
    assert not torch.equal(fcn.BackboneFCN().backbone.stem[0].weight, model.backbone.stem[0].weight)


@pytest.mark.parametrize("kind", ["transposed_bilinear", "transposed_bilinear_learned"])
def test_transposed_bilinear_is_depthwise_bilinear_fixed_or_learned(kind):
    """FCN's layer: one 4x4 kernel per channel (16 weights a channel, not C x C x 16), equal to
    "bilinear" away from the border (where it interpolates towards zero); fixed in the
    reference models, learned in the "_learned" kind."""
    x = torch.randn(2, 8, 9, 11)
    layer, fixed = fcn.Upsample(kind, 8, 8), fcn.Upsample("bilinear", 8, 8)
    assert layer.out_channels == fixed.out_channels == 8
    a, b = layer(x), fixed(x)
    assert a.shape == b.shape == (2, 8, 18, 22)
    torch.testing.assert_close(a[..., 1:-1, 1:-1], b[..., 1:-1, 1:-1])
    assert sum(p.numel() for p in layer.parameters()) == 8 * 4 * 4
    trainable = sum(p.numel() for p in layer.parameters() if p.requires_grad)
    assert trainable == (8 * 4 * 4 if kind.endswith("learned") else 0)


def test_transposed_2x2_copies_do_not_overlap():
    """U-Net's up-convolution: each input pixel alone makes its 2 x 2 output block."""
    torch.manual_seed(0)
    layer = fcn.Upsample("transposed_2x2", 4, 3).eval()
    x = torch.randn(1, 4, 5, 6)
    y = layer(x)
    assert y.shape == (1, 3, 10, 12) and layer.out_channels == 3
    x2 = x.clone()
    x2[0, :, 2, 3] += 1.0                                       # one input pixel changed
    changed = (layer(x2) != y).any(1)[0]
    assert changed.nonzero().tolist() == [[4, 6], [4, 7], [5, 6], [5, 7]]


def test_conv_first_gives_bilinear_the_layer_max_unpool_has():
    """max unpooling and its partner "bilinear, conv first" differ in the upsampling alone: the
    same parameters, shape by shape."""
    shapes = {}
    for kind in ("max_unpool", "bilinear"):
        model = fcn.FCN(widths=(4, 8, 8), upsampling=kind, skips=True, conv_first=True)
        shapes[kind] = [tuple(p.shape) for p in model.parameters()]
    assert shapes["max_unpool"] == shapes["bilinear"]
    plain = fcn.FCN(widths=(4, 8, 8), upsampling="bilinear", skips=True)
    assert len(list(plain.parameters())) < len(shapes["bilinear"])


def test_backbone_fcn_refuses_max_unpool_and_unknown_kinds():
    with pytest.raises(ValueError, match="max_unpool' needs pooling switches"):
        fcn.BackboneFCN(upsampling="max_unpool")
    with pytest.raises(ValueError, match="unknown upsampling 'cubic'"):
        fcn.BackboneFCN(upsampling="cubic")


@pytest.mark.slow   # trains until it overfits
def test_backbone_fcn_overfits_four_images():
    torch.manual_seed(0)
    ds = data.ShapesDataset(4, seed=3, config="easy")
    loader = train.make_loader(ds, batch_size=4, shuffle=False)
    model = fcn.BackboneFCN(pretrained_backbone=BACKBONE)
    # the lowest IoU of those classes 0.913 after these 100 steps, 0.815 after 60 (one thread): it keeps 100.
    train.fit(model, loader, steps=100, lr=5e-3, progress=False, device="cpu")
    result = train.evaluate(model, loader, device="cpu", metric=metrics.segmentation_metrics)
    pixels = torch.bincount(torch.stack([ds[i][1]["semantic"] for i in range(4)]).flatten(), minlength=5)
    # Every class these images show in quantity is learned (here all but one lone 188-pixel
    # triangle, which 100 steps do not single out).
    assert (pixels >= 500).sum() == 4 and (result["iou_per_class"][pixels >= 500] > 0.85).all(), (result, pixels)


@pytest.mark.parametrize("strides", [(16,), (16, 8), (16, 8, 4)])
def test_score_fusion_fcn_contract_and_its_start(strides):
    """FCN-16s/8s/4s: any image size in, scores of that size out; the skips' score layers start
    at zero (training starts from the coarser net) and learn; the x2 steps learn; the final
    upsampling stays bilinear."""
    torch.manual_seed(0)
    model = fcn.ScoreFusionFCN(num_classes=4, strides=strides, widths=(8, 8, 8, 8)).eval()
    out = model(torch.rand(2, 3, 50, 36))
    assert [o["semantic"].shape for o in out] == [(50, 36)] * 2 and out[0]["scores"].shape == (5, 50, 36)
    assert all((skip.weight == 0).all() and (skip.bias == 0).all() for skip in model.score[1:])
    model.train()
    targets = [{"semantic": torch.randint(0, 5, (32, 32))} for _ in range(2)]
    model(torch.rand(2, 3, 32, 32), targets)["loss_seg"].backward()
    assert model.up_final.weight.grad is None                       # fixed to bilinear
    assert all(skip.weight.grad.abs().sum() > 0 for skip in model.score[1:])
    assert all(step.weight.grad.abs().sum() > 0 for step in model.up2)


def test_score_fusion_fcn_refuses_strides_it_cannot_fuse():
    with pytest.raises(ValueError, match="strides must start at the backbone's deepest stride 16"):
        fcn.ScoreFusionFCN(strides=(8,))
    with pytest.raises(ValueError, match="halve at each skip"):
        fcn.ScoreFusionFCN(strides=(16, 4))
