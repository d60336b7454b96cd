"""lessons_pkg.models.configs: every model takes its settings the same way, and bad settings are
a ValueError that names the argument."""
import pytest

from lessons_pkg.models import centernet, configs, faster_rcnn, fcn, localizer, mask_rcnn, rcnn, reference, \
    sliding_window, ssd, yolo

# (model, its config class): the models that take a config or its fields as keywords
CONFIGURED = [(centernet.CenterNet, centernet.CenterNetConfig), (ssd.SSD, ssd.SSDConfig), (yolo.YOLO, yolo.YOLOConfig),
              (localizer.Localizer, localizer.LocalizerConfig), (fcn.FCN, fcn.FCNConfig)]
EVERY_MODEL = [m for m, _ in CONFIGURED] + [faster_rcnn.FasterRCNN, mask_rcnn.MaskRCNN, rcnn.RCNN, rcnn.FastRCNN,
                                            sliding_window.SlidingWindowDetector, reference.SSDLite, fcn.BackboneFCN,
                                            fcn.ScoreFusionFCN]


@pytest.mark.parametrize("model, config_class", CONFIGURED, ids=lambda x: getattr(x, "__name__", ""))
def test_keywords_and_a_config_build_the_same_settings(model, config_class):
    field = next(f for f in config_class.__dataclass_fields__)
    value = getattr(config_class(), field)
    assert model(num_classes=3, **{field: value}).config == model(num_classes=3, config=config_class()).config


@pytest.mark.parametrize("model, config_class", CONFIGURED, ids=lambda x: getattr(x, "__name__", ""))
def test_a_misspelt_setting_is_named_with_the_fields_there_are(model, config_class):
    with pytest.raises(ValueError, match=rf"unknown setting\(s\) 'colour_of_the_sky' for {config_class.__name__}; "
                                         "choose from "):
        model(num_classes=3, colour_of_the_sky=1)


@pytest.mark.parametrize("model, config_class", CONFIGURED, ids=lambda x: getattr(x, "__name__", ""))
def test_a_config_and_keywords_together_or_a_config_of_another_model_are_refused(model, config_class):
    field = next(f for f in config_class.__dataclass_fields__)
    with pytest.raises(ValueError, match=rf"give either config={config_class.__name__}\(...\) or keyword settings"):
        model(num_classes=3, config=config_class(), **{field: getattr(config_class(), field)})
    with pytest.raises(ValueError, match=rf"config must be an instance of {config_class.__name__}, got int"):
        model(num_classes=3, config=7)


@pytest.mark.parametrize("model", EVERY_MODEL, ids=lambda m: m.__name__)
def test_no_model_accepts_fewer_than_one_class(model):
    with pytest.raises(ValueError, match="num_classes must be >= 1, got 0"):
        model(num_classes=0)


def test_the_rpn_takes_its_settings_the_same_way():
    assert faster_rcnn.RegionProposalNetwork(16, pre_nms_top_n_test=50).config.pre_nms_top_n_test == 50
    with pytest.raises(ValueError, match="unknown setting"):
        faster_rcnn.RegionProposalNetwork(16, pre_nms_topn_test=50)
    assert configs.check_num_classes(1) == 1
