"""Image loading, frame geometry and the background worker, without widgets or models."""

import threading
import time

import numpy as np
import pytest
from PIL import Image

from nbviz import render
from nbviz.widget import frames
from nbviz.widget.images import fit_image, load_image
from nbviz.widget.labels import class_names, top_predictions
from nbviz.session.worker import Worker


# --------------------------------------------------------------------------- images

def test_load_image_every_source(tmp_path):
    rgb = (np.arange(5 * 6 * 3) % 256).astype(np.uint8).reshape(5, 6, 3)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    png = (tmp_path / "a.png").read_bytes()
    for source in (rgb, Image.fromarray(rgb), tmp_path / "a.png", str(tmp_path / "a.png"), png,
                   ({"name": "a.png", "content": memoryview(png)},)):
        out = load_image(source)
        assert out.dtype == np.uint8
        np.testing.assert_array_equal(out, rgb)
    gray = load_image(rgb[..., 0])
    assert gray.shape == (5, 6, 3) and (gray[..., 2] == rgb[..., 0]).all()
    rgba = np.concatenate([rgb, np.full((5, 6, 1), 9, np.uint8)], -1)
    np.testing.assert_array_equal(load_image(rgba), rgb)
    np.testing.assert_array_equal(load_image(Image.fromarray(rgba)), rgb)
    floats = load_image(np.full((3, 3, 1), 0.5))
    assert floats.dtype == np.float32 and floats.shape == (3, 3, 3)


def test_load_image_errors(tmp_path):
    with pytest.raises(TypeError, match="got dict"):
        load_image({"a": 1})
    with pytest.raises(ValueError, match="H×W×3"):
        load_image(np.zeros((4, 4, 2)))
    with pytest.raises(ValueError, match="does not exist"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(ValueError, match="no file yet"):
        load_image(())
    with pytest.raises(ValueError, match="could not read"):
        load_image(b"not an image")


def test_fit_image_resizes_and_converts():
    img = np.zeros((10, 20, 3), np.uint8)
    img[:, 10:] = 255
    out = fit_image(img, (5, 10))
    assert out.shape == (5, 10, 3) and out.dtype == np.uint8
    assert out[0, 0, 0] == 0 and out[0, 9, 0] == 255
    f = fit_image(img.astype(np.float32), (5, 10))
    assert f.dtype == np.float32 and f.shape == (5, 10, 3)
    g = fit_image(img, None, channels=1)
    assert g.shape == (10, 20, 1) and g[0, 15, 0] == 255


# --------------------------------------------------------------------------- frames, labels

def test_geometry_upscales_small_images_and_keeps_aspect():
    g = frames.display_geometry(32, 16)
    assert (g.H, g.W) == (448, 224) and g.scale == (14.0, 14.0)
    assert frames.display_geometry(224, 224).scale == (2.0, 2.0)
    assert frames.display_geometry(500, 300).scale == (1.0, 1.0)
    big = frames.display_geometry(1280, 640)
    assert (big.H, big.W) == (640, 320)
    assert g.to_image(27.9, 14.0) == (1, 1) and g.to_image(1e9, -5) == (31, 0)
    assert g.to_canvas_box((1, 2, 3, 4)) == (14, 28, 42, 56)


def test_top_layer_draws_the_scaled_box_and_crosshair():
    g = frames.display_geometry(32, 32)  # ×14
    top = frames.top_layer(g, point=(10, 20), box=(5, 6, 15, 16))
    box_px = np.all(top[..., :3] == frames.BOX_COLOR, axis=-1) & (top[..., 3] == 255)
    ys, xs = np.nonzero(box_px)
    assert (ys.min(), xs.min(), ys.max() + 1, xs.max() + 1) == (70, 84, 210, 224)
    cross = np.all(top[..., :3] == frames.CROSS_COLOR, axis=-1) & (top[..., 3] == 255)
    ys, xs = np.nonzero(cross)
    # centre of image pixel (10, 20) = canvas (147, 287); arms of 8 px leave 2 px free around it
    assert cross[147, 277:285].all() and cross[147, 290:298].all() and not cross[147, 285:290].any()
    assert cross[137:145, 287].all() and cross[150:158, 287].all() and cross.sum() == 32
    shadow = np.all(top[..., :3] == 0, axis=-1) & (top[..., 3] == 170)  # its dark outline
    assert shadow[146, 276:285].all() and shadow[148, 290:298].all()


def test_overlay_layer_by_display_kind():
    g = frames.display_geometry(2, 2, target=4)
    heat = frames.overlay_layer("unsigned", np.array([[0, 2], [2, 1]], np.float32), g, alpha=1.0, cmap="gray")
    assert heat.shape == (4, 4, 4) and heat[0, 0, 0] == 0 and heat[0, 3, 0] == 255 and heat[3, 3, 0] == 128
    assert (frames.overlay_layer(None, None, g) == 0).all()
    pic = frames.overlay_layer("picture", np.ones((2, 2, 3)), g, alpha=0.1)
    assert (pic[..., 3] == 255).all()
    with pytest.raises(ValueError, match="display must be"):
        frames.overlay_layer("nope", np.ones((2, 2)), g)
    # signed maps: the default colormap is diverging and zero is its centre, whatever the range
    signed = np.array([[-1, 0], [0, 4]], np.float32)
    rgba = frames.display_rgba("signed", signed, alpha=1.0)
    centre = render.heatmap(np.full((1, 1), 0.5, np.float32), cmap="RdBu_r", alpha=1.0)[0, 0]
    np.testing.assert_array_equal(rgba[0, 1], centre)
    assert rgba[1, 1, 0] > rgba[1, 1, 2] and rgba[0, 0, 2] > rgba[0, 0, 0]  # red up, blue down
    # unsigned maps: a sequential default; the user's colormap wins over the default
    assert not np.array_equal(frames.display_rgba("unsigned", signed), frames.display_rgba("unsigned", signed, cmap="jet"))
    # guided gradients (rgb): each channel scaled on its own around grey, drawn opaque
    rng = np.random.default_rng(0)
    grads = rng.normal(size=(8, 8, 3)).astype(np.float32) * np.array([1e-4, 1.0, 50.0], np.float32)
    rgb = frames.display_rgba("rgb", grads, alpha=0.3)
    assert (rgb[..., 3] == 255).all()
    assert all(rgb[..., c].std() > 30 for c in range(3))  # structure in every channel, not a grey wash


def test_grid_lines_are_visible_between_cells():
    g = frames.display_geometry(32, 32)  # ×14
    top = frames.top_layer(g, grid=((4, 4), (1.5, 1.5)))  # stride 4, first cell centred on pixel 1.5
    on = top[..., 3] > 0
    rows = np.flatnonzero(on.all(axis=1))  # full horizontal lines across the canvas
    assert len(rows) >= 2 * 7 and np.all(np.isin(np.arange(56, 448, 56), rows))  # every 4 px × 14
    light = np.all(top[..., :3] == frames.GRID_COLOR[:3], axis=-1)
    dark = np.all(top[..., :3] == 0, axis=-1) & on
    assert light[56].all() and dark[57, 58:110].all()  # a light line with a dark edge: seen on any picture


def test_channel_grid_maps_clicks_to_channels():
    act = np.random.default_rng(0).random((4, 4, 10)).astype(np.float32)
    grid = frames.channel_grid(act, [9, 3, 0, 1, 2, 4, 5, 6, 7, 8], columns=4, tile=12, pad=1)
    assert grid.columns == 4 and grid.tile == (4 * 3, 4 * 3) and grid.channels == 10
    th = grid.tile[0] + 1
    assert grid.channel_at(0, 0) == 9 and grid.channel_at(1, th * 1 + 2) == 3
    assert grid.channel_at(th * 2 + 3, th * 1 + 3) == 8
    assert grid.channel_at(th * 2 + 3, th * 2 + 3) is None  # empty tile
    assert grid.channel_at(grid.tile[0], 0) is None  # padding
    assert list(frames.channel_order(act, "mean")) == list(np.argsort(-act.mean(axis=(0, 1))))
    assert frames.channel_order(act, "at click", (2, 3))[0] == int(np.argmax(act[2, 3]))


def test_class_names_and_top_predictions(monkeypatch, tmp_path):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))  # no cached ImageNet index here
    assert class_names(3, ["a", "b"]) == ["a", "b", "class 2"]
    assert class_names(1000)[7] == "class 7"
    assert top_predictions([0.1, 0.7, 0.2], 2) == [(1, 0.7), (2, 0.2)]
    assert top_predictions(np.array([[[0, 1]], [[3, 0]]]), 1) == [(0, 3.0)]


# --------------------------------------------------------------------------- worker

def test_worker_newest_wins_and_drops_stale_results():
    w = Worker()
    gate = threading.Event()
    shown, stops = [], []

    def slow(tag):
        def run(job):
            gate.wait(5)
            stops.append((tag, job.stop.is_set()))
            return tag
        return run

    first = w.submit(slow("a"), shown.append, lambda e, tb: None)
    deadline = time.monotonic() + 5
    while w.started < 1 and time.monotonic() < deadline:
        time.sleep(0.005)
    for tag in "bcdef":  # a burst while "a" runs: only the last one will run
        w.submit(slow(tag), shown.append, lambda e, tb: None)
        assert w.waiting == 1
    assert first.stop.is_set()  # the running job was asked to stop
    gate.set()
    assert w.wait(5)
    assert shown == ["f"] and w.started == 2 and w.replaced == 4 and w.stale == 1
    assert w.max_waiting == 1 and [t for t, _ in stops] == ["a", "f"]
    w.close()


def test_worker_captures_errors_and_keeps_going():
    w = Worker()
    errors, results = [], []

    def boom(job):
        raise ValueError("bad layer")

    w.submit(boom, results.append, lambda e, tb: errors.append((e, tb)))
    w.wait(5)
    w.submit(lambda job: 42, results.append, lambda e, tb: errors.append(e))
    w.wait(5)
    assert isinstance(errors[0][0], ValueError) and "bad layer" in errors[0][1] and results == [42]
    w.close()
    with pytest.raises(RuntimeError, match="closed"):
        w.submit(lambda s: 1, print, print)
