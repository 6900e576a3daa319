"""Eigen-CAM: the closed form for a rank-1 activation, and numpy's SVD on a small CNN."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers

from nbviz import eigencam
from nbviz.probe import probe
from tests.conftest import unchanged


def _rank_one_model(size=8, channels=5, seed=0):
    """One input channel u, then a linear 1×1 conv with kernel v: A_ijc = u_ij v_c (rank 1)."""
    v = np.random.default_rng(seed).uniform(0.2, 1.0, channels).astype(np.float32)
    inp = keras.Input((size, size, 1), name="image")
    x = layers.Conv2D(channels, 1, use_bias=False, name="feat")(inp)
    out = layers.Dense(2, name="head")(layers.GlobalAveragePooling2D(name="gap")(x))
    model = keras.Model(inp, out, name="rank_one")
    model.get_layer("feat").set_weights([v[None, None, None, :]])
    return model, v


def test_rank_one_activation_gives_that_map():
    model, v = _rank_one_model()
    u = np.random.default_rng(1).uniform(0, 1, (8, 8)).astype(np.float32)
    with unchanged(model):
        cam = eigencam(model, u[..., None], layer="feat")
    np.testing.assert_allclose(cam, u / u.max(), rtol=1e-5, atol=1e-6)
    # -v gives A = -u v^T, negative everywhere: the mean-activation rule would pick -u and leave
    # nothing after the ReLU, so the other sign is kept and the spatial pattern u is shown
    model.get_layer("feat").set_weights([-v[None, None, None, :]])
    flipped = eigencam(model, u[..., None], layer="feat")
    np.testing.assert_allclose(flipped, u / u.max(), rtol=1e-5, atol=1e-6)


def test_signed_rank_one_activation_keeps_the_sign_of_the_mean_activation():
    model, v = _rank_one_model(seed=2)
    u = np.random.default_rng(3).uniform(-1, 1, (8, 8)).astype(np.float32)
    # A = u v^T with v > 0: mean_c A = u mean(v), so the map is +u, then relu and / max
    cam = eigencam(model, u[..., None], layer="feat")
    np.testing.assert_allclose(cam, np.maximum(u, 0) / u.max(), rtol=1e-5, atol=1e-6)


def _numpy_eigencam(acts, size):
    out = []
    for a in acts:
        h, w, c = a.shape
        flat = a.reshape(h * w, c).astype(np.float64)
        _, _, vt = np.linalg.svd(flat, full_matrices=False)
        proj = flat @ vt[0]
        mean = flat.mean(1)
        proj = proj * (np.sign(proj @ mean) or np.sign(proj.sum()) or 1.0)
        out.append(np.maximum(proj, 0).reshape(h, w))
    high = tf.image.resize(np.stack(out)[..., None].astype(np.float32), size,
                           method="bilinear")[..., 0].numpy()
    return high / high.max(axis=(1, 2), keepdims=True)


def test_eigencam_equals_numpy_svd(small):
    images = np.random.default_rng(2).uniform(-1, 1, (3, 32, 32, 3)).astype(np.float32)
    p = probe(small)
    for layer in ("conv3", "relu2"):  # 8×8 and 16×16 maps
        with unchanged(small):
            cams = eigencam(small, images, layer=layer)
        with p.capture(layer) as cap:
            p.forward(tf.constant(images))
        expected = _numpy_eigencam(cap[layer].numpy(), (32, 32))
        assert cams.shape == (3, 32, 32) and cams.dtype == np.float32
        np.testing.assert_allclose(cams, expected, rtol=1e-3, atol=1e-4)


def test_class_agnostic_batch_and_no_retrace(small):
    p = probe(small)
    rng = np.random.default_rng(3)
    images = rng.uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
    batch = eigencam(small, images, layer="conv3")
    np.testing.assert_allclose(batch, np.stack([eigencam(small, x, layer="conv3") for x in images]),
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(eigencam(small, images, target=[1, 2], layer="conv3"), batch)
    before = p.trace_count("eigencam")
    for target in (None, 0, 3):
        eigencam(small, rng.uniform(-1, 1, (32, 32, 3)), target=target, layer="conv3")
    assert p.trace_count("eigencam") == before


def test_bad_arguments(small):
    x = np.zeros((32, 32, 3), np.float32)
    with unchanged(small):
        with pytest.raises(ValueError, match="not a spatial"):
            eigencam(small, x, layer="logits")
        with pytest.raises(ValueError, match="out of range"):
            eigencam(small, x, target=9)
