"""Parametrisations: bounded images, exact inverses, and the FFT scaling of frequencies."""

import numpy as np
import pytest
import tensorflow as tf

from nbviz.featvis import params as P


def test_pixel_is_a_sigmoid_and_inverts():
    rng = np.random.default_rng(0)
    p = P.Pixel()
    raw = p.init(2, 5, 7, rng)
    assert raw.shape == (2, 5, 7, 3) and raw.dtype == np.float32
    img = p.images(tf.constant(raw)).numpy()
    np.testing.assert_allclose(img, 1 / (1 + np.exp(-raw)), rtol=1e-6)
    np.testing.assert_allclose(p.from_images(img).numpy(), raw, atol=1e-4)


@pytest.mark.parametrize("size", [(8, 8), (7, 9), (6, 5)])
def test_fft_images_are_bounded_and_invert(size):
    rng = np.random.default_rng(1)
    p = P.FFT(sd=0.05)
    raw = tf.constant(p.init(2, *size, rng))
    assert raw.shape == (2, 3, size[0], size[1] // 2 + 1, 2)
    img = p.images(raw, size).numpy()
    assert img.shape == (2, *size, 3) and img.min() > 0 and img.max() < 1
    again = p.images(p.from_images(img), size).numpy()
    np.testing.assert_allclose(again, img, atol=1e-5)


def test_colour_decorrelation_matrix():
    norms = np.linalg.norm(P.COLOR_CORRELATION, axis=0)
    np.testing.assert_allclose(norms.max(), 1.0, rtol=1e-6)
    # a pure first decorrelated component is a bright, nearly grey colour
    colour = P.COLOR_CORRELATION @ np.array([1.0, 0.0, 0.0])
    assert np.all(colour > 0) and np.ptp(colour) < 0.05


def test_fft_one_frequency_gives_one_stripe_pattern_with_scaled_amplitude():
    h, w = 16, 16
    p = P.FFT(decorrelate=False)
    raw = np.zeros((1, 3, h, w // 2 + 1, 2), np.float32)
    raw[0, 0, 0, 4, 0] = 1e-3  # fx = 4/16 cycles per pixel, fy = 0, real part
    img = p.images(tf.constant(raw), (h, w)).numpy()[0, ..., 0]
    logit = np.log(img) - np.log1p(-img)
    # irfft2d of one coefficient c at (0, k): (2 c / (H W)) cos(2 pi k x / W); scaled by
    # sqrt(H W) / f with f = 4/16, then divided by 4
    amplitude = 2 * 1e-3 * np.sqrt(h * w) / 0.25 / (h * w) / 4
    x = np.arange(w)
    np.testing.assert_allclose(logit, np.tile(amplitude * np.cos(2 * np.pi * 4 * x / w), (h, 1)),
                               atol=1e-6)
    # the zero frequency is scaled by max(H, W): as if it were 1/16 cycles per pixel
    f = P.fft_frequencies(h, w)
    assert f[0, 0] == 0 and f[0, 4] == 0.25 and f.shape == (16, 9)


def test_parametrisation_by_name():
    assert P.parametrisation("fft") == P.FFT()
    assert P.parametrisation("pixel") == P.Pixel()
    custom = P.FFT(decay=1.5)
    assert P.parametrisation(custom) is custom
    with pytest.raises(ValueError, match="param must be"):
        P.parametrisation("wavelet")
