"""The Explorer's dictionary panel in a real browser (JupyterLab, headless Chromium, one page load):
a click on the picture fills the panel with k icons; a click on an icon changes the Explorer's
overlay to that channel's activation map (checked in screenshots)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from tests.browser.conftest import (
    _need, jupyterlab, poll, run_all_cells, shot, snapshot_on_error, write_notebook,
)

pytestmark = [pytest.mark.browser]

Image = _need("PIL.Image")

K, SIZE, PAD, BAR = 4, 64, 4, 8  # the panel's slot layout (nbviz.widget.dictionary_frames)
CELL = ("from nbviz import Explorer\n"
        f"e = Explorer(dictionary={{'k': {K}, 'steps': 16, 'size': {SIZE}}})  # the demo model and image\n"
        "e")


def placeholder(size):
    from nbviz.widget.dictionary_frames import placeholder as tile

    return tile(size).astype(int)


def test_dictionary_panel_in_jupyterlab(page, tmp_path, monkeypatch):
    monkeypatch.setenv("NBVIZ_CACHE", str(tmp_path / "cache"))  # the kernel inherits it: icons render
    write_notebook(tmp_path / "nb" / "dictionary.ipynb", [CELL])
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    t0 = time.monotonic()
    with jupyterlab(tmp_path / "nb", tmp_path) as (base, token), snapshot_on_error(page, artifacts / "failure.png"):
        page.goto(f"{base}/lab/tree/dictionary.ipynb?token={token}")
        run_all_cells(page, lab=True)
        page.wait_for_selector(".nbviz-explorer canvas", timeout=120_000)
        explorer = page.locator(".nbviz-explorer").first
        canvas = explorer.locator("canvas").first
        panel = explorer.locator(".nbviz-dictionary")
        strip = panel.locator("canvas").nth(1)  # groups picture first (hidden), then the slots
        status = panel.locator(".nbviz-dictionary-status")
        canvas.evaluate("c => c.scrollIntoView({block: 'center', inline: 'center'})")
        poll(page, lambda: shot(canvas)[4:-4, 4:-4].std() > 8, what="the image on the canvas")

        # ---- click on the object: the panel fills with K icons
        box = canvas.bounding_box()
        canvas.click(position={"x": box["width"] * 40 / 64, "y": box["height"] * 40 / 64})
        poll(page, lambda: "click an icon" in status.text_content(), timeout=180, what="the icons to finish")
        print(f"\nclick -> {K} icons done after {time.monotonic() - t0:.1f} s from the start")
        strip.evaluate("c => c.scrollIntoView({block: 'center', inline: 'center'})")
        slots = shot(strip)
        Image.fromarray(slots.astype(np.uint8)).save(artifacts / "slots.png")
        h, w = slots.shape[:2]
        assert abs(w - (PAD + K * (SIZE + PAD))) <= 1 and abs(h - (PAD + SIZE + BAR + 2 * PAD)) <= 1, slots.shape
        empty = placeholder(SIZE)
        for i in range(K):
            left = PAD + i * (SIZE + PAD)
            icon = slots[PAD + 2:PAD + SIZE - 2, left + 2:left + SIZE - 2]
            assert icon.std() > 5, f"slot {i} is flat"
            assert np.abs(icon - empty[2:-2, 2:-2]).mean() > 10, f"slot {i} still shows its placeholder"
        labels = panel.locator(".nbviz-dictionary-labels").text_content()
        assert labels.count("channel ") == K, labels

        # ---- click the third icon: the overlay becomes that channel's activation map
        canvas.evaluate("c => c.scrollIntoView({block: 'center', inline: 'center'})")
        before = shot(canvas)
        strip.evaluate("c => c.scrollIntoView({block: 'center', inline: 'center'})")
        strip.click(position={"x": PAD + 2 * (SIZE + PAD) + SIZE // 2, "y": PAD + SIZE // 2})
        explorer_status = explorer.locator(".nbviz-status").first
        poll(page, lambda: "activations: channel" in explorer_status.text_content(), what="the activation map")
        channel = labels.split("channel ")[3].split(":")[0]
        assert f"channel {channel} of" in explorer_status.text_content(), (labels, explorer_status.text_content())
        canvas.evaluate("c => c.scrollIntoView({block: 'center', inline: 'center'})")
        after = poll(page, lambda: (lambda a: a if np.abs(a[4:-4, 4:-4] - before[4:-4, 4:-4]).mean() > 5 else None)(
            shot(canvas)), what="the overlay to change")
        Image.fromarray(after.astype(np.uint8)).save(artifacts / "after_icon_click.png")
        assert not page.js_errors, page.js_errors
    print(f"dictionary panel in JupyterLab: {time.monotonic() - t0:.1f} s (artifacts: {artifacts})")
