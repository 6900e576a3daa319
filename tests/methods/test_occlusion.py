"""Occlusion: the closed form on a linear model, batching, coverage, errors."""

from __future__ import annotations

import numpy as np
import pytest

from nbviz import occlusion
from nbviz.methods.occlusion import window_positions
from nbviz.probe import probe
from tests.conftest import unchanged
from tests.methods.toys import linear_toy


@pytest.fixture(scope="module")
def linear():
    return linear_toy()


def _closed_form(x, w, baseline, wh, ww, sh, sw):
    """Mean over covering windows of sum_window w * (x - baseline), by explicit loops."""
    h, wd = x.shape[:2]
    tops = sorted(set(range(0, h - wh + 1, sh)) | {h - wh})
    lefts = sorted(set(range(0, wd - ww + 1, sw)) | {wd - ww})
    total = np.zeros((h, wd))
    count = np.zeros((h, wd))
    for t in tops:
        for l in lefts:
            drop = (w[t:t + wh, l:l + ww] * (x - baseline)[t:t + wh, l:l + ww]).sum()
            total[t:t + wh, l:l + ww] += drop
            count[t:t + wh, l:l + ww] += 1
    return total / count


@pytest.mark.parametrize("window, stride, batch_size", [(4, 2, 64), ((3, 5), (2, 4), 7), (10, 3, 1)])
def test_linear_model_closed_form(linear, window, stride, batch_size):
    model, w, _ = linear
    rng = np.random.default_rng(0)
    image = rng.normal(0, 1, (10, 12, 2)).astype(np.float32)
    wh, ww = (window, window) if isinstance(window, int) else window
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    with unchanged(model):
        out = occlusion(model, image, target=1, window=window, stride=stride, baseline=0.25,
                        batch_size=batch_size)
    assert out.shape == (10, 12) and out.dtype == np.float32
    np.testing.assert_allclose(out, _closed_form(image, w[..., 1], 0.25, wh, ww, sh, sw),
                               rtol=1e-4, atol=1e-4)


def test_batch_of_images_and_top_class(linear):
    model, w, b = linear
    images = np.random.default_rng(1).normal(0, 1, (2, 10, 12, 2)).astype(np.float32)
    out = occlusion(model, images, window=4, stride=4)  # default fill: the per-channel mean
    logits = np.einsum("nhwc,hwck->nk", images, w) + b
    for i in range(2):
        cls = int(np.argmax(logits[i]))
        np.testing.assert_allclose(out[i], _closed_form(images[i], w[..., cls], images[i].mean(axis=(0, 1)), 4, 4, 4, 4),
                                   rtol=1e-4, atol=1e-4)


def test_one_trace_for_many_batches(linear):
    model, _, _ = linear
    p = probe(model)
    rng = np.random.default_rng(2)
    occlusion(model, rng.normal(0, 1, (10, 12, 2)), window=2, stride=1, batch_size=16)  # 99 copies
    before = p.trace_count()
    occlusion(model, rng.normal(0, 1, (10, 12, 2)), window=2, stride=1, batch_size=16, target=0)
    assert p.trace_count() == before


def test_window_positions_cover_everything():
    assert window_positions(10, 4, 2).tolist() == [0, 2, 4, 6]
    assert window_positions(10, 4, 4).tolist() == [0, 4, 6]
    assert window_positions(5, 5, 3).tolist() == [0]


def test_constant_model_warns_and_gives_zeros(linear):
    model, _, _ = linear
    with pytest.warns(RuntimeWarning, match="zero everywhere"):
        out = occlusion(model, np.zeros((10, 12, 2)), target=0, window=4, stride=4, baseline=0.0)
    assert not out.any()


def test_bad_input(linear):
    model, _, _ = linear
    x = np.zeros((10, 12, 2))
    with unchanged(model):
        with pytest.raises(ValueError, match="window 11×11 is larger than the image"):
            occlusion(model, x, window=11)
        with pytest.raises(ValueError, match="stride must be >= 1"):
            occlusion(model, x, stride=0)
        with pytest.raises(TypeError, match="window must be an int or"):
            occlusion(model, x, window=2.5)
        with pytest.raises(ValueError, match="target 2 is out of range"):
            occlusion(model, x, target=2, window=4)
        with pytest.raises(ValueError, match="NaN"):
            occlusion(model, np.full((10, 12, 2), np.nan), window=4)
