"""Ablation-CAM against the paper's formula, and the scoped interception that ablates."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from nbviz import ablationcam
from nbviz.probe import probe
from tests.conftest import unchanged
from tests.methods.toys import cam_toy
from tests.models import small_cnn


def test_closed_form_on_the_toy():
    """logit_t = mean_ij(A) @ head[:, t]: zeroing channel k removes mean(A_k) head[k, t]."""
    model, kernel, bias, head = cam_toy()
    image = np.random.default_rng(0).normal(0, 1, (6, 6, 2)).astype(np.float32)
    acts = np.einsum("hwi,ic->hwc", image, kernel) + bias
    means = acts.mean(axis=(0, 1))
    for target in (0, 1):
        y = means @ head[:, target]
        y_k = y - means * head[:, target]
        weights = (y - y_k) / y
        expected = np.maximum(acts @ weights, 0)
        expected /= expected.max()
        with unchanged(model):
            cam = ablationcam(model, image, target=target, layer="feat")
        np.testing.assert_allclose(cam, expected, rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def logits_cnn():
    return small_cnn(softmax=False, seed=5)


def test_equals_numpy_on_a_small_cnn(logits_cnn):
    """conv3 -> global average -> dense: y_k from the captured A with channel k zeroed."""
    p = probe(logits_cnn)
    images = np.random.default_rng(1).uniform(-1, 1, (3, 32, 32, 3)).astype(np.float32)
    targets = [0, 3, 1]
    with unchanged(logits_cnn):
        cams = ablationcam(logits_cnn, images, target=targets, layer="conv3", batch_size=10)
    with p.capture("conv3") as cap:
        p.forward(tf.constant(images))
    acts = cap["conv3"].numpy()
    w, b = logits_cnn.get_layer("logits").get_weights()
    expected = []
    for a, t in zip(acts, targets):
        pooled = a.mean(axis=(0, 1))
        y = pooled @ w[:, t] + b[t]
        y_k = np.array([(pooled * (np.arange(len(pooled)) != k)) @ w[:, t] + b[t]
                        for k in range(len(pooled))])
        low = np.maximum(a @ ((y - y_k) / y), 0)
        high = tf.image.resize(low[None, ..., None].astype(np.float32), (32, 32),
                               method="bilinear")[0, ..., 0].numpy()
        expected.append(high / high.max())
    np.testing.assert_allclose(cams, np.stack(expected), rtol=1e-3, atol=1e-4)


def test_ablation_at_an_inner_layer_matches_zeroing_by_hand(logits_cnn):
    """At relu2 (followed by pooling and conv3): y_k by running the tail on zeroed activations."""
    p = probe(logits_cnn)
    image = np.random.default_rng(2).uniform(-1, 1, (32, 32, 3)).astype(np.float32)
    cam = ablationcam(logits_cnn, image, target=2, layer="relu2")
    with p.capture("relu2") as cap:
        p.forward(tf.constant(image[None]))
    a = cap["relu2"].numpy()
    tail = [logits_cnn.get_layer(n) for n in ("pool2", "conv3", "gap", "logits")]

    def run(t):
        for layer in tail:
            t = layer(t)
        return t.numpy()[0, 2]

    y = run(a)
    y_k = np.array([run(a * (np.arange(a.shape[-1]) != k)) for k in range(a.shape[-1])])
    low = np.maximum(a[0] @ ((y - y_k) / y), 0)
    high = tf.image.resize(low[None, ..., None].astype(np.float32), (32, 32),
                           method="bilinear")[0, ..., 0].numpy()
    np.testing.assert_allclose(cam, high / high.max(), rtol=1e-3, atol=1e-4)


def test_batch_no_retrace_and_no_mutation_when_the_ablated_pass_raises(logits_cnn):
    p = probe(logits_cnn)
    rng = np.random.default_rng(3)
    images = rng.uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
    batch = ablationcam(logits_cnn, images, target=[1, 2], layer="conv3", batch_size=7)
    singles = [ablationcam(logits_cnn, images[0], target=1, layer="conv3"),
               ablationcam(logits_cnn, images[1], target=2, layer="conv3")]
    np.testing.assert_allclose(batch, np.stack(singles), rtol=1e-5, atol=1e-6)
    ablationcam(logits_cnn, images[0], layer="conv3")
    before = p.trace_count()
    for target in (None, 0, 3):
        ablationcam(logits_cnn, rng.uniform(-1, 1, (32, 32, 3)), target=target, layer="conv3")
    assert p.trace_count() == before

    def fails_when_ablated(outputs):  # the first pass has 1 row, the ablated passes 16
        if outputs.shape[0] == 16:
            raise KeyError("the user's own error")
        return outputs[:, 0]

    with unchanged(logits_cnn):
        with pytest.raises(KeyError, match="own error"):
            ablationcam(logits_cnn, images[0], target=fails_when_ablated, layer="conv3")
        with pytest.raises(ValueError, match="batch_size must be >= 1"):
            ablationcam(logits_cnn, images[0], batch_size=0)
        with pytest.raises(ValueError, match="not a spatial"):
            ablationcam(logits_cnn, images[0], layer="logits")
