"""The committed records of the models that predict at every location (the sliding window, the
single-shot detectors, CenterNet and CenterNet2, SSDLite, the FCNs) score what their weights score, on every
val and test image; the region-based ones are in tests/test_checkpoints_region_based.py (see
tests/rescoring.py for why two files)."""
import pytest

from rescoring import DENSE, SPLITS, check_recorded_scores

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("name", DENSE)
def test_recorded_scores_reproduce(name, split):
    check_recorded_scores(name, split)
