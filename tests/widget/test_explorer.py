"""The Explorer driven without a browser: state, mouse handlers, frames, session, export."""

import base64
import io
import time

import numpy as np
import pytest
from PIL import Image

from nbviz import render
from nbviz.methods import table
from nbviz.session import Result
from nbviz.widget import Explorer, frames
from tests.models import small_cnn


@pytest.fixture(scope="module")
def model():
    return small_cnn(size=32, classes=4)


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(1)
    img = (rng.random((32, 32, 3)) * 80).astype(np.uint8)
    img[8:20, 12:26] += 150  # a bright patch
    return img


@pytest.fixture
def explorer(model, image):
    e = Explorer(model, image, labels=["cat", "dog", "fox", "owl"])
    e.wait()
    yield e
    e.close()


def _delta(a, b):
    return np.abs(a.astype(int) - b.astype(int)).max(axis=-1)


def test_starts_with_the_image_and_top5_targets(explorer, image):
    f = explorer.frame()
    assert f.shape == (448, 448, 4)  # 32×32 shown 14× larger
    np.testing.assert_array_equal(f[::14, ::14, :3], image)  # no overlay before a click (RF method)
    target_w = explorer.controls.target
    labels = [label for label, _ in target_w.options]
    assert labels[0] == "top prediction" and len(labels) == 5
    assert target_w.index == 0 and explorer.state.target is None  # shown, not blank
    target_w.value = target_w.options[2][1]  # the dropdown drives the state
    assert explorer.state.target == target_w.options[2][1]
    explorer.set(target=None)
    assert target_w.index == 0
    assert {label.split(" ")[0] for label in labels[1:]} == {"cat", "dog", "fox", "owl"}


def test_switching_method_repaints_only_the_overlay(explorer):
    explorer.set(method="gradcam", layer="conv3").wait()
    before = dict(explorer.paints)
    explorer.set(method="saliency").wait()
    after = dict(explorer.paints)
    assert after["overlay"] == before["overlay"] + 1
    assert after["image"] == before["image"] and after["top"] == before["top"]
    # colormap and opacity repaint the overlay from the last result: no new computation
    submitted = explorer.worker.submitted
    f0 = explorer.frame()
    explorer.set(alpha=0.9)
    explorer.set(cmap="viridis")
    assert explorer.worker.submitted == submitted
    assert explorer.paints["overlay"] == after["overlay"] + 2 and explorer.paints["top"] == after["top"]
    assert _delta(f0, explorer.frame()).max() > 0


def test_gradcam_overlay_matches_the_function(explorer, model, image):
    from nbviz.methods.gradcam import gradcam

    explorer.set(method="gradcam", layer="conv3", target=2, alpha=1.0, cmap="gray").wait()
    cam = gradcam(model, image, target=2, layer="conv3")
    want = render.resize_nearest(render.heatmap(cam, cmap="gray", alpha=1.0), (448, 448))
    np.testing.assert_array_equal(explorer.frame(), render.composite(
        frames.image_layer(image, explorer.geometry), want, explorer.canvas_layers.frames["top"]))
    assert "error" not in explorer.status_text


@pytest.mark.parametrize("key", [m.key for m in table.METHODS if not m.on_demand])
def test_every_method_runs_from_the_widget(key, explorer, assert_unchanged, model):
    row = table.method(key)
    with assert_unchanged(model):
        before = explorer.frame()
        explorer.set(method=key, layer="conv2", samples=4, ig_steps=8).click(10, 20).wait()
        r = explorer.result
        assert "error" not in explorer.status_text, explorer.status_text
        assert r is not None and r.display == row.display and r.final
        assert explorer.status_text.startswith(r.note) and row.label.lower() in r.note.lower()
        assert r.data.shape[:2] == (r.activation.shape[:2] if r.activation is not None else (32, 32))
        assert np.isfinite(r.data).all() and np.abs(r.data).max() > 0
        assert _delta(before, explorer.frame()).max() > 0  # the overlay shows it
        assert "value" in explorer.readout_text


def test_click_draws_the_receptive_field_box(explorer, model):
    from nbviz.methods.receptive_field import receptive_field

    explorer.set(method="rf", layer="conv2").wait()
    explorer._on_mouse_down(20 * 14 + 3, 10 * 14 + 5)  # canvas (x, y) as ipycanvas sends it
    explorer.wait()
    rf = receptive_field(model, "conv2")
    cell = rf.cell((10, 20))
    assert explorer.result.cell == tuple(cell)
    t, l, b, r = (int(v) * 14 for v in rf.box(cell))
    top = explorer.canvas_layers.frames["top"]
    box_px = np.all(top[..., :3] == frames.BOX_COLOR, axis=-1) & (top[..., 3] > 0)
    ys, xs = np.nonzero(box_px)
    assert (ys.min(), xs.min(), ys.max() + 1, xs.max() + 1) == (max(t, 0), max(l, 0), min(b, 448), min(r, 448))
    text = explorer.readout_text
    assert "pointer (y=10, x=20)" in text and f"cell {tuple(int(v) for v in cell)}" in text
    assert f"RF size {rf.size[0]:g}" in text


def test_activation_tiles_are_paged_sorted_and_clickable(explorer):
    explorer.set(method="activations", layer="conv1").wait()
    grid = explorer._grid
    assert grid is not None and grid.channels == 8 and grid.order == tuple(range(8))
    th, tw = grid.tile
    assert th >= 32 and tw >= 32  # readable tiles, whatever the channel count
    explorer._on_tile_click(tw + grid.pad + 2, 2)  # (x, y) inside the second tile
    explorer.wait()
    assert explorer.state.channel == 1 and "channel 1 of 8" in explorer.status_text
    np.testing.assert_array_equal(explorer.result.data, explorer.result.activation[..., 1])
    act = explorer.result.activation
    explorer.set(tile_sort="mean")
    assert explorer._grid.order == tuple(int(k) for k in np.argsort(-act.mean(axis=(0, 1)), kind="stable"))
    explorer.click(8, 8).set(tile_sort="at click")  # conv1 keeps the image's size: cell (8, 8)
    assert explorer._grid.order[0] == int(np.argmax(act[8, 8]))
    k = explorer._grid.order[0]
    explorer._on_tile_click(2, 2)  # the first tile is the most active channel at the click
    explorer.wait()
    assert explorer.state.channel == k


def test_rapid_clicks_leave_one_queued_job_and_show_the_last(model, image, monkeypatch):
    seen = []

    def slowish(ctx, req, stop, progress):
        time.sleep(0.2)  # a method that takes a while and cannot stop early (like a gradient)
        seen.append(req.point)
        m = np.zeros(req.image.shape[:2], np.float32)
        m[req.point] = 1
        return Result("unsigned", m, values=m, note=f"at {req.point}")

    _add_row(monkeypatch, table.Method("probe_point", "probe", "numpy:zeros", "unsigned", "test",
                                       needs=frozenset({"point"}), runner=f"{__name__}:_runner"), slowish)
    explorer = Explorer(model, image)
    explorer.set(method="probe_point").wait()
    started = explorer.worker.started
    rng = np.random.default_rng(0)
    clicks = [tuple(int(v) for v in rng.integers(0, 32, 2)) for _ in range(50)]
    t0 = time.monotonic()
    for y, x in clicks:
        explorer._on_mouse_down(x * 14 + 7, y * 14 + 7)
        assert explorer.worker.waiting <= 1
    burst = time.monotonic() - t0
    explorer.wait()
    w = explorer.worker
    assert w.max_waiting == 1
    # one job at a time, each replaced while waiting: about one run per 0.2 s of burst, plus the last
    assert w.started - started <= 2 + burst / 0.2 < 50
    assert w.replaced >= 50 - (w.started - started)
    assert seen[-1] == clicks[-1] and explorer.result.note == f"at {clicks[-1]}"
    y, x = clicks[-1]
    top = explorer.canvas_layers.frames["top"]
    assert top[y * 14 + 7, x * 14 + 7 - 4, 3] == 255  # the crosshair is around the last click
    overlay = explorer.canvas_layers.frames["overlay"]
    assert tuple(np.argwhere(overlay[..., 0] == overlay[..., 0].max())[0] // 14) == clicks[-1]
    explorer.close()


_RUNNERS = {}


def _runner(ctx, req, stop, progress):
    return _RUNNERS[req.method](ctx, req, stop, progress)


def _add_row(monkeypatch, row, fn):
    """A test-only table row (the Explorer offers whatever the table holds)."""
    monkeypatch.setattr(table, "METHODS", table.METHODS + (row,))
    monkeypatch.setitem(table._BY_KEY, row.key, row)
    monkeypatch.setitem(_RUNNERS, row.key, fn)


def test_errors_show_in_the_widget_and_it_keeps_working(model, image, monkeypatch):
    def broken(ctx, req, stop, progress):
        raise ValueError("this layer cannot be explained")

    _add_row(monkeypatch, table.Method("broken", "broken", "numpy:zeros", "unsigned", "test",
                                       needs=frozenset(), runner=f"{__name__}:_runner"), broken)
    explorer = Explorer(model, image)
    explorer.set(method="saliency").wait()
    explorer.set(method="broken").wait()
    assert "error ValueError: this layer cannot be explained" in explorer.status_text
    assert "traceback" in explorer.controls.status.value
    assert explorer.result is None and _delta(explorer.frame(), frames.image_layer(image, explorer.geometry)).max() == 0
    explorer.set(method="saliency").wait()
    assert "error" not in explorer.status_text and explorer.result.display == "signed"
    explorer.close()


def test_bad_settings_are_refused(explorer):
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        explorer.set(method="nope")
    with pytest.raises(ValueError, match="unknown Explorer setting"):
        explorer.set(colour="red")
    with pytest.raises(ValueError, match="not a spatial"):
        explorer.set(layer="logits")
    with pytest.raises(ValueError, match="outside the 32×32 image"):
        explorer.click(40, 3)
    with pytest.raises(ValueError, match="outside the 32×32 image"):
        explorer.set(point=(3, 40))
    with pytest.raises(ValueError, match=r"channel must be an int in \[0, 15\] for layer 'conv2', got 999"):
        explorer.set(layer="conv2", channel=999)


@pytest.mark.parametrize("bad", [dict(target=7), dict(cmap="nope"), dict(alpha=1.5), dict(mode="sideways"),
                                 dict(samples=0.5), dict(grid="yes"), dict(tile_sort="random")])
def test_set_is_all_or_nothing(explorer, bad):
    explorer.set(method="saliency").wait()
    before = {k: getattr(explorer.state, k) for k in explorer.state.trait_names()}
    with pytest.raises(ValueError, match=next(iter(bad))):
        explorer.set(method="gradcam", layer="conv3", **bad)
    assert {k: getattr(explorer.state, k) for k in explorer.state.trait_names()} == before
    explorer.set(method="gradcam", layer="conv3").wait()  # later requests still work
    assert "error" not in explorer.status_text and explorer.result.display == "unsigned"


def test_images_of_any_kind_are_fitted_to_the_model(model):
    gray = Image.fromarray((np.arange(64 * 48) % 255).astype(np.uint8).reshape(64, 48))
    e = Explorer(model, gray)
    assert e.image.shape == (32, 32, 3) and e.image.dtype == np.uint8
    e.set_image(np.ones((100, 80, 4), np.float32))
    assert e.image.shape == (32, 32, 3) and e.frame().shape == (448, 448, 4)
    with pytest.raises(TypeError, match="Explorer image"):
        e.set_image({"x": 1})
    e.close()
    with pytest.raises(TypeError, match="preprocess must be a function"):
        Explorer(model, gray, preprocess=3)


def test_png_export_download_link_and_static_snapshot(explorer, tmp_path):
    data = explorer.to_png(tmp_path / "view.png")
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(data))), explorer.frame())
    explorer.set(method="saliency").wait()
    explorer.snapshot.update()  # what the debounce timer does after a paint
    link = explorer.controls.save.value
    assert "download='nbviz-saliency-" in link  # a browser download, no file on the server
    png = base64.b64decode(link.split("base64,")[1].split("'")[0])
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(png))), explorer.frame())
    bundle = explorer.snapshot.bundle()
    png = Image.open(io.BytesIO(base64.b64decode(bundle["image/png"])))
    assert png.size == (448, 448)
    assert "nbviz Explorer" in repr(explorer)


def test_feature_visualisation_runs_stops_and_repaints(explorer):
    explorer.click(5, 5).set(layer="conv2", channel=3, steps=6, octaves=1, jitter=2, rotate=0, scale=0.0)
    explorer.run_featvis().wait()
    r = explorer.result
    assert "error" not in explorer.status_text, explorer.status_text
    assert r.display == "picture" and r.data.shape == (32, 32, 3) and "objective" in r.note
    assert r.step == r.steps == 6 and explorer.controls.progress_text.value == "step 6 of 6"
    assert explorer.controls.progress.value == 1.0
    first = explorer.frame()
    # no crosshair or RF box over the generated picture: the frame is the picture alone
    want = render.resize_nearest(render.to_rgba(np.clip(r.data, 0, 1)), first.shape[:2])
    np.testing.assert_array_equal(first, want)
    # a long run, stopped after its first progress report, keeps its current picture
    explorer.set(steps=400)  # same objective and settings: no new trace
    traces = explorer.probe.trace_count("featvis.step")
    explorer.run()
    deadline = time.monotonic() + 30
    while (explorer.result.step or 0) < 16 or explorer.result.final:  # past the first run's 6 steps
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert explorer.busy_text.startswith("⏳ computing feature visualisation")
    explorer.stop()
    explorer.wait()
    r = explorer.result
    assert r.stopped and 16 <= r.step < 400 and r.final
    text = f"stopped at step {r.step} of 400"
    assert text in explorer.status_text and explorer.controls.progress_text.value == text
    assert explorer.controls.progress.value == pytest.approx(r.step / 400) and explorer.busy_text == ""
    assert explorer.probe.trace_count("featvis.step") == traces
    assert _delta(first, explorer.frame()).max() > 0


def test_saved_notebook_shows_the_last_view_without_a_kernel(explorer):
    """The Explorer displays as the live widget plus a PNG snapshot output that is updated after
    each result; nbconvert (no widget state, like GitHub) renders that PNG."""
    nbformat = pytest.importorskip("nbformat")
    nbconvert = pytest.importorskip("nbconvert")
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output

    InteractiveShell.instance()
    prewarmed = []
    explorer.session.prewarm = prewarmed.append  # (measured in the session tests)
    with capture_output() as shown:
        explorer._ipython_display_()
    assert [r.method for r in prewarmed] == [explorer.state.method]  # showing it starts prewarming
    widget_out, snap_out = shown.outputs
    assert "application/vnd.jupyter.widget-view+json" in widget_out.data
    assert "image/png" not in widget_out.data
    first = base64.b64decode(snap_out.data["image/png"])
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(first))), explorer.frame())
    # a new result updates the snapshot (debounced; forced here)
    with capture_output() as updated:
        explorer.set(method="saliency").wait()
        explorer.snapshot.cancel()
        explorer.snapshot.update()
    last = updated.outputs[-1].data["image/png"]
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(base64.b64decode(last)))), explorer.frame())
    assert last != snap_out.data["image/png"]
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("e")
    cell.outputs = [nbformat.v4.new_output("display_data", data=widget_out.data),
                    nbformat.v4.new_output("display_data", data={**snap_out.data, "image/png": last})]
    nb.cells = [cell]
    html_text, _ = nbconvert.HTMLExporter().from_notebook_node(nb)
    assert f"data:image/png;base64,{last}" in html_text


def test_under_voila_only_the_widget_is_displayed(explorer, monkeypatch):
    """Voila saves nothing, and nbclient (which runs Voila's notebooks) fails with an IndexError
    in ``_update_display_id`` on display updates of outputs it no longer holds: no snapshot
    output there, so no display updates."""
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output

    InteractiveShell.instance()
    monkeypatch.setenv("VOILA_BASE_URL", "/")
    explorer.session.prewarm = lambda req: None
    with capture_output() as shown:
        explorer._ipython_display_()
    assert len(shown.outputs) == 1 and "application/vnd.jupyter.widget-view+json" in shown.outputs[0].data
    with capture_output() as updated:
        explorer.set(method="saliency").wait()
        explorer.snapshot.update()
    assert not updated.outputs  # nothing sent but the widget's own state


def test_no_model_opens_the_demo():
    from nbviz import demo

    e = Explorer().wait()
    assert e.image.shape == (64, 64, 3) and e.frame().shape == (448, 448, 4)
    np.testing.assert_array_equal(e.image, demo.image(0))
    names = [label.split(" ")[0] for label, _ in e.controls.target.options[1:]]
    assert sorted(names) == sorted(demo.LABELS)
    e.close()


def test_file_upload_value_replaces_the_image(explorer):
    buf = io.BytesIO()
    Image.fromarray(np.full((50, 70, 3), (10, 200, 30), np.uint8)).save(buf, "PNG")
    explorer._on_upload({"new": ({"name": "g.png", "type": "image/png", "content": memoryview(buf.getvalue())},)})
    explorer.wait()
    assert explorer.image.shape == (32, 32, 3) and tuple(explorer.image[5, 5]) == (10, 200, 30)
    assert tuple(explorer.frame()[100, 100, :3]) == (10, 200, 30)  # no overlay before a click
    explorer._on_upload({"new": ({"name": "bad.png", "content": memoryview(b"nope")},)})
    assert "could not read the image bytes" in explorer.status_text


def test_nested_model_layers_by_path(nested, assert_unchanged):
    image = (np.random.default_rng(2).random((64, 64, 3)) * 255).astype(np.uint8)
    with assert_unchanged(nested):
        e = Explorer(nested, image).wait()
        inner = [p for p in e.controls.layer.options if "/" in p]
        assert inner and e.state.layer in e.controls.layer.options  # nested paths, a spatial default
        e.set(method="gradcam", layer=inner[-3]).wait()
        assert "error" not in e.status_text, e.status_text
        assert e.result.display == "unsigned" and e.result.data.shape == (64, 64)
        e.close()


def test_status_names_what_the_canvas_shows_and_busy_comes_and_goes(explorer):
    explorer.set(method="gradcam", layer="conv3").wait()
    explorer.set(method="saliency").wait()
    explorer.set(method="gradcam").wait()  # a cached result: no computation, the status follows
    assert explorer.status_text == "Grad-CAM at conv3 · from the cache"
    assert explorer.busy_text == "" and "· 0 ms" not in explorer.status_text
    # a computation that takes a while: the busy line names it while it runs, then goes
    explorer.set(method="smoothgrad", samples=64, noise=0.3)
    seen = explorer.busy_text
    explorer.wait()
    assert seen.startswith("⏳ computing SmoothGrad…") and explorer.busy_text == ""
    assert explorer.status_text.startswith("SmoothGrad")
    # a request replaced before it finished never shows: the status names the newest
    explorer.set(method="integrated_gradients", ig_steps=128)
    explorer.set(method="gradcam_pp")
    explorer.wait()
    assert explorer.status_text.startswith("Grad-CAM++ at conv3") and explorer.busy_text == ""


def test_activation_tiles_are_paged():
    e = Explorer().wait()  # the demo: block2_conv has 64 channels
    e.set(method="activations", layer="block2_conv").wait()
    assert e._grid.order == tuple(range(32)) and "1–32 of 64" in e.controls.page_text.value
    e._page(+1)
    assert e._grid.order == tuple(range(32, 64)) and "33–64 of 64" in e.controls.page_text.value
    with pytest.raises(ValueError, match=r"tile_page must be an int in \[0, 1\]"):
        e.set(tile_page=2)
    e.set(tile_sort="mean")  # the page stays; its tiles are the next 32 by mean activation
    act = e.result.activation
    assert e._grid.order == tuple(int(k) for k in np.argsort(-act.mean(axis=(0, 1)), kind="stable")[32:])
    e.close()
