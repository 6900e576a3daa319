"""LRP: conservation, LRP-0 = gradient × input, every rule against a numpy reference written from
its formula, BatchNorm folding, composites, unsupported layers, no mutation, no retrace."""

from __future__ import annotations

import numpy as np
import pytest
import keras
import tensorflow as tf
from keras import layers

from nbviz import lrp, saliency
from nbviz.methods.lrp import Composite
from nbviz.probe import probe
from tests.conftest import unchanged


def _logits(model, images):
    p = probe(model)
    with p.logits():
        return p.forward(tf.constant(np.asarray(images, np.float32))).numpy()


class _Big:
    """``keras.layers`` with kernels drawn at N(0, 0.5²): logits far from zero, so relative
    conservation errors measure the rules and not the stabiliser."""

    def __getattr__(self, name):
        cls = getattr(keras.layers, name)
        init = keras.initializers.RandomNormal(0, 0.5)
        if name in ("Conv2D", "Dense"):
            return lambda *a, **k: cls(*a, kernel_initializer=init, **k)
        if name == "DepthwiseConv2D":
            return lambda *a, **k: cls(*a, depthwise_initializer=init, **k)
        return cls


@pytest.fixture(scope="module")
def relu_net():
    """Bias-free ReLU CNN with every pass-through layer kind: conv, max and average pooling, a
    residual Add, global average pooling, Flatten-free dense head with a softmax."""
    keras.utils.set_random_seed(4)
    layers = _Big()
    inp = keras.Input((12, 12, 3), name="image")
    x = layers.Conv2D(6, 3, padding="same", activation="relu", use_bias=False, name="c1")(inp)
    x = layers.MaxPooling2D(2, name="max")(x)
    y = layers.Conv2D(6, 3, padding="same", use_bias=False, name="c2")(x)
    y = layers.ReLU(name="r2")(y)
    x = layers.Add(name="add")([x, y])
    x = layers.AveragePooling2D(2, name="avg")(x)
    x = layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same", use_bias=False,
                               activation="relu", name="dw")(x)
    x = layers.Conv2D(8, 1, activation="relu", use_bias=False, name="c3")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dense(8, activation="relu", use_bias=False, name="d1")(x)
    out = layers.Dense(3, activation="softmax", use_bias=False, name="head")(x)
    return keras.Model(inp, out, name="relu_net")


def _images(n=2, shape=(12, 12, 3), seed=0):
    return np.random.default_rng(seed).uniform(0, 1, (n, *shape)).astype(np.float32)


def test_epsilon_conserves_relevance_and_lrp0_is_gradient_times_input(relu_net):
    images = _images(3)
    logits = _logits(relu_net, images)
    p = probe(relu_net)
    with unchanged(relu_net):
        rel = lrp(relu_net, images, target=[0, 1, 2])
        before = p.trace_count("lrp")
        again = lrp(relu_net, images[::-1], target=[2, 2, 0], epsilon=1e-3)  # no retrace
        assert p.trace_count("lrp") == before
        zero = lrp(relu_net, images, target=[0, 1, 2], epsilon=0.0)
        single = lrp(relu_net, images[1], target=1)
    selected = logits[np.arange(3), [0, 1, 2]]
    np.testing.assert_allclose(rel.reshape(3, -1).sum(1), selected, rtol=1e-3)
    assert not np.allclose(again, rel)
    grad_x_input = saliency(relu_net, images, target=[0, 1, 2]) * images
    np.testing.assert_allclose(zero, grad_x_input, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(single, rel[1], rtol=1e-5, atol=1e-7)  # batch = stack of singles
    # target None: the top class of each image
    top = lrp(relu_net, images)
    np.testing.assert_allclose(top.reshape(3, -1).sum(1), logits.max(1), rtol=1e-3)


def test_capped_relu_passes_relevance_through():
    """ReLU6 units above the cap have a zero gradient but keep their relevance: LRP-ε still
    conserves it, and differs from gradient × input there."""
    rng = np.random.default_rng(14)
    inp = keras.Input((4, 4, 2), name="image")
    x = layers.Conv2D(3, 3, use_bias=False, name="c")(inp)
    x = layers.ReLU(max_value=6.0, name="relu6")(x)
    x = layers.Flatten()(x)
    model = keras.Model(inp, layers.Dense(2, use_bias=False, name="head")(x))
    model.get_layer("c").set_weights([rng.uniform(0, 1, (3, 3, 2, 3)).astype(np.float32)])
    model.get_layer("head").set_weights([rng.uniform(0.1, 1, (12, 2)).astype(np.float32)])
    image = rng.uniform(0, 1.5, (4, 4, 2)).astype(np.float32)
    pre = keras.Model(model.input, model.get_layer("c").output)(image[None]).numpy()
    assert (pre > 6).any() and ((pre > 0) & (pre < 6)).any()  # units above the cap and below
    with unchanged(model):
        rel = lrp(model, image, target=0)
    assert abs(rel.sum() - _logits(model, image[None])[0, 0]) < 1e-3 * abs(rel.sum())
    assert not np.allclose(rel, saliency(model, image, target=0) * image, rtol=1e-2)


def test_nested_subclassed_and_layer_outputs(relu_net):
    """The same layers in a Sequential, nested in a Functional, or in a subclassed model with a
    custom container layer give the same relevance; ``layer=`` explains a layer's channel."""
    from tests.methods.toys import ReluChain

    chain = ReluChain()
    image = np.random.default_rng(15).uniform(-1, 1, chain.shape).astype(np.float32)
    maps = []
    for model in (chain.sequential(), chain.nested(), chain.subclassed()):
        with unchanged(model):
            maps.append(lrp(model, image, target=1, rule="epsilon", epsilon=0.01))
    np.testing.assert_allclose(maps[1], maps[0], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(maps[2], maps[0], rtol=1e-5, atol=1e-7)
    assert np.abs(maps[0]).sum() > 0
    images = _images(2)
    with unchanged(relu_net):
        rel = lrp(relu_net, images, layer="c3", target=5)
    with probe(relu_net).capture("c3") as captured:
        probe(relu_net).forward(tf.constant(images))
    selected = captured["c3"].numpy()[..., 5].reshape(2, -1).sum(1)
    assert (selected > 0.1).all()
    np.testing.assert_allclose(rel.reshape(2, -1).sum(1), selected, rtol=1e-3)


# --------------------------------------------------------------------------- numpy reference

def _np_rule(x, w, b, R, rule, epsilon=1e-6, gamma=0.25, alpha=2.0, beta=1.0, low=None, high=None):
    """Relevance of the inputs of one dense layer ``z = x @ w + b`` from the output relevance
    ``R``, written from the rules' formulas (Montavon et al. 2019)."""
    wp, wn = np.maximum(w, 0), np.minimum(w, 0)
    xp, xn = np.maximum(x, 0), np.minimum(x, 0)
    stab = lambda z, e: z + e * np.where(z >= 0, 1.0, -1.0)  # noqa: E731
    if rule == "epsilon":
        z = x @ w + b
        return x * (w @ (R / stab(z, epsilon)))
    if rule == "gamma":
        wg, bg = w + gamma * wp, b + gamma * np.maximum(b, 0)
        return x * (wg @ (R / stab(x @ wg + bg, 1e-6)))
    if rule == "box":
        zb = x @ w - low @ wp - high @ wn
        s = R / stab(zb, 1e-6)
        return x * (w @ s) - low * (wp @ s) - high * (wn @ s)
    if rule == "z_plus":
        alpha, beta = 1.0, 0.0
    zp = xp @ wp + xn @ wn + 1e-6
    zn = xp @ wn + xn @ wp - 1e-6
    contrib_p = xp[:, None] * wp + xn[:, None] * wn  # (in, out)
    contrib_n = xp[:, None] * wn + xn[:, None] * wp
    return (alpha * contrib_p / zp - beta * contrib_n / zn) @ R


@pytest.fixture(scope="module")
def dense_net():
    """Flatten -> Dense(5, relu) -> Dense(4, relu) -> Dense(3): biases on, signed inputs."""
    rng = np.random.default_rng(7)
    ws = [(rng.normal(0, 1, (12, 5)), rng.normal(0, 0.3, 5)), (rng.normal(0, 1, (5, 4)),
          rng.normal(0, 0.3, 4)), (rng.normal(0, 1, (4, 3)), rng.normal(0, 0.3, 3))]
    ws = [(w.astype(np.float32), b.astype(np.float32)) for w, b in ws]
    inp = keras.Input((2, 2, 3), name="image")
    x = layers.Flatten(name="flat")(inp)
    x = layers.Dense(5, activation="relu", name="d1")(x)
    x = layers.Dense(4, activation="relu", name="d2")(x)
    out = layers.Dense(3, name="d3")(x)
    model = keras.Model(inp, out, name="dense_net")
    for name, wb in zip(("d1", "d2", "d3"), ws):
        model.get_layer(name).set_weights(list(wb))
    return model, ws


def _np_lrp(ws, x, cls, rules, **kw):
    acts = [x.reshape(-1).astype(np.float64)]
    for k, (w, b) in enumerate(ws):
        z = acts[-1] @ w + b
        acts.append(np.maximum(z, 0) if k < len(ws) - 1 else z)
    R = np.zeros(ws[-1][0].shape[1])
    R[cls] = acts[-1][cls]
    for k in reversed(range(len(ws))):
        w, b = ws[k]
        R = _np_rule(acts[k], w.astype(np.float64), b.astype(np.float64), R, rules[k], **kw)
    return R.reshape(x.shape)


@pytest.mark.parametrize("rule, options", [
    ("epsilon", dict(epsilon=0.1)),
    ("gamma", dict(gamma=0.5)),
    ("z_plus", {}),
    ("alpha_beta", dict(alpha=1.0, beta=0.0)),
    ("alpha_beta", dict(alpha=2.0, beta=1.0)),
])
def test_rules_match_numpy_reference(dense_net, rule, options):
    model, ws = dense_net
    x = np.random.default_rng(8).normal(0, 1, (2, 2, 3)).astype(np.float32)
    cls = 1
    with unchanged(model):
        got = lrp(model, x, target=cls, rule=rule, **options)
    expected = _np_lrp(ws, x, cls, [rule] * 3, **options)
    assert np.abs(expected).max() > 1e-2  # live units: the check is not vacuous
    np.testing.assert_allclose(got, expected, rtol=2e-4, atol=1e-5)


def test_box_composite_matches_numpy_reference(dense_net):
    model, ws = dense_net
    x = np.random.default_rng(11).uniform(-1, 1, (2, 2, 3)).astype(np.float32)
    comp = Composite(first="box", conv="gamma", dense="epsilon")
    got = lrp(model, x, target=2, rule=comp, low=-1.0, high=1.0, epsilon=0.01)
    low, high = -np.ones(12), np.ones(12)
    expected = _np_lrp(ws, x, 2, ["box", "epsilon", "epsilon"], epsilon=0.01, low=low, high=high)
    assert np.abs(expected).max() > 1e-2
    np.testing.assert_allclose(got, expected, rtol=2e-4, atol=1e-5)
    # the bounds default to the image's minimum and maximum
    default = lrp(model, x, target=2, rule=comp, epsilon=0.01)
    expected = _np_lrp(ws, x, 2, ["box", "epsilon", "epsilon"], epsilon=0.01,
                       low=np.full(12, x.min()), high=np.full(12, x.max()))
    np.testing.assert_allclose(default, expected, rtol=2e-4, atol=1e-5)


# --------------------------------------------------------------------------- BatchNorm folding

def _bn_net(fold: bool, seed=11, depthwise=False):
    rng = np.random.default_rng(seed)
    k1 = rng.normal(0, 0.5, (3, 3, 2, 2 if depthwise else 4)).astype(np.float32)
    b1 = rng.normal(0, 0.1, 4).astype(np.float32)
    gamma, beta = rng.uniform(0.5, 2, 4).astype(np.float32), rng.normal(0, 0.2, 4).astype(np.float32)
    mean, var = rng.normal(0, 0.3, 4).astype(np.float32), rng.uniform(0.5, 2, 4).astype(np.float32)
    head = rng.normal(0, 1, (4, 3)).astype(np.float32)
    inp = keras.Input((8, 8, 2), name="image")
    x = (layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="conv") if depthwise
         else layers.Conv2D(4, 3, padding="same", name="conv"))(inp)
    if not fold:
        x = layers.BatchNormalization(epsilon=1e-3, name="bn")(x)
    x = layers.ReLU(name="relu")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    out = layers.Dense(3, name="head")(x)
    model = keras.Model(inp, out)
    scale = gamma / np.sqrt(var + 1e-3)
    if fold:
        folded = k1 * (scale.reshape(2, 2) if depthwise else scale)
        model.get_layer("conv").set_weights([folded, (b1 - mean) * scale + beta])
    else:
        model.get_layer("conv").set_weights([k1, b1])
        model.get_layer("bn").set_weights([gamma, beta, mean, var])
    model.get_layer("head").set_weights([head, np.zeros(3, np.float32)])
    return model


@pytest.mark.parametrize("rule, depthwise", [("epsilon", False), ("gamma", False),
                                             ("epsilon_gamma_box", False), ("gamma", True)])
def test_batchnorm_is_folded_into_the_conv_rule(rule, depthwise):
    with_bn, folded = _bn_net(False, depthwise=depthwise), _bn_net(True, depthwise=depthwise)
    images = np.random.default_rng(12).uniform(0, 1, (2, 8, 8, 2)).astype(np.float32)
    np.testing.assert_allclose(_logits(with_bn, images), _logits(folded, images), rtol=1e-4, atol=1e-5)
    with unchanged(with_bn):
        got = lrp(with_bn, images, target=0, rule=rule, epsilon=0.05)
    expected = lrp(folded, images, target=0, rule=rule, epsilon=0.05)
    (plan,) = probe(with_bn).cache("lrp_plan").values()
    assert [l.name for l in plan.folded.values()] == ["conv"]
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-5)
    assert np.abs(expected).sum() > 0
    if rule == "epsilon" and not depthwise:
        # explaining the folded conv itself: its own output, no BatchNorm; LRP-0 of a linear
        # layer is gradient × input
        own = lrp(with_bn, images, layer="conv", target=2, epsilon=0.0)
        x = tf.constant(images)
        p = probe(with_bn)
        with tf.GradientTape() as tape:
            tape.watch(x)
            with p.capture("conv") as captured:
                p.forward(x)
            score = tf.reduce_sum(captured["conv"][..., 2])
        np.testing.assert_allclose(own, (tape.gradient(score, x) * x).numpy(), rtol=1e-4, atol=1e-6)


# --------------------------------------------------------------------------- composites

@pytest.fixture(scope="module")
def vgg_like():
    keras.utils.set_random_seed(5)
    layers = _Big()
    inp = keras.Input((16, 16, 3), name="image")
    x = inp
    for i, ch in enumerate((8, 8)):
        x = layers.Conv2D(ch, 3, padding="same", activation="relu", use_bias=False, name=f"b{i}_c1")(x)
        x = layers.Conv2D(ch, 3, padding="same", activation="relu", use_bias=False, name=f"b{i}_c2")(x)
        x = layers.MaxPooling2D(2, name=f"b{i}_pool")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(16, activation="relu", use_bias=False, name="fc1")(x)
    x = layers.Dropout(0.5, name="drop")(x)
    out = layers.Dense(4, activation="softmax", use_bias=False, name="predictions")(x)
    return keras.Model(inp, out, name="vgg_like")


@pytest.mark.parametrize("rule", ["epsilon_gamma_box", "epsilon_plus", "gamma"])
def test_composites_conserve_relevance_on_a_vgg_like_net(vgg_like, rule):
    images = np.random.default_rng(13).uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32)
    logits = _logits(vgg_like, images)
    cls = logits.argmax(1)
    with unchanged(vgg_like):
        rel = lrp(vgg_like, images, rule=rule, low=-1.0, high=1.0)
    np.testing.assert_allclose(rel.reshape(2, -1).sum(1), logits[np.arange(2), cls], rtol=1e-3)
    if rule == "epsilon_gamma_box":  # differs from plain epsilon
        assert not np.allclose(rel, lrp(vgg_like, images, rule="epsilon"), atol=1e-4)


# --------------------------------------------------------------------------- errors

def test_unsupported_layers_are_named_and_nothing_changes():
    inp = keras.Input((8, 8, 3), name="image")
    x = layers.Conv2D(4, 3, activation="tanh", name="tanh_conv")(inp)
    x = layers.Conv2DTranspose(3, 3, name="up")(x)
    x = layers.LayerNormalization(name="ln")(x)
    x = layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inp, layers.Dense(2, name="out")(x))
    image = np.zeros((8, 8, 3), np.float32)
    with unchanged(model):
        with pytest.raises(ValueError) as info:
            lrp(model, image)
    text = str(info.value)
    assert "lrp: no rule for layer 'up' (Conv2DTranspose)" in text
    assert "lrp: no rule for layer 'ln' (LayerNormalization)" in text
    assert "activation 'tanh' of layer 'tanh_conv'" in text


def test_argument_errors(relu_net):
    image = _images(1)[0]
    with pytest.raises(ValueError, match="rule must be one of"):
        lrp(relu_net, image, rule="deep_taylor")
    with pytest.raises(ValueError, match="epsilon must be a finite number"):
        lrp(relu_net, image, epsilon=-1.0)
    with pytest.raises(ValueError, match="Composite.conv must be one of"):
        lrp(relu_net, image, rule={"conv": "box"})
    with pytest.raises(ValueError, match="low"):
        lrp(relu_net, image, rule="epsilon_gamma_box", low=np.zeros((5, 5)))


def test_composite_on_the_demo_model_points_at_the_object():
    """Rescaling + Conv/BatchNorm/ReLU blocks + global max pooling: the EpsilonGammaBox map puts
    most of its positive relevance inside the object's box (boxes cover about 12 % of a scene)."""
    from nbviz import demo

    model, scenes = demo.load_model(), demo.load_images()
    images = scenes.images[:4]
    with unchanged(model):
        rel = lrp(model, images, rule="epsilon_gamma_box", epsilon=0.01)
    for i in range(4):
        top, left, bottom, right = scenes.boxes[i]
        positive = np.maximum(rel[i].sum(-1), 0)
        area = (bottom - top) * (right - left) / positive.size
        assert positive[top:bottom, left:right].sum() / positive.sum() > max(0.5, 3 * area)


def test_table_rows_match_the_functions():
    import inspect

    from nbviz.methods import table
    from nbviz.methods.lrp import RULES

    for key in ("lrp", "blur_ig", "guided_ig", "xrai"):
        row = table.method(key)
        params = inspect.signature(row.function_object()).parameters
        assert all(c.keyword in params for c in row.controls) and all(k in params for k in row.fixed)
    assert set(table.method("lrp").controls[0].limits) == set(RULES)
