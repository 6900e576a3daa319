"""Activations of one or several layers, and tiling channels into one image."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from nbviz import activations, tile_channels
from nbviz.probe import probe
from tests.conftest import unchanged


def test_one_and_several_layers_match_a_submodel(small):
    images = np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
    sub = keras.Model(small.input, [small.get_layer("conv1").output,
                                     small.get_layer("relu2").output])
    conv1, relu2 = (t.numpy() for t in sub(images))
    with unchanged(small):
        one = activations(small, images[0], "conv1")
        both = activations(small, images, ["relu2", small.get_layer("conv1")])
    assert one.shape == (32, 32, 8)
    np.testing.assert_allclose(one, conv1[0], rtol=1e-5, atol=1e-6)
    assert list(both) == ["relu2", "conv1"]
    np.testing.assert_allclose(both["relu2"], relu2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(both["conv1"], conv1, rtol=1e-5, atol=1e-6)


def test_nested_and_subclassed_paths(nested, subclassed):
    image = np.random.default_rng(1).uniform(-1, 1, (64, 64, 3)).astype(np.float32)
    with unchanged(nested):
        out = activations(nested, image, "mobilenetv2_0.35_64/block_16_project")
    assert out.shape == (2, 2, 112)
    image = image[:32, :32]
    with unchanged(subclassed):
        found = activations(subclassed, image, ["block/act", "stem"])
    stem = subclassed.stem(image[None]).numpy()[0]
    act = tf.nn.relu(subclassed.block.conv(stem[None]))[0].numpy()
    np.testing.assert_allclose(found["stem"], stem, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(found["block/act"], act, rtol=1e-5, atol=1e-6)


def test_no_retracing_for_new_images(small):
    p = probe(small)
    rng = np.random.default_rng(2)
    activations(small, rng.uniform(size=(32, 32, 3)), ["conv3"])
    before = p.trace_count()
    activations(small, rng.uniform(size=(32, 32, 3)), ["conv3"])
    assert p.trace_count() == before


def test_bad_layers(small):
    with unchanged(small):
        with pytest.raises(ValueError, match="no layer 'conv7'"):
            activations(small, np.zeros((32, 32, 3)), "conv7")
        with pytest.raises(ValueError, match="layers is empty"):
            activations(small, np.zeros((32, 32, 3)), [])
        with pytest.raises(ValueError, match="H×W×C or N×H×W×C"):
            activations(small, np.zeros((1, 1, 32, 32, 3)), "conv1")


def test_tile_channels_layout():
    a = np.zeros((2, 3, 5), np.float32)
    for k in range(5):
        a[:, :, k] = k
        a[0, 0, k] = k + 10  # per channel min k, max k + 10
    tiled = tile_channels(a)  # 3 columns, 2 rows, padding 1
    assert tiled.shape == (2 * 2 + 1, 3 * 3 + 2)
    for k in range(5):
        r, c = divmod(k, 3)
        tile = tiled[r * 3:r * 3 + 2, c * 4:c * 4 + 3]
        np.testing.assert_array_equal(tile, (a[:, :, k] - k) / 10)
    np.testing.assert_array_equal(tiled[2, :], 0)  # gap row
    np.testing.assert_array_equal(tiled[3:, 8:], 0)  # missing sixth tile
    raw = tile_channels(a, columns=5, normalize=False, padding=0)
    assert raw.shape == (2, 15)
    np.testing.assert_array_equal(raw[:, 6:9], a[:, :, 2])
    flat = tile_channels(np.ones((2, 2, 1)))  # a constant channel becomes 0
    np.testing.assert_array_equal(flat, 0)
    with pytest.raises(ValueError, match="h×w×c"):
        tile_channels(np.zeros((4, 4)))
    with pytest.raises(ValueError, match="columns"):
        tile_channels(a, columns=0)
