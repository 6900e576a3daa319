"""RISE: convergence to the weight map of a linear model, the estimator against numpy with the
same masks, the masks themselves, batching, arguments."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers

from nbviz import rise
from nbviz.methods.rise import rise_grids, upsample_masks
from nbviz.probe import probe
from tests.conftest import unchanged
from tests.models import small_cnn

S = 32


def _linear_model():
    """logits = flatten(x) @ [w, -w] + [0.3, 0]; w: two smooth blobs of opposite sign."""
    yy, xx = np.mgrid[:S, :S]
    w = (np.exp(-((yy - 10) ** 2 + (xx - 20) ** 2) / 50.0)
         - 0.7 * np.exp(-((yy - 22) ** 2 + (xx - 9) ** 2) / 72.0)).astype(np.float32)
    inp = keras.Input((S, S, 1), name="image")
    out = layers.Dense(2, name="linear")(layers.Flatten(name="flat")(inp))
    model = keras.Model(inp, out, name="linear_blobs")
    model.get_layer("linear").set_weights([np.stack([w.ravel(), -w.ravel()], 1),
                                           np.array([0.3, 0.0], np.float32)])
    return model, w


def test_converges_to_the_weight_map_of_a_linear_model():
    """On x = 1 the RISE map of a linear model is E[f(M) M] / p = w blurred by the masks'
    autocorrelation, plus a constant: its correlation with w rises towards 1 with n."""
    model, w = _linear_model()
    x = np.ones((S, S, 1), np.float32)
    with unchanged(model):
        corr = {n: np.corrcoef(rise(model, x, target=0, n=n).ravel(), w.ravel())[0, 1]
                for n in (250, 1000, 4000)}
    assert corr[1000] > 0.95 and corr[4000] > 0.98, corr
    assert corr[4000] > corr[250]
    other = rise(model, x, target=1, n=1000)  # the other class: weights -w
    assert np.corrcoef(other.ravel(), w.ravel())[0, 1] < -0.95


def test_equals_the_estimator_with_the_same_masks():
    model = small_cnn(softmax=False, seed=6)
    images = np.random.default_rng(0).uniform(0, 1, (2, S, S, 3)).astype(np.float32)
    n, cells, p, seed = 300, 5, 0.4, 7
    with unchanged(model):
        maps = rise(model, images, target=[1, 3], n=n, cells=cells, p=p, seed=seed,
                    batch_size=128)
    grids, shifts = rise_grids(n, cells, p, (S, S), seed)
    masks = upsample_masks(grids, shifts, (S, S)).numpy()  # (n, S, S)
    for image, target, got in zip(images, (1, 3), maps):
        scores = model(masks[..., None] * image).numpy()[:, target]
        expected = np.tensordot(scores, masks, axes=1) / (n * p)
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)


def test_masks_are_the_papers_construction():
    n, cells, p, seed = 2000, 6, 0.3, 1
    size = (20, 27)
    grids, shifts = rise_grids(n, cells, p, size, seed)
    again = rise_grids(n, cells, p, size, seed)
    np.testing.assert_array_equal(grids, again[0])
    np.testing.assert_array_equal(shifts, again[1])
    assert not np.array_equal(grids, rise_grids(n, cells, p, size, seed + 1)[0])
    assert set(np.unique(grids)) == {0.0, 1.0} and abs(grids.mean() - p) < 0.01
    cell = (math.ceil(20 / cells), math.ceil(27 / cells))
    assert shifts.min() == 0 and (shifts.max(axis=0) == np.array(cell) - 1).all()
    masks = upsample_masks(grids[:50], shifts[:50], size).numpy()
    assert masks.shape == (50, 20, 27) and masks.min() >= 0 and masks.max() <= 1
    big = tf.image.resize(grids[:50, ..., None], ((cells + 1) * cell[0], (cells + 1) * cell[1]),
                          method="bilinear")[..., 0].numpy()
    for m, b, (dy, dx) in zip(masks, big, shifts[:50]):
        np.testing.assert_allclose(m, b[dy:dy + 20, dx:dx + 27], atol=1e-6)
    full = upsample_masks(grids, shifts, size).numpy()
    assert abs(full.mean() - p) < 0.01


def test_batch_seed_and_no_retrace():
    model = small_cnn(softmax=False, seed=7)
    p = probe(model)
    rng = np.random.default_rng(2)
    images = rng.uniform(0, 1, (2, S, S, 3)).astype(np.float32)
    batch = rise(model, images, target=[0, 2], n=200, batch_size=64)
    singles = [rise(model, images[0], target=0, n=200, batch_size=64),
               rise(model, images[1], target=2, n=200, batch_size=64)]
    np.testing.assert_allclose(batch, np.stack(singles), rtol=1e-5, atol=1e-7)
    assert not np.allclose(rise(model, images[0], target=0, n=200, batch_size=64, seed=1),
                           singles[0])
    before = p.trace_count()
    for target in (None, 1, 3):
        rise(model, rng.uniform(0, 1, (S, S, 3)), target=target, n=200, batch_size=64)
    assert p.trace_count() == before


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(n=0), ValueError, "n must be >= 1"),
    (dict(n=2.5), TypeError, "n must be an int"),
    (dict(cells=0), ValueError, "cells must be >= 1"),
    (dict(cells=33), ValueError, "cells must be <= the image's smaller side"),
    (dict(p=0.0), ValueError, r"p \(probability of keeping a cell\)"),
    (dict(p=1.5), ValueError, r"p \(probability"),
    (dict(p="half"), ValueError, r"p \(probability"),
    (dict(batch_size=0), ValueError, "batch_size must be >= 1"),
    (dict(seed=-1), ValueError, "seed must be >= 0"),
    (dict(seed=None), TypeError, "seed must be an int"),
])
def test_bad_arguments(small, kwargs, error, match):
    with unchanged(small), pytest.raises(error, match=match):
        rise(small, np.zeros((S, S, 3), np.float32), **kwargs)
