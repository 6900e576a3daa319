"""Objectives: exact arithmetic without mutation, analytic values, errors, and every objective
rising under gradient ascent."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from nbviz import featvis as fv
from nbviz.featvis import objectives as O
from nbviz.featvis.objectives import Context


# --------------------------------------------------------------------------- arithmetic


def test_arithmetic_is_exact_and_builds_new_objects():
    a = fv.channel("conv3", 1)
    b = fv.l1()
    a_terms, b_terms = a.terms, b.terms
    c = 2 * a - 0.5 * b
    assert c.terms == ((2.0, O.Channel("conv3", 1)), (-0.5, O.Norm(1, None, 0.5)))
    assert (a + b).terms == ((1.0, O.Channel("conv3", 1)), (1.0, O.Norm(1, None, 0.5)))
    assert (a * 3).terms == ((3.0, O.Channel("conv3", 1)),)
    assert (a / 4).terms == ((0.25, O.Channel("conv3", 1)),)
    assert (-a).terms == ((-1.0, O.Channel("conv3", 1)),)
    assert a + a == 2 * a
    assert (a - a).terms == ()
    assert sum([a, b, a]) == 2 * a + b
    assert 3 * (a + b) - a == 2 * a + 3 * b
    # operands untouched
    assert a.terms is a_terms and b.terms is b_terms
    assert a.terms == ((1.0, O.Channel("conv3", 1)),)
    assert c is not a and c is not b


def test_objectives_are_frozen_hashable_values():
    a = fv.neuron("conv1", 2, y=1, x=3)
    assert a == fv.neuron("conv1", 2, y=1, x=3)
    assert hash(a) == hash(fv.neuron("conv1", 2, y=1, x=3))
    assert a != fv.neuron("conv1", 2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.terms = ()
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.terms[0][1].channel = 5
    assert "neuron('conv1', 2, y=1, x=3)" in repr(a)
    assert repr(fv.channel("c", 1) - 0.1 * fv.total_variation()) == \
        "Objective(channel('c', 1) - 0.1 * total_variation())"


def test_arithmetic_with_non_numbers_raises():
    a = fv.channel("conv3", 1)
    for bad in ("x", None, True, float("nan"), [1]):
        with pytest.raises(TypeError):
            a * bad
    with pytest.raises(TypeError):
        a + 1
    with pytest.raises(TypeError):
        a - 2.0
    with pytest.raises(ZeroDivisionError):
        a / 0


def test_batch_is_the_lcm_of_index_sequences():
    assert fv.channel("c", 3).batch == 1
    assert fv.channel("c", [3, 7, 9]).batch == 3
    assert (fv.channel("c", [1, 2]) + fv.logit([0, 1, 2])).batch == 6
    assert fv.channel("c", np.array([1, 2])).terms[0][1].channel == (1, 2)


@pytest.mark.parametrize("make, error", [
    (lambda: fv.channel("c", -1), ValueError),
    (lambda: fv.channel("c", 1.5), TypeError),
    (lambda: fv.channel("c", []), ValueError),
    (lambda: fv.channel(3, 1), TypeError),
    (lambda: fv.channel("", 1), ValueError),
    (lambda: fv.neuron("c", 1, y=-1), TypeError),
    (lambda: fv.layer(), ValueError),
    (lambda: fv.logit(True), TypeError),
    (lambda: fv.direction("c", [0, 0]), ValueError),
    (lambda: fv.direction("c", [[1, 2]]), ValueError),
])
def test_bad_arguments_raise_clear_errors(make, error):
    with pytest.raises(error):
        make()


# --------------------------------------------------------------------------- analytic values


def _ctx(images=None, logits=None, **acts):
    if images is None:
        n = len(next(iter(acts.values()))) if acts else 1
        images = np.zeros((n, 4, 4, 3), np.float32)
    return Context(tf.constant(images), {k: tf.constant(v) for k, v in acts.items()},
                   None if logits is None else tf.constant(logits))


def _value(obj, ctx):
    return obj.value(ctx).numpy()


def test_activation_terms_match_numpy():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(3, 5, 6, 4)).astype(np.float32)
    ctx = _ctx(images=np.zeros((3, 8, 8, 3), np.float32), a=a, b=a[:, :2, :3] * 2)
    np.testing.assert_allclose(_value(fv.neuron("a", 2), ctx), a[:, 2, 3, 2], rtol=1e-6)
    np.testing.assert_allclose(_value(fv.neuron("a", 1, y=4, x=0), ctx), a[:, 4, 0, 1], rtol=1e-6)
    np.testing.assert_allclose(_value(fv.channel("a", 3), ctx), a[..., 3].mean(axis=(1, 2)),
                               rtol=1e-5)
    per_item = _value(fv.channel("a", [0, 2]), ctx)  # items 0, 1, 2 -> channels 0, 2, 0
    np.testing.assert_allclose(per_item, [a[0, ..., 0].mean(), a[1, ..., 2].mean(),
                                          a[2, ..., 0].mean()], rtol=1e-5)
    b = a[:, :2, :3] * 2
    np.testing.assert_allclose(_value(fv.layer("a", "b"), ctx),
                               (a ** 2).mean(axis=(1, 2, 3)) + (b ** 2).mean(axis=(1, 2, 3)),
                               rtol=1e-5)
    np.testing.assert_allclose(_value(fv.layer("a", squared=False), ctx), a.mean(axis=(1, 2, 3)),
                               rtol=1e-5, atol=1e-7)
    v = np.array([3.0, 0.0, 4.0, 0.0])
    np.testing.assert_allclose(_value(fv.direction("a", v), ctx),
                               (a @ (v / 5)).mean(axis=(1, 2)), rtol=1e-5)
    np.testing.assert_allclose(_value(fv.l2("a", constant=1.0), ctx),
                               ((a - 1) ** 2).mean(axis=(1, 2, 3)), rtol=1e-5)
    combo = 2 * fv.channel("a", 3) - 0.5 * fv.neuron("a", 2)
    np.testing.assert_allclose(_value(combo, ctx),
                               2 * a[..., 3].mean(axis=(1, 2)) - 0.5 * a[:, 2, 3, 2], rtol=1e-5)


def test_dense_outputs_and_logits():
    d = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], np.float32)
    ctx = _ctx(d=d, logits=d * 10)
    np.testing.assert_array_equal(_value(fv.neuron("d", 1), ctx), [2.0, 5.0])
    np.testing.assert_array_equal(_value(fv.channel("d", 2), ctx), [3.0, 6.0])
    np.testing.assert_array_equal(_value(fv.logit([0, 2]), ctx), [10.0, 60.0])
    shape_of = {"d": (None, 3), "a": (None, 5, 6, 4)}.get
    with pytest.raises(ValueError, match="no spatial axes"):
        fv.neuron("d", 1, y=0, x=0).check(shape_of, (None, 3))
    with pytest.raises(ValueError, match="out of range"):
        fv.channel("d", 3).check(shape_of, (None, 3))
    with pytest.raises(ValueError, match="out of range"):
        fv.logit(7).check(shape_of, (None, 3))
    with pytest.raises(ValueError, match="outside layer"):
        fv.neuron("a", 1, y=5).check(shape_of, None)
    with pytest.raises(ValueError, match="4 channels"):
        fv.direction("a", [1, 2, 3]).check(shape_of, None)
    (fv.neuron("a", 3, y=4, x=5) + fv.logit(2) + fv.direction("a", [1, 2, 3, 4])).check(
        shape_of, (None, 3))  # all in range


def test_indices_weights_and_vectors_are_parameters_not_structure():
    a = 2 * fv.channel("c", [1, 2]) - 0.5 * fv.neuron("c", 3, y=1) + fv.direction("c", [3, 4])
    b = 3 * fv.channel("c", [5, 6]) - 0.1 * fv.neuron("c", 0) + fv.direction("c", [1, 0])
    assert a.structure() == b.structure()
    assert a.structure() != fv.channel("c", [1, 2, 3]).structure()
    weights, channels, neuron_channel, yx, vector = a.params()
    np.testing.assert_array_equal(weights, [2.0, -0.5, 1.0])
    np.testing.assert_array_equal(channels, [1, 2])
    np.testing.assert_array_equal(neuron_channel, [3])
    np.testing.assert_array_equal(yx, [1, -1])
    np.testing.assert_allclose(vector, [0.6, 0.8])


def test_image_regularisers_are_exact():
    img = np.zeros((1, 2, 3, 3), np.float32)
    img[0, :, 1, :] = 1.0  # a bright column in the middle
    ctx = _ctx(images=img)
    # horizontal differences: |0-1| + |1-0| per row and channel -> 2*2*3 / (2*2*3) = 1; vertical: 0
    np.testing.assert_allclose(_value(fv.total_variation(), ctx), [1.0])
    np.testing.assert_allclose(_value(fv.l1(), ctx), [0.5])
    np.testing.assert_allclose(_value(fv.l1(constant=0.0), ctx), [1 / 3])
    np.testing.assert_allclose(_value(fv.l2(constant=0.0), ctx), [1 / 3])
    np.testing.assert_allclose(_value(fv.l2(), ctx), [0.25])


def test_diversity_is_minus_mean_cosine_similarity_of_gram_matrices():
    same = np.ones((3, 2, 2, 2), np.float32)
    np.testing.assert_allclose(_value(fv.diversity("a"), _ctx(a=same)), [-1.0] * 3, rtol=1e-6)
    apart = np.zeros((2, 1, 1, 2), np.float32)
    apart[0, 0, 0, 0] = 1.0  # gram e00
    apart[1, 0, 0, 1] = 1.0  # gram e11: orthogonal
    np.testing.assert_allclose(_value(fv.diversity("a"), _ctx(a=apart)), [0.0, 0.0], atol=1e-7)
    np.testing.assert_allclose(_value(fv.diversity("a"), _ctx(a=same[:1])), [0.0])


# --------------------------------------------------------------------------- gradient ascent


def assert_gradient_ascent(model, objective, *, steps=50, batch=None, param="pixel", lr=0.05,
                           margin=0.0, **options):
    """Render ``objective`` for ``steps`` steps and assert that it rose: the mean of the last five
    values exceeds the mean of the first five (plus ``margin``) and the final value the first."""
    values = []
    fv.render(model, objective, steps=steps, batch=batch, param=param, lr=lr, seed=0,
              callback=lambda step, images, value: values.append(value), every=1, **options)
    assert len(values) == steps
    first, last = np.mean(values[:5]), np.mean(values[-5:])
    assert last > first + margin, f"{objective!r} did not rise: {values[:3]} ... {values[-3:]}"
    assert values[-1] > values[0]
    return values


_QUIET = dict(jitter=0, scale=None, rotate=0, pad=0, size=32)


@pytest.mark.parametrize("objective", [
    fv.neuron("conv3", 4),
    fv.neuron("conv1", 2, y=3, x=5),
    fv.channel("relu2", 5),
    fv.channel("conv3", [1, 2]),
    fv.layer("conv1", "conv3"),
    fv.layer("gap", squared=False),
    fv.logit(1),
    fv.direction("conv3", np.linspace(-1, 1, 16)),
    fv.total_variation(),
    fv.l1(),
    fv.l2("conv1"),
    fv.channel("conv3", 3) - 0.5 * fv.l2(),
], ids=repr)
def test_every_objective_rises(small, objective, assert_unchanged):
    with assert_unchanged(small):
        assert_gradient_ascent(small, objective, **_QUIET)


def test_diversity_rises_across_a_batch(small):
    values = assert_gradient_ascent(small, fv.diversity("conv1"), batch=3, **_QUIET)
    assert values[0] < -0.9  # random grey images start alike


def test_channel_rises_with_fft_and_all_transforms(small):
    assert_gradient_ascent(small, fv.channel("conv3", 6), param="fft", size=40, blur=(1.0, 0.2),
                           margin=0.01)
