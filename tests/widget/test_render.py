"""nbviz.render: exact pixels of heatmaps, boxes, crosshairs, grids, composites."""

import io

import matplotlib
import numpy as np
import pytest
from PIL import Image

from nbviz import render


def test_heatmap_uses_the_matplotlib_colormap_and_alpha():
    values = np.array([[0.0, 0.5, 1.0]], np.float32)
    out = render.heatmap(values, cmap="viridis", alpha=0.4)
    want = (matplotlib.colormaps["viridis"](np.array([0, 128, 255]) / 255)[:, :3] * 255).round()
    assert out.dtype == np.uint8 and out.shape == (1, 3, 4)
    np.testing.assert_array_equal(out[0, :, :3], want)
    assert (out[..., 3] == 102).all()
    faded = render.heatmap(values, cmap="gray", alpha=1.0, alpha_by_value=True)
    assert list(faded[0, :, 3]) == [0, 128, 255]


def test_heatmap_rejects_bad_input():
    with pytest.raises(ValueError, match="H×W map"):
        render.heatmap(np.zeros((2, 2, 3)))
    with pytest.raises(ValueError, match="alpha"):
        render.heatmap(np.zeros((2, 2)), alpha=2)
    with pytest.raises(ValueError, match="unknown matplotlib colormap 'nope'"):
        render.heatmap(np.zeros((2, 2)), cmap="nope")


def test_normalize_and_attribution_map():
    np.testing.assert_allclose(render.normalize([2.0, 4.0, 3.0]), [0, 1, 0.5])
    np.testing.assert_allclose(render.normalize([-2.0, 1.0], symmetric=True), [0, 0.75])
    assert (render.normalize(np.ones(3)) == 0).all()
    a = np.zeros((2, 2, 3), np.float32)
    a[0, 1] = (1, -4, 2)
    a[1, 0, 2] = 2
    np.testing.assert_allclose(render.attribution_map(a), [[0, 1], [0.5, 0]])


def test_to_rgb8_ranges():
    assert render.to_rgb8(np.array([[0.0, 1.0]]))[0, 1, 0] == 255  # [0, 1] floats
    assert render.to_rgb8(np.array([[0.0, 200.0]]))[0, 1, 0] == 200  # 0..255 floats
    assert list(render.to_rgb8(np.array([[-1.0, 3.0]]))[0, :, 0]) == [0, 255]  # stretched
    rgba = np.zeros((1, 1, 4), np.uint8) + 7
    assert render.to_rgb8(rgba).shape == (1, 1, 3)


def test_resize_nearest_integer_and_fractional():
    a = np.arange(4).reshape(2, 2)
    np.testing.assert_array_equal(render.resize_nearest(a, (4, 4)),
                                  [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]])
    np.testing.assert_array_equal(render.resize_nearest(np.arange(4)[None], (1, 2)), [[1, 3]])


def test_draw_box_outline_inside_and_clipped():
    img = render.blank(10, 10)
    render.draw_box(img, (2, 3, 6, 8), (255, 0, 0), width=1)
    on = img[..., 3] > 0
    assert on[2, 3:8].all() and on[5, 3:8].all() and on[2:6, 3].all() and on[2:6, 7].all()
    assert not on[3:5, 4:7].any() and not on[6].any() and not on[:, 8].any()
    assert on.sum() == 2 * 5 + 2 * 2
    clipped = render.draw_box(render.blank(4, 4), (-3, -3, 2, 2), (0, 255, 0), width=1)
    assert (clipped[..., 3] > 0).sum() == 3  # only the bottom/right edges inside


def test_crosshair_and_grid():
    img = render.draw_crosshair(render.blank(21, 21), (10, 10), (255, 255, 255), size=3, gap=1)
    on = img[..., 3] > 0
    assert on[10, 6:9].all() and on[10, 12:15].all() and on[6:9, 10].all() and on[12:15, 10].all()
    assert not on[10, 9:12].any() and on.sum() == 12
    grid = render.draw_grid(render.blank(8, 8), (4, 4), (1, 1), (1, 2, 3, 4))
    on = grid[..., 3] > 0  # full lines: rows 1 and 5, columns 1 and 5
    assert on[[1, 5], :].all() and on[:, [1, 5]].all() and on.sum() == 8 * 4 - 4
    assert not on[[0, 2, 3, 4, 6, 7]][:, [0, 2, 3, 4, 6, 7]].any()


def test_composite_is_source_over():
    bottom = np.zeros((1, 1, 4), np.uint8)
    bottom[...] = (0, 0, 200, 255)
    top = np.zeros((1, 1, 4), np.uint8)
    top[...] = (200, 0, 0, 128)
    out = render.composite(bottom, top, render.blank(1, 1))
    a = 128 / 255
    np.testing.assert_array_equal(out[0, 0], [round(200 * a), 0, round(200 * (1 - a)), 255])


def test_to_png_roundtrip(tmp_path):
    img = render.heatmap(np.linspace(0, 1, 12).reshape(3, 4), alpha=0.7)
    data = render.to_png(img, tmp_path / "x.png")
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(data))), img)
    assert (tmp_path / "x.png").read_bytes() == data


def test_composite_of_translucent_layers_matches_the_formula():
    a = np.zeros((1, 2, 4), np.uint8)
    a[0, 0] = (255, 0, 0, 102)  # 40 % red over nothing, then 50 % blue on top
    b = np.zeros((1, 2, 4), np.uint8)
    b[0, 0] = (0, 0, 255, 128)
    out = render.composite(a, b)
    aa, ab = 102 / 255, 128 / 255
    alpha = ab + aa * (1 - ab)
    want = [round(255 * aa * (1 - ab) / alpha), 0, round(255 * ab / alpha), round(alpha * 255)]
    np.testing.assert_array_equal(out[0, 0], want)
    np.testing.assert_array_equal(out[0, 1], [0, 0, 0, 0])


def test_encode_png_decodes_to_the_same_pixels():
    rng = np.random.default_rng(0)
    for shape in ((5, 7, 4), (3, 2, 3)):
        img = rng.integers(0, 256, shape, dtype=np.uint8)
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(render.encode_png(img)))), img)
    with pytest.raises(ValueError, match="uint8"):
        render.encode_png(np.zeros((2, 2, 4), np.float32))
