"""Transforms checked analytically on tiny arrays; stateless randomness; gradients flow."""

import math

import numpy as np
import pytest
import tensorflow as tf

from nbviz.featvis import transforms as T

SEED = tf.constant([7, 3], tf.int64)


def _ramp(h, w, n=1):
    """Image whose channel 0 is x (column), channel 1 is y (row), channel 2 is 1."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([x, y, np.ones_like(x)], -1)
    return np.repeat(img[None], n, axis=0)


def test_pad_reflect_and_constant_match_numpy():
    img = np.arange(2 * 4 * 5 * 3, dtype=np.float32).reshape(2, 4, 5, 3)
    out = T.Pad(2)(tf.constant(img), SEED).numpy()
    np.testing.assert_array_equal(out, np.pad(img, [(0, 0), (2, 2), (2, 2), (0, 0)], "reflect"))
    out = T.Pad(1, mode="constant", value=0.25)(tf.constant(img)).numpy()
    np.testing.assert_array_equal(
        out, np.pad(img, [(0, 0), (1, 1), (1, 1), (0, 0)], constant_values=0.25))
    assert T.Pad(0)(img) is img


def test_jitter_shifts_by_whole_pixels_within_range():
    rng = np.random.default_rng(0)
    img = rng.uniform(size=(16, 9, 9, 3)).astype(np.float32)
    t = T.Jitter(2)
    shifts = t.shifts(SEED, 16).numpy().astype(int)
    assert np.abs(shifts).max() <= 2 and len({tuple(s) for s in shifts}) > 3
    out = t(tf.constant(img), SEED).numpy()
    for k, (dy, dx) in enumerate(shifts):
        # out[y, x] = in[y - dy, x - dx] wherever that pixel exists
        ys = slice(max(dy, 0), 9 + min(dy, 0))
        xs = slice(max(dx, 0), 9 + min(dx, 0))
        src = img[k, max(-dy, 0):9 - max(dy, 0), max(-dx, 0):9 - max(dx, 0)]
        np.testing.assert_allclose(out[k, ys, xs], src, atol=1e-6)


def test_rotation_by_90_degrees_is_rot90():
    img = np.arange(25, dtype=np.float32).reshape(1, 5, 5, 1)
    a = math.pi / 2
    linear = tf.constant([[[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]]], tf.float32)
    out = T.warp(img, T._about_centre(linear, 5, 5)).numpy()
    np.testing.assert_allclose(out[0, ..., 0], np.rot90(img[0, ..., 0]), atol=1e-5)


def test_random_rotation_rotates_a_ramp_about_the_centre():
    h = w = 21
    t = T.RandomRotate(20.0)
    img = _ramp(h, w, n=4)
    angles = t.angles(SEED, 4).numpy()
    assert np.all(np.abs(angles) <= math.radians(20)) and np.ptp(angles) > 0
    out = t(tf.constant(img), SEED).numpy()
    c = (h - 1) / 2
    y, x = np.mgrid[0:h, 0:w]
    inner = (np.abs(y - c) <= 6) & (np.abs(x - c) <= 6)  # samples stay inside the image
    for k, a in enumerate(angles):
        expect_x = math.cos(a) * (x - c) - math.sin(a) * (y - c) + c
        expect_y = math.sin(a) * (x - c) + math.cos(a) * (y - c) + c
        np.testing.assert_allclose(out[k, ..., 0][inner], expect_x[inner], atol=1e-3)
        np.testing.assert_allclose(out[k, ..., 1][inner], expect_y[inner], atol=1e-3)


def test_random_scale_zooms_about_the_centre():
    h, w = 11, 15
    t = T.RandomScale(0.8, 1.25)
    img = _ramp(h, w, n=5)
    s = t.factors(SEED, 5).numpy()
    assert np.all((s >= 0.8) & (s <= 1.25))
    out = t(tf.constant(img), SEED).numpy()
    cy, cx = (h - 1) / 2, (w - 1) / 2
    y, x = np.mgrid[0:h, 0:w]
    inner = (np.abs(y - cy) <= 3) & (np.abs(x - cx) <= 4)
    for k in range(5):
        np.testing.assert_allclose(out[k, ..., 0][inner], ((x - cx) / s[k] + cx)[inner], atol=1e-3)
        np.testing.assert_allclose(out[k, ..., 1][inner], ((y - cy) / s[k] + cy)[inner], atol=1e-3)


def test_compose_fuses_affines_into_the_same_map():
    h = w = 25
    img = tf.constant(_ramp(h, w, n=3))
    ts = (T.Jitter(2), T.RandomScale(0.9, 1.1), T.RandomRotate(15.0))
    fused = T.compose(ts)(img, SEED).numpy()
    sequential = img
    for t in ts:
        sequential = t(sequential, SEED)
    inner = (slice(None), slice(8, 17), slice(8, 17))  # bilinear is exact on a ramp
    np.testing.assert_allclose(fused[inner], sequential.numpy()[inner], atol=1e-3)


def test_blur_kernel_schedule_and_impulse_response():
    b = T.Blur(2.0, 0.0)
    assert b.radius == 6
    np.testing.assert_allclose(b.sigma(0.0).numpy(), 2.0)
    np.testing.assert_allclose(b.sigma(0.25).numpy(), 1.5)
    np.testing.assert_allclose(b.sigma(1.0).numpy(), 0.0)
    k = b.kernel(0.0).numpy()
    x = np.arange(-6, 7)
    g = np.exp(-x ** 2 / 8.0)
    np.testing.assert_allclose(k, g / g.sum(), rtol=1e-5)
    img = np.zeros((1, 21, 21, 3), np.float32)
    img[0, 10, 10] = 1.0
    out = b(tf.constant(img), SEED, 0.0).numpy()[0, ..., 0]
    np.testing.assert_allclose(out[4:17, 4:17], np.outer(k, k), atol=1e-6)
    np.testing.assert_allclose(out.sum(), 1.0, rtol=1e-5)
    # sigma 0 (end of the schedule) leaves the image as it is; a constant image stays constant
    np.testing.assert_allclose(b(tf.constant(img), SEED, 1.0).numpy(), img, atol=1e-6)
    flat = np.full((1, 9, 9, 3), 0.3, np.float32)
    np.testing.assert_allclose(b(tf.constant(flat), SEED, 0.0).numpy(), flat, atol=1e-6)


def test_fit_crops_or_scales_about_the_centre():
    img = tf.zeros((1, 8, 8, 3))
    assert T.Fit(8, 8)(img) is img
    assert T.Fit(4, 6)(img).shape == (1, 4, 6, 3)
    ramp = tf.constant(_ramp(12, 12))
    crop = T.Fit(8, 8)(ramp).numpy()  # factor 1: the central 8×8, padding cropped off
    np.testing.assert_allclose(crop[0], _ramp(12, 12)[0, 2:10, 2:10], atol=1e-5)
    zoom = T.Fit(4, 4, (2.0, 0.5))(ramp).numpy()  # rows 2 apart, columns half a pixel apart
    y, x = np.mgrid[0:4, 0:4]
    np.testing.assert_allclose(zoom[0, ..., 1], 2.0 * (y - 1.5) + 5.5, atol=1e-4)
    np.testing.assert_allclose(zoom[0, ..., 0], 0.5 * (x - 1.5) + 5.5, atol=1e-4)
    # fused after other affines it gives the same picture as applied on its own
    ts = (T.RandomRotate(10.0), T.Fit(9, 9, (1.5, 1.5)))
    big = tf.constant(_ramp(31, 31))
    fused = T.compose(ts)(big, SEED).numpy()
    alone = ts[1](ts[0](big, SEED)).numpy()
    np.testing.assert_allclose(fused[:, 2:7, 2:7], alone[:, 2:7, 2:7], atol=1e-3)


def test_standard():
    assert T.standard() == (T.Pad(8), T.Jitter(8), T.RandomScale(0.9, 1.1), T.RandomRotate(10.0))
    assert T.standard(pad=0, jitter=0, scale=None, rotate=0, blur=(1, 0)) == (T.Blur(1.0, 0.0),)


def test_randomness_is_stateless_and_compiles_once():
    img = tf.constant(np.random.default_rng(0).uniform(size=(2, 12, 12, 3)).astype(np.float32))
    apply = T.compose(T.standard(pad=2, jitter=2, scale=(0.8, 1.2), rotate=30, blur=1.0))
    traces = []

    @tf.function
    def f(x, seed):
        traces.append(1)
        return apply(x, seed)

    a = f(img, tf.constant([1, 2], tf.int64)).numpy()
    b = f(img, tf.constant([1, 2], tf.int64)).numpy()
    c = f(img, tf.constant([1, 3], tf.int64)).numpy()
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 0.05
    assert len(traces) == 1 and a.shape == (2, 16, 16, 3)


def test_gradients_flow_through_every_transform():
    img = tf.constant(np.random.default_rng(0).uniform(size=(1, 10, 10, 3)).astype(np.float32))
    for t in (T.Pad(2), T.Jitter(1), T.RandomScale(0.9, 1.1), T.RandomRotate(10), T.Blur(1.0),
              T.Fit(7, 7)):
        with tf.GradientTape() as tape:
            tape.watch(img)
            y = tf.reduce_sum(tf.square(t(img, SEED, 0.0)))
        g = tape.gradient(y, img)
        assert g is not None and float(tf.reduce_sum(tf.abs(g))) > 0, t


@pytest.mark.parametrize("make", [
    lambda: T.Pad(-1), lambda: T.Pad(2, mode="wrap"), lambda: T.Jitter(1.5),
    lambda: T.RandomScale(0.0, 1.0), lambda: T.RandomScale(1.2, 1.1),
    lambda: T.RandomRotate(-5), lambda: T.Blur(-1.0),
])
def test_bad_parameters_raise(make):
    with pytest.raises(ValueError):
        make()


def test_compose_rejects_other_callables():
    with pytest.raises(TypeError, match="transforms"):
        T.compose((lambda x, s: x,))
