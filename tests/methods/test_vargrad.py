"""VarGrad: the variance of noisy gradients, by hand from the same seeded noise."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers

from nbviz import smoothgrad, vargrad
from nbviz.probe import probe
from tests.conftest import unchanged
from tests.methods.toys import smooth_toy


def _noise(shape, n, seed):
    """The noise of the copies: stateless normal, seed (seed, 0), over (N * n, H, W, C)."""
    return tf.random.stateless_normal((shape[0] * n, *shape[1:]), [seed, 0]).numpy()


def test_closed_form_on_a_quadratic_model():
    """logit_t = sum(a_t * x²): the gradient at x + s e is 2 a_t (x + s e), so the variance
    over the copies is 4 a_t² s² var_k(e_k)."""
    shape = (6, 5, 2)
    a = np.random.default_rng(0).normal(0, 1, (int(np.prod(shape)), 2)).astype(np.float32)
    inp = keras.Input(shape, name="image")
    square = layers.Multiply(name="square")([inp, inp])
    out = layers.Dense(2, use_bias=False, name="a")(layers.Flatten(name="flat")(square))
    model = keras.Model(inp, out, name="quadratic")
    model.get_layer("a").set_weights([a])
    images = np.random.default_rng(1).uniform(0, 2, (2, *shape)).astype(np.float32)
    n, noise, seed = 16, 0.2, 3
    with unchanged(model):
        got = vargrad(model, images, target=[0, 1], n=n, noise=noise, seed=seed)
    eps = _noise(images.shape, n, seed).reshape(2, n, *shape)
    sigma = noise * (images.max(axis=(1, 2, 3)) - images.min(axis=(1, 2, 3)))
    for i, t in enumerate((0, 1)):
        coef = a[:, t].reshape(shape)
        expected = 4 * coef**2 * sigma[i] ** 2 * eps[i].var(axis=0)
        np.testing.assert_allclose(got[i], expected, rtol=1e-3, atol=1e-7)


def test_equals_the_variance_of_tape_gradients_on_a_smooth_cnn():
    model = smooth_toy()
    p = probe(model)
    image = np.random.default_rng(2).uniform(0, 1, (8, 8, 3)).astype(np.float32)
    n, noise, seed = 12, 0.1, 5
    with unchanged(model):
        got = vargrad(model, image, target=2, n=n, noise=noise, seed=seed)
        mean = smoothgrad(model, image, target=2, n=n, noise=noise, seed=seed)
    sigma = noise * (image.max() - image.min())
    noisy = tf.constant(image[None] + sigma * _noise((1, 8, 8, 3), n, seed))
    with tf.GradientTape() as tape:
        tape.watch(noisy)
        score = tf.reduce_sum(p.forward(noisy)[:, 2])
    grads = tape.gradient(score, noisy).numpy().astype(np.float64)
    assert got.shape == (8, 8, 3) and got.dtype == np.float32 and got.min() >= 0
    np.testing.assert_allclose(got, grads.var(axis=0), rtol=1e-3, atol=1e-9)
    np.testing.assert_allclose(mean, grads.mean(axis=0), rtol=1e-3, atol=1e-7)  # same copies


def test_batch_no_retrace_and_bad_arguments():
    model = smooth_toy()
    p = probe(model)
    rng = np.random.default_rng(3)
    images = rng.uniform(0, 1, (2, 8, 8, 3)).astype(np.float32)
    batch = vargrad(model, images, n=6)
    assert batch.shape == (2, 8, 8, 3)
    before = p.trace_count("vargrad")
    for target in (None, 0, 2):
        vargrad(model, rng.uniform(0, 1, (2, 8, 8, 3)), target=target, n=6)
    assert p.trace_count("vargrad") == before
    with unchanged(model):
        with pytest.raises(ValueError, match="n .noisy copies. must be an int >= 2"):
            vargrad(model, images, n=1)
        with pytest.raises(ValueError, match="noise must be"):
            vargrad(model, images, noise=-0.1)
        with pytest.raises(ValueError, match="noise must be"):
            vargrad(model, images, noise=float("nan"))
        with pytest.raises(TypeError, match="seed must be an int"):
            vargrad(model, images, seed=1.5)
