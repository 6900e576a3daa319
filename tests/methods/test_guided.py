"""Guided ReLU and guided backprop: the closed form on a toy chain, every ReLU kind, MobileNetV2."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
import keras

from nbviz import guided_backprop, guided_relu, saliency
from nbviz.methods.guided import guided_swap
from nbviz.probe import probe
from tests.conftest import unchanged
from tests.methods.toys import ReluChain


def test_guided_relu_gradient_is_the_formula():
    x = tf.constant([-1.0, 0.5, 3.0, 7.0, 2.0, -0.1])
    dy = tf.constant([1.0, -2.0, 3.0, 4.0, 5.0, 6.0])
    for cap, expected in ((None, [0, 0, 3, 4, 5, 0]), (6.0, [0, 0, 3, 0, 5, 0])):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = guided_relu(x, max_value=cap)
        np.testing.assert_array_equal(tape.gradient(y, x, output_gradients=dy).numpy(), expected)
        np.testing.assert_array_equal(y.numpy(), np.clip(x.numpy(), 0, cap or np.inf))


@pytest.fixture(scope="module")
def chain():
    return ReluChain()


@pytest.mark.parametrize("kind", ["sequential", "nested", "subclassed"])
def test_guided_backprop_equals_the_closed_form(chain, kind):
    model = getattr(chain, kind)()
    images = np.random.default_rng(5).normal(0, 1.5, (6,) + chain.shape).astype(np.float32)
    with unchanged(model):  # image 0 has every path dead: a zero map and a warning
        with pytest.warns(RuntimeWarning, match=r"zero everywhere for images \[0\]"):
            guided = guided_backprop(model, images, target=1)
        with pytest.warns(RuntimeWarning, match=r"zero everywhere for images \[0\]"):
            plain = saliency(model, images, target=1)
    assert not guided[0].any() and not plain[0].any()
    gates_mattered = False
    for image, g, s in zip(images, guided, plain):
        np.testing.assert_allclose(g, chain.gradient(image, 1, guided=True), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(s, chain.gradient(image, 1, guided=False), rtol=1e-5, atol=1e-6)
        gates_mattered |= not np.allclose(g, s)
    assert gates_mattered
    # the chain exercises every gate: a unit above ReLU6's cap and one above the cap of 2
    zs = [chain.forward(image)[0] for image in images]
    assert any((z[2] > 6).any() for z in zs) and any((z[1] > 2).any() for z in zs)


def test_every_relu_kind_is_swapped(chain):
    for model, expected in (
        (chain.sequential(), {"d1", "relu_cap2", "d3", "act4"}),
        (chain.subclassed(), {"block/d1", "block/relu_cap2", "block/d3", "block/act4"}),
    ):
        with unchanged(model), probe(model).replace_activations(guided_swap) as swapped:
            assert set(swapped) == expected


def test_leaky_and_other_activations_are_left_alone():
    assert guided_swap(keras.layers.ReLU(negative_slope=0.1)) is None
    assert guided_swap(keras.layers.Activation("tanh")) is None
    assert guided_swap(keras.layers.Dense(2, activation="softmax")) is None
    assert guided_swap(keras.layers.Dense(2, activation=tf.nn.relu)) is not None


def test_mobilenetv2_relu6_guided_differs_from_saliency():
    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(weights=None, input_shape=(96, 96, 3), alpha=0.35,
                                           classes=5)
    relus = {l.name for l in model.layers if isinstance(l, keras.layers.ReLU)}
    assert len(relus) == 35 and all(l.max_value == 6 for l in model.layers
                                    if isinstance(l, keras.layers.ReLU))
    image = np.random.default_rng(0).uniform(-1, 1, (96, 96, 3)).astype(np.float32)
    with unchanged(model):
        with probe(model).replace_activations(guided_swap) as swapped:
            assert relus <= set(swapped)
        guided = guided_backprop(model, image)
    p = probe(model)
    x = tf.constant(image[None])
    with tf.GradientTape() as tape, p.logits():  # vanilla gradient, eagerly (no second trace)
        tape.watch(x)
        out = p.forward(x)
        score = tf.reduce_max(out, axis=1)
    plain = tape.gradient(score, x)[0].numpy()
    assert guided.shape == plain.shape == (96, 96, 3)
    assert np.abs(guided).max() > 0 and np.isfinite(guided).all()
    g, s = guided / np.abs(guided).max(), plain / np.abs(plain).max()
    corr = np.corrcoef(g.ravel(), s.ravel())[0, 1]
    assert np.abs(g - s).max() > 0.1 and corr < 0.95


def test_from_an_intermediate_layer_resnet50():
    """Seed 002's setting: guided backprop of ResNet50's conv5_block3_out (small input)."""
    model = keras.applications.ResNet50(weights=None, include_top=False, input_shape=(64, 64, 3))
    image = np.random.default_rng(1).uniform(0, 255, (64, 64, 3)).astype(np.float32)
    p = probe(model)
    with unchanged(model):
        a = guided_backprop(model, image, layer="conv5_block3_out", target=7,
                            preprocess=keras.applications.resnet50.preprocess_input)
        b = guided_backprop(model, image[::-1].copy(), layer="conv5_block3_out", target=9,
                            preprocess=keras.applications.resnet50.preprocess_input)
    assert a.shape == (64, 64, 3) and np.isfinite(a).all() and np.abs(a).max() > 0
    assert not np.allclose(a, b)
    assert p.trace_count("guided_backprop") == 1
    # the explained score is channel 7 of conv5_block3_out: check against an eager tape
    x = tf.constant(keras.applications.resnet50.preprocess_input(image.copy())[None])
    from nbviz.methods.guided import guided_swap as swap
    with tf.GradientTape() as tape, p.replace_activations(swap), p.capture("conv5_block3_out") as c:
        tape.watch(x)
        model(x)
        score = tf.reduce_sum(c["conv5_block3_out"][..., 7])
    np.testing.assert_allclose(a, tape.gradient(score, x)[0].numpy(), rtol=1e-3, atol=1e-6)
