"""Gradient × input: grad * x, its completeness on a bias-free ReLU net, no extra trace."""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

from nbviz import gradient_x_input, saliency
from nbviz.probe import probe
from tests.conftest import unchanged
from tests.methods.toys import linear_toy


def test_equals_weights_times_input_on_a_linear_model():
    model, w, _ = linear_toy()
    images = np.random.default_rng(0).normal(0, 1, (3, 10, 12, 2)).astype(np.float32)
    with unchanged(model):
        got = gradient_x_input(model, images, target=[0, 1, 1])
    expected = np.stack([w[..., t] * x for x, t in zip(images, (0, 1, 1))])
    assert got.shape == (3, 10, 12, 2) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    single = gradient_x_input(model, images[1], target=1)
    np.testing.assert_allclose(single, got[1], rtol=1e-6, atol=1e-7)


def test_sums_to_the_logit_on_a_bias_free_relu_net():
    keras.utils.set_random_seed(4)
    inp = keras.Input((12, 12, 3), name="image")
    x = layers.Conv2D(6, 3, padding="same", activation="relu", use_bias=False, name="c1")(inp)
    x = layers.MaxPooling2D(name="pool")(x)
    x = layers.Conv2D(8, 3, padding="same", activation="relu", use_bias=False, name="c2")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    out = layers.Dense(3, use_bias=False, activation="softmax", name="head")(x)
    model = keras.Model(inp, out, name="bias_free")
    image = np.random.default_rng(5).uniform(0, 1, (12, 12, 3)).astype(np.float32)
    attributions = gradient_x_input(model, image, target=2)
    p = probe(model)
    with p.logits():
        logit = p.forward(image[None]).numpy()[0, 2]
    np.testing.assert_allclose(attributions.sum(), logit, rtol=1e-4, atol=1e-6)  # Euler


def test_shares_the_saliency_gradient_no_retrace(small):
    p = probe(small)
    rng = np.random.default_rng(6)
    x = rng.uniform(-1, 1, (32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(gradient_x_input(small, x, target=1),
                               saliency(small, x, target=1) * x, rtol=1e-6, atol=1e-8)
    before = p.trace_count()
    for target in (None, 0, 3):
        gradient_x_input(small, rng.uniform(-1, 1, (32, 32, 3)), target=target)
    assert p.trace_count() == before
