"""One meaning of ``target`` everywhere: classes, channels and regions of dense outputs, callables."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers

from nbviz import gradcam, guided_backprop, occlusion, saliency
from nbviz.methods import targets
from nbviz.methods.targets import box, mask
from nbviz.probe import probe
from tests.conftest import unchanged


@pytest.fixture(scope="module")
def dense():
    """A 1×1 conv "segmentation" model: output (6, 8, 3) = x @ kernel, known gradients."""
    kernel = np.random.default_rng(0).normal(0, 1, (2, 3)).astype(np.float32)
    inp = keras.Input((6, 8, 2), name="image")
    out = layers.Conv2D(3, 1, use_bias=False, name="seg")(inp)
    model = keras.Model(inp, out, name="seg_toy")
    model.get_layer("seg").set_weights([kernel[None, None]])
    return model, kernel


def test_box_with_channel(dense):
    model, kernel = dense
    image = np.random.default_rng(1).normal(0, 1, (6, 8, 2)).astype(np.float32)
    with unchanged(model):
        out = saliency(model, image, target=box(1, 2, 4, 5, channel=1))
    expected = np.zeros((6, 8, 2), np.float32)
    expected[1:4, 2:5] = kernel[:, 1]
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-7)


def test_box_without_channel_takes_the_top_channel_inside(dense):
    model, kernel = dense
    image = np.random.default_rng(2).normal(0, 1, (6, 8, 2)).astype(np.float32)
    totals = (image @ kernel)[0:3, 0:3].sum(axis=(0, 1))
    top = int(np.argmax(totals))
    out = saliency(model, image, target=box(0, 0, 3, 3))
    expected = np.zeros((6, 8, 2), np.float32)
    expected[0:3, 0:3] = kernel[:, top]
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-7)


def test_int_on_a_dense_output_is_a_channel_over_the_whole_map(dense):
    model, kernel = dense
    out = saliency(model, np.ones((6, 8, 2)), target=2)
    np.testing.assert_allclose(out, np.broadcast_to(kernel[:, 2], (6, 8, 2)), rtol=1e-6)


def test_mask_weights_and_input_sized_mask_on_a_smaller_map():
    kernel = np.random.default_rng(3).normal(0, 1, (2, 2, 1, 2)).astype(np.float32)
    inp = keras.Input((8, 8, 1), name="image")
    out = layers.Conv2D(2, 2, strides=2, use_bias=False, name="fcn")(inp)  # 4×4 score map
    model = keras.Model(inp, out)
    model.get_layer("fcn").set_weights([kernel])
    weights = np.zeros((4, 4), np.float32)
    weights[1, 2] = 2.0
    grad = saliency(model, np.zeros((8, 8, 1)), target=mask(weights, channel=0))
    expected = np.zeros((8, 8, 1), np.float32)
    expected[2:4, 4:6, 0] = 2.0 * kernel[:, :, 0, 0]
    np.testing.assert_allclose(grad, expected, rtol=1e-6)
    # a mask at the input's size is averaged down to the map (area resize)
    big = np.zeros((8, 8), np.float32)
    big[2:4, 4:6] = 1.0
    np.testing.assert_allclose(saliency(model, np.zeros((8, 8, 1)), target=mask(big, 0)),
                               expected / 2.0, rtol=1e-6)


def test_region_targets_in_other_methods(dense):
    model, kernel = dense
    image = np.random.default_rng(4).normal(0, 1, (6, 8, 2)).astype(np.float32)
    drops = occlusion(model, image, target=box(0, 0, 2, 2, channel=0), window=2, stride=2,
                      baseline=0.0)
    contrib = (image @ kernel[:, 0])[0:2, 0:2].sum()
    np.testing.assert_allclose(drops[0:2, 0:2], contrib, rtol=1e-5)
    np.testing.assert_allclose(drops[2:, :], 0, atol=1e-6)
    np.testing.assert_allclose(drops[:, 2:], 0, atol=1e-6)
    # guided backprop from a layer's map, and Grad-CAM of a region of the output map
    assert guided_backprop(model, image, layer="seg", target=box(0, 0, 3, 3)).shape == (6, 8, 2)
    cam = gradcam(model, image, layer="seg", target=box(0, 0, 3, 3, channel=1))
    assert cam.shape == (6, 8) and np.isfinite(cam).all()


def test_resolve_errors():
    with pytest.raises(ValueError, match="outside the output map of 6×8"):
        targets.resolve(box(0, 0, 7, 2), (1, 6, 8, 3), 1)
    with pytest.raises(ValueError, match="mask has shape \\(3, 3\\), the output map is 6×8"):
        targets.resolve(mask(np.ones((3, 3))), (1, 6, 8, 3), 1, input_size=(12, 16))
    with pytest.raises(ValueError, match="target 3 is out of range.*3 channels"):
        targets.resolve(box(0, 0, 1, 1, channel=3), (1, 6, 8, 3), 1)
    with pytest.raises(ValueError, match="target -1 is out of range"):
        targets.resolve(-1, (1, 10), 1)
    with pytest.raises(ValueError, match="3 class indices for a batch of 2"):
        targets.resolve([1, 2, 3], (1, 10), 2)
    with pytest.raises(ValueError, match="empty"):
        box(2, 2, 2, 5)
    with pytest.raises(TypeError, match="integers"):
        box(0.5, 0, 2, 2)
    with pytest.raises(ValueError, match="2-D"):
        mask(np.ones((2, 2, 2)))
    with pytest.raises(ValueError, match="not all zero"):
        mask(np.zeros((2, 2)))


def test_in_graph_scores_match_numpy():
    outputs = tf.constant(np.random.default_rng(5).normal(0, 1, (3, 7)).astype(np.float32))
    sel = targets.resolve(4, (1, 7), 3)
    np.testing.assert_allclose(targets.scores(outputs, None, *sel.tensors), outputs.numpy()[:, 4])
    top = targets.resolve(None, (1, 7), 3)
    np.testing.assert_allclose(targets.scores(outputs, None, *top.tensors),
                               outputs.numpy().max(axis=1))
    per_image = targets.resolve(np.array([0, 6, 3]), (1, 7), 3)
    np.testing.assert_allclose(targets.scores(outputs, None, *per_image.tensors),
                               outputs.numpy()[[0, 1, 2], [0, 6, 3]])


def test_softmax_models_explain_the_logit(small):
    """saliency of a softmax model equals the gradient of the pre-softmax logit."""
    p = probe(small)
    image = np.random.default_rng(6).uniform(-1, 1, (32, 32, 3)).astype(np.float32)
    x = tf.constant(image[None])
    with tf.GradientTape() as tape, p.logits():
        tape.watch(x)
        logit = p.forward(x)[0, 2]
    np.testing.assert_allclose(saliency(small, image, target=2), tape.gradient(logit, x)[0],
                               rtol=1e-4, atol=1e-7)


# --------------------------------------------------------------------------- every method, every kind

from nbviz import (  # noqa: E402
    activations, gradcam_plus_plus, guided_gradcam, integrated_gradients, smoothgrad)

METHODS = {
    "saliency": lambda m, x, **k: saliency(m, x, **k),
    "smoothgrad": lambda m, x, **k: smoothgrad(m, x, n=3, **k),
    "integrated_gradients": lambda m, x, **k: integrated_gradients(m, x, steps=4, **k),
    "guided_backprop": lambda m, x, **k: guided_backprop(m, x, **k),
    "gradcam": lambda m, x, **k: gradcam(m, x, **k),
    "gradcam_plus_plus": lambda m, x, **k: gradcam_plus_plus(m, x, **k),
    "guided_gradcam": lambda m, x, **k: guided_gradcam(m, x, **k),
    "occlusion": lambda m, x, **k: occlusion(m, x, window=8, stride=8, **k),
}


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_leaves_models_unchanged_also_when_raising(method, small, subclassed,
                                                                 multi_input):
    run = METHODS[method]
    rng = np.random.default_rng(7)
    for model, extra in ((small, None), (subclassed, None),
                         (multi_input, {"meta": np.ones(4, np.float32)})):
        image = rng.uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
        with unchanged(model):
            out = run(model, image, target=1, extra_inputs=extra)
            assert out.shape[:3] == (2, 32, 32) and np.isfinite(out).all()
            with pytest.raises(ValueError, match="fails inside"):
                run(model, image, extra_inputs=extra,
                    target=lambda o: (_ for _ in ()).throw(ValueError("fails inside the trace")))
            with pytest.raises(ValueError, match="out of range"):
                run(model, image, target=99, extra_inputs=extra)


def test_activations_leave_models_unchanged(small, subclassed, multi_input):
    image = np.zeros((32, 32, 3), np.float32)
    for model, layer, extra in ((small, "relu2", None), (subclassed, "block/conv", None),
                                (multi_input, "conv", {"meta": np.ones(4, np.float32)})):
        with unchanged(model):
            assert activations(model, image, layer, extra_inputs=extra).ndim == 3
