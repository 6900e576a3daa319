"""Semantic dictionary and neuron groups (Building Blocks of Interpretability): rankings against
independent numpy / GradientTape references, NMF against a random factorisation, no retrace,
errors that name the argument, the model unchanged."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import nbviz
from nbviz import demo
from nbviz.methods.neuron_groups import color_groups, group_palette
from nbviz.probe import probe
from tests.conftest import unchanged


@pytest.fixture(scope="module")
def shapes_model():
    return demo.load_model()


@pytest.fixture(scope="module")
def scenes():
    return demo.load_images().images


def _reference(model, image, layer, target):
    """A (h, w, c) and A · dS/dA with S the target's logit, by a GradientTape outside nbviz:
    a Functional sub-model up to ``layer``, then the head (global average pooling, dense
    pre-activation) by hand."""
    front = keras.Model(model.input, model.get_layer(layer).output)
    kernel, bias = (np.asarray(w) for w in model.get_layer("logits").weights)
    x = tf.constant(image[None].astype(np.float32))
    with tf.GradientTape() as tape:
        acts = front(x)
        tape.watch(acts)
        logits = tf.reduce_mean(acts, axis=(1, 2)) @ kernel + bias
        score = logits[0, target]
    grads = tape.gradient(score, acts)
    return acts.numpy()[0], (acts * grads).numpy()[0], logits.numpy()[0]


def test_top_channels_equal_numpy_argsort_of_the_activations(shapes_model, scenes):
    front = keras.Model(shapes_model.input, shapes_model.get_layer("block3_relu").output)
    for i, cell in ((0, (3, 4)), (5, (0, 7)), (9, (6, 1))):
        acts = front(scenes[i][None].astype(np.float32)).numpy()[0]
        want = np.argsort(-acts[cell], kind="stable")[:8]
        with unchanged(shapes_model):
            d = nbviz.dictionary(shapes_model, scenes[i], "block3_relu", cell, k=8)
        np.testing.assert_array_equal(d.channels, want)
        np.testing.assert_allclose(d.activations, acts[cell][want], rtol=1e-5, atol=1e-6)
        assert np.all(np.diff(d.activations) <= 0) and d.k == 8 and d.cell == cell
        np.testing.assert_allclose(d.activation_map, acts, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(d.channel_map(int(want[0])), acts[..., want[0]], rtol=1e-5,
                                   atol=1e-6)
        assert d.layer == "block3_relu" and d.by == "activation"
        np.testing.assert_array_equal(d.values, d.activations)


def test_attribution_ranking_equals_activation_times_gradient_from_a_tape(small):
    rng = np.random.default_rng(1)
    image = rng.uniform(0, 1, (32, 32, 3)).astype(np.float32)
    for target, cell in ((2, (3, 5)), (0, (7, 0))):
        acts, attr, logits = _reference(small, image, "conv3", target)
        want = np.argsort(-attr[cell], kind="stable")[:5]
        with unchanged(small):
            d = nbviz.dictionary(small, image, "conv3", cell, k=5, target=target, by="attribution")
        assert np.count_nonzero(attr[cell]) >= 5  # a real ranking, not ties at zero
        np.testing.assert_array_equal(d.channels, want)
        np.testing.assert_allclose(d.attributions, attr[cell][want], rtol=1e-4, atol=1e-7)
        np.testing.assert_allclose(d.attribution_map, attr, rtol=1e-4, atol=1e-7)
        np.testing.assert_allclose(d.activations, acts[cell][want], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(d.spatial_attribution(), attr.sum(-1), rtol=1e-4, atol=1e-6)
        assert d.target == target and d.score == pytest.approx(logits[target], rel=1e-5)
    # target=None: the top class, reported
    d = nbviz.dictionary(small, image, "conv3", (0, 0))
    assert d.target == int(np.argmax(logits))


def test_new_image_cell_or_target_never_retraces(shapes_model, scenes):
    p = probe(shapes_model)
    nbviz.dictionary(shapes_model, scenes[0], "block2_relu", (1, 1))
    traces = p.trace_count("dictionary")
    for i in range(1, 6):
        nbviz.dictionary(shapes_model, scenes[i], "block2_relu", (i, 2 * i), k=3, target=i % 5,
                         by="attribution" if i % 2 else "activation")
    nbviz.neuron_groups(shapes_model, scenes[7], "block2_relu", n=3, target=1)
    assert p.trace_count("dictionary") == traces


def test_k_larger_than_the_layer_gives_every_channel(small):
    image = np.full((32, 32, 3), 0.5, np.float32)
    d = nbviz.dictionary(small, image, "conv1", (4, 4), k=100)
    assert d.k == 8 and sorted(d.channels.tolist()) == list(range(8))
    with pytest.raises(ValueError):
        d.channels[0] = 3  # read-only result


@pytest.mark.parametrize("kwargs, error, words", [
    (dict(cell=(8, 0)), ValueError, ["cell", "8×8"]),
    (dict(cell=(0, -1)), ValueError, ["cell"]),
    (dict(cell=(1.5, 2)), TypeError, ["cell"]),
    (dict(cell=3), TypeError, ["cell"]),
    (dict(k=0), ValueError, ["k", ">= 1"]),
    (dict(k=2.0), ValueError, ["k"]),
    (dict(by="x"), ValueError, ["by", "attribution"]),
    (dict(layer="gap"), ValueError, ["layer", "gap", "spatial"]),
    (dict(layer="logits"), ValueError, ["layer", "spatial"]),
    (dict(layer="conv33"), ValueError, ["conv3"]),
    (dict(target=7), ValueError, ["target", "out of range"]),
    (dict(image=np.zeros((2, 32, 32, 3), np.float32)), ValueError, ["image", "one"]),
])
def test_bad_inputs_name_the_argument(small, kwargs, error, words):
    args = dict(image=np.zeros((32, 32, 3), np.float32), layer="conv3", cell=(1, 1))
    args.update({k: v for k, v in kwargs.items() if k in args})
    options = {k: v for k, v in kwargs.items() if k not in args}
    with unchanged(small), pytest.raises(error) as info:
        nbviz.dictionary(small, args["image"], args["layer"], args["cell"], **options)
    for word in words:
        assert word in str(info.value)


# --------------------------------------------------------------------------- neuron groups


def test_nmf_error_well_below_a_random_factorisation_of_the_same_rank(shapes_model, scenes):
    with unchanged(shapes_model):
        g = nbviz.neuron_groups(shapes_model, scenes[3], "block3_relu", n=6, seed=0)
    h, w, c = g.activation_map.shape
    assert g.spatial.shape == (h, w, 6) and g.loadings.shape == (6, c)
    assert (g.spatial >= 0).all() and (g.loadings >= 0).all()
    np.testing.assert_allclose(np.linalg.norm(g.loadings, axis=1), 1.0, rtol=1e-5)
    a = g.activation_map.reshape(-1, c).astype(np.float64)
    recon = g.reconstruction().reshape(-1, c)
    error = np.linalg.norm(a - recon) / np.linalg.norm(a)
    assert error == pytest.approx(g.error, rel=1e-4)
    rng = np.random.default_rng(0)
    random_errors = []
    for _ in range(20):  # random non-negative rank-6 factors, each at its best overall scale
        r = rng.uniform(0, 1, (h * w, 6)) @ rng.uniform(0, 1, (6, c))
        r *= (a * r).sum() / (r * r).sum()
        random_errors.append(np.linalg.norm(a - r) / np.linalg.norm(a))
    assert g.error < 0.6 * min(random_errors), (g.error, min(random_errors))
    # groups sorted by total presence; more groups fit better
    presence = g.spatial.sum(axis=(0, 1))
    assert np.all(np.diff(presence) <= 1e-6)
    g12 = nbviz.neuron_groups(shapes_model, scenes[3], "block3_relu", n=12)
    assert g12.error < g.error


def test_group_attributions_split_activation_times_gradient(small):
    image = np.random.default_rng(2).uniform(0, 1, (32, 32, 3)).astype(np.float32)
    acts, attr, _ = _reference(small, image, "conv3", 1)
    grads = np.divide(attr, acts, out=np.zeros_like(attr), where=acts != 0)
    # the head is global average pooling + dense: dS/dA is the same at every cell
    kernel = np.asarray(small.get_layer("logits").weights[0])
    g_cell = kernel[:, 1] / (acts.shape[0] * acts.shape[1])
    np.testing.assert_allclose(grads[acts > 0], np.broadcast_to(g_cell, acts.shape)[acts > 0],
                               rtol=1e-4)
    with unchanged(small):
        g = nbviz.neuron_groups(small, image, "conv3", n=4, target=1)
    want = np.einsum("hwn,nc,c->hwn", g.spatial, g.loadings, g_cell)
    np.testing.assert_allclose(g.spatial_attribution, want, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(g.attributions, want.sum(axis=(0, 1)), rtol=1e-4, atol=1e-6)
    # the groups share out the layer's activation × gradient up to the factorisation's error
    total = float(attr.sum())
    assert abs(g.attributions.sum() - total) <= 2 * g.error * abs(total) + 1e-6
    assert g.target == 1


def test_same_seed_same_groups(shapes_model, scenes):
    a = nbviz.neuron_groups(shapes_model, scenes[4], "block2_relu", n=4, seed=3)
    b = nbviz.neuron_groups(shapes_model, scenes[4], "block2_relu", n=4, seed=3)
    np.testing.assert_array_equal(a.spatial, b.spatial)
    np.testing.assert_array_equal(a.loadings, b.loadings)


@pytest.mark.parametrize("kwargs, error, words", [
    (dict(n=0), ValueError, ["n", ">= 1"]),
    (dict(n=65), ValueError, ["n=65", "min"]),
    (dict(seed=-1), ValueError, ["seed"]),
    (dict(layer="block2_bn"), ValueError, ["negative", "block2_bn", "ReLU"]),
    (dict(layer="gmp"), ValueError, ["layer", "spatial"]),
])
def test_neuron_groups_bad_inputs(shapes_model, scenes, kwargs, error, words):
    args = dict(layer="block2_relu")
    args.update(kwargs)
    layer = args.pop("layer")
    with unchanged(shapes_model), pytest.raises(error) as info:
        nbviz.neuron_groups(shapes_model, scenes[0], layer, **args)
    for word in words:
        assert word in str(info.value)


def test_color_groups_mixes_group_colours_by_strength():
    maps = np.zeros((2, 3, 2), np.float32)
    maps[0, 0] = (2.0, 0.0)  # group 0 alone, strongest
    maps[0, 1] = (0.0, 1.0)  # group 1 alone, half as strong
    maps[1, 0] = (1.0, 1.0)  # both equally
    colors = np.array([[255, 0, 0], [0, 0, 255]], np.uint8)
    rgba = color_groups(maps, colors=colors, opacity=1.0)
    assert rgba.shape == (2, 3, 4) and rgba.dtype == np.uint8
    assert rgba[0, 0].tolist() == [255, 0, 0, 255]
    assert rgba[0, 1].tolist() == [0, 0, 255, 128]
    assert rgba[1, 0].tolist() == [128, 0, 128, 255]
    assert rgba[1, 1, 3] == 0 and rgba[0, 2, 3] == 0  # no group: clear
    big = color_groups(maps, (4, 6), colors=colors, smooth=False)
    assert big.shape == (4, 6, 4) and big[0, 0, :3].tolist() == [255, 0, 0]
    assert color_groups(maps, 32).shape == (32, 32, 4)
    assert group_palette(6).shape == (6, 3) and len({tuple(c) for c in group_palette(12)}) == 12
    with pytest.raises(ValueError, match="colors"):
        color_groups(maps, colors=colors[:1])
    with pytest.raises(ValueError, match="non-negative"):
        color_groups(-maps)


def test_a_layer_inside_a_nested_model():
    keras.utils.set_random_seed(0)
    inner = keras.Sequential([keras.Input((16, 16, 3)),
                              keras.layers.Conv2D(8, 3, activation="relu", name="c1"),
                              keras.layers.Conv2D(6, 3, name="c2"), keras.layers.ReLU(name="r2")],
                             name="inner")
    inp = keras.Input((16, 16, 3))
    out = keras.layers.Dense(3, name="head")(keras.layers.GlobalAveragePooling2D()(inner(inp)))
    model = keras.Model(inp, out)
    image = np.random.default_rng(3).uniform(0, 1, (16, 16, 3)).astype(np.float32)
    acts = nbviz.activations(model, image, "inner/r2")
    cell = tuple(int(v) for v in np.unravel_index(np.argmax(acts.sum(-1)), acts.shape[:2]))
    with unchanged(model):
        d = nbviz.dictionary(model, image, "inner/r2", cell, k=4, target=1)
        g = nbviz.neuron_groups(model, image, "inner/r2", n=3, target=1)
    np.testing.assert_array_equal(d.channels, np.argsort(-acts[cell], kind="stable")[:4])
    assert d.layer == g.layer == "inner/r2" and g.spatial.shape == acts.shape[:2] + (3,)
