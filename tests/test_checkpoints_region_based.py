"""The committed records of the region-based detectors (R-CNN, Fast R-CNN, Faster R-CNN, Mask
R-CNN and their variants) score what their weights score, on every val and test image; every
other model is in tests/test_checkpoints_dense.py (see tests/rescoring.py for why two files)."""
import pytest

from rescoring import REGION_BASED, SPLITS, check_recorded_scores

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("name", REGION_BASED)
def test_recorded_scores_reproduce(name, split):
    check_recorded_scores(name, split)
