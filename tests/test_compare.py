"""Colour for signed maps, one scale across maps, and the compare figure / its computation."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest

from nbviz import demo, render
from nbviz.comparison import compare, compare_scores
from nbviz.probe import probe
from tests.conftest import unchanged


def test_diverging_is_zero_centred_and_pixel_exact():
    lut = (matplotlib.colormaps["RdBu_r"](np.linspace(0, 1, 255)) * 255).round().astype(np.uint8)
    v = np.array([[-2.0, -1.0, 0.0, 1.0, 2.0, 0.5]], np.float32)
    out = render.diverging(v, alpha=1.0)  # scale: max |v| = 2
    assert out.shape == (1, 6, 4) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[0, 2], (255, 255, 255, 255))  # zero is white
    np.testing.assert_array_equal(out[0, 0], lut[0])  # -scale: the blue end
    np.testing.assert_array_equal(out[0, 4], lut[254])  # +scale: the red end
    np.testing.assert_array_equal(out[0, 1], lut[int(np.rint(127 - 63.5))])
    np.testing.assert_array_equal(out[0, 3], lut[int(np.rint(127 + 63.5))])
    assert out[0, 4, 0] > out[0, 4, 2] and out[0, 0, 2] > out[0, 0, 0]  # red positive, blue negative
    shared = render.diverging(v, scale=4.0, alpha=0.5)
    np.testing.assert_array_equal(shared[0, 4, :3], lut[int(np.rint(127 + 63.5)), :3])
    assert (shared[..., 3] == 128).all()
    faded = render.diverging(v, scale=2.0, alpha=1.0, alpha_by_value=True)
    assert faded[0, :, 3].tolist() == [255, 128, 0, 128, 255, 64]
    clipped = render.diverging(np.array([[5.0, -5.0]]), scale=1.0)
    np.testing.assert_array_equal(clipped[0, :, :3], lut[[254, 0], :3])
    np.testing.assert_array_equal(render.diverging(np.zeros((2, 2)))[..., :3], 255)


def test_one_scale_shares_the_maximum_or_a_percentile():
    a = np.array([[1.0, -3.0]])
    b = np.array([[0.5, 6.0]])
    assert render.one_scale([a, b]) == 6.0
    pooled = np.abs(np.concatenate([a.ravel(), b.ravel()]))
    assert render.one_scale([a, b], percentile=50) == pytest.approx(np.percentile(pooled, 50))
    np.testing.assert_array_equal(render.scaled(a, 6.0, signed=True), np.float32([[1 / 6, -0.5]]))
    np.testing.assert_array_equal(render.scaled(b, 2.0, signed=False), [[0.25, 1.0]])
    # the same value gets the same colour in both maps under one scale, not under their own
    s = render.one_scale([a, b])
    x = render.diverging(np.array([[1.0]]), scale=s)
    y = render.diverging(np.array([[1.0, 6.0]]), scale=s)
    np.testing.assert_array_equal(x[0, 0], y[0, 0])
    assert not np.array_equal(render.diverging(np.array([[1.0]]))[0, 0], y[0, 0])
    unsigned = render.display_map(np.array([[0.0, 3.0]]), "unsigned", scale=6.0, alpha=1.0)
    np.testing.assert_array_equal(unsigned, render.heatmap(np.array([[0.0, 0.5]]), cmap="inferno", alpha=1.0))
    with pytest.raises(ValueError, match="percentile"):
        render.one_scale([a], percentile=0)
    with pytest.raises(ValueError, match="kind"):
        render.display_map(a, "rgb")


@pytest.fixture(scope="module")
def demo_model():
    return demo.load_model()


def test_compare_scores_panes(demo_model):
    samples = demo.load_images()
    x, box = samples.images[0], samples.boxes[0]
    with unchanged(demo_model):
        panes = compare_scores(demo_model, x, ["gradcam", "saliency", "occlusion"], box=box,
                               sanity=True, steps=10)
    assert [p["key"] for p in panes] == ["gradcam", "saliency", "occlusion"]
    assert [p["display"] for p in panes] == ["unsigned", "signed", "signed"]
    top = int(np.argmax(demo_model(x[None])))
    for p in panes:
        assert p["target"] == top and p["map"].shape == (64, 64)
        assert set(p["scores"]) == {"deletion", "insertion", "pointing_game", "energy_in_box"}
        assert 0 <= p["scores"]["deletion"] <= 1 and 0 <= p["scores"]["insertion"] <= 1
        assert p["curves"]["deletion"].fractions.shape == (11,)
        assert p["sanity"]["layer"] == "predictions"
        assert -1 <= p["sanity"]["spearman_abs"] <= 1
        # one scale: the 99.5th percentile of the map and its randomised map pooled
        assert p["scale"] == pytest.approx(render.one_scale([p["map"], p["sanity"]["map"]],
                                                            percentile=99.5))
    assert panes[1]["raw"].shape == (64, 64, 3)
    np.testing.assert_allclose(panes[1]["map"], panes[1]["raw"].sum(-1))
    # a second image reuses every compiled function
    before = probe(demo_model).trace_count()
    compare_scores(demo_model, samples.images[1], ["gradcam", "saliency", "occlusion"], steps=10)
    assert probe(demo_model).trace_count() == before


def test_compare_figure(demo_model):
    x = demo.image(2)
    box = tuple(int(v) for v in demo.load_images().boxes[2])
    fig = compare(demo_model, x, ["gradcam", "integrated_gradients"], box=box, steps=10)
    axes = fig.get_axes()
    assert len(axes) == 2
    assert "Grad-CAM" in axes[0].get_title() and "deletion" in axes[0].get_xlabel()
    assert "pointing" in axes[1].get_xlabel()
    first, second = (np.asarray(ax.get_images()[0].get_array()) for ax in axes)
    assert first.shape == (64, 64, 4) and not np.array_equal(first, second)
    panes = compare_scores(demo_model, x, [lambda m, im, target=None: np.ones((64, 64))],
                           metrics=("deletion",), one_scale=False)
    assert panes[0]["display"] == "unsigned" and panes[0]["scale"] == 1.0


def test_compare_bad_input(demo_model):
    x = demo.image(0)
    with pytest.raises(ValueError, match="methods: 'featvis'"):
        compare_scores(demo_model, x, ["featvis"])
    with pytest.raises(ValueError, match="metrics: unknown metric 'auc'"):
        compare_scores(demo_model, x, ["gradcam"], metrics=("auc",))
    with pytest.raises(ValueError, match="methods must be a non-empty list"):
        compare_scores(demo_model, x, "gradcam")
