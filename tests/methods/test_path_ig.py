"""Blur IG and Guided IG: numpy references of the formulas on linear and quadratic models,
Guided IG = IG on a linear model, completeness, batches, no retrace, no mutation, errors."""

from __future__ import annotations

import numpy as np
import pytest
import keras
import tensorflow as tf
from keras import layers
from scipy import ndimage

from nbviz import blur_ig, guided_ig, integrated_gradients, saliency
from nbviz.probe import probe
from tests.conftest import unchanged
from tests.methods.toys import linear_toy, smooth_toy


@pytest.fixture(scope="module")
def linear():
    return linear_toy(shape=(10, 12, 2))


@pytest.fixture(scope="module")
def quadratic():
    """``f(x) = (v · x)²``: gradient ``2 (v · x) v``."""
    rng = np.random.default_rng(21)
    v = rng.normal(0, 0.3, (9, 11, 3)).astype(np.float32)
    inp = keras.Input((9, 11, 3), name="image")
    d = layers.Dense(1, use_bias=False, name="v")(layers.Flatten(name="flat")(inp))
    model = keras.Model(inp, layers.Multiply(name="square")([d, d]), name="quadratic")
    model.get_layer("v").set_weights([v.reshape(-1, 1)])
    return model, v


def _logits(model, images):
    p = probe(model)
    with p.logits():
        return p.forward(tf.constant(np.asarray(images, np.float32))).numpy()


def _blur(x, sigma):
    return ndimage.gaussian_filter(x.astype(np.float64), (sigma, sigma, 0), mode="reflect", truncate=4.0)


def _np_blur_ig(x, grad, steps, max_sigma, sqrt=False):
    """-Σ_i (σ_{i+1} - σ_i) ∂b/∂σ(σ_i) ∇f(b(σ_i)), with scipy's blur and a central difference."""
    grid = np.arange(steps + 1) * max_sigma / steps
    grid = np.sqrt(grid) if sqrt else grid
    total = np.zeros(x.shape)
    for i in range(steps):
        s, h = grid[i], 1e-3
        d = 0.0 if s == 0 else (_blur(x, s + h) - _blur(x, max(s - h, 0))) / (2 * h)
        total -= (grid[i + 1] - grid[i]) * d * grad(_blur(x, s))
    return total


def test_blur_ig_matches_the_formula_on_linear_and_quadratic_models(linear, quadratic):
    model, w, _ = linear
    x = np.random.default_rng(22).normal(0, 1, (10, 12, 2)).astype(np.float32)
    with unchanged(model):
        got = blur_ig(model, x, target=1, steps=40, max_sigma=3.0, batch_size=16)
    expected = _np_blur_ig(x, lambda b: w[..., 1], 40, 3.0)
    np.testing.assert_allclose(got, expected, atol=3e-3 * np.abs(expected).max())
    # completeness: the sum approaches f(x) - f(blurred) (left Riemann sum, 40 steps)
    gap = (w[..., 1] * (x - _blur(x, 3.0))).sum()
    assert abs(got.sum() - gap) < 0.01 * np.abs(w[..., 1] * x).sum()

    qmodel, v = quadratic
    xq = np.random.default_rng(23).uniform(0, 1, (9, 11, 3)).astype(np.float32)
    got = blur_ig(qmodel, xq, target=0, steps=24, max_sigma=2.0, sqrt=True)
    expected = _np_blur_ig(xq, lambda b: 2 * (v * b).sum() * v, 24, 2.0, sqrt=True)
    np.testing.assert_allclose(got, expected, atol=3e-3 * np.abs(expected).max())


def test_blur_ig_batches_and_does_not_retrace(linear):
    model, w, _ = linear
    images = np.random.default_rng(24).normal(0, 1, (3, 10, 12, 2)).astype(np.float32)
    p = probe(model)
    both = blur_ig(model, images, target=[0, 1, 0], steps=10, max_sigma=2.0, batch_size=4)
    before = p.trace_count("blur_ig")
    single = blur_ig(model, images[1], target=1, steps=10, max_sigma=2.0, batch_size=4)
    other = blur_ig(model, images[2] * 2, steps=10, max_sigma=2.0, batch_size=4)
    assert p.trace_count("blur_ig") == before
    np.testing.assert_allclose(single, both[1], rtol=1e-5, atol=1e-6)
    cls = int(np.argmax(_logits(model, images[2:] * 2)[0]))
    np.testing.assert_allclose(other, _np_blur_ig(images[2] * 2, lambda b: w[..., cls], 10, 2.0),
                               atol=3e-3 * np.abs(other).max())


def test_guided_ig_equals_ig_on_a_linear_model(linear):
    model, w, _ = linear
    images = np.random.default_rng(25).normal(0, 1, (2, 10, 12, 2)).astype(np.float32)
    baseline = np.random.default_rng(26).normal(0, 1, (10, 12, 2)).astype(np.float32)
    p = probe(model)
    with unchanged(model):
        got = guided_ig(model, images, target=[1, 0], steps=16, baseline=baseline)
        guided_ig(model, images[0], target=1, steps=16, baseline=baseline)
        before = p.trace_count("guided_ig")
        single = guided_ig(model, images[1], target=0, steps=16, baseline=baseline)
        assert p.trace_count("guided_ig") == before  # new image and class: same trace
    expected = np.stack([w[..., 1], w[..., 0]]) * (images - baseline)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(
        integrated_gradients(model, images, target=[1, 0], baseline=baseline), expected,
        rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(single, got[1], rtol=1e-6, atol=1e-7)


def test_guided_ig_completeness_and_path_on_a_smooth_cnn():
    model = smooth_toy()
    image = np.random.default_rng(27).uniform(-1, 1, (8, 8, 3)).astype(np.float32)
    with unchanged(model):
        got = guided_ig(model, image, steps=64)
    logits = _logits(model, np.stack([image, np.zeros_like(image)]))
    cls = int(np.argmax(logits[0]))
    gap = logits[0, cls] - logits[1, cls]
    assert abs(got.sum() - gap) < 0.05 * abs(gap) + 1e-4
    # max_dist = 0 pins every feature to the straight line: IG with a left Riemann sum
    straight = guided_ig(model, image, target=cls, steps=8, max_dist=0.0)
    points = np.stack([image * k / 8 for k in range(8)])
    left_ig = image * saliency(model, points, target=cls).mean(0)
    np.testing.assert_allclose(straight, left_ig, rtol=1e-4, atol=1e-6)
    # so does fraction = 1: every feature moves at once, staying on the straight line
    together = guided_ig(model, image, target=cls, steps=8, fraction=1.0, max_dist=0.5)
    np.testing.assert_allclose(together, left_ig, rtol=1e-4, atol=1e-6)


def _np_guided_ig(x, grad, steps, fraction, max_dist):
    """Guided IG (Kapishnikov et al. 2021, Alg. 1, with PAIR's one gradient per step and its
    window), zero baseline, written feature by feature."""
    x = x.reshape(-1).astype(np.float64)
    cur, attr, total = np.zeros_like(x), np.zeros_like(x), np.abs(x).sum()
    for t in range(1, steps + 1):
        g = grad(cur)
        alpha = t / steps
        lo, hi = max(alpha - max_dist, 0.0), min(alpha + max_dist, 1.0)
        target = total * (1 - alpha)
        done = np.zeros(x.size, bool)
        while True:
            before = cur.copy()
            for i in range(x.size):  # features behind the window catch up
                if x[i] != 0 and cur[i] / x[i] < lo:
                    cur[i] = lo * x[i]
            dist = np.abs(cur - x).sum()
            if abs(dist - target) <= 1e-9 * max(total, 1):
                attr += (cur - before) * g
                break
            done |= cur == hi * x
            free = [i for i in range(x.size) if not done[i]]
            mags = sorted(abs(g[i]) for i in free) + [np.inf] * int(done.sum())
            threshold = sorted(mags)[int(np.floor(fraction * (x.size - 1)))]
            chosen = [i for i in free if abs(g[i]) <= threshold]
            span = sum(abs(cur[i] - hi * x[i]) for i in chosen)
            gamma = (dist - target) / span if span > 0 else np.inf
            for i in chosen:
                cur[i] = hi * x[i] if gamma > 1 else cur[i] + gamma * (hi * x[i] - cur[i])
            attr += (cur - before) * g
            if gamma <= 1:
                break
    return attr


def test_guided_ig_matches_a_plain_reference_on_a_quadratic_model(quadratic):
    model, v = quadratic
    x = np.random.default_rng(28).uniform(-1, 1, v.shape).astype(np.float32)
    vf = v.reshape(-1).astype(np.float64)
    got = guided_ig(model, x, target=0, steps=12, fraction=0.3, max_dist=0.1)
    expected = _np_guided_ig(x, lambda c: 2 * (vf @ c) * vf, 12, 0.3, 0.1).reshape(x.shape)
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-5 * np.abs(expected).max())
    assert not np.allclose(got, x * 2 * (v * x).sum() * v / 2, rtol=1e-2)  # not the straight IG


def test_argument_errors(linear):
    model, _, _ = linear
    x = np.zeros((10, 12, 2), np.float32)
    with pytest.raises(ValueError, match="steps must be an int"):
        blur_ig(model, x, steps=0)
    with pytest.raises(ValueError, match="max_sigma must be a number"):
        blur_ig(model, x, max_sigma=-1)
    with pytest.raises(ValueError, match="fraction must be a number"):
        guided_ig(model, x, fraction=0.0)
    with pytest.raises(ValueError, match="max_dist must be a number"):
        guided_ig(model, x, max_dist=2.0)
    with pytest.raises(ValueError, match="baseline"):
        guided_ig(model, x, baseline=np.zeros((3, 3)))


class _Mine(Exception):
    pass


def _raising(outputs):
    raise _Mine("from the user's target")


def test_a_users_exception_comes_back_and_nothing_changes(linear):
    from nbviz import lrp, xrai

    model, _, _ = linear
    x = np.zeros((10, 12, 2), np.float32)
    for fn, kw in ((blur_ig, dict(steps=4)), (guided_ig, dict(steps=4)), (lrp, {}),
                   (xrai, dict(steps=4, segments=np.zeros((10, 12), int)))):
        with unchanged(model), pytest.raises(_Mine):
            fn(model, x, target=_raising, **kw)
