"""Figures a reader can operate in the rendered book, without a kernel and without the network.

An ipywidgets slider needs a running Python kernel; the rendered book has none. A
:func:`frame_slider` computes every frame when the notebook runs (one figure per setting of its
controls), embeds them in the page as JPEG data URLs, and adds one range input per control and a
few lines of JavaScript that show the frame of the current setting. It works from ``file://``
and from any web server, in the book and in a (trusted) notebook, and loads nothing.

Self-test: opened with the URL fragment ``#frame-slider-selftest``, every figure moves each of
its controls through all its values and records on its root element ``data-selftest="ok"`` if
the image drawn changed at every move, ``"unchanged"`` otherwise (the browser check reads it:
``tests/browser/check_pages.py``).

Shape key
    D   controls of a figure (sliders); frames: one per combination of their values
"""
from __future__ import annotations

import base64
import html
import io
import itertools
import json
import uuid
from typing import Callable, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from PIL import Image

SELFTEST_FRAGMENT = "frame-slider-selftest"
MAX_FRAMES = 64  # a page must stay light: at 20-60 kB a frame, 64 frames are 1-4 MB

_SCRIPT = """
(function () {
  var root = document.getElementById("%(id)s");
  var data = JSON.parse(root.querySelector("script[type='application/json']").textContent);
  var img = root.querySelector("img");
  var inputs = Array.prototype.slice.call(root.querySelectorAll("input[type=range]"));
  var shown = Array.prototype.slice.call(root.querySelectorAll("output"));
  function draw() {
    var key = inputs.map(function (i) { return i.value; }).join(",");
    img.src = data.images[data.index[key]];
    inputs.forEach(function (input, d) { shown[d].textContent = data.labels[d][Number(input.value)]; });
  }
  inputs.forEach(function (input) { input.addEventListener("input", draw); });
  draw();
  if (window.location.hash === "#%(fragment)s") {
    var changed = true;
    inputs.forEach(function (input) {
      var n = Number(input.max) + 1;
      for (var step = 0; step < n; step++) {
        var before = img.src;
        input.value = String((Number(input.value) + 1) %% n);
        input.dispatchEvent(new Event("input"));
        if (n > 1 && img.src === before) { changed = false; }
      }
    });
    root.setAttribute("data-selftest", changed ? "ok" : "unchanged");
  }
})();
"""


def _jpeg_data_url(image, quality: int = 85, dpi: int = 100) -> str:
    """A matplotlib Figure (closed afterwards), an HxWx3 array or a Tensor[3, H, W] -> a data URL."""
    buffer = io.BytesIO()
    if isinstance(image, plt.Figure):
        image.savefig(buffer, format="jpeg", dpi=dpi, pil_kwargs={"quality": quality}, bbox_inches="tight",
                      facecolor="white")
        plt.close(image)
    else:
        if isinstance(image, torch.Tensor):
            image = image.detach().cpu()
            if image.dtype.is_floating_point:
                image = (image.clamp(0, 1) * 255).round()
            image = image.to(torch.uint8).permute(1, 2, 0).numpy()
        Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buffer, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


class FrameSlider:
    """The HTML of a :func:`frame_slider`; Jupyter and myst-nb display it through ``_repr_html_``."""

    def __init__(self, html_text: str, num_frames: int):
        self.html, self.num_frames = html_text, num_frames

    def _repr_html_(self) -> str:
        return self.html


def frame_slider(draw: Callable[..., object], controls: dict[str, Sequence], title: str = "",
                 initial: dict[str, object] | None = None, quality: int = 85) -> FrameSlider:
    """An in-page figure with one slider per control.

    Args:
        draw: ``draw(**setting)`` -> a matplotlib Figure (closed here), an HxWx3 uint8 array or a
            Tensor[3, H, W] image, for one value of every control.
        controls: name -> the values its slider steps through (at least one each).
        title: shown above the figure.
        initial: the setting shown first (default: each control's first value).
    Returns:
        a :class:`FrameSlider` (display it, or leave it as a cell's last expression).
    """
    if not controls or any(len(values) == 0 for values in controls.values()):
        raise ValueError("frame_slider needs at least one control, each with at least one value")
    names = list(controls)
    combos = list(itertools.product(*(range(len(controls[n])) for n in names)))
    if len(combos) > MAX_FRAMES:
        raise ValueError(f"{len(combos)} frames (the product of the controls' value counts); keep it at most "
                         f"{MAX_FRAMES} so the page stays light")
    initial = initial or {}
    unknown = set(initial) - set(names)
    if unknown:
        raise ValueError(f"initial names unknown controls {sorted(unknown)}; the controls are {names}")
    images, index = [], {}
    for combo in combos:
        setting = {n: controls[n][i] for n, i in zip(names, combo)}
        index[",".join(map(str, combo))] = len(images)
        images.append(_jpeg_data_url(draw(**setting), quality))
    start = [list(controls[n]).index(initial[n]) if n in initial else 0 for n in names]
    fid = f"frame-slider-{uuid.uuid4().hex[:12]}"
    data = {"images": images, "index": index, "labels": [[str(v) for v in controls[n]] for n in names]}
    rows = "".join(
        f'<label style="display:flex;gap:0.6em;align-items:center;margin:0.2em 0">'
        f'<span style="min-width:9em">{html.escape(n)}</span>'
        f'<input type="range" min="0" max="{len(controls[n]) - 1}" step="1" value="{s}" '
        f'aria-label="{html.escape(n)}" style="flex:1;max-width:22em">'
        f'<output style="min-width:4em;font-family:monospace"></output></label>'
        for n, s in zip(names, start))
    payload = json.dumps(data).replace("</", "<\\/")   # no "</script>" can end the JSON early
    heading = f'<div style="font-weight:600;margin-bottom:0.3em">{html.escape(title)}</div>' if title else ""
    body = (f'<div class="frame-slider" id="{fid}" style="background:white;color:black;padding:0.5em;'
            f'border:1px solid #ccc;border-radius:4px;max-width:100%">{heading}{rows}'
            f'<img alt="{html.escape(title or "figure")}" style="max-width:100%;display:block;margin-top:0.4em">'
            f'<script type="application/json">{payload}</script>'
            f'<script>{_SCRIPT % {"id": fid, "fragment": SELFTEST_FRAGMENT}}</script></div>')
    return FrameSlider(body, len(images))
