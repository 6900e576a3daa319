"""Every model a user brings × every generic method of the table, plus the fuzz cases of
issue 14: each error names its argument and cause."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import tensorflow as tf

import nbviz
from nbviz.methods import targets as T
from nbviz.methods.table import METHODS
from nbviz.probe import Probe, probe
from tests.conftest import unchanged
from tests.models_zoo import zoo

#: every method the Explorer calls through its generic path; a new row joins automatically
GENERIC = [m for m in METHODS if m.runner is None]
#: the cheapest settings inside each control's limits (the values are compared, not the speed)
FAST = {"samples": 2, "ig_steps": 4, "window": 8, "stride": 8}
#: (method key, case) pairs that must raise, with the message they must say; none today: every
#: generic method handles every model of the zoo
EXPECTED_ERRORS: dict[tuple[str, str], str] = {
    # LRP has rules for the layers of classifiers; these models have layers without one
    ("lrp", "segmentation"): r"lrp: no rule for layer 'up' \(UpSampling2D\)",
    ("lrp", "lambda_relu"): r"lrp: no rule for layer .* \(Lambda\)",
    ("lrp", "channels_first"): r"lrp: no rule for layer .* with channels_first",
    ("ablationcam", "channels_first"): r"ablationcam: .*channels_first",
}


def run(m, model, x, **kwargs):
    options = {c.name: FAST.get(c.name, c.default) for c in m.controls}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-zero map warnings of CAMs
        return m.function_object()(model, x, **m.kwargs(options), **kwargs)


@pytest.fixture(scope="module")
def cases():
    sub, sub_twin = zoo.sub_fcn()
    first, last = zoo.channels_first_pair()
    lam, lam_twin = zoo.lambda_relu_pair()
    multi, single = zoo.multi_output_pair()
    return {
        # name: (model, image, twin computing the same function, target)
        "sub_fcn_96": (sub, zoo.image(96), sub_twin, None),
        "sub_fcn_128": (sub, zoo.image(128, seed=1), sub_twin, T.point(30, 41, channel=1)),
        "segmentation": (zoo.segmentation(), zoo.image(32, seed=2), None, T.point(10, 12, 1)),
        "channels_first": (first, zoo.image(32, seed=3), last, None),
        "lambda_relu": (lam, zoo.image(32, seed=4), lam_twin, 2),
        "multi_output": (multi, zoo.image(32, seed=5), single, 1),
        "grayscale": (zoo.grayscale(), zoo.image(32, channels=1, seed=6), None, 0),
    }


CASES = ["sub_fcn_96", "sub_fcn_128", "segmentation", "channels_first", "lambda_relu",
         "multi_output", "grayscale"]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("method", GENERIC, ids=[m.key for m in GENERIC])
def test_method_on_zoo_model(method, case, cases):
    model, x, twin, target = cases[case]
    if (method.key, case) in EXPECTED_ERRORS:
        with pytest.raises(ValueError, match=EXPECTED_ERRORS[method.key, case]):
            run(method, model, x, target=target)
        return
    with unchanged(model):
        out = run(method, model, x, target=target)
    h, w, c = x.shape
    assert out.shape in ((h, w), (h, w, c)), out.shape  # the image's size rules
    assert np.isfinite(out).all()
    if twin is not None:  # the same function computed the ordinary way: the same map
        expected = run(method, twin, x, target=target)
        scale = max(float(np.abs(expected).max()), 1e-12)
        np.testing.assert_allclose(out, expected, atol=2e-5 * scale, rtol=1e-4)
    if case == "segmentation":
        _segmentation_property(method, model, x, out)
    if case == "grayscale" and method.key == "saliency":
        with tf.GradientTape() as tape:
            xt = tf.constant(x[None])
            tape.watch(xt)
            score = model(xt)[0, 0]
        np.testing.assert_allclose(out, tape.gradient(score, xt)[0].numpy(), rtol=1e-4,
                                   atol=1e-7)


# maps that reach past the clicked cell's receptive field by construction
REACH_PAST_THE_FIELD = {
    "blur_ig": "the blurred path mixes each pixel with its neighbours",
    "xrai": "its regions are image segments, ranked as wholes",
    "rise": "random masks spread the score over every pixel they cover",
}


def _segmentation_property(method, model, x, out):
    """A point target on a dense output is explained inside that cell's receptive field only."""
    rf = nbviz.receptive_field(model, "classes")
    top, left, bottom, right = rf.clipped_box((10, 12))
    outside = np.ones(x.shape[:2], bool)
    if method.key == "occlusion":  # a window changes the score only if it overlaps the field
        margin = FAST["window"]
        outside[max(top - margin, 0):bottom + margin, max(left - margin, 0):right + margin] = False
    elif method.family == "CAM" and method.key != "guided_gradcam":
        # class activation maps are upsampled from the layer's grid: they stay in [0, 1]
        assert 0.0 <= out.min() and out.max() <= 1.0
        return
    elif method.key in REACH_PAST_THE_FIELD:
        return
    else:
        outside[top:bottom, left:right] = False
    values = np.abs(out if out.ndim == 2 else out.sum(-1))
    assert values[~outside].max() > 0
    assert values[outside].max() <= 1e-6 * values.max()


# --------------------------------------------------------------------------- any-size models


def test_dense_output_and_point():
    seg = zoo.segmentation()
    p = probe(seg)
    assert p.dense_output == (32, 32, 3)
    assert probe(zoo.channels_first_pair()[0]).dense_output is None
    assert T.point(3, 4, channel=2) == T.box(3, 4, 4, 5, channel=2)
    with pytest.raises(TypeError, match="point coordinates must be integers"):
        T.point(1.5, 2)


def test_probe_input_shape_is_respected():
    sub, _ = zoo.sub_fcn()
    p = probe(sub, input_shape=(96, 96, 3))
    assert p.image_input.shape == (96, 96, 3)
    assert p.input_size() == (96, 96)
    assert nbviz.saliency(p, zoo.image(96)).shape == (96, 96, 3)
    assert p.output_shape() == (1, 48, 48, 2)


def test_numeric_receptive_field_grows_its_input():
    model = zoo.sub_deep()
    rf = nbviz.receptive_field(model)  # subclassed: numeric; 29 px does not fit inside 32
    assert rf.method == "numeric"
    assert rf.size == (29, 29) and rf.stride == (8, 8)
    assert rf.input_shape == (64, 64)  # grown once, by doubling


def test_numeric_receptive_field_limit(monkeypatch):
    from nbviz.methods import receptive_field as R

    monkeypatch.setattr(R, "NUMERIC_MAX_SIZE", 32)
    with pytest.raises(ValueError, match="limit of 32 px"):
        nbviz.receptive_field(zoo.sub_deep(seed=1))


def test_too_small_image_names_the_smallest_size():
    model = zoo.valid_fcn()
    with unchanged(model):
        with pytest.raises(ValueError, match=r"too small .* smallest size that works is 9×9"):
            nbviz.saliency(model, zoo.image(3))
    assert nbviz.saliency(model, zoo.image(9), target=0).shape == (9, 9, 3)


def test_fixed_size_model_still_says_resize():
    from tests.models import small_cnn

    with pytest.raises(ValueError, match="resize it to 32×32"):
        nbviz.saliency(small_cnn(), zoo.image(48))


# --------------------------------------------------------------------------- channels_first


def test_channels_first_receptive_fields_match_the_twin():
    first, last = zoo.channels_first_pair()
    assert probe(first).image_input.channels == 3  # not the 32 of (3, 32, 32) read as H×W×C
    assert nbviz.receptive_field(first) == nbviz.receptive_field(last)
    a, b = nbviz.gradient_rf(first, (4, 5)), nbviz.gradient_rf(last, (4, 5))
    assert a.box == b.box
    np.testing.assert_allclose(a.map, b.map, atol=1e-6)
    x = zoo.image(32)
    acts = nbviz.activations(first, x, "conv2")
    assert acts.shape == (16, 16, 6)
    np.testing.assert_allclose(acts, nbviz.activations(last, x, "conv2"), atol=1e-5)


# --------------------------------------------------------------------------- guided ReLUs


def test_unreachable_relu_is_reported():
    model = zoo.hidden_relu_model()
    with pytest.warns(RuntimeWarning, match="1 ReLU ops were not guided"):
        nbviz.guided_backprop(model, zoo.image(32))
    lam, _ = zoo.lambda_relu_pair()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every ReLU of the Lambda net was reached: no warning
        nbviz.guided_backprop(lam, zoo.image(32), target=0)


# --------------------------------------------------------------------------- memory


def test_fresh_lambdas_reuse_one_compiled_function():
    from tests.models import small_cnn

    model = small_cnn(size=16)
    x = zoo.image(16)
    p = probe(model)
    before = p.function_count
    for k in range(100):
        nbviz.saliency(model, x, target=lambda out, c=1: out[:, c] * 2.0)
    assert p.function_count == before + 1
    assert p.trace_count("saliency") == 1


def test_unhashable_closures_are_bounded_by_the_lru():
    from tests.models import small_cnn

    model = small_cnn(size=16, seed=3)
    p = probe(model)
    p.max_functions = 4
    x = zoo.image(16)
    for k in range(10):
        weights = np.eye(4, dtype=np.float32)[k % 4]  # an array in the closure: keyed by identity
        nbviz.saliency(model, x, target=lambda out: tf.reduce_sum(out * weights, axis=-1))
    assert p.function_count <= 4
    assert len(p.cache("concrete")) <= 4


def test_clear_cache_clears_every_per_model_cache():
    from tests.models import small_cnn

    model = small_cnn(size=16, seed=4)
    nbviz.receptive_field(model)
    nbviz.saliency(model, zoo.image(16))
    old = probe(model)
    assert old.cache("receptive_field") and old.cache("targets") and old.function_count
    nbviz.clear_cache()
    assert probe(model) is not old
    assert not probe(model).cache("receptive_field") and probe(model).function_count == 0


# --------------------------------------------------------------------------- non-finite


def test_nan_target_and_preprocess_name_the_cause():
    from tests.models import small_cnn

    model = small_cnn(size=16, seed=5)
    x = zoo.image(16)
    with unchanged(model):
        with pytest.raises(ValueError, match="target function returned NaN"):
            nbviz.saliency(model, x, target=lambda out: out[:, 0] * np.nan)
        with pytest.raises(ValueError, match="preprocess returned 768 NaN"):
            nbviz.gradcam(model, x, preprocess=lambda im: im * np.nan)


def test_occlusion_stride_larger_than_window_covers_every_pixel():
    from tests.models import small_cnn

    model = small_cnn(size=32, seed=6)
    x = zoo.image(32)
    with pytest.warns(UserWarning, match="widened to 12×12"):
        wide = nbviz.occlusion(model, x, window=8, stride=12, target=1)
    assert np.isfinite(wide).all()
    np.testing.assert_allclose(wide, nbviz.occlusion(model, x, window=12, stride=12, target=1),
                               atol=1e-6)


# --------------------------------------------------------------------------- other backends


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_other_keras_backend_says_which_setting_to_change(backend):
    env = dict(os.environ, KERAS_BACKEND=backend, PYTHONPATH=os.getcwd())
    done = subprocess.run([sys.executable, "-c", "import nbviz"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: nbviz needs Keras' TensorFlow backend")
    assert f"{backend!r} backend" in last and "KERAS_BACKEND=tensorflow" in last


# --------------------------------------------------------------------------- clear errors


class _Mine(Exception):
    pass


def test_errors_name_the_argument():
    from nbviz.featvis import objectives as O
    from tests.models import small_cnn

    model = small_cnn(size=16, seed=7)
    x = zoo.image(16)
    with unchanged(model):
        with pytest.raises(ValueError, match="layer='image' is the model's input layer"):
            nbviz.guided_backprop(model, x, layer="image")
        with pytest.raises(ValueError, match="layer='image' is the model's input layer"):
            nbviz.gradcam(model, x, layer="image")
        mine = _Mine("my target broke")

        def broken(out):
            raise mine

        with pytest.raises(_Mine) as info:
            nbviz.saliency(model, x, target=broken)
        assert info.value is mine
        with pytest.raises(TypeError, match="seed must be an int"):
            nbviz.smoothgrad(model, x, seed="x")
        with pytest.raises(TypeError, match="baseline must be a number or an array"):
            nbviz.integrated_gradients(model, x, baseline="black")
        with pytest.raises(ValueError, match="baseline must be a number, 'blur', 'mean' or an array"):
            nbviz.occlusion(model, x, baseline="black")
        with pytest.raises(TypeError, match="preprocess must be a callable"):
            nbviz.saliency(model, x, preprocess=3)
    with pytest.raises(TypeError, match="scaled by a finite number, got nan"):
        O.channel("conv3", 0) * float("nan")
    with pytest.raises(ValueError, match="empty activation"):
        nbviz.tile_channels(np.zeros((4, 4, 0)))
    with pytest.raises(TypeError, match="fully_convolutional needs a Keras classifier model"):
        nbviz.fully_convolutional(None)


def test_explorer_click_takes_integers():
    from tests.models import small_cnn

    explorer = nbviz.Explorer(small_cnn(size=16, seed=8), zoo.image(16))
    with pytest.raises(ValueError, match=r"point must be \(y, x\) integer pixel coordinates"):
        explorer.click("a", 2)
    explorer.wait()
