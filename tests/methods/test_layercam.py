"""Layer-CAM against Grad-CAM (closed form) and against a numpy computation from the paper."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from nbviz import gradcam, layercam
from nbviz.probe import probe
from tests.conftest import unchanged
from tests.methods.toys import cam_toy


def _positive_cam_toy():
    model, kernel, bias, head = cam_toy(seed=5)
    head = np.abs(head) + 0.1  # every channel's gradient positive
    model.get_layer("head").set_weights([head, np.zeros(head.shape[1], np.float32)])
    return model, kernel, bias, head


def test_layercam_equals_gradcam_where_gradients_are_constant_and_positive():
    model, kernel, bias, head = _positive_cam_toy()
    image = np.random.default_rng(0).normal(0, 1, (6, 6, 2)).astype(np.float32)
    acts = np.einsum("hwi,ic->hwc", image, kernel) + bias
    for target in (0, 1):
        with unchanged(model):
            lcam = layercam(model, image, target=target, layer="feat")
        gcam = gradcam(model, image, target=target, layer="feat")
        # d logit_t / d A_ijc = head[c, t] / 36 > 0 everywhere
        expected = np.maximum(acts @ (head[:, target] / 36.0), 0)
        expected /= expected.max()
        np.testing.assert_allclose(lcam, gcam, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(lcam, expected, rtol=1e-5, atol=1e-6)


def test_layercam_differs_from_gradcam_with_negative_gradients():
    model, kernel, bias, head = cam_toy(seed=1)  # head has both signs: relu(G) drops channels
    image = np.random.default_rng(1).normal(0, 1, (6, 6, 2)).astype(np.float32)
    acts = np.einsum("hwi,ic->hwc", image, kernel) + bias
    expected = np.maximum(acts @ (np.maximum(head[:, 0], 0) / 36.0), 0)
    expected /= expected.max()
    np.testing.assert_allclose(layercam(model, image, target=0, layer="feat"), expected,
                               rtol=1e-5, atol=1e-6)


def test_layercam_equals_numpy_at_a_shallow_layer(small):
    """At conv2 (before BN, ReLU, pooling): the map from captured A and G by the paper's formula."""
    p = probe(small)
    images = np.random.default_rng(2).uniform(-1, 1, (3, 32, 32, 3)).astype(np.float32)
    with unchanged(small):
        cams = layercam(small, images, target=[0, 2, 3], layer="conv2")
    with tf.GradientTape() as tape, p.capture("conv2") as cap, p.logits():
        score = tf.reduce_sum(p.forward(tf.constant(images)) * tf.one_hot([0, 2, 3], 4))
    acts = cap["conv2"].numpy()
    grads = tape.gradient(score, cap["conv2"]).numpy()
    low = np.maximum((np.maximum(grads, 0) * acts).sum(-1), 0)
    high = tf.image.resize(low[..., None], (32, 32), method="bilinear")[..., 0].numpy()
    expected = high / high.max(axis=(1, 2), keepdims=True)
    assert cams.shape == (3, 32, 32) and cams.dtype == np.float32
    np.testing.assert_allclose(cams, expected, rtol=1e-4, atol=1e-5)


def test_batch_is_the_stack_of_singles_and_no_retrace(small):
    p = probe(small)
    rng = np.random.default_rng(3)
    images = rng.uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
    batch = layercam(small, images, target=[1, 2], layer="conv3")
    singles = [layercam(small, images[i], target=t, layer="conv3") for i, t in ((0, 1), (1, 2))]
    np.testing.assert_allclose(batch, np.stack(singles), rtol=1e-5, atol=1e-6)
    before = p.trace_count("layercam")
    for target in (None, 0, 3):
        layercam(small, rng.uniform(-1, 1, (32, 32, 3)), target=target, layer="conv3")
    assert p.trace_count("layercam") == before


def test_layer_without_spatial_output_is_refused(small):
    with unchanged(small), pytest.raises(ValueError, match="not a spatial"):
        layercam(small, np.zeros((32, 32, 3), np.float32), layer="gap")
