"""Grad-CAM, Grad-CAM++ and guided Grad-CAM against closed forms and a numpy computation."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from nbviz import gradcam, gradcam_plus_plus, guided_backprop, guided_gradcam
from nbviz.probe import probe
from tests.conftest import unchanged
from tests.methods.toys import cam_toy


def _toy_activations(image, kernel, bias):
    return np.einsum("hwi,ic->hwc", image, kernel) + bias


def test_gradcam_closed_form_on_the_toy():
    model, kernel, bias, head = cam_toy()
    image = np.random.default_rng(0).normal(0, 1, (6, 6, 2)).astype(np.float32)
    acts = _toy_activations(image, kernel, bias)
    for target in (0, 1):
        with unchanged(model):
            cam = gradcam(model, image, target=target, layer="feat")
        # d logit_t / d A_ijc = head[c, t] / 36 everywhere: the channel weights
        expected = np.maximum(acts @ (head[:, target] / 36.0), 0)
        expected /= expected.max()
        assert cam.shape == (6, 6) and cam.dtype == np.float32
        np.testing.assert_allclose(cam, expected, rtol=1e-5, atol=1e-6)


def test_gradcam_plus_plus_closed_form_on_the_toy():
    model, kernel, bias, head = cam_toy()
    image = np.random.default_rng(1).normal(0, 1, (6, 6, 2)).astype(np.float32)
    acts = _toy_activations(image, kernel, bias)
    g = head[:, 0] / 36.0  # constant gradient per channel
    total = acts.sum(axis=(0, 1))
    denom = 2 * g**2 + total * g**3
    alpha = np.where(denom != 0, g**2 / np.where(denom != 0, denom, 1), 0)
    weights = 36 * alpha * np.maximum(g, 0)
    expected = np.maximum(acts @ weights, 0)
    expected /= expected.max()
    cam = gradcam_plus_plus(model, image, target=0, layer="feat")
    np.testing.assert_allclose(cam, expected, rtol=1e-4, atol=1e-6)


def test_gradcam_equals_numpy_from_captured_activations_and_gradients(small):
    p = probe(small)
    images = np.random.default_rng(2).uniform(-1, 1, (3, 32, 32, 3)).astype(np.float32)
    with unchanged(small):
        cams = gradcam(small, images, target=[0, 1, 3], layer="conv3")
    x = tf.constant(images)
    with tf.GradientTape() as tape, p.capture("conv3") as cap, p.logits():
        logits = p.forward(x)
        score = tf.reduce_sum(logits * tf.one_hot([0, 1, 3], 4))
    acts = cap["conv3"].numpy()
    grads = tape.gradient(score, cap["conv3"]).numpy()
    weights = grads.mean(axis=(1, 2))
    low = np.maximum(np.einsum("nijc,nc->nij", acts, weights), 0)
    high = tf.image.resize(low[..., None], (32, 32), method="bilinear")[..., 0].numpy()
    expected = high / high.max(axis=(1, 2), keepdims=True)
    assert cams.shape == (3, 32, 32)
    np.testing.assert_allclose(cams, expected, rtol=1e-4, atol=1e-5)
    assert cams.min() >= 0 and np.allclose(cams.max(axis=(1, 2)), 1)


def test_default_layer_and_no_retracing(small):
    p = probe(small)
    before = p.trace_count()
    rng = np.random.default_rng(3)
    maps = [gradcam(small, rng.uniform(-1, 1, (32, 32, 3)), target=t) for t in (None, 0, 2, None)]
    assert all(m.shape == (32, 32) for m in maps)
    assert p.traces[("gradcam", (1, 32, 32, 3), ("vector",), "conv3")] == 1
    assert p.trace_count() == before + 1


def test_guided_gradcam_is_the_product(small):
    image = np.random.default_rng(4).uniform(-1, 1, (32, 32, 3)).astype(np.float32)
    with unchanged(small):
        out = guided_gradcam(small, image, target=2, layer="relu2")
    expected = guided_backprop(small, image, target=2) * gradcam(small, image, target=2,
                                                                 layer="relu2")[..., None]
    assert out.shape == (32, 32, 3)
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-12)


def test_nested_and_subclassed(nested, subclassed):
    for model, layer in ((nested, "mobilenetv2_0.35_64/block_13_expand_relu"), (subclassed, None)):
        size = probe(model).input_size()
        image = np.random.default_rng(5).uniform(-1, 1, size + (3,)).astype(np.float32)
        with unchanged(model):
            cam = gradcam(model, image, layer=layer)
            plus = gradcam_plus_plus(model, image, layer=layer) if model is subclassed else cam
        assert cam.shape == plus.shape == size
        assert np.isfinite(cam).all() and 0 <= cam.min() and cam.max() <= 1


def test_layer_without_spatial_output_is_refused(small):
    with unchanged(small), pytest.raises(ValueError, match="'gap'.*not a spatial"):
        gradcam(small, np.zeros((32, 32, 3)), layer="gap")
    with pytest.raises(ValueError, match="no layer 'conv9'.*conv"):
        gradcam(small, np.zeros((32, 32, 3)), layer="conv9")
