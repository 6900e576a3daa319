"""The Explorer on a dense-output model in a real browser (JupyterLab, headless Chromium): the
output map is drawn on its own canvas; clicking it changes the input canvas's overlay (the clicked
point's saliency) and draws the point's receptive-field box there. One page load."""

from __future__ import annotations

import time

import numpy as np
import pytest

from tests.browser.conftest import (
    _need, jupyterlab, poll, run_all_cells, shot, snapshot_on_error, write_notebook,
)

pytestmark = [pytest.mark.browser]

Image = _need("PIL.Image")

# a small segmentation net built in the notebook (no files): 24×24 input, 3 classes per pixel
CELL = """\
import keras, numpy as np
from keras import layers
from nbviz import Explorer
keras.utils.set_random_seed(0)
inp = keras.Input((24, 24, 3))
x = layers.Conv2D(4, 3, padding="same", activation="relu", name="enc")(inp)
x = layers.Conv2D(4, 3, padding="same", activation="relu", name="dec")(x)
model = keras.Model(inp, layers.Conv2D(3, 1, activation="softmax", name="classes")(x))
image = (np.random.default_rng(2).random((24, 24, 3)) * 255).astype(np.uint8)
e = Explorer(model, image, labels=["sky", "road", "car"])
e.set(method="saliency")
e"""

RF_COLOR = np.array([255, 0, 255])


def test_click_on_the_output_changes_the_input_overlay(page, tmp_path):
    t0 = time.monotonic()
    nbdir = tmp_path / "nb"
    nbdir.mkdir()
    write_notebook(nbdir / "dense.ipynb", [CELL])
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    with jupyterlab(nbdir, tmp_path) as (base, token), snapshot_on_error(page, artifacts / "failure.png"):
        page.goto(f"{base}/lab/tree/dense.ipynb?token={token}")
        run_all_cells(page, lab=True)
        page.wait_for_selector(".nbviz-output-canvas", timeout=120_000)
        explorer = page.locator(".nbviz-explorer").first
        canvas = explorer.locator("canvas").first  # the input (a MultiCanvas: one element)
        output = explorer.locator("canvas.nbviz-output-canvas")
        label = explorer.locator(".nbviz-output-target")
        output.evaluate("c => c.scrollIntoView({block: 'center', inline: 'center'})")
        # the output map is drawn (argmax class colours: not one flat colour), beside the input
        out_img = poll(page, lambda: (lambda a: a if a[4:-4, 4:-4].std() > 5 else None)(shot(output)),
                       what="the output map")
        assert abs(out_img.shape[0] - 312) <= 2 and abs(out_img.shape[1] - 312) <= 2, out_img.shape  # 24 cells × 13
        assert output.bounding_box()["x"] > canvas.bounding_box()["x"] + canvas.bounding_box()["width"] - 2
        assert "whole output map" in label.text_content()
        # the input shows the whole map's saliency; wait until it is painted and still
        before = poll(page, lambda: (lambda a: a if "saliency" in explorer.locator(".nbviz-status").text_content()
                                     else None)(shot(canvas)), what="the first result")
        page.wait_for_timeout(300)
        before = shot(canvas)
        assert not np.all(before == RF_COLOR, axis=-1).any()
        print(f"\nnotebook ran after {time.monotonic() - t0:.1f} s")

        # click output cell (6, 17): 13 canvas px per cell
        output.evaluate("c => c.scrollIntoView({block: 'center', inline: 'center'})")
        output.click(position={"x": 17 * 13 + 6, "y": 6 * 13 + 6})
        poll(page, lambda: "output point" in label.text_content(), what="the output target text")
        text = label.text_content()
        assert "output point (6, 17)" in text or "output point (5, 17)" in text or "output point (6, 16)" in text, text

        canvas.evaluate("c => c.scrollIntoView({block: 'center', inline: 'center'})")

        def changed():
            a = shot(canvas)
            magenta = np.all(a == RF_COLOR, axis=-1)
            return a if magenta.sum() > 40 and np.abs(a - before).mean() > 2 else None

        after = poll(page, changed, what="the input overlay and RF box to change")
        Image.fromarray(before.astype(np.uint8)).save(artifacts / "before.png")
        Image.fromarray(after.astype(np.uint8)).save(artifacts / "after.png")
        # the RF box lies around the clicked cell's position on the input (432 px for 24 px)
        ys, xs = np.nonzero(np.all(after == RF_COLOR, axis=-1))
        scale = after.shape[0] / 24
        assert ys.min() <= 6.5 * scale <= ys.max() and xs.min() <= 17.5 * scale <= xs.max(), (ys.min(), ys.max(),
                                                                                             xs.min(), xs.max())
        # far from the receptive field the overlay lost its colour (a point's saliency is local)
        far = (slice(int(20 * scale), int(23 * scale)), slice(int(1 * scale), int(4 * scale)))
        assert np.abs(after[far] - before[far]).mean() > 2
        assert not page.js_errors, page.js_errors
    print(f"\ndense output in JupyterLab: {text!r}, {time.monotonic() - t0:.1f} s (artifacts: {artifacts})")
