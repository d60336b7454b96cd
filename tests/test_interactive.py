"""In-page figures without a kernel: the frames and controls they hold, their limits, and (in
headless Chromium, when installed) the self-test that moves every control."""
import shutil
import subprocess
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest
import torch

from lessons_pkg import interactive


def square(size, shade):
    image = torch.zeros(3, 32, 32, dtype=torch.uint8)
    image[:, :size, :size] = shade
    return image


def test_one_frame_per_setting_and_the_controls():
    fs = interactive.frame_slider(square, {"size": [4, 8, 16], "shade": [100, 250]}, title="a square",
                                  initial={"size": 8})
    page = fs._repr_html_()
    assert fs.num_frames == 6 and page.count("data:image/jpeg;base64,") == 6
    assert page.count('type="range"') == 2 and 'max="2"' in page and 'max="1"' in page
    assert 'value="1"' in page                       # the initial size, 8, is the second value
    assert interactive.SELFTEST_FRAGMENT in page and "a square" in page


def test_a_figure_frame_is_closed_and_limits_are_named():
    before = len(plt.get_fignums())
    fs = interactive.frame_slider(lambda k: plt.subplots(figsize=(2, 2))[0], {"k": [1, 2]})
    assert fs.num_frames == 2 and len(plt.get_fignums()) == before
    with pytest.raises(ValueError, match="at most 64"):
        interactive.frame_slider(square, {"size": list(range(1, 11)), "shade": list(range(10))})
    with pytest.raises(ValueError, match="at least one control"):
        interactive.frame_slider(square, {})
    with pytest.raises(ValueError, match="unknown controls"):
        interactive.frame_slider(square, {"size": [4], "shade": [9]}, initial={"colour": 1})


def selftest(tmp_path: Path, html_body: str) -> str:
    chromium = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)),
                    None)
    if chromium is None:
        pytest.skip("no Chromium on this machine")
    page = tmp_path / "page.html"
    page.write_text(f"<!doctype html><html><body>{html_body}</body></html>")
    with tempfile.TemporaryDirectory() as profile:
        out = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}",
                              "--virtual-time-budget=5000", "--dump-dom",
                              page.as_uri() + "#" + interactive.SELFTEST_FRAGMENT],
                             capture_output=True, text=True, timeout=120)
    return out.stdout


@pytest.mark.slow   # a headless Chromium
def test_moving_every_control_changes_the_drawing_in_chromium(tmp_path):
    good = interactive.frame_slider(square, {"size": [4, 8, 16], "shade": [100, 250]})._repr_html_()
    assert 'data-selftest="ok"' in selftest(tmp_path, good)


@pytest.mark.slow   # a headless Chromium
def test_a_control_that_draws_nothing_new_fails_the_selftest(tmp_path):
    """A planted fault: the drawing ignores the second control."""
    dead = interactive.frame_slider(lambda size, shade: square(size, 200), {"size": [4, 8], "shade": [1, 2]})
    assert 'data-selftest="unchanged"' in selftest(tmp_path, dead._repr_html_())


@pytest.mark.slow   # a headless Chromium
def test_the_browser_check_reports_a_dead_control(tmp_path):
    """tests/browser/check_pages.py on a planted page: an interactive figure whose second control
    changes nothing is reported, a working one is not."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("check_pages", Path(__file__).parent / "browser" / "check_pages.py")
    check_pages = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check_pages)
    try:
        check_pages.chromium()
    except SystemExit:
        pytest.skip("no Chromium on this machine")
    good = interactive.frame_slider(square, {"size": [4, 8], "shade": [100, 250]})._repr_html_()
    dead = interactive.frame_slider(lambda size, shade: square(size, 9), {"size": [4, 8], "shade": [1, 2]})._repr_html_()
    page = tmp_path / "page.html"
    page.write_text(f"<!doctype html><html><body><article>{'text ' * 60}{good}{dead}</article></body></html>")
    dom = check_pages.render(page, fragment=check_pages.SELFTEST_FRAGMENT)
    problems = check_pages.check_page(page, dom)
    assert len(problems) == 1 and "moving a control did not change what it draws" in problems[0]
