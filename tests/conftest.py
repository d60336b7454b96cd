"""Shared fixtures: the devices every device-agnostic test runs on."""
import pytest
import torch

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request) -> torch.device:
    """Runs a test once on the CPU and once more on CUDA when a GPU is present."""
    return torch.device(request.param)


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` skip on machines without a GPU (CI has none)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
