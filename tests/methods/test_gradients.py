"""Saliency, SmoothGrad, integrated gradients: closed forms, completeness, no retracing, errors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import tensorflow as tf

from nbviz import integrated_gradients, saliency, smoothgrad
from nbviz.probe import probe
from tests.conftest import unchanged
from tests.methods.toys import dead_toy, linear_toy, smooth_toy


@pytest.fixture(scope="module")
def linear():
    return linear_toy()


def _logits(model, images):
    p = probe(model)
    with p.logits():
        return p.forward(tf.constant(np.asarray(images, np.float32))).numpy()


def test_saliency_of_a_linear_model_is_its_weights(linear):
    model, w, _ = linear
    images = np.random.default_rng(0).normal(0, 1, (2, 10, 12, 2)).astype(np.float32)
    with unchanged(model):
        maps = saliency(model, images, target=1)
        top = saliency(model, images[0])  # None: the top class of that image
    np.testing.assert_allclose(maps, np.broadcast_to(w[..., 1], maps.shape), rtol=1e-5, atol=1e-6)
    cls = int(np.argmax(_logits(model, images[:1])[0]))
    np.testing.assert_allclose(top, w[..., cls], rtol=1e-5, atol=1e-6)


def test_smoothgrad_of_a_linear_model_is_its_weights(linear):
    model, w, _ = linear
    image = np.random.default_rng(1).normal(0, 1, (10, 12, 2)).astype(np.float32)
    out = smoothgrad(model, image, target=0, n=5, noise=0.5)
    np.testing.assert_allclose(out, w[..., 0], rtol=1e-4, atol=1e-5)


def test_smoothgrad_is_the_mean_noisy_gradient(small):
    """On a ReLU CNN: reproducible per seed, differs across seeds, and equals the mean of the
    saliency maps of noisy copies drawn with the documented noise scale (checked statistically:
    closer to saliency of noisy copies than to the clean saliency)."""
    image = np.random.default_rng(2).uniform(-1, 1, (32, 32, 3)).astype(np.float32)
    p = probe(small)
    with unchanged(small):
        a = smoothgrad(small, image, target=1, n=8, seed=3)
        before = p.trace_count()
        b = smoothgrad(small, image, target=1, n=8, seed=3)
        c = smoothgrad(small, image[::-1], target=2, n=8, seed=4, noise=0.2)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    assert p.trace_count() == before  # new seed, noise, class and image: same trace
    # noise 0: every copy is the image itself
    still = smoothgrad(small, image, target=1, n=4, noise=0.0)
    np.testing.assert_allclose(still, saliency(small, image, target=1), rtol=1e-4, atol=1e-7)
    # the noise scale is a fraction of the range (max - min = 2 here): sigma = 0.3
    rng = np.random.default_rng(5)
    noisy = image + rng.normal(0, 0.15 * 2.0, (64,) + image.shape).astype(np.float32)
    reference = saliency(small, noisy, target=1).mean(0)
    big = smoothgrad(small, image, target=1, n=64, noise=0.15)
    clean = saliency(small, image, target=1)
    assert np.linalg.norm(big - reference) < 0.6 * np.linalg.norm(clean - reference)


def test_integrated_gradients_completeness_relu_cnn(small):
    image = np.random.default_rng(6).uniform(-1, 1, (32, 32, 3)).astype(np.float32)
    with unchanged(small):
        attributions = integrated_gradients(small, image, steps=64, batch_size=24)
    logits = _logits(small, np.stack([image, np.zeros_like(image)]))
    cls = int(np.argmax(logits[0]))
    expected = logits[0, cls] - logits[1, cls]
    assert attributions.shape == (32, 32, 3)
    assert abs(attributions.sum() - expected) <= 0.05 * abs(expected)


def test_integrated_gradients_completeness_smooth_model_and_baseline():
    model = smooth_toy()
    rng = np.random.default_rng(7)
    images = rng.normal(0, 1, (2, 8, 8, 3)).astype(np.float32)
    baseline = rng.normal(0, 0.2, (8, 8, 3)).astype(np.float32)
    out = integrated_gradients(model, images, target=[2, 0], steps=16, baseline=baseline,
                               batch_size=5)  # 16 steps in padded batches of 5
    logits = _logits(model, np.concatenate([images, baseline[None]]))
    for i, cls in enumerate([2, 0]):
        expected = logits[i, cls] - logits[2, cls]
        assert abs(out[i].sum() - expected) <= 0.01 * abs(expected)
    assert probe(model).trace_count("integrated_gradients") == 1


def test_integrated_gradients_of_a_linear_model(linear):
    model, w, _ = linear
    image = np.random.default_rng(8).normal(0, 1, (10, 12, 2)).astype(np.float32)
    out = integrated_gradients(model, image, target=1, steps=4, baseline=0.5)
    np.testing.assert_allclose(out, (image - 0.5) * w[..., 1], rtol=1e-4, atol=1e-5)


def test_no_retracing_when_image_or_class_changes(small):
    p = probe(small)
    rng = np.random.default_rng(9)
    for i, target in enumerate((None, 0, 3, None, 1)):
        saliency(small, rng.uniform(-1, 1, (32, 32, 3)).astype(np.float32), target=target)
        if i == 0:
            before = p.trace_count()
    assert p.trace_count() == before
    assert p.traces[("saliency", (1, 32, 32, 3), ("vector",), None)] == 1


def test_zero_gradient_gives_zeros_and_a_warning():
    model = dead_toy()
    image = np.ones((8, 8, 3), np.float32)
    for method in (saliency, smoothgrad, integrated_gradients):
        with pytest.warns(RuntimeWarning, match="zero everywhere"):
            out = method(model, image, target=0)
        assert out.shape == (8, 8, 3) and not out.any() and np.isfinite(out).all()


def test_a_live_map_gives_no_warning(linear):
    model, _, _ = linear
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        saliency(model, np.ones((10, 12, 2)), target=0)


def test_callable_target(linear):
    model, w, _ = linear
    image = np.random.default_rng(10).normal(0, 1, (10, 12, 2))
    out = saliency(model, image, target=lambda logits: logits[:, 0] - 2 * logits[:, 1])
    np.testing.assert_allclose(out, w[..., 0] - 2 * w[..., 1], rtol=1e-5, atol=1e-5)


def test_any_dtype_and_preprocess(linear):
    model, w, _ = linear
    raw = np.random.default_rng(11).integers(0, 256, (10, 12, 2)).astype(np.float32)
    before = raw.copy()
    in_place = lambda x: np.multiply(x, 1 / 255.0, out=x)  # noqa: E731  (like preprocess_input)
    out = integrated_gradients(model, raw, target=0, steps=2, preprocess=in_place)
    np.testing.assert_array_equal(raw, before)  # preprocess got a copy
    np.testing.assert_allclose(out, raw / 255.0 * w[..., 0], rtol=1e-4, atol=1e-5)
    for dtype in (np.uint8, np.int64, np.float64, bool):
        out = integrated_gradients(model, raw.astype(dtype), target=0, steps=2)
        np.testing.assert_allclose(out, raw.astype(dtype).astype(np.float32) * w[..., 0],
                                   rtol=1e-4, atol=1e-4)


def test_bad_input(linear, small):
    model, _, _ = linear
    with unchanged(model):
        with pytest.raises(ValueError, match="H×W×C or N×H×W×C"):
            saliency(model, np.zeros((10, 12)))
        with pytest.raises(ValueError, match="3 channels.*expects 2"):
            saliency(model, np.zeros((10, 12, 3)))
        with pytest.raises(ValueError, match="target 5 is out of range.*2 classes"):
            saliency(model, np.zeros((10, 12, 2)), target=5)
        with pytest.raises(ValueError, match="NaN or infinite"):
            smoothgrad(model, np.full((10, 12, 2), np.nan))
        with pytest.raises(ValueError, match="NaN or infinite"):
            integrated_gradients(model, np.full((10, 12, 2), np.inf))
        with pytest.raises(ValueError, match="n \\(noisy copies\\)"):
            smoothgrad(model, np.zeros((10, 12, 2)), n=0)
        with pytest.raises(ValueError, match="baseline of shape"):
            integrated_gradients(model, np.zeros((10, 12, 2)), baseline=np.zeros(5))
        with pytest.raises(TypeError, match="target must be None"):
            saliency(model, np.zeros((10, 12, 2)), target="cat")
        with pytest.raises(ValueError, match="box or mask target needs a dense"):
            from nbviz.methods.targets import box
            saliency(model, np.zeros((10, 12, 2)), target=box(0, 0, 2, 2))
    # a target callable that fails inside the trace leaves the model unchanged too
    with unchanged(small), pytest.raises(ValueError, match="boom"):
        saliency(small, np.zeros((32, 32, 3)), target=lambda out: (_ for _ in ()).throw(
            ValueError("boom")))


def test_saved_and_reloaded_model(linear, tmp_path):
    import keras

    model, w, _ = linear
    path = tmp_path / "linear.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(saliency(loaded, np.ones((10, 12, 2)), target=1), w[..., 1],
                               rtol=1e-5, atol=1e-6)


def test_mixed_precision_matches_float32():
    import keras
    from nbviz import gradcam, guided_backprop
    from tests.models import mixed_precision_cnn

    mixed = mixed_precision_cnn()
    plain = keras.models.clone_model(mixed, clone_function=_float32_layer)
    plain.set_weights(mixed.get_weights())
    image = np.random.default_rng(12).uniform(0, 1, (32, 32, 3)).astype(np.float32)
    for method in (saliency, guided_backprop, gradcam):
        with unchanged(mixed):
            a = method(mixed, image, target=1)
        b = method(plain, image, target=1)
        assert a.dtype == np.float32 and np.isfinite(a).all()
        assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.99


def _float32_layer(layer):
    config = layer.get_config()
    config["dtype"] = "float32"
    return layer.__class__.from_config(config)
