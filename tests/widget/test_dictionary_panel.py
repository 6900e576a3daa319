"""The Explorer's dictionary panel driven without a browser, on the shipped demo model.

One Explorer with the panel is shared by the tests (compiling the dictionary pass and the icon
ascent once); icons use few steps and a disk cache in a temporary folder.
"""

import os
import time

import numpy as np
import pytest

import nbviz
from nbviz import demo
from nbviz.featvis import icons
from nbviz.methods.neuron_groups import neuron_groups
from nbviz.widget import Explorer, dictionary_frames as df, dictionary_panel, frames
from tests.conftest import assert_same, snapshot

K, STEPS, GROUPS, SIZE = 4, 8, 4, 64
OBJECT, BACKGROUND = (40, 40), (6, 6)  # demo image 0: an object around (40, 40), empty corner


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    old = os.environ.get("NBVIZ_CACHE")
    path = tmp_path_factory.mktemp("nbviz-cache")
    os.environ["NBVIZ_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("NBVIZ_CACHE", None)
    else:
        os.environ["NBVIZ_CACHE"] = old


@pytest.fixture(scope="module")
def model():
    return demo.load_model()


@pytest.fixture(scope="module")
def image():
    return demo.image(0)


@pytest.fixture(scope="module")
def before(model):
    return snapshot(model)


@pytest.fixture(scope="module")
def explorer(cache_dir, model, image, before):
    e = Explorer(model, image, dictionary={"k": K, "steps": STEPS, "groups": GROUPS, "size": SIZE})
    e.wait()
    yield e
    e.close()


@pytest.fixture
def panel(explorer):
    p = explorer.dictionary_panel
    p.set_mode("channels").set_by("activation")
    p.wait()
    return p


@pytest.fixture
def painted(monkeypatch):
    """Every picture the panel sends to its canvases, in order: (canvas, rgba)."""
    sent = []
    put = dictionary_panel._put
    monkeypatch.setattr(dictionary_panel, "_put", lambda canvas, rgba: (sent.append((canvas, rgba.copy())),
                                                                        put(canvas, rgba)))
    return sent


def _cell(model, layer, point):
    return tuple(int(v) for v in nbviz.receptive_field(model, layer).cell(point))


def _click(explorer, panel, point):
    explorer.click(*point)
    panel.wait()
    explorer.wait()


@pytest.mark.slow  # the first test compiles the dictionary pass and the icon ascent (~20 s)
def test_a_click_shows_placeholders_then_the_icons_of_the_dictionary(explorer, panel, painted, model, image):
    _click(explorer, panel, OBJECT)
    layer = explorer.state.layer
    d = nbviz.dictionary(model, image, layer, _cell(model, layer, OBJECT), k=K)
    np.testing.assert_array_equal(panel.channels, d.channels)
    np.testing.assert_allclose(panel.values, d.activations, rtol=1e-5, atol=1e-6)
    assert panel.dictionary.cell == d.cell and panel.finished.all()
    strips = [rgba for canvas, rgba in painted if canvas is panel.strip_canvas]
    # placeholders first: the slots with their bars before any icon exists
    first = df.slot_strip([None] * K, panel.values, icon=SIZE).image
    np.testing.assert_array_equal(strips[0], first)
    # then the icons: the final strip shows the rendered icons (a second icons call reads them
    # back from the disk cache: the same pictures, nothing rendered)
    pictures = icons(model, layer, [int(c) for c in d.channels], size=SIZE, steps=STEPS,
                     preprocess=explorer.session.context.featvis_preprocess(image))
    np.testing.assert_array_equal(np.stack(panel.pictures), pictures)
    np.testing.assert_array_equal(strips[-1], df.slot_strip(list(pictures), panel.values, icon=SIZE).image)
    assert not np.array_equal(strips[0], strips[-1])
    job = panel.history[-1][0]
    events = [e for n, e in panel.history if n == job]
    assert events[0] == "placeholders" and events[-1] == "final" and "preview" in events[1:-1]


def test_a_second_click_before_the_icons_finish_wins(explorer, panel, model, image, monkeypatch, tmp_path):
    monkeypatch.setenv("NBVIZ_CACHE", str(tmp_path))  # an empty cache: every icon renders
    monkeypatch.setattr(panel, "steps", 64)
    explorer.click(*BACKGROUND)
    first = panel.counts["jobs"]
    deadline = time.monotonic() + 120
    while (first, "placeholders") not in panel.history:  # the first click's icons start rendering
        assert time.monotonic() < deadline, panel.status.value
        time.sleep(0.01)
    explorer.click(*OBJECT)
    second = panel.counts["jobs"]
    assert second == first + 1
    mark = len(panel.history)
    panel.wait()
    layer = explorer.state.layer
    d_first = nbviz.dictionary(model, image, layer, _cell(model, layer, BACKGROUND), k=K)
    d_second = nbviz.dictionary(model, image, layer, _cell(model, layer, OBJECT), k=K)
    assert not np.array_equal(d_first.channels, d_second.channels)
    np.testing.assert_array_equal(panel.channels, d_second.channels)
    assert panel.finished.all() and panel.dictionary.cell == d_second.cell
    # nothing of the first click was shown after the second; the first never finished
    assert all(n == second for n, _ in panel.history[mark:])
    assert (first, "final") not in panel.history


def test_clicking_an_icon_overlays_that_channels_activation_map(explorer, panel, model, image):
    _click(explorer, panel, OBJECT)
    strip = panel.strip
    i = 2
    top, left = strip.origin(i)
    panel._on_strip_click(left + SIZE // 2, top + SIZE // 2)  # canvas (x, y), as ipycanvas sends it
    explorer.wait()
    channel = int(panel.channels[i])
    assert explorer.state.method == "activations" and explorer.state.channel == channel
    wanted = panel.dictionary.channel_map(channel)
    np.testing.assert_allclose(explorer.result.data, wanted, rtol=1e-4, atol=1e-4)
    s = explorer.state
    overlay = frames.overlay_layer("unsigned", wanted, explorer.geometry, cmap=s.cmap, alpha=s.alpha)
    got = explorer.canvas_layers.frames["overlay"]
    assert np.abs(got.astype(int) - overlay.astype(int)).max() <= 1
    # the selected icon is framed
    assert (panel.frame()[top - 2, left + SIZE // 2, :3] == df.SELECTED).all()
    # another icon: another map
    panel.select(0)
    explorer.wait()
    assert explorer.state.channel == int(panel.channels[0])
    assert not np.array_equal(explorer.canvas_layers.frames["overlay"], got)


def test_rank_by_attribution_reorders_to_the_attribution_ranking(explorer, panel, model, image):
    _click(explorer, panel, OBJECT)
    by_activation = panel.channels
    panel.set_by("attribution").wait()
    layer = explorer.state.layer
    d = nbviz.dictionary(model, image, layer, _cell(model, layer, OBJECT), k=K, by="attribution")
    np.testing.assert_array_equal(panel.channels, d.channels)
    np.testing.assert_allclose(panel.values, d.attributions, rtol=1e-4, atol=1e-6)
    assert not np.array_equal(panel.channels, by_activation)
    assert panel.finished.all()
    # bars: the longest is the first slot's, positive values in the positive colour
    strip = panel.frame()
    top, left = panel.strip.origin(0)
    bar_y = top + SIZE + panel.strip.pad // 2
    assert (strip[bar_y, left + SIZE - 1, :3] == df.POSITIVE).all()


def test_groups_mode_colours_the_image_by_neuron_group(explorer, panel, model, image, painted):
    panel.set_mode("groups").wait()
    try:
        g = neuron_groups(model, image, explorer.state.layer, n=GROUPS, seed=0)
        size = panel.groups_frame().shape[:2]
        np.testing.assert_array_equal(panel.groups_frame(), df.groups_picture(image, g, size))
        assert panel.kind == "groups" and panel.finished.all()
        np.testing.assert_allclose(panel.values, g.attributions, rtol=1e-4, atol=1e-6)
        # each group's icon is the feature visualisation of its loading direction (cached now)
        pictures = icons(model, explorer.state.layer, np.asarray(g.loadings), size=SIZE, steps=STEPS,
                         preprocess=explorer.session.context.featvis_preprocess(image))
        np.testing.assert_array_equal(np.stack(panel.pictures), pictures)
        # bars in the groups' colours; the largest |attribution| fills its slot
        strip, big = panel.frame(), int(np.argmax(np.abs(g.attributions)))
        top, left = panel.strip.origin(big)
        assert (strip[top + SIZE + panel.strip.pad // 2, left + SIZE - 1, :3] == g.colors[big]).all()
        # a click on the canvas does not recompute the groups (they are of the whole image)
        jobs = panel.counts["jobs"]
        explorer.click(*BACKGROUND)
        assert panel.counts["jobs"] == jobs
        # a group alone
        panel.select(1)
        np.testing.assert_array_equal(panel.groups_frame(), df.groups_picture(image, g, size, only=1))
        assert any(canvas is panel.groups_canvas for canvas, _ in painted)
    finally:
        panel.set_mode("channels")
        panel.wait()


def test_errors_are_shown_and_bad_settings_named(explorer, panel):
    with pytest.raises(ValueError, match="k must be an int >= 1"):
        dictionary_panel.DictionaryPanel(explorer, k=0)
    with pytest.raises(ValueError, match="mode must be one of"):
        panel.set_mode("pixels")
    with pytest.raises(ValueError, match="slot must be an int"):
        panel.select(K)
    layer = explorer.state.layer
    try:  # NMF needs non-negative activations: a layer before its ReLU is refused, in the panel
        explorer.set(layer="block3_bn")
        panel.set_mode("groups").wait()
        assert "negative activations" in panel.status.value and "ReLU" in panel.status.value
    finally:
        explorer.set(layer=layer)
        panel.set_mode("channels").wait()
        explorer.wait()


def test_strip_frames_are_plain_numpy():
    values = np.array([4.0, -2.0, 1.0])
    pics = [np.ones((32, 32, 3), np.float32), None, np.zeros((64, 64, 3), np.uint8)]
    strip = df.slot_strip(pics, values, icon=64, columns=2, bar=8, pad=4)
    assert strip.image.shape == (4 + 2 * (64 + 8 + 8), 4 + 2 * 68, 4)
    for i in range(3):
        top, left = strip.origin(i)
        assert strip.slot_at(top + 10, left + 10) == i
        y = top + 64 + 2
        row = strip.image[y, left:left + 64, :3]
        coloured = (row != df.BAR_TRACK[:3]).any(axis=-1).sum()
        assert coloured == round(64 * abs(values[i]) / 4.0)
    assert strip.slot_at(0, 0) is None  # padding
    np.testing.assert_array_equal(strip.image[4:68, 4:68, :3], 255)  # ones -> white
    top, left = strip.origin(1)
    np.testing.assert_array_equal(strip.image[top:top + 64, left:left + 64, :3], df.placeholder(64))
    assert (strip.image[top + 66, left, :3] == df.NEGATIVE).all()
    with pytest.raises(ValueError, match="same length"):
        df.slot_strip([None], values)


def test_the_model_is_unchanged(explorer, before, model):
    explorer.wait()
    explorer.dictionary_panel.wait()
    assert_same(before, snapshot(model))
