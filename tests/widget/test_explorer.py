"""The Explorer driven without a browser: state, mouse handlers, frames, worker, export."""

import base64
import importlib.util
import io
import time

import numpy as np
import pytest
from PIL import Image

from nbviz import render
from nbviz.widget import Explorer, frames
from nbviz.widget import methods as M
from tests.models import small_cnn


def landed(module):
    """Skip a test until another helper's module exists (all of them exist at the end)."""
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} has not landed yet")


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
    labels = [label for label, _ in explorer.target_w.options]
    assert labels[0] == "top prediction" and len(labels) == 5
    assert explorer.target_w.index == 0 and explorer.state.target is None  # shown, not blank
    explorer.target_w.value = explorer.target_w.options[2][1]  # the dropdown drives the state
    assert explorer.state.target == explorer.target_w.options[2][1]
    explorer.set(target=None)
    assert explorer.target_w.index == 0
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
    landed("nbviz.methods.gradcam")
    from nbviz.methods.gradcam import gradcam

    explorer.set(method="gradcam", layer="conv3", target=2, alpha=1.0, cmap="gray").wait()
    cam = gradcam(model, image, target=2, layer="conv3")
    want = render.resize_nearest(render.heatmap(cam, cmap="gray", alpha=1.0), (448, 448))
    np.testing.assert_array_equal(explorer.frame(), render.composite(
        frames.image_layer(image, explorer.geometry), want, explorer._layers["top"]))
    assert "error" not in explorer.status_text


@pytest.mark.parametrize("key", sorted(set(M.METHODS) - {"featvis"}))
def test_every_method_runs_from_the_widget(key, explorer, assert_unchanged, model):
    module = {"rf": "nbviz.methods.receptive_field", "rf_map": "nbviz.methods.receptive_field",
              "rf_max": "nbviz.methods.receptive_field", "gradcam": "nbviz.methods.gradcam",
              "gradcam_pp": "nbviz.methods.gradcam", "guided_gradcam": "nbviz.methods.gradcam",
              "guided_backprop": "nbviz.methods.guided", "saliency": "nbviz.methods.gradients",
              "smoothgrad": "nbviz.methods.gradients", "integrated_gradients": "nbviz.methods.gradients",
              "occlusion": "nbviz.methods.occlusion", "activations": "nbviz.methods.activations"}[key]
    landed(module)
    with assert_unchanged(model):
        before = explorer.frame()
        explorer.set(method=key, layer="conv2", samples=4, ig_steps=8).click(10, 20).wait()
        r = explorer.result
        assert "error" not in explorer.status_text, explorer.status_text
        want = (16, 16) if key == "activations" else (32, 32)  # a conv2 channel, else the image
        assert r is not None and r.kind in ("heat", "rgb") and r.data.shape[:2] == want
        assert np.isfinite(r.data).all() and r.data.min() >= 0 and r.data.max() <= 1 and r.data.max() > 0
        assert _delta(before, explorer.frame()).max() > 0  # the overlay shows it
        assert "value" in explorer.readout_text


def test_click_draws_the_receptive_field_box(explorer, model):
    landed("nbviz.methods.receptive_field")
    from nbviz.methods.receptive_field import receptive_field

    explorer.set(method="rf", layer="conv2").wait()
    explorer._on_mouse_down(20 * 14 + 3, 10 * 14 + 5)  # canvas (x, y) as ipycanvas sends it
    explorer.wait()
    rf = receptive_field(model, "conv2")
    cell = rf.cell((10, 20))
    assert explorer.result.cell == tuple(cell)
    t, l, b, r = (int(v) * 14 for v in rf.box(cell))
    top = explorer._layers["top"]
    box_px = np.all(top[..., :3] == frames.BOX_COLOR, axis=-1) & (top[..., 3] > 0)
    ys, xs = np.nonzero(box_px)
    assert (ys.min(), xs.min(), ys.max() + 1, xs.max() + 1) == (max(t, 0), max(l, 0), min(b, 448), min(r, 448))
    text = explorer.readout_text
    assert "pointer (y=10, x=20)" in text and f"cell {tuple(int(v) for v in cell)}" in text
    assert f"RF size {rf.size[0]:g}" in text


def test_activation_channel_grid_click_selects_the_channel(explorer):
    landed("nbviz.methods.activations")
    explorer.set(method="activations", layer="conv1").wait()
    grid = explorer._grid
    assert grid is not None and grid.channels == 8
    th, tw = grid.tile
    explorer._on_grid_click(tw + grid.pad + 2, 2)  # (x, y) inside the second tile
    explorer.wait()
    assert explorer.state.channel == 1 and "channel 1 of 8" in explorer.status_text
    act = explorer.result.activation[..., 1]
    np.testing.assert_allclose(explorer.result.data, render.normalize(act))


def test_rapid_clicks_leave_one_queued_job_and_show_the_last(model, image, monkeypatch):
    seen = []

    def slowish(ctx, req, stop, progress):
        time.sleep(0.2)  # a method that takes a while and cannot stop early (like a gradient)
        seen.append(req.point)
        m = np.zeros(req.image.shape[:2], np.float32)
        m[req.point] = 1
        return M.Result("heat", m, values=m, note=f"at {req.point}")

    monkeypatch.setitem(M.METHODS, "probe_point", M.Method("probe_point", "probe", frozenset(), slowish,
                                                          needs_point=True))
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
    top = explorer._layers["top"]
    assert top[y * 14 + 7, x * 14 + 7 - 4, 3] == 255  # the crosshair is around the last click
    overlay = explorer._layers["overlay"]
    assert tuple(np.argwhere(overlay[..., 0] == overlay[..., 0].max())[0] // 14) == clicks[-1]
    explorer.close()


def test_errors_show_in_the_widget_and_it_keeps_working(model, image, monkeypatch):
    def broken(ctx, req, stop, progress):
        raise ValueError("this layer cannot be explained")

    monkeypatch.setitem(M.METHODS, "broken", M.Method("broken", "broken", frozenset(), broken))
    explorer = Explorer(model, image)
    explorer.set(method="broken").wait()
    assert "error ValueError: this layer cannot be explained" in explorer.status_text
    assert "traceback" in explorer.status.value
    landed("nbviz.methods.gradients")
    explorer.set(method="saliency").wait()
    assert "error" not in explorer.status_text and explorer.result.kind == "heat"
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


def test_png_export_and_static_snapshot(explorer, tmp_path):
    data = explorer.to_png(tmp_path / "view.png")
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(data))), explorer.frame())
    bundle = explorer._snapshot_bundle()
    png = Image.open(io.BytesIO(base64.b64decode(bundle["image/png"])))
    assert png.size == (448, 448)
    assert "nbviz Explorer" in repr(explorer)


def test_feature_visualisation_runs_stops_and_repaints(explorer):
    landed("nbviz.featvis")
    explorer.set(layer="conv2", channel=3, steps=6, octaves=1, jitter=2, rotate=0, scale=0.0)
    explorer.run_featvis().wait()
    r = explorer.result
    assert "error" not in explorer.status_text, explorer.status_text
    assert r.kind == "picture" and r.data.shape == (32, 32, 3) and "objective" in r.note
    first = explorer.frame()
    assert explorer.progress_w.value == 1.0 and "objective" in explorer.progress_text.value
    # a long run, stopped after its first progress report, keeps its current picture
    explorer.set(steps=400)  # same objective and settings: no new trace
    traces = explorer.probe.trace_count("featvis.step")
    explorer.run_featvis()
    deadline = time.monotonic() + 30
    def step():
        text = explorer.progress_text.value
        return int(text.split()[1]) if explorer.progress_w.value < 1.0 and text.startswith("step") else 0

    while step() < 16:  # past the 6 steps of the first run (same seed: same pictures until then)
        assert time.monotonic() < deadline
        time.sleep(0.02)
    explorer.stop()
    explorer.wait()
    assert "(stopped)" in explorer.result.note and explorer.progress_w.value < 1.0
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
    with capture_output() as shown:
        explorer._ipython_display_()
    widget_out, snap_out = shown.outputs
    assert "application/vnd.jupyter.widget-view+json" in widget_out.data
    assert "image/png" not in widget_out.data
    first = base64.b64decode(snap_out.data["image/png"])
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(first))), explorer.frame())
    # a new result updates the snapshot (debounced; forced here)
    landed("nbviz.methods.gradients")
    with capture_output() as updated:
        explorer.set(method="saliency").wait()
        explorer._snapshot_timer.cancel()
        explorer._update_snapshot()
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


def test_no_model_opens_the_demo():
    landed("nbviz.demo")
    from nbviz import demo

    if not demo.MODEL_PATH.exists():
        pytest.skip("the demo model file has not landed yet")
    e = Explorer().wait()
    assert e.image.shape == (64, 64, 3) and e.frame().shape == (448, 448, 4)
    np.testing.assert_array_equal(e.image, demo.image(0))
    names = [label.split(" ")[0] for label, _ in e.target_w.options[1:]]
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
    landed("nbviz.methods.gradcam")
    image = (np.random.default_rng(2).random((64, 64, 3)) * 255).astype(np.uint8)
    with assert_unchanged(nested):
        e = Explorer(nested, image).wait()
        inner = [p for p in e.layer_w.options if "/" in p]
        assert inner and e.state.layer in e.layer_w.options  # nested paths, a spatial default
        e.set(method="gradcam", layer=inner[-3]).wait()
        assert "error" not in e.status_text, e.status_text
        assert e.result.kind == "heat" and e.result.data.shape == (64, 64)
        e.close()
