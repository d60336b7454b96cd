"""The one backbone: built in one place, its pretrained weights loaded there, its input
normalized there, and every model of the course built on it."""
import re
from pathlib import Path

import pytest
import torch

from lessons_pkg import recipes, records
from lessons_pkg.models import backbone as bb
from lessons_pkg.models import localizer

pytestmark = pytest.mark.usefixtures("one_thread")
PACKAGE = Path(__file__).resolve().parents[1] / "lessons_pkg"


def test_stages_strides_and_the_truncated_backbone():
    torch.manual_seed(0)
    full = bb.build_backbone().eval()
    images = torch.rand(2, 3, 64, 96)
    maps = full.stages(images)
    assert full.strides == (2, 4, 8, 16) and full.stride == 16 and full.out_channels == 128
    assert [tuple(m.shape) for m in maps] == [(2, w, 64 // s, 96 // s) for w, s in zip(bb.WIDTHS, full.strides)]
    torch.testing.assert_close(full(images), maps[-1])
    to8 = bb.build_backbone(stride=8).eval()
    assert to8.stride == 8 and to8.out_channels == 64 and to8.widths == (16, 32, 64)
    to8.load_state_dict({k: v for k, v in full.state_dict().items() if k in to8.state_dict()})
    torch.testing.assert_close(to8(images), maps[2])
    with pytest.raises(ValueError, match="stride must be one of \\[4, 8, 16\\], got 32"):
        bb.build_backbone(stride=32)


def test_the_input_is_normalized_per_image_and_channels_last():
    images = torch.rand(2, 3, 16, 16)
    x = bb.normalize(images + torch.tensor([0.3, -0.1, 0.2])[:, None, None])
    torch.testing.assert_close(x, bb.normalize(images))
    torch.testing.assert_close(x.mean(dim=(2, 3)), torch.zeros(2, 3), atol=1e-6, rtol=0)
    assert x.is_contiguous(memory_format=torch.channels_last)
    # A constant colour shift changes nothing the backbone sees.
    net = bb.build_backbone().eval()
    torch.testing.assert_close(net(images), net((images + 0.2).clamp(max=10)))


def test_pretrained_weights_come_from_the_committed_file():
    state = records.load_weights(bb.PRETRAINED_BACKBONE)
    for stride in (8, 16):
        net = bb.build_backbone(True, stride=stride)
        for key, value in net.state_dict().items():
            assert torch.equal(value, state["backbone." + key]), key
    assert not torch.equal(bb.build_backbone().stem[0].weight, state["backbone.stem.0.weight"])
    # A path works as well as True; the localizer's method reads the same file.
    same = bb.build_backbone(bb.PRETRAINED_BACKBONE)
    torch.testing.assert_close(same.stem[0].weight, state["backbone.stem.0.weight"])
    loc = localizer.Localizer().load_backbone()
    torch.testing.assert_close(loc.backbone.stem[0].weight, state["backbone.stem.0.weight"])


def test_a_file_of_another_network_names_the_file_and_the_missing_weights(tmp_path):
    small = bb.build_backbone(stride=8)
    path = tmp_path / "small.pt"
    torch.save(small.state_dict(), path)
    with pytest.raises(ValueError, match=r"small\.pt: not a backbone of widths \(16, 32, 64, 128\): missing"):
        bb.build_backbone(path)
    assert bb.build_backbone(path, stride=8) is not None      # the stages it has are enough


@pytest.mark.parametrize("name", sorted(recipes.RECIPES))
def test_every_pretrained_recipe_holds_one_shared_backbone(name):
    """Each recipe that starts from the pretrained backbone holds exactly one Backbone, and
    building it pretrained loads the committed weights into it."""
    recipe = recipes.RECIPES[name]
    model = recipe.build(pretrained=True)
    backbones = [m for m in model.modules() if isinstance(m, bb.Backbone)]
    if not recipe.pretrained:
        assert backbones == [] or name == "sliding_window"
        return
    assert len(backbones) == 1
    first_stage = getattr(model.config, "first_stage_checkpoint", None)
    if first_stage is not None:   # a second stage on a committed detector: its backbone is that detector's
        state = records.load_weights(records.default_path(first_stage))
        assert not torch.equal(state["backbone.stem.0.weight"].float(),
                               records.load_weights(bb.PRETRAINED_BACKBONE)["backbone.stem.0.weight"])
    else:
        state = records.load_weights(bb.PRETRAINED_BACKBONE)
    torch.testing.assert_close(backbones[0].stem[0].weight, state["backbone.stem.0.weight"].float())


def test_one_place_normalizes_and_every_model_checks_its_batch_in_one_place():
    """Source-level guard: the per-image mean subtraction lives in backbone.py only, and every
    model's forward opens with inputs.prepare_batch (no copy of the contract checks)."""
    normalizing = [p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py")
                   if "mean(dim=(2, 3), keepdim=True)" in p.read_text()]
    assert normalizing == ["models/backbone.py"]
    forwards = 0
    for path in (PACKAGE / "models").glob("*.py"):
        source = path.read_text()
        for match in re.finditer(r"    def forward\(self, images, targets[^\n]*\n(?:        [^\n]*\n|\n)*", source):
            assert "prepare_batch(" in match.group(0), f"{path.name}: a forward(images, ...) without prepare_batch"
            forwards += 1
    # Localizer, SlidingWindowDetector, the proposal detectors (R-CNN, Fast R-CNN), FasterRCNN
    # (and MaskRCNN, which inherits it), YOLO, SSD, CenterNet, CenterNet2, SegmentationModel (the
    # FCNs), SSDLite.
    assert forwards == 10
