"""nbviz.sanity: which layers a randomised copy changes, the user's model untouched, the table."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from nbviz import demo, sanity
from tests.conftest import unchanged


def _differs(a, b) -> bool:
    return any(not np.array_equal(np.asarray(u), np.asarray(v)) for u, v in zip(a.weights, b.weights))


def _layers_that_differ(model, copy) -> list[str]:
    originals = {p: l for p, l, _ in sanity._weighted_layers(model)}
    copies = {p: l for p, l, _ in sanity._weighted_layers(copy)}
    assert originals.keys() == copies.keys()
    return [p for p in originals if _differs(originals[p], copies[p])]


def _small(seed=0):
    keras.utils.set_random_seed(seed)
    inner = keras.Sequential([keras.Input((16, 16, 4)), keras.layers.Conv2D(4, 3, padding="same", name="c"),
                              keras.layers.BatchNormalization(name="bn")], name="inner")
    inp = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="stem")(inp)
    x = inner(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(3, activation="softmax", name="head")(x)
    model = keras.Model(inp, out)
    # trained-looking weights: nothing equals its initial value
    model.set_weights([w + np.random.default_rng(i).normal(0, 0.1, w.shape).astype(w.dtype)
                       for i, w in enumerate(model.get_weights())])
    return model


@pytest.mark.parametrize("mode", ["cascade", "independent"])
def test_copies_differ_in_exactly_the_randomised_layers(mode):
    model = _small()
    with unchanged(model):
        copies = list(sanity.randomised(model, mode=mode, seed=3))
    paths = [p for p, _ in copies]
    assert paths == ["head", "inner/bn", "inner/c", "stem"]  # top first, nested by path
    for k, (path, copy) in enumerate(copies):
        assert copy is not model
        expected = paths[:k + 1] if mode == "cascade" else [path]
        assert sorted(_layers_that_differ(model, copy)) == sorted(expected)
        x = np.random.default_rng(0).normal(0, 1, (1, 16, 16, 3)).astype(np.float32)
        assert not np.allclose(model(x), copy(x))


def test_seeded_and_from_the_layers_initializers():
    model = _small()
    a = dict(sanity.randomised(model, mode="independent", seed=1))
    b = dict(sanity.randomised(model, mode="cascade", seed=1))
    c = dict(sanity.randomised(model, mode="independent", seed=2))
    head = [np.asarray(w) for w in a["head"].get_layer("head").weights]
    np.testing.assert_array_equal(head[0], np.asarray(b["head"].get_layer("head").weights[0]))
    assert not np.array_equal(head[0], np.asarray(c["head"].get_layer("head").weights[0]))
    np.testing.assert_array_equal(head[1], 0.0)  # bias_initializer: zeros
    bound = np.sqrt(6 / (4 + 3))  # glorot_uniform of a 4 -> 3 kernel
    assert np.abs(head[0]).max() <= bound
    bn = a["inner/bn"].get_layer("inner").get_layer("bn")
    np.testing.assert_array_equal(np.asarray(bn.gamma), 1.0)
    np.testing.assert_array_equal(np.asarray(bn.moving_variance), 1.0)


def test_layers_argument_and_bad_input():
    model = _small()
    assert [p for p, _ in sanity.randomised(model, layers=["stem", "head"])] == ["head", "stem"]
    with pytest.raises(ValueError, match="layers: 'nope'"):
        sanity.randomised(model, layers=["nope"])
    with pytest.raises(ValueError, match="mode must be"):
        sanity.randomised(model, mode="top")
    with pytest.raises(TypeError, match="method must be"):
        sanity.model_randomisation(3, model, np.zeros((16, 16, 3)))
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        sanity.model_randomisation("nope", model, np.zeros((16, 16, 3)))


class NoConfig(keras.Model):
    def __init__(self, units):
        super().__init__()
        self.conv = keras.layers.Conv2D(units, 3)
        self.pool = keras.layers.GlobalAveragePooling2D()
        self.head = keras.layers.Dense(2)

    def call(self, x):
        return self.head(self.pool(self.conv(x)))


def test_a_subclassed_model_keras_cannot_clone_gives_advice():
    model = NoConfig(3)
    model(np.zeros((1, 8, 8, 3), np.float32))
    with unchanged(model), pytest.raises(TypeError, match="get_config"):
        sanity.randomised(model)


@pytest.fixture(scope="module")
def demo_model():
    return demo.load_model()


@pytest.mark.parametrize("method", ["gradcam", "saliency"])
def test_randomisation_table_on_the_demo(demo_model, method):
    x = demo.image(0)
    with unchanged(demo_model):
        table = sanity.model_randomisation(method, demo_model, x)
    weighted = [p for p, _, _ in sanity._weighted_layers(demo_model)][::-1]
    assert [r["layer"] for r in table] == weighted and len(table) == 9
    assert table.columns == ("layer", "spearman_abs", "spearman", "ssim", "hog_distance", "zero_map")
    for name in ("spearman_abs", "spearman", "ssim"):
        v = table.column(name)
        assert np.all((v >= -1) & (v <= 1)), (name, v)
    assert np.all((table.column("hog_distance") >= 0) & (table.column("hog_distance") <= np.sqrt(2)))
    assert table.target == int(np.argmax(demo_model(x[None])))
    assert len(table.maps) == 9 and table.original.shape[:2] == (64, 64)
    # a copy with every layer randomised explains something else: the ranks have gone
    assert abs(table[-1]["spearman_abs"]) < 0.6
    text = table.to_markdown()
    assert text.count("\n") == 10 and "predictions" in text
    assert table.to_list()[0]["layer"] == "predictions"
    ax = table.plot()
    assert len(ax.lines) == 5  # four measures and the zero line


def test_similarity_of_identical_and_opposite_maps():
    a = np.random.default_rng(0).normal(0, 1, (32, 32, 3))
    same = sanity.similarity(a, a)
    assert same["spearman_abs"] == pytest.approx(1) and same["spearman"] == pytest.approx(1)
    assert same["ssim"] == pytest.approx(1) and same["hog_distance"] == pytest.approx(0, abs=1e-12)
    flipped = sanity.similarity(a, -a)
    assert flipped["spearman"] == pytest.approx(-1) and flipped["spearman_abs"] == pytest.approx(1)
    assert sanity.similarity(a, np.zeros_like(a))["spearman_abs"] == 0.0  # constant: no ranking


def test_receptive_field_verifies_on_the_users_model(demo_model):
    """Not a randomisation test, but the same question (does the tool's claim hold on this
    model?): the analytic receptive field is checked against the gradient support."""
    from nbviz.methods.receptive_field import receptive_field

    with unchanged(demo_model):
        rf = receptive_field(demo_model, verify=True)
    assert rf.method == "analytic" and rf.size == (39, 39)
    wrong = type(rf)(**{**rf.__dict__, "size": (37, 37)})
    from nbviz.methods import receptive_field as module

    with pytest.raises(RuntimeError, match="does not verify"):
        module._verify(demo_model, wrong, None, (64, 64))
