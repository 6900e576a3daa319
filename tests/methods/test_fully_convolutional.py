"""fully_convolutional: same weights, a score map per class, native-size logits unchanged."""

from __future__ import annotations

import numpy as np
import pytest
import keras
from keras import layers

from nbviz.methods.receptive_field import fully_convolutional, receptive_field
from tests.conftest import unchanged


def logits(model, images, dense="predictions"):
    """Pre-softmax outputs: the features entering the Dense head times its weights, or, for a
    fully convolutional model, the output of its last convolution."""
    head = model.get_layer(dense)
    if isinstance(head, keras.layers.Dense):
        features = keras.Model(model.input, head.input)(images)
        kernel, bias = head.get_weights()
        return np.asarray(features) @ kernel + bias
    return np.asarray(keras.Model(model.input, head.output)(images))


def node_counts(model):
    return {id(l): len(l._inbound_nodes) for l in model._flatten_layers(include_self=True)}


@pytest.mark.parametrize("fixture", ["resnet50", "mobilenetv2"])
def test_native_size_logits_equal_the_original(fixture, request):
    model = request.getfixturevalue(fixture)
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (1, 224, 224, 3)).astype(np.float32)
    counts = node_counts(model)
    with unchanged(model):
        fcn = fully_convolutional(model)
    assert node_counts(model) == counts  # no layer of the model was called on a new tensor
    scores = logits(fcn, images)
    assert scores.shape == (1, 1, 1, 1000)
    np.testing.assert_allclose(scores[:, 0, 0], logits(model, images), atol=1e-4)
    if fixture != "resnet50":
        return
    # larger inputs give a map of class probabilities
    bigger = np.asarray(fcn(rng.uniform(-1, 1, (1, 256, 288, 3)).astype(np.float32)))
    assert bigger.shape == (1, 2, 3, 1000)
    np.testing.assert_allclose(bigger.sum(axis=-1), 1.0, atol=1e-4)
    # the head holds copies of the Dense weights; the backbone is the model's own layers
    dense, conv = model.get_layer("predictions"), fcn.get_layer("predictions")
    assert conv is not dense and conv.kernel.shape == (1, 1, 2048, 1000)
    before = dense.get_weights()[0].copy()
    conv.kernel.assign(np.zeros(conv.kernel.shape))
    np.testing.assert_array_equal(dense.get_weights()[0], before)
    backbone = fcn.get_layer("backbone").graph
    assert backbone.get_layer("conv1_conv") is model.get_layer("conv1_conv")
    assert len(fcn.weights) == len(model.weights)


def flatten_classifier():
    keras.utils.set_random_seed(3)
    inp = keras.Input((20, 20, 3))
    x = layers.Conv2D(4, 3, activation="relu")(inp)
    x = layers.MaxPooling2D(2)(x)  # 9×9×4
    x = layers.Flatten()(x)
    x = layers.Dense(8, activation="relu", name="fc1")(x)
    x = layers.Dropout(0.5)(x)
    out = layers.Dense(5, activation="softmax", name="fc2")(x)
    return keras.Model(inp, out)


def test_flatten_head_becomes_a_native_size_convolution():
    model = flatten_classifier()
    images = np.random.default_rng(1).uniform(0, 1, (2, 20, 20, 3)).astype(np.float32)
    with unchanged(model):
        fcn = fully_convolutional(model)
    assert fcn.get_layer("fc1").kernel.shape == (9, 9, 4, 8)
    np.testing.assert_allclose(np.asarray(fcn(images))[:, 0, 0], np.asarray(model(images)),
                               atol=1e-6)
    # one step right in the map = the classifier on the input shifted by the stride (2 pixels)
    wide = np.random.default_rng(2).uniform(0, 1, (1, 20, 26, 3)).astype(np.float32)
    out = np.asarray(fcn(wide))
    assert out.shape == (1, 1, 4, 5)
    np.testing.assert_allclose(out[0, 0, 3], np.asarray(model(wide[:, :, 6:26]))[0], atol=1e-6)
    rf = receptive_field(fcn, "fc2", input_shape=(20, 26))
    assert rf.size == (20, 20) and rf.stride == (2, 2)


def test_nested_backbone(nested):
    images = np.random.default_rng(4).uniform(-1, 1, (1, 64, 64, 3)).astype(np.float32)
    with unchanged(nested):
        fcn = fully_convolutional(nested)
    np.testing.assert_allclose(np.asarray(fcn(images))[:, 0, 0], np.asarray(nested(images)),
                               atol=1e-5)
    assert np.asarray(fcn(np.zeros((1, 96, 128, 3), np.float32))).shape == (1, 2, 3, 3)


def test_refuses_models_it_cannot_convert(subclassed):
    with pytest.raises(TypeError, match="subclassed"):
        fully_convolutional(subclassed)
    inp = keras.Input((16, 16, 3))
    conv_only = keras.Model(inp, layers.Conv2D(2, 3)(inp))
    with pytest.raises(ValueError, match="global pooling or Flatten"):
        fully_convolutional(conv_only)
    x = layers.GlobalAveragePooling2D()(layers.Conv2D(2, 3)(inp))
    odd = keras.Model(inp, layers.Dense(2)(layers.LayerNormalization()(x)))
    with unchanged(odd), pytest.raises(ValueError, match="LayerNormalization"):
        fully_convolutional(odd)
