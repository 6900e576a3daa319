"""The Timeline in a real browser (JupyterLab, headless Debian Chromium via Playwright): dragging
the epoch slider repaints the canvas with the map recorded at that epoch (compared with the frame
built from the store) and moves the ERF plot's marker.

The run is recorded here by :class:`nbviz.callbacks.Recorder` on a toy model (4 records: before
training and after 3 epochs); the notebook only opens it. One page load.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.browser.conftest import (
    _need, jupyterlab, poll, run_all_cells, shot, snapshot_on_error, write_notebook,
)

pytestmark = [pytest.mark.browser]

Image = _need("PIL.Image")

SIZE = 256  # the Timeline canvas' side in the notebook (16 px probe images shown 16x larger)


def record_run(out: Path) -> Path:
    from nbviz import callbacks
    from tests.widget.test_timeline import data, toy

    model = toy()
    x, y = data()
    rec = callbacks.Recorder(x[:2], methods=("gradcam", "saliency"), out=out)
    model.fit(x, y, epochs=3, batch_size=8, callbacks=[rec], verbose=0)
    return out


def close_to(shown: np.ndarray, expected: np.ndarray) -> float:
    """Mean |difference| of a screenshot and a frame, inside (the edges may be off by a pixel)."""
    h, w = min(shown.shape[0], expected.shape[0]), min(shown.shape[1], expected.shape[1])
    return float(np.abs(shown[4:h - 4, 4:w - 4] - expected[4:h - 4, 4:w - 4, :3].astype(int)).mean())


def test_timeline_slider_changes_the_canvas_in_jupyterlab(page, tmp_path):
    from nbviz.runstore import open_run
    from nbviz.widget import frames
    from nbviz.widget.timeline_frames import map_frame

    run_dir = record_run(tmp_path / "run")
    run = open_run(run_dir)
    g = frames.display_geometry(16, 16, target=SIZE, largest=SIZE)
    first, last = (map_frame(run, run.steps[k], "gradcam", 0, g) for k in (0, len(run) - 1))
    assert close_to(first[..., :3].astype(int), last) > 3  # the two epochs look different

    nbdir = tmp_path / "nb"
    write_notebook(nbdir / "timeline.ipynb",
                   [f"from nbviz import Timeline\nt = Timeline({str(run_dir)!r}, size={SIZE})\nt"])
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    with jupyterlab(nbdir, tmp_path) as (base, token), snapshot_on_error(page, artifacts / "failure.png"):
        page.goto(f"{base}/lab/tree/timeline.ipynb?token={token}")
        run_all_cells(page, lab=True)
        timeline = page.locator(".nbviz-timeline").first
        canvas = timeline.locator("canvas").first
        label = timeline.locator(".widget-html", has_text="step").first
        canvas.wait_for(timeout=120_000)
        canvas.evaluate("c => c.scrollIntoView({block: 'center', inline: 'center'})")
        # epoch 0's map is drawn: the screenshot is the frame built from the store
        before = poll(page, lambda: (lambda a: a if close_to(a, first) < 3 else None)(shot(canvas)),
                      what="the epoch-0 map on the canvas")
        assert "epoch 0" in label.text_content()
        plot = timeline.locator(".widget-image").first  # the ERF / TRF plot
        plot_src = plot.get_attribute("src")

        # drag the epoch slider's handle to the right end
        handle = timeline.locator(".widget-slider", has_text="epoch").locator(".noUi-handle").first
        handle.scroll_into_view_if_needed()
        box = handle.bounding_box()
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        page.mouse.down()
        page.mouse.move(box["x"] + 600, box["y"] + box["height"] / 2, steps=10)
        page.mouse.up()
        poll(page, lambda: f"epoch {run.epochs[-1]:g}" in label.text_content(), what="the kernel to follow the slider")
        canvas.evaluate("c => c.scrollIntoView({block: 'center', inline: 'center'})")
        after = poll(page, lambda: (lambda a: a if close_to(a, last) < 3 else None)(shot(canvas)),
                     what="the last epoch's map on the canvas")
        assert np.abs(after - before).mean() > 3  # the pixels changed
        poll(page, lambda: plot.get_attribute("src") != plot_src, what="the ERF plot's marker to move")
        Image.fromarray(before.astype(np.uint8)).save(artifacts / "epoch_first.png")
        Image.fromarray(after.astype(np.uint8)).save(artifacts / "epoch_last.png")
        page.screenshot(path=str(artifacts / "page.png"), full_page=True)
        assert not page.js_errors, page.js_errors
    print(f"\nTimeline in JupyterLab: canvas changed by {np.abs(after - before).mean():.1f}/255 "
          f"(artifacts: {artifacts})")
