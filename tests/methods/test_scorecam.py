"""Score-CAM against numpy references written from the paper's formula."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import tensorflow as tf

from nbviz import scorecam
from nbviz.probe import probe
from tests.conftest import unchanged
from tests.methods.toys import cam_toy
from tests.models import small_cnn


def _minmax(m):
    low, high = m.min(axis=(-2, -1), keepdims=True), m.max(axis=(-2, -1), keepdims=True)
    return np.divide(m - low, high - low, out=np.zeros_like(m), where=high > low)


def test_closed_form_on_the_toy():
    """feat has the input's size (no upsampling) and the toy is linear: all by hand."""
    model, kernel, bias, head = cam_toy()
    image = np.random.default_rng(0).normal(0, 1, (6, 6, 2)).astype(np.float32)
    acts = np.einsum("hwi,ic->hwc", image, kernel) + bias

    def logits(x):  # conv 1×1 -> global average -> dense
        return (np.einsum("hwi,ic->hwc", x, kernel) + bias).mean(axis=(0, 1)) @ head

    masks = _minmax(acts.transpose(2, 0, 1))  # (C, 6, 6)
    for target in (0, 1):
        weights = np.array([logits(image * m[..., None])[target] for m in masks])
        weights -= logits(np.zeros_like(image))[target]
        expected = np.maximum(acts @ weights, 0)
        expected /= expected.max()
        with unchanged(model):
            cam = scorecam(model, image, target=target, layer="feat")
        assert cam.shape == (6, 6) and cam.dtype == np.float32
        np.testing.assert_allclose(cam, expected, rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def logits_cnn():
    return small_cnn(softmax=False, seed=4)


def _reference(model, images, targets, layer, top_n, baseline):
    """The paper's formula with the model's own forward pass, channel by channel."""
    p = probe(model)
    with p.capture(layer) as cap:
        p.forward(tf.constant(images))
    acts = cap[layer].numpy()
    size = images.shape[1:3]
    out = []
    for x, a, t in zip(images, acts, targets):
        chosen = np.argsort(-a.mean(axis=(0, 1)), kind="stable")[:top_n]
        up = tf.image.resize(a[None], size, method="bilinear")[0].numpy()  # (H, W, C)
        base_score = model(np.full_like(x, baseline)[None]).numpy()[0, t]
        weights = np.zeros(a.shape[-1])
        for k in chosen:
            m = _minmax(up[..., k])[..., None]
            weights[k] = model((baseline + m * (x - baseline))[None]).numpy()[0, t] - base_score
        low = np.maximum(a @ weights, 0)
        high = tf.image.resize(low[None, ..., None].astype(np.float32), size,
                               method="bilinear")[0, ..., 0].numpy()
        out.append(high / high.max())
    return np.stack(out)


def test_equals_the_reference_with_upsampling_top_n_and_a_baseline(logits_cnn):
    images = np.random.default_rng(1).uniform(0, 1, (2, 32, 32, 3)).astype(np.float32)
    targets = [2, 2]  # on this untrained net, classes with positive evidence (max 1 below)
    expected = _reference(logits_cnn, images, targets, "conv3", top_n=5, baseline=-0.25)
    with unchanged(logits_cnn):
        cams = scorecam(logits_cnn, images, target=targets, layer="conv3", top_n=5,
                        baseline=-0.25, batch_size=3)
    assert cams.shape == (2, 32, 32) and np.allclose(cams.max(axis=(1, 2)), 1)
    np.testing.assert_allclose(cams, expected, rtol=1e-3, atol=1e-4)


def test_batch_sizes_singles_and_no_retrace(logits_cnn):
    p = probe(logits_cnn)
    rng = np.random.default_rng(2)
    images = rng.uniform(0, 1, (2, 32, 32, 3)).astype(np.float32)
    targets = [1, 1]
    batch = scorecam(logits_cnn, images, target=targets, layer="conv3")
    assert np.allclose(batch.max(axis=(1, 2)), 1)
    other = scorecam(logits_cnn, images, target=targets, layer="conv3", batch_size=5)
    singles = np.stack([scorecam(logits_cnn, x, target=int(t), layer="conv3")
                        for x, t in zip(images, targets)])
    np.testing.assert_allclose(other, batch, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(singles, batch, rtol=1e-5, atol=1e-6)
    scorecam(logits_cnn, images[0], layer="conv3")
    before = p.trace_count()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # some classes: no positive evidence
        for target in (None, 1, 3):
            scorecam(logits_cnn, rng.uniform(0, 1, (32, 32, 3)), target=target, layer="conv3")
    assert p.trace_count() == before


def test_bad_arguments_and_user_errors(logits_cnn):
    x = np.zeros((32, 32, 3), np.float32)

    def broken(outputs):
        raise KeyError("the user's own error")

    with unchanged(logits_cnn):
        with pytest.raises(ValueError, match="top_n must be >= 1"):
            scorecam(logits_cnn, x, top_n=0)
        with pytest.raises(TypeError, match="top_n must be an int >= 1 or None"):
            scorecam(logits_cnn, x, top_n=2.5)
        with pytest.raises(ValueError, match="batch_size must be >= 1"):
            scorecam(logits_cnn, x, batch_size=0)
        with pytest.raises(ValueError, match="not a spatial"):
            scorecam(logits_cnn, x, layer="gap")
        with pytest.raises(ValueError, match="baseline"):
            scorecam(logits_cnn, x, baseline=np.zeros((5, 5, 3)))
        with pytest.raises(KeyError, match="own error"):
            scorecam(logits_cnn, x, target=broken, layer="conv3")
