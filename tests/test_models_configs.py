"""lessons_pkg.models.configs: every model takes its settings the same way,
``model(num_classes, pretrained_backbone, config=None, **settings)``; bad settings are a
ValueError that names the argument; and every committed checkpoint still loads into its recipe's
model."""
import dataclasses
import inspect
import json

import pytest
import torch

from lessons_pkg import ops, records
from lessons_pkg.models import centernet, configs, faster_rcnn, fcn, localizer, mask_rcnn, rcnn, reference, \
    sliding_window, ssd, yolo

try:
    from lessons_pkg.recipes import RECIPES
except ImportError:  # before the recipes left the checkpoints command
    from lessons_pkg.checkpoints import RECIPES

# (model, its config class, one setting that differs from the default)
EVERY_MODEL = [
    (centernet.CenterNet, centernet.CenterNetConfig, "channels", 32),
    (ssd.SSD, ssd.SSDConfig, "negatives", "focal"),
    (yolo.YOLO, yolo.YOLOConfig, "head_channels", 64),
    (localizer.Localizer, localizer.LocalizerConfig, "box_weight", 2.0),
    (fcn.FCN, fcn.FCNConfig, "skips", True),
    (fcn.BackboneFCN, fcn.BackboneFCNConfig, "upsampling", "transposed"),
    (fcn.ScoreFusionFCN, fcn.ScoreFusionFCNConfig, "strides", (16,)),
    (rcnn.RCNN, rcnn.RCNNConfig, "crop_size", 64),
    (rcnn.FastRCNN, rcnn.FastRCNNConfig, "pool", "roi_align"),
    (faster_rcnn.FasterRCNN, faster_rcnn.FasterRCNNConfig, "pool", "roi_pool"),
    (mask_rcnn.MaskRCNN, mask_rcnn.MaskRCNNConfig, "class_agnostic", True),
    (sliding_window.SlidingWindowDetector, sliding_window.SlidingWindowConfig, "window_sizes", (20, 40)),
    (reference.SSDLite, reference.SSDLiteConfig, "detections_per_img", 20),
]
MODELS = [m for m, *_ in EVERY_MODEL]
IDS = [m.__name__ for m in MODELS]
NO_BACKBONE = [fcn.FCN, sliding_window.SlidingWindowDetector, reference.SSDLite]  # nothing to pretrain


def shapes(model: torch.nn.Module) -> dict:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def test_every_model_of_the_package_is_listed():
    """A model added to lessons_pkg.models without a row above would escape these tests."""
    modules = (centernet, faster_rcnn, fcn, localizer, mask_rcnn, rcnn, reference, sliding_window, ssd, yolo)
    found = {obj for module in modules for obj in vars(module).values()
             if inspect.isclass(obj) and issubclass(obj, torch.nn.Module) and obj.__module__ == module.__name__
             and "config" in inspect.signature(obj).parameters}
    assert found == set(MODELS) | {faster_rcnn.RegionProposalNetwork, rcnn.RoIHeads}


@pytest.mark.parametrize("model", MODELS, ids=IDS)
def test_every_model_takes_its_settings_in_one_signature(model):
    params = list(inspect.signature(model).parameters.values())
    assert [p.name for p in params] == ["num_classes", "pretrained_backbone", "config", "settings"]
    assert params[1].default is None and params[2].default is None and params[3].kind is params[3].VAR_KEYWORD


@pytest.mark.parametrize("model, config_class, field, value", EVERY_MODEL, ids=IDS)
def test_keywords_and_a_config_build_the_same_model(model, config_class, field, value):
    torch.manual_seed(0)
    by_keyword = model(3, **{field: value})
    by_config = model(3, None, config_class(**{field: value}))
    assert by_keyword.config == by_config.config != config_class()
    assert getattr(by_keyword.config, field) == value
    assert shapes(by_keyword) == shapes(by_config)


@pytest.mark.parametrize("model, config_class, field, value", EVERY_MODEL, ids=IDS)
def test_a_config_survives_a_json_record(model, config_class, field, value):
    """A record keeps a model's settings as JSON (tuples become lists, an RPNConfig a dict):
    built back from them, the model has the same config."""
    config = config_class(**{field: value})
    settings = json.loads(json.dumps(dataclasses.asdict(config)))
    assert model(3, **settings).config == config


@pytest.mark.parametrize("model, config_class, field, value", EVERY_MODEL, ids=IDS)
def test_a_misspelt_setting_is_named_with_the_fields_there_are(model, config_class, field, value):
    fields = ", ".join(f.name for f in dataclasses.fields(config_class))
    with pytest.raises(ValueError, match=rf"unknown setting\(s\) 'colour_of_the_sky' for {config_class.__name__}; "
                                         rf"choose from {fields}$"):
        model(num_classes=3, colour_of_the_sky=1)


@pytest.mark.parametrize("model, config_class, field, value", EVERY_MODEL, ids=IDS)
def test_a_config_and_keywords_together_or_a_config_of_another_model_are_refused(model, config_class, field, value):
    with pytest.raises(ValueError, match=rf"give either config={config_class.__name__}\(...\) or keyword settings"):
        model(num_classes=3, config=config_class(), **{field: value})
    with pytest.raises(ValueError, match=rf"config must be an instance of {config_class.__name__}, got int"):
        model(num_classes=3, config=7)


@pytest.mark.parametrize("model", MODELS, ids=IDS)
def test_no_model_accepts_fewer_than_one_class(model):
    with pytest.raises(ValueError, match="num_classes must be >= 1, got 0"):
        model(num_classes=0)


@pytest.mark.parametrize("model", NO_BACKBONE, ids=[m.__name__ for m in NO_BACKBONE])
def test_a_model_without_a_backbone_refuses_a_pretrained_one(model):
    with pytest.raises(ValueError, match=r"pretrained_backbone=True\)"):
        model(4, True)


def test_the_rcnn_family_takes_its_heads_and_rpn_settings_as_its_own():
    """RoI-head settings are keywords of every R-CNN model, the RPN's a field of Faster R-CNN's
    config: a misspelt one names the RPN's fields, and a wrong stride is refused."""
    model = mask_rcnn.MaskRCNN(batch_size_per_image=32, score_threshold=0.3, mask_pool="roi_pool",
                               rpn={"fg_iou": 0.6})
    assert (model.roi_heads.batch_size_per_image, model.roi_heads.score_threshold) == (32, 0.3)
    assert model.rpn.config.fg_iou == 0.6 and isinstance(model.roi_heads.mask_branch.pooler, ops.RoIPool)
    assert rcnn.RCNN(proposals_per_image=50).config.proposals_per_image == 50
    with pytest.raises(ValueError, match="unknown setting.*'pre_nms_topn_test' for RPNConfig; choose from anchor_sizes"):
        faster_rcnn.FasterRCNN(rpn={"pre_nms_topn_test": 50})
    with pytest.raises(ValueError, match="rpn must be an RPNConfig or a dict of its fields, got int"):
        faster_rcnn.FasterRCNN(rpn=8)
    with pytest.raises(ValueError, match=r"the RPN's stride \(16\) must be the backbone's \(8\)"):
        faster_rcnn.FasterRCNN(rpn=faster_rcnn.RPNConfig(stride=16))
    with pytest.raises(ValueError, match="unknown mask_pool 'roi_max'"):
        mask_rcnn.MaskRCNN(mask_pool="roi_max")
    with pytest.raises(ValueError, match=r"need 0 <= bg_iou <= fg_iou <= 1, got bg_iou=0.6, fg_iou=0.5"):
        rcnn.FastRCNN(bg_iou=0.6)


def test_the_rpn_and_the_heads_take_their_settings_the_same_way():
    assert faster_rcnn.RegionProposalNetwork(16, pre_nms_top_n_test=50).config.pre_nms_top_n_test == 50
    with pytest.raises(ValueError, match="unknown setting"):
        faster_rcnn.RegionProposalNetwork(16, pre_nms_topn_test=50)
    assert rcnn.RoIHeads(None, None, 4, detections_per_image=7).detections_per_image == 7
    with pytest.raises(ValueError, match="unknown setting.*'detections_per_img' for RoIHeadsConfig"):
        rcnn.RoIHeads(None, None, 4, detections_per_img=7)
    assert configs.check_num_classes(1) == 1


@pytest.mark.parametrize("recipe", sorted(n for n in RECIPES if records.default_path(n).exists()))
def test_every_committed_checkpoint_loads_strictly_into_its_recipes_model(recipe):
    """The committed weights were trained before the models took configs: every key and shape
    must still be where the recipe's model has it."""
    path = records.default_path(recipe)
    num_classes = int(records.load_record(path).get("num_classes", 4))
    model = RECIPES[recipe].build(num_classes=num_classes)
    model.load_state_dict(records.load_weights(path), strict=True)
