"""render: shapes, reproducibility, no retracing, octaves, callback and stop, no mutation, errors,
and a trained stripe detector whose visualisation shows its stripes."""

import threading
import time

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers

from nbviz import featvis as fv
from nbviz.probe import probe
from tests.models import multi_input_model

QUIET = dict(jitter=0, scale=None, rotate=0, pad=0)


def test_images_shape_range_and_batch_from_objective(small):
    img = fv.render(small, fv.channel("conv3", [1, 2, 3]), steps=3, size=24)
    assert img.shape == (3, 24, 24, 3) and img.dtype == np.float32
    assert img.min() >= 0 and img.max() <= 1 and img.std() > 0
    img = fv.render(small, fv.channel("conv3", 1), steps=2, size=(20, 28), batch=2, param="pixel")
    assert img.shape == (2, 20, 28, 3)
    # several seeds of one channel start from different images
    assert np.abs(img[0] - img[1]).mean() > 0.01


def test_same_seed_same_images_other_seed_other_images(small):
    opts = dict(steps=8, size=32, blur=(1.0, 0.0))
    a = fv.render(small, fv.channel("conv3", 2), seed=3, **opts)
    b = fv.render(small, fv.channel("conv3", 2), seed=3, **opts)
    c = fv.render(small, fv.channel("conv3", 2), seed=4, **opts)
    np.testing.assert_allclose(a, b, atol=1e-6)
    assert np.abs(a - c).mean() > 0.01


def test_one_trace_per_setting_and_none_on_rerun(small):
    p = probe(small)
    obj = fv.channel("conv3", 5) - 0.1 * fv.total_variation()
    before = p.trace_count("featvis.step")
    fv.render(small, obj, steps=12, size=32, blur=0.5)
    assert p.trace_count("featvis.step") == before + 1  # 12 steps, one trace
    fv.render(small, obj, steps=5, size=32, blur=0.5, lr=0.2, seed=9)  # lr and seed are tensors
    assert p.trace_count("featvis.step") == before + 1
    other = 0.5 * fv.channel("conv3", 9) - 0.3 * fv.total_variation()  # indices, weights too
    nine = fv.render(small, other, steps=3, size=32, blur=0.5)
    four = fv.render(small, 0.5 * fv.channel("conv3", 4) - 0.3 * fv.total_variation(), steps=3,
                     size=32, blur=0.5)
    assert p.trace_count("featvis.step") == before + 1
    assert np.abs(nine - four).max() > 0.01  # the index reached the compiled step
    fv.render(small, obj, steps=3, size=32, octaves=3, octave_scale=1.25, blur=0.5)
    assert p.trace_count("featvis.step") == before + 3  # two new octave sizes
    fv.render(small, obj, steps=3, size=32, octaves=3, octave_scale=1.25, blur=0.5)
    assert p.trace_count("featvis.step") == before + 3
    assert all(n == 1 for k, n in p.traces.items() if k[0] == "featvis.step")


def test_octave_sizes_grow_by_the_scale_to_the_final_size():
    assert fv.octave_sizes((224, 224), 3, 1.4) == [(114, 114), (160, 160), (224, 224)]
    assert fv.octave_sizes((30, 60), 2, 1.5) == [(20, 40), (30, 60)]
    assert fv.octave_sizes((32, 32), 1, 2.0) == [(32, 32)]


def test_octaves_stream_each_size_and_end_at_the_final_size(small):
    shapes, steps = [], []
    img = fv.render(small, fv.channel("conv3", 1), steps=4, size=32, octaves=3, octave_scale=1.5,
                    every=2, callback=lambda s, im, v: (steps.append(s), shapes.append(im.shape)),
                    param="pixel", **QUIET)
    assert img.shape == (1, 32, 32, 3)
    assert steps == [2, 4, 6, 8, 10, 12]
    assert [s[1] for s in shapes] == [14, 14, 21, 21, 32, 32]


def test_callback_gets_numpy_images_and_a_rising_value(small):
    calls = []
    fv.render(small, fv.channel("conv3", 7), steps=25, size=32, every=5, param="pixel",
              callback=lambda s, im, v: calls.append((s, im, v)), **QUIET)
    assert [c[0] for c in calls] == [5, 10, 15, 20, 25]
    for _, im, v in calls:
        assert isinstance(im, np.ndarray) and im.shape == (1, 32, 32, 3)
        assert 0 <= im.min() and im.max() <= 1 and isinstance(v, float)
    assert calls[-1][2] > calls[0][2]


def test_stop_from_another_thread_ends_within_one_step(small):
    stop = fv.Stop()
    seen = []
    at_set = []
    started = threading.Event()

    def callback(step, images, value):
        seen.append(step)
        if step == 3:
            started.set()

    def stopper():
        started.wait(30)
        at_set.append(len(seen))
        stop.set()

    thread = threading.Thread(target=stopper)
    thread.start()
    img = fv.render(small, fv.channel("conv3", 1), steps=100_000, size=32, every=1,
                    callback=callback, stop=stop)
    thread.join()
    assert stop.is_set() and img.shape == (1, 32, 32, 3)
    assert at_set and seen[-1] <= at_set[0] + 1, (at_set, seen[-3:])


def test_stop_returns_the_current_images(small):
    ev = threading.Event()  # a plain Event works too
    frames = []

    def callback(step, images, value):
        frames.append(images)
        if step == 14:
            ev.set()

    out = fv.render(small, fv.channel("conv3", 1), steps=10, size=32, every=2, octaves=2,
                    octave_scale=2.0, callback=callback, stop=ev)
    assert frames[-1].shape == (1, 32, 32, 3)  # stopped in the last octave
    np.testing.assert_allclose(out, frames[-1], atol=1e-6)
    ev.clear()
    frames.clear()
    out = fv.render(small, fv.channel("conv3", 1), steps=20, size=32, every=2, octaves=2,
                    octave_scale=2.0, callback=callback, stop=ev)
    assert frames[-1].shape == (1, 16, 16, 3) and out.shape == (1, 32, 32, 3)  # first octave
    np.testing.assert_allclose(out, tf.image.resize(frames[-1], (32, 32)).numpy(), atol=1e-5)
    stop = fv.Stop()
    stop.set()
    untouched = fv.render(small, fv.channel("conv3", 1), steps=50, size=32, stop=stop)
    start = fv.render(small, fv.channel("conv3", 1), steps=0, size=32)
    np.testing.assert_array_equal(untouched, start)
    stop.clear()
    assert not stop.is_set()


def test_sgd_and_normalisations_rise(small):
    for normalize in ("std", "l2", None):
        values = []
        fv.render(small, fv.channel("conv3", 4), steps=15, size=32, optimizer="sgd", lr=0.5,
                  normalize=normalize, param="pixel", every=1,
                  callback=lambda s, im, v: values.append(v), **QUIET)
        assert values[-1] > values[0], normalize


def test_relu_redirect_switches_on_a_dead_unit(assert_unchanged):
    keras.utils.set_random_seed(0)
    inp = keras.Input((16, 16, 3))
    # grey in: 27 * 0.1 * 0.5 - 2 < 0, off everywhere; white in: 2.7 - 2 > 0, reachable
    conv = layers.Conv2D(1, 3, activation="relu", name="off",
                         kernel_initializer=keras.initializers.Constant(0.1),
                         bias_initializer=keras.initializers.Constant(-2.0))
    model = keras.Model(inp, conv(inp))
    with assert_unchanged(model):
        stuck = fv.render(model, fv.channel("off", 0), steps=10, size=16, relu_redirect=False,
                          param="pixel", **QUIET)
        start = fv.render(model, fv.channel("off", 0), steps=0, size=16, param="pixel")
        np.testing.assert_array_equal(stuck, start)  # no gradient at all
        values = []
        fv.render(model, fv.channel("off", 0), steps=40, size=16, param="pixel", lr=0.2,
                  callback=lambda s, im, v: values.append(v), every=1, **QUIET)
    assert values[0] == 0 and values[-1] > 0
    assert model.get_layer("off").activation is keras.activations.relu


def test_models_of_every_kind_are_unchanged(small, subclassed, assert_unchanged):
    multi = multi_input_model()
    for model, obj in ((small, fv.logit(0) + fv.channel("relu2", 1)),
                       (subclassed, fv.channel("block/act", 2) + fv.logit(1)),
                       (multi, fv.channel("conv", 3) - fv.l2())):
        with assert_unchanged(model):
            img = fv.render(model, obj, steps=3, size=32, param="pixel", **QUIET)
        assert img.shape == (1, 32, 32, 3)
    with assert_unchanged(small):
        with pytest.raises(ValueError, match="no layer 'conv9'"):
            fv.render(small, fv.channel("conv9", 0), steps=1, size=32)
    with assert_unchanged(small):
        with pytest.raises(ValueError, match="out of range"):
            fv.render(small, fv.channel("conv3", 99), steps=1, size=32)


@pytest.mark.parametrize("options, error, match", [
    (dict(param="wavelet"), ValueError, "param"),
    (dict(optimizer="rmsprop"), ValueError, "optimizer"),
    (dict(normalize="max"), ValueError, "normalize"),
    (dict(steps=-1), ValueError, "steps"),
    (dict(steps=2.5), TypeError, "steps"),
    (dict(size=(32,)), TypeError, "size"),
    (dict(size=2), ValueError, "size"),
    (dict(batch=0), ValueError, "batch"),
    (dict(lr=0), ValueError, "lr"),
    (dict(octave_scale=0.5), ValueError, "octave_scale"),
    (dict(callback=3), TypeError, "callback"),
    (dict(preprocess="x*2"), TypeError, "preprocess"),
    (dict(stop=True), TypeError, "stop"),
    (dict(pad=40), ValueError, "pad"),
])
def test_bad_options_raise(small, options, error, match):
    with pytest.raises(error, match=match):
        fv.render(small, fv.channel("conv3", 1), **{"size": 32, "steps": 1, **options})


def test_bad_objectives_raise(small):
    with pytest.raises(TypeError, match="objective"):
        fv.render(small, "conv3:1", steps=1)
    with pytest.raises(ValueError, match="no terms"):
        fv.render(small, fv.l1() - fv.l1(), steps=1)
    with pytest.raises(ValueError, match="batch=2"):
        fv.render(small, fv.channel("conv3", [1, 2, 3]), batch=2, steps=1)


# --------------------------------------------------------------------------- a stripe detector


def _stripe_detector(size=32, period=4, k=7):
    """A CNN whose conv channel 0 is trained to respond like a vertical Gabor of ``period``
    pixels and channel 1 like the horizontal one (regression on white-noise images)."""
    rng = np.random.default_rng(0)
    r = np.arange(k) - k // 2
    yy, xx = np.meshgrid(r, r, indexing="ij")
    envelope = np.exp(-(xx ** 2 + yy ** 2) / 8.0)
    gabors = np.stack([envelope * np.cos(2 * np.pi * xx / period),
                       envelope * np.cos(2 * np.pi * yy / period)], -1)
    kernel = np.repeat(gabors[:, :, None, :], 3, axis=2).astype(np.float32) / 3
    x = rng.uniform(0, 1, (128, size, size, 3)).astype(np.float32)
    y = tf.nn.conv2d(x - 0.5, kernel, 1, "SAME").numpy()
    keras.utils.set_random_seed(0)
    inp = keras.Input((size, size, 3))
    h = layers.Rescaling(1.0, offset=-0.5, name="centre")(inp)
    pre = layers.Conv2D(2, k, padding="same", name="detect")(h)
    out = layers.Dense(2, name="out")(layers.GlobalAveragePooling2D()(layers.ReLU(name="relu")(pre)))
    trainer = keras.Model(inp, pre)
    trainer.compile(keras.optimizers.Adam(0.02), "mse")
    trainer.fit(x, y, epochs=25, batch_size=32, verbose=0)
    learned = trainer.get_layer("detect").get_weights()[0]
    assert np.corrcoef(learned.ravel(), kernel.ravel())[0, 1] > 0.99
    return keras.Model(inp, out)


def _peak(image):
    """(fy, fx) in cycles per image of the strongest non-zero frequency of the grey image."""
    g = image.mean(-1)
    power = np.abs(np.fft.fft2(g - g.mean())) ** 2
    power[0, 0] = 0
    iy, ix = np.unravel_index(np.argmax(power), power.shape)
    h, w = g.shape
    return (iy if iy <= h // 2 else iy - h), (ix if ix <= w // 2 else ix - w)


def test_a_trained_stripe_detector_is_visualised_as_its_stripes():
    model = _stripe_detector()
    images = fv.render(model, fv.channel("relu", [0, 1]), steps=60, size=32, param="pixel")
    fy, fx = _peak(images[0])  # vertical stripes of period 4: 8 cycles across, none down
    assert abs(fy) <= 1 and 7 <= abs(fx) <= 9, (fy, fx)
    fy, fx = _peak(images[1])  # horizontal stripes
    assert abs(fx) <= 1 and 7 <= abs(fy) <= 9, (fy, fx)
