"""The probe reads every kind of Keras model without changing it."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
import keras


from nbviz.probe import Probe, _wrap_call, probe
from tests.conftest import unchanged
from tests.models import mixed_precision_cnn

APPLICATIONS = ["resnet50", "mobilenetv2", "vgg16", "inceptionv3"]
SMALL = ["small", "nested", "subclassed", "multi_input", "mixed"]
# (model fixture, default Grad-CAM layer, a layer to capture, its shape with batch 1)
EXPECTED = {
    "resnet50": ("conv5_block3_out", "conv4_block6_out", (1, 14, 14, 1024)),
    "mobilenetv2": ("out_relu", "block_16_project_BN", (1, 7, 7, 320)),
    "vgg16": ("block5_pool", "block5_conv3", (1, 14, 14, 512)),
    "inceptionv3": ("mixed10", "mixed7", (1, 17, 17, 768)),
    "small": ("conv3", "relu2", (1, 16, 16, 16)),
    "nested": ("mobilenetv2_0.35_64/out_relu", "mobilenetv2_0.35_64/block_16_project", (1, 2, 2, 112)),
    "subclassed": ("block", "block/act", (1, 32, 32, 8)),
    "multi_input": ("conv", "conv", (1, 32, 32, 8)),
    "mixed": ("conv2", "conv1", (1, 32, 32, 8)),
}


@pytest.fixture(scope="module")
def mixed():
    return mixed_precision_cnn()


@pytest.fixture(params=APPLICATIONS + SMALL)
def named_model(request):
    return request.param, request.getfixturevalue(request.param)


def _batch(p: Probe, n=1, seed=0):
    h, w = p.input_size()
    return tf.random.stateless_uniform((n, h, w, p.image_input.channels), (seed, 1), -1.0, 1.0)


def _extra(name):
    return {"meta": np.ones(4, np.float32)} if name == "multi_input" else None


def test_every_probe_operation_leaves_the_model_unchanged(named_model):
    name, model = named_model
    default, captured, shape = EXPECTED[name]
    with unchanged(model):
        p = Probe(model)
        infos = p.layers()
        assert len({i.path for i in infos}) == len(infos)
        assert p.spatial_layer().path == default
        info = p.layer(captured)
        assert info.output_shape == shape
        assert p.layer(info.layer) == info and p.layer(info.path) == info
        x = _batch(p, 2)
        with tf.GradientTape() as tape, p.capture(captured) as cap, p.logits():
            out = p.forward(x, extra_inputs=_extra(name))
            score = tf.reduce_sum(out[:, 0])
        act = cap[info.path]
        assert tuple(act.shape) == (2,) + shape[1:]
        grad = tape.gradient(score, act)
        assert grad is not None and np.isfinite(grad.numpy()).all()
        with p.replace_activations(lambda layer: None):
            p.forward(x, extra_inputs=_extra(name))


def test_scopes_are_undone_when_the_block_raises(named_model):
    name, model = named_model
    _, captured, _ = EXPECTED[name]
    p = Probe(model)
    relu_like = lambda layer: tf.nn.relu6 if _has_relu(layer) else None  # noqa: E731
    with unchanged(model):
        with pytest.raises(RuntimeError, match="boom"):
            with p.capture(captured), p.logits(), p.replace_activations(relu_like) as swapped:
                assert swapped  # every model here has ReLU-like layers
                raise RuntimeError("boom")
        with pytest.raises(RuntimeError, match="inside"):
            with p.capture(captured):
                def fail(*a, **k):
                    raise RuntimeError("inside the forward pass")
                with _wrap_call(p.layer(captured).layer, lambda orig, *a, **k: fail()):
                    p.forward(_batch(p), extra_inputs=_extra(name))


def _has_relu(layer):
    act = getattr(layer, "activation", None)
    return getattr(act, "__name__", "") == "relu" or isinstance(layer, keras.layers.ReLU)


def test_capture_inside_tf_function_never_retraces(small):
    p = Probe(small)
    calls = []

    def grads(x):
        calls.append(1)
        with tf.GradientTape() as tape, p.capture("conv3") as cap, p.logits():
            out = p.forward(x)
            score = tf.reduce_sum(out[:, 1])
        return cap["conv3"], tape.gradient(score, cap["conv3"])

    f = p.compiled(("test-grads", "conv3", (32, 32)), grads)
    for seed in range(4):
        a, g = f(_batch(p, 1, seed))
        assert a.shape == (1, 8, 8, 16) and g.shape == a.shape
    assert p.traces[("test-grads", "conv3", (32, 32))] == 1 == len(calls)
    assert p.trace_count("test-grads") == 1
    # same function object on a second lookup
    assert p.compiled(("test-grads", "conv3", (32, 32)), grads) is f


def test_compiled_values_match_eager(small):
    p = Probe(small)
    x = _batch(p, 3, 7)
    f = p.compiled(("fwd",), lambda x: p.forward(x))
    np.testing.assert_allclose(f(x).numpy(), small(x).numpy(), rtol=1e-5, atol=1e-6)


def test_logits_drop_the_final_softmax(small, subclassed, nested):
    for model in (small, subclassed, nested):
        p = probe(model)
        assert p.ends_in_softmax
        x = _batch(p, 2, 3)
        probs = p.forward(x).numpy()
        with p.logits() as dropped:
            logits = p.forward(x).numpy()
        assert dropped
        np.testing.assert_allclose(tf.nn.softmax(logits).numpy(), probs, rtol=1e-4, atol=1e-6)
        assert not np.allclose(logits, probs)


def test_logits_is_a_no_op_without_softmax():
    from tests.models import small_cnn

    model = small_cnn(softmax=False)
    p = probe(model)
    assert not p.ends_in_softmax
    x = _batch(p)
    with p.logits() as dropped:
        out = p.forward(x).numpy()
    assert dropped is False
    np.testing.assert_array_equal(out, model(x).numpy())


def test_layer_paths_of_nested_and_subclassed(nested, subclassed):
    paths = [i.path for i in probe(nested).layers()]
    assert "mobilenetv2_0.35_64/Conv1" in paths and "head" in paths
    inner = nested.get_layer("mobilenetv2_0.35_64").get_layer("Conv1")
    assert probe(nested).layer(inner).path == "mobilenetv2_0.35_64/Conv1"
    assert probe(nested).layer("Conv1").path == "mobilenetv2_0.35_64/Conv1"  # unique name
    sub = {i.path: i for i in probe(subclassed).layers()}
    assert sub["block/conv"].kind == "conv" and sub["block/act"].kind == "activation"
    assert sub["gap"].kind == "global-pooling" and sub["head"].kind == "dense"


def test_kinds(resnet50):
    kinds = {i.path: i.kind for i in probe(resnet50).layers()}
    assert kinds["conv1_conv"] == "conv"
    assert kinds["pool1_pool"] == "pooling"
    assert kinds["conv1_relu"] == "activation"
    assert kinds["conv2_block1_add"] == "merge"
    assert kinds["avg_pool"] == "global-pooling"
    assert kinds["predictions"] == "dense"
    assert kinds["conv1_bn"] == "normalization"


def test_image_input_description(inceptionv3, multi_input):
    spec = probe(inceptionv3).image_input
    assert (spec.height, spec.width, spec.channels, spec.dtype) == (299, 299, 3, "float32")
    assert probe(multi_input).image_input.name == "image"
    free = keras.applications.MobileNetV2(weights=None, include_top=False, input_shape=(None, None, 3))
    p = probe(free)
    assert (p.image_input.height, p.image_input.width) == (None, None)
    shapes = {i.path: i.output_shape for i in p.layers(input_shape=(96, 128))}
    assert shapes["out_relu"] == (1, 3, 4, 1280)


def test_multi_input_choice_by_name():
    a = keras.Input((16, 16, 3), name="left")
    b = keras.Input((16, 16, 1), name="right")
    x = keras.layers.Concatenate()([keras.layers.Conv2D(2, 3)(a), keras.layers.Conv2D(2, 3)(b)])
    model = keras.Model([a, b], keras.layers.GlobalAveragePooling2D()(x))
    with pytest.raises(ValueError, match="several image inputs.*image_input"):
        Probe(model)
    p = Probe(model, image_input="right")
    assert p.image_input.channels == 1 and p.image_input.index == 1
    with pytest.raises(ValueError, match="extra_inputs=.*'left'"):
        p.forward(tf.zeros((1, 16, 16, 1)))
    out = p.forward(tf.zeros((2, 16, 16, 1)), extra_inputs={"left": np.zeros((16, 16, 3))})
    assert out.shape == (2, 4)
    with pytest.raises(ValueError, match="not a 4-D input.*left"):
        Probe(model, image_input="nope")


# --------------------------------------------------------------------------- bad input


def test_unknown_layer_lists_close_names(resnet50):
    with pytest.raises(ValueError, match=r"no layer 'conv5_blok3_out'.*'conv5_block3_out'"):
        probe(resnet50).layer("conv5_blok3_out")
    with pytest.raises(TypeError, match="name or a path"):
        probe(resnet50).layer(3.5)
    with pytest.raises(ValueError, match="not part of model"):
        probe(resnet50).layer(keras.layers.Dense(3))


def test_layer_without_spatial_output(resnet50):
    with pytest.raises(ValueError, match=r"'avg_pool'.*not a spatial.*conv5_block3_out"):
        probe(resnet50).spatial_layer("avg_pool")


def test_not_a_keras_model():
    with pytest.raises(TypeError, match="expected a Keras 3 model.*str"):
        Probe("resnet50")
    with pytest.raises(TypeError, match="got the layer 'd'.*Sequential"):
        Probe(keras.layers.Dense(3, name="d"))


def test_non_image_model():
    model = keras.Sequential([keras.Input((10,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match=r"no image input.*4-D.*\(None, 10\)"):
        Probe(model)


def test_unbuilt_subclassed_model():
    from tests.models import Subclassed

    with pytest.raises(ValueError, match="not been built.*input_shape"):
        Probe(Subclassed())
    p = Probe(Subclassed(), input_shape=(20, 20, 3))
    assert p.image_input.shape == (20, 20, 3)


@pytest.mark.parametrize(
    "image, error, match",
    [
        (np.zeros((32, 32)), ValueError, r"H×W×C or N×H×W×C, got shape \(32, 32\)"),
        (np.zeros((32, 32, 1)), ValueError, "1 channels.*expects 3"),
        (np.zeros((2, 31, 32, 3)), ValueError, "does not fit.*32×32"),
        (np.array([["a"]]), TypeError, "real numeric"),
        (np.full((32, 32, 3), np.nan), ValueError, "NaN or infinite"),
        (np.zeros((0, 32, 32, 3)), ValueError, "empty"),
    ],
)
def test_prepare_rejects_bad_images(small, image, error, match):
    with pytest.raises(error, match=match):
        probe(small).prepare(image)


def test_prepare_accepts_dtypes_and_preprocess(small):
    p = probe(small)
    batch, single = p.prepare(np.full((32, 32, 3), 200, np.uint8), preprocess=lambda x: x / 255.0)
    assert single and batch.shape == (1, 32, 32, 3) and batch.dtype == tf.float32
    np.testing.assert_allclose(batch.numpy(), 200 / 255.0, rtol=1e-6)
    batch, single = p.prepare(tf.ones((4, 32, 32, 3), tf.float16))
    assert not single and batch.shape == (4, 32, 32, 3)


def test_probe_cache(small, mixed):
    assert probe(small) is probe(small)
    assert probe(probe(small)) is probe(small)
    assert probe(mixed) is not probe(small)


def test_import_builds_nothing():
    import subprocess
    import sys

    code = (
        "import sys, keras\n"
        "built = []\n"
        "def no_download(*a, **k): raise AssertionError('import nbviz downloaded something')\n"
        "keras.utils.get_file = no_download\n"
        "keras.src.utils.file_utils.get_file = no_download\n"
        "init = keras.layers.Layer.__init__\n"
        "keras.layers.Layer.__init__ = lambda self, *a, **k: (built.append(self), init(self, *a, **k))[1]\n"
        "import nbviz\n"
        "assert not built, f'import nbviz built layers: {built}'\n"
        "assert 'ipywidgets' not in sys.modules, 'import nbviz must not import the widget stack'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=120)
