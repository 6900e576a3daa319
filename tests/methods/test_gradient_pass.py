"""One forward/backward pass for saliency, Grad-CAM, Grad-CAM++, activations and the outputs."""

from __future__ import annotations

import numpy as np
import pytest

import nbviz
import nbviz.demo
from nbviz.methods.gradient_pass import gradient_pass
from nbviz.probe import probe
from tests.conftest import unchanged
from tests.methods.toys import cam_toy


@pytest.fixture(scope="module")
def demo_model():
    return nbviz.demo.load_model()


@pytest.fixture(scope="module")
def demo_images():
    from nbviz.demo import shapes

    return shapes.scenes(4, seed=3).images


def test_closed_forms_on_the_toy():
    """Conv 1×1 -> GAP -> Dense(softmax): logits = mean(A) @ head, so the outputs are their
    softmax, d logit_t / dx = kernel @ head[:, t] / 36 at every pixel, and Grad-CAM is
    relu(A @ head[:, t] / 36) over its maximum; the default target is the top class."""
    model, kernel, bias, head = cam_toy()
    image = np.random.default_rng(4).normal(0, 1, (6, 6, 2)).astype(np.float32)
    acts = np.einsum("hwi,ic->hwc", image, kernel) + bias
    logits = acts.mean(axis=(0, 1)) @ head
    probs = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    top = int(logits.argmax())
    with unchanged(model):
        got = gradient_pass(model, image, layer="feat", outputs=True)
    assert set(got) == {"saliency", "gradcam", "gradcam_pp", "activations", "outputs"}
    np.testing.assert_allclose(got["outputs"], probs, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["activations"], acts, rtol=1e-5, atol=1e-5)
    grad = np.broadcast_to(kernel @ head[:, top] / 36.0, (6, 6, 2))
    np.testing.assert_allclose(got["saliency"], grad, rtol=1e-5, atol=1e-6)
    cam = np.maximum(acts @ (head[:, top] / 36.0), 0)
    np.testing.assert_allclose(got["gradcam"], cam / cam.max(), rtol=1e-5, atol=1e-6)


def test_each_member_equals_its_own_function_on_a_batch(demo_model, demo_images):
    images = demo_images[:3]
    layer = probe(demo_model).spatial_layer().path
    with unchanged(demo_model):
        got = gradient_pass(demo_model, images, target=[1, 2, 0], outputs=True)
    for key, fn in (("saliency", nbviz.saliency), ("gradcam", nbviz.gradcam),
                    ("gradcam_pp", nbviz.gradcam_plus_plus)):
        np.testing.assert_allclose(got[key], fn(demo_model, images, target=[1, 2, 0]), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["activations"], nbviz.activations(demo_model, images, layer), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["outputs"], np.asarray(demo_model(images.astype(np.float32))),
                               rtol=1e-5, atol=1e-6)


def test_only_the_members_asked_for(demo_model, demo_images):
    got = gradient_pass(demo_model, demo_images[0], members=("gradcam",))
    assert list(got) == ["gradcam"] and got["gradcam"].shape == demo_images.shape[1:3]
    with pytest.raises(ValueError, match=r"members must be some of \('saliency'"):
        gradient_pass(demo_model, demo_images[0], members=("gradcam", "lime"))


def test_saliency_alone_needs_no_spatial_layer_and_the_softmax_returns_on_its_axis():
    import keras

    # no spatial layer after the input: Flatten -> Dense(softmax); saliency is W[:, t] per pixel
    inp = keras.Input((4, 4, 1))
    flat = keras.layers.Flatten()(inp)
    dense = keras.Model(inp, keras.layers.Dense(3, activation="softmax", name="head")(flat))
    image = np.random.default_rng(0).normal(size=(4, 4, 1)).astype(np.float32)
    with unchanged(dense):
        got = gradient_pass(dense, image, members=("saliency",), outputs=True)
    w = dense.get_layer("head").kernel.numpy()
    top = int(np.argmax(np.asarray(dense(image[None]))[0]))
    np.testing.assert_allclose(got["saliency"], w[:, top].reshape(4, 4, 1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["saliency"], nbviz.saliency(dense, image), rtol=1e-6)
    np.testing.assert_allclose(got["outputs"], np.asarray(dense(image[None]))[0], rtol=1e-5, atol=1e-7)
    # a final Softmax over the rows (axis 1), not the last axis: the outputs are the model's
    inp = keras.Input((5, 5, 2))
    conv = keras.layers.Conv2D(3, 3, padding="same", name="conv")(inp)
    rows = keras.Model(inp, keras.layers.Softmax(axis=1)(conv))
    image = np.random.default_rng(1).normal(size=(5, 5, 2)).astype(np.float32)
    got = gradient_pass(rows, image, members=("gradcam",), layer="conv", outputs=True)
    np.testing.assert_allclose(got["outputs"], np.asarray(rows(image[None]))[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["outputs"].sum(axis=0), 1.0, rtol=1e-5)
