"""nbviz.Timeline and Explorer(timeline=...) without a browser, on a run recorded in the test."""

from __future__ import annotations

import html
import io

import ipywidgets as W
import numpy as np
import pytest
import keras
from keras import layers
from PIL import Image

import nbviz
from nbviz import callbacks, render
from nbviz.runstore import open_run
from nbviz.widget import frames
from nbviz.widget import timeline_frames as tfr
from nbviz.widget.timeline import Timeline
from tests.models import small_cnn

SIZE = 16


def toy(seed=0):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((SIZE, SIZE, 3), name="image")
    x = layers.Conv2D(4, 3, padding="same", activation="relu", name="conv1")(inp)
    x = layers.MaxPooling2D(name="pool1")(x)
    x = layers.Conv2D(6, 3, padding="same", activation="relu", name="conv2")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    out = layers.Dense(3, activation="softmax", name="probs")(x)
    model = keras.Model(inp, out, name="timeline_toy")
    model.compile(optimizer=keras.optimizers.Adam(3e-2), loss="sparse_categorical_crossentropy")
    return model


def data(n=24):
    rng = np.random.default_rng(1)
    y = rng.integers(3, size=n)
    x = rng.random((n, SIZE, SIZE, 3)).astype("float32") * 0.3
    for i, c in enumerate(y):  # a bright square whose channel is the class
        top, left = rng.integers(0, SIZE - 6, 2)
        x[i, top:top + 6, left:left + 6, c] += 0.7
    return x, y


def render_ref(picture, display, data, g):
    """The reference frame: a stored map drawn over its probe image by the Explorer's helpers."""
    return render.composite(frames.image_layer(picture, g), frames.overlay_layer(display, data, g, alpha=0.6))


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """Before training and after each of 3 epochs: Grad-CAM (unsigned) and saliency (signed) of
    2 probe images, the ERF of both convolutions, one short feature visualisation."""
    out = tmp_path_factory.mktemp("timeline") / "run"
    model = toy()
    x, y = data()
    rec = callbacks.Recorder(x[:2], methods=("gradcam", "saliency"), featvis=(("conv2", 1),),
                             featvis_options={"steps": 2, "size": SIZE}, out=out)
    model.fit(x, y, epochs=3, batch_size=8, callbacks=[rec], verbose=0)
    return model, out


@pytest.fixture
def timeline(recorded):
    model, out = recorded
    t = Timeline(out, model)
    yield t
    t.close()


def test_slider_shows_exactly_the_stored_map_of_each_epoch(recorded, timeline):
    _, out = recorded
    run = open_run(out)
    assert run.epochs.tolist() == [0.0, 1.0, 2.0, 3.0]
    t = timeline
    assert (t.slider.min, t.slider.max) == (0, 3) and t.epoch == 0.0
    g = t.geometry
    seen = []
    for k, epoch in enumerate(run.epochs):
        t.slider.value = k  # what dragging the slider does
        assert t.epoch == epoch and t.step == run.steps[k]
        # the reference, built here from the store's map by the Explorer's own drawing helpers
        stored = run.maps(epoch, "gradcam", image=0)
        expected = render_ref(run.images[0], "unsigned", stored, g)
        np.testing.assert_array_equal(t.frame(), expected)
        np.testing.assert_array_equal(t.frame(), tfr.map_frame(run, run.steps[k], "gradcam", 0, g))
        seen.append(t.frame())
    # the maps really changed while it trained, and so did the frames
    assert any(not np.array_equal(seen[0], f) for f in seen[1:])
    assert t.frame().shape[:2] == (g.H, g.W) and g.H >= 16 * SIZE  # 16 px shown 20x larger


def test_method_and_image_selectors_and_signed_display(recorded, timeline):
    _, out = recorded
    run = open_run(out)
    t = timeline.set(epoch=2, method="saliency", image=1)
    assert t.method.value == "saliency" and t.image.value == 1
    sal = run.maps(2, "saliency", image=1)
    assert sal.min() < 0 < sal.max()  # a signed map: drawn on the diverging colormap
    np.testing.assert_array_equal(t.frame(), render_ref(run.images[1], "signed", sal.sum(axis=-1) if sal.ndim == 3 else sal,
                                                        t.geometry))
    unsigned = render_ref(run.images[1], "unsigned", sal.sum(axis=-1) if sal.ndim == 3 else sal, t.geometry)
    assert not np.array_equal(t.frame(), unsigned)
    t.method.value = "gradcam"  # the dropdown drives the canvas
    np.testing.assert_array_equal(t.frame(), render_ref(run.images[1], "unsigned",
                                                        run.maps(2, "gradcam", image=1), t.geometry))
    assert "epoch 2" in t.epoch_label.value and "loss" in t.epoch_label.value
    with pytest.raises(ValueError, match="method 'occlusion' was not recorded"):
        t.set(method="occlusion")
    with pytest.raises(ValueError, match=r"epoch 7 has no record; recorded epochs: \[0.0, 1.0, 2.0, 3.0\]"):
        t.set(epoch=7)
    with pytest.raises(ValueError, match=r"image must be an int in \[0, 1\]"):
        t.set(image=5)
    assert (t.epoch, t.method.value, t.image.value) == (2.0, "gradcam", 1)  # nothing changed


def test_one_colour_scale_for_the_whole_run(recorded, timeline):
    """scale="run": every record's map on the run's largest |value|, so growth shows."""
    from nbviz.methods.table import DEFAULT_CMAPS

    _, out = recorded
    run = open_run(out)
    sal = [run.maps(e, "saliency", image=0) for e in run.epochs]
    sal = [m.sum(axis=-1) if m.ndim == 3 else m for m in sal]  # the table's reduce for saliency
    tops = [float(np.abs(m).max()) for m in sal]
    top, k_max, k_min = max(tops), int(np.argmax(tops)), int(np.argmin(tops))
    assert tops[k_min] < 0.9 * top  # the run's maps do differ in strength
    t = timeline.set(method="saliency", image=0, scale="run")
    assert tfr.run_scale(run, "saliency", 0) == pytest.approx(top, rel=1e-6)
    g = t.geometry
    t.set(index=k_max)  # the strongest record looks the same on both scales
    np.testing.assert_array_equal(t.frame(), render_ref(run.images[0], "signed", sal[k_max], g))
    t.set(index=k_min)
    v = np.clip(sal[k_min] / (2 * top) + 0.5, 0, 1)  # the formula, written out
    overlay = render.resize_nearest(render.heatmap(v, cmap=DEFAULT_CMAPS["signed"], alpha=0.6), (g.H, g.W))
    np.testing.assert_array_equal(t.frame(), render.composite(frames.image_layer(run.images[0], g), overlay))
    assert not np.array_equal(t.frame(), render_ref(run.images[0], "signed", sal[k_min], g))
    assert "the run's maximum" in html.unescape(t.status.value)
    t.scale.value = "epoch"  # the toggle drives the canvas
    np.testing.assert_array_equal(t.frame(), render_ref(run.images[0], "signed", sal[k_min], g))
    with pytest.raises(ValueError, match=r"scale must be one of \['epoch', 'run'\]"):
        t.set(scale="log")


def test_play_advances_the_epochs(timeline):
    t = timeline
    assert isinstance(t.play, W.Play) and (t.play.min, t.play.max) == (0, 3)
    frames_seen = [t.frame()]
    for k in (1, 2, 3):
        t.play.value = k  # what the Play button's ticks do in the browser
        assert t.slider.value == k and t.epoch == float(k)
        frames_seen.append(t.frame())
    assert len({f.tobytes() for f in frames_seen}) > 1
    t.slider.value = 1  # and the other way: the play button starts from where the slider is
    assert t.play.value == 1


def test_erf_plot_has_one_point_per_epoch_and_marks_the_current_one(recorded, timeline):
    _, out = recorded
    run = open_run(out)
    t = timeline.set(epoch=1)
    lines = {line.get_gid(): line for line in t.erf.figure.axes[0].lines}
    table = run.erf_table()
    assert set(lines) == {"erf:conv1", "erf:conv2"}
    for layer in ("conv1", "conv2"):
        x, y = lines[f"erf:{layer}"].get_data()
        np.testing.assert_array_equal(x, run.epochs)  # one point per recorded epoch
        sel = table["layer"] == layer
        np.testing.assert_array_equal(y, table["ratio"][sel])  # NaN where a unit was dead
    # the picture shown: the current epoch's dot in the mark colour on each measured point
    red = np.array([int(tfr.MARK_COLOR[i:i + 2], 16) for i in (1, 3, 5)])
    shown = np.asarray(Image.open(io.BytesIO(t.erf_plot.value)).convert("RGB")).astype(int)
    np.testing.assert_array_equal(shown, t.erf.rgba(1.0)[..., :3])
    ratio1 = table["ratio"][(table["layer"] == "conv1") & (table["epoch"] == 1.0)][0]
    r, c = t.erf.pixel(1.0, ratio1)
    assert (shown[r, c] == red).all() and not (t.erf.base[r, c, :3] == red).all()
    r3, c3 = t.erf.pixel(3.0, ratio1)
    assert not (shown[r3, c3] == red).all()  # no dot at the other epochs
    png1 = t.erf_plot.value
    t.set(epoch=3)
    shown = np.asarray(Image.open(io.BytesIO(t.erf_plot.value)).convert("RGB")).astype(int)
    assert (shown[r3, c3] == red).all() and not (shown[r, c] == red).all()  # the marker moved
    assert t.erf_plot.value != png1


def test_featvis_of_the_epoch_is_shown(recorded, timeline):
    _, out = recorded
    run = open_run(out)
    t = timeline.set(epoch=3)
    (tile,) = t.featvis_box.children
    img, label = tile.children
    assert "conv2 #1" in label.value
    shown = np.asarray(Image.open(io.BytesIO(img.value)).convert("RGB"))
    picture = run.featvis(3)[("conv2", 1)]
    np.testing.assert_array_equal(shown[::shown.shape[0] // SIZE, ::shown.shape[1] // SIZE],
                                  np.rint(np.clip(picture, 0, 1) * 255).astype(np.uint8))
    t.set(epoch=0)
    assert t.featvis_box.children[0].children[0].value != img.value


def test_refresh_shows_epochs_written_after_it_opened(recorded, tmp_path):
    """A run still training: records that appear later reach the slider after refresh()."""
    _, out = recorded
    partial = tmp_path / "partial"
    partial.mkdir()
    for name in ("run.json", "probe.npz"):  # the Recorder has set up, no record written yet
        (partial / name).write_bytes((out / name).read_bytes())
    t = Timeline(partial)
    assert len(t.run) == 0 and t.slider.disabled and t.epoch is None
    assert "no records yet" in t.epoch_label.value and t.erf_plot.layout.display == "none"
    for name in ("step-000000000.npz", "step-000000003.npz"):
        (partial / name).write_bytes((out / name).read_bytes())
    t.refresh()
    assert len(t.run) == 2 and t.slider.max == 1 and not t.slider.disabled and t.epoch == 0.0
    np.testing.assert_array_equal(t.frame(), tfr.map_frame(open_run(out), 0, "gradcam", 0, t.geometry))
    t.slider.value = 1
    for name in ("step-000000006.npz", "step-000000009.npz"):
        (partial / name).write_bytes((out / name).read_bytes())
    t.refresh()
    assert t.slider.max == 3 and t.play.max == 3 and t.epoch == 1.0  # the shown epoch stays
    t.slider.value = 3
    assert t.epoch == 3.0
    np.testing.assert_array_equal(t.frame(), tfr.map_frame(open_run(out), 9, "gradcam", 0, t.geometry))
    x, _ = t.erf.figure.axes[0].lines[0].get_data()
    assert len(x) == 4  # the plot was drawn again with the new points
    t.close()


def test_bad_path_and_bad_model_errors_name_the_argument(recorded, tmp_path):
    model, out = recorded
    with pytest.raises(ValueError, match=r"path='.*nowhere' is not a folder"):
        Timeline(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"path='.*empty' cannot be read as a run store: .*no run.json"):
        Timeline(tmp_path / "empty")
    with pytest.raises(TypeError, match="path must be the folder of a run store"):
        Timeline(42)
    with pytest.raises(ValueError, match=r"image_index must be an int in \[0, 1\]"):
        Timeline(out, image_index=2)
    with pytest.raises(ValueError, match="model takes 32×32 images but the run's probe images are 16×16"):
        Timeline(out, small_cnn(size=32, classes=3))
    with pytest.raises(ValueError, match=r"timeline='.*nowhere' is not a folder"):
        nbviz.Explorer(model, np.zeros((SIZE, SIZE, 3), np.uint8), timeline=tmp_path / "nowhere")
    with pytest.raises(ValueError, match="timeline: model takes 32×32 images"):
        nbviz.Explorer(small_cnn(size=32, classes=3), np.zeros((32, 32, 3), np.uint8), timeline=out)


def test_explorer_shows_the_timeline_and_runs_live_methods_on_the_final_model(recorded):
    model, out = recorded
    run = open_run(out)
    image = (run.images[0] * 255).astype(np.uint8)
    e = nbviz.Explorer(model, image, timeline=out)
    try:
        assert isinstance(e.timeline, Timeline) and e.children[-1] is e.timeline
        e.timeline.set(epoch=1)
        np.testing.assert_array_equal(e.timeline.frame(), tfr.map_frame(run, run.steps[1], "gradcam", 0,
                                                                        e.timeline.geometry))
        e.set(method="gradcam", layer="conv2").wait()
        live = e.result.data
        final = nbviz.gradcam(model, e.image, layer="conv2")
        np.testing.assert_allclose(live, final, rtol=1e-4, atol=1e-6)  # the model as it is now
        assert not np.allclose(run.maps(1, "gradcam", image=0), run.maps(3, "gradcam", image=0))
    finally:
        e.close()
    plain = nbviz.Explorer(model, image)
    assert plain.timeline is None and not any(isinstance(c, Timeline) for c in plain.children)
    plain.close()
