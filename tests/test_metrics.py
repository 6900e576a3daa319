"""nbviz.metrics: closed forms on a linear model, the demo's ground truth, batching, bad input."""

from __future__ import annotations

import warnings

import keras
import numpy as np
import pytest

from nbviz import demo, metrics
from nbviz.methods.gradients import integrated_gradients
from nbviz.probe import probe
from tests.conftest import unchanged

H = W = 6
C = 2


@pytest.fixture(scope="module")
def linear():
    """logits = sum_hwc x·w[..., k] + b[k], k = 0, 1; softmax on top (the logits are explained)."""
    rng = np.random.default_rng(0)
    w = rng.uniform(0.1, 1.0, (H, W, C, 2)).astype(np.float32)
    b = np.array([0.3, -0.2], np.float32)
    inp = keras.Input((H, W, C))
    x = keras.layers.Flatten()(inp)
    out = keras.layers.Dense(2, activation="softmax", name="head")(x)
    model = keras.Model(inp, out)
    model.get_layer("head").set_weights([w.reshape(-1, 2), b])
    return model, w, b


def _logit(x, w, b, k=0):
    return float((x * w[..., k]).sum() + b[k])


def _deletion_by_hand(x, w, b, order, counts, k=0):
    """Scores of x with its first counts[j] pixels (flat indices in ``order``) set to 0."""
    out = []
    for n in counts:
        y = x.copy().reshape(H * W, C)
        y[order[:n]] = 0.0
        out.append(_logit(y.reshape(H, W, C), w, b, k))
    return np.array(out)


def _trapezoid_by_hand(scores, fractions):
    return sum((scores[i] + scores[i + 1]) / 2 * (fractions[i + 1] - fractions[i])
               for i in range(len(scores) - 1))


@pytest.mark.parametrize("steps", [4, 7, 36])
def test_deletion_equals_hand_computed_trapezoid(linear, steps):
    model, w, b = linear
    x = np.random.default_rng(1).uniform(0, 1, (H, W, C)).astype(np.float32)
    attribution = np.random.default_rng(2).normal(0, 1, (H, W))
    with unchanged(model):
        curve = metrics.deletion(model, x, attribution, target=0, steps=steps, baseline=0.0,
                                 score="logit")
    order = np.argsort(-attribution.ravel(), kind="stable")
    counts = [int(round(k * H * W / steps)) for k in range(steps + 1)]
    expected = _deletion_by_hand(x, w, b, order, counts)
    np.testing.assert_allclose(curve.fractions, np.array(counts) / (H * W))
    np.testing.assert_allclose(curve.scores, expected, rtol=1e-5, atol=1e-5)
    assert curve.auc == pytest.approx(_trapezoid_by_hand(expected, np.array(counts) / (H * W)),
                                      rel=1e-5)
    assert (curve.kind, curve.score, curve.baseline, curve.target) == ("deletion", "logit", "0", 0)


def test_insertion_equals_hand_computed_trapezoid_with_probability(linear):
    model, w, b = linear
    x = np.random.default_rng(3).uniform(0, 1, (H, W, C)).astype(np.float32)
    attribution = np.random.default_rng(4).normal(0, 1, (H, W, C))  # reduced by sum |.|
    curve = metrics.insertion(model, x, attribution, target=1, steps=5, baseline=0.5)
    order = np.argsort(-np.abs(attribution).sum(-1).ravel(), kind="stable")
    counts = [int(round(k * H * W / 5)) for k in range(6)]
    expected = []
    for n in counts:
        y = np.full((H * W, C), 0.5, np.float32)
        y[order[:n]] = x.reshape(H * W, C)[order[:n]]
        logits = [_logit(y.reshape(H, W, C), w, b, k) for k in (0, 1)]
        expected.append(np.exp(logits[1]) / np.exp(logits).sum())
    np.testing.assert_allclose(curve.scores, expected, rtol=1e-5, atol=1e-6)
    assert curve.auc == pytest.approx(_trapezoid_by_hand(np.array(expected), curve.fractions),
                                      rel=1e-5)
    assert curve.score == "probability" and curve.fractions[-1] == 1.0


def test_deleting_by_contribution_gives_the_lowest_auc(linear):
    """Linear logit, zero baseline: removing pixel p lowers the logit by c_p = sum_c w·x >= 0, so
    the order of |w·x| is the greedy optimum at every step; random orders are worse."""
    model, w, b = linear
    x = np.random.default_rng(5).uniform(0, 1, (H, W, C)).astype(np.float32)
    contribution = np.abs((x * w[..., 0]).sum(-1))
    best = metrics.deletion(model, x, contribution, target=0, steps=12, baseline=0.0, score="logit")
    best_in = metrics.insertion(model, x, contribution, target=0, steps=12, baseline=0.0,
                                score="logit")
    rng = np.random.default_rng(6)
    for _ in range(10):
        other = rng.random((H, W))
        assert metrics.deletion(model, x, other, target=0, steps=12, baseline=0.0,
                                score="logit").auc > best.auc
        assert metrics.insertion(model, x, other, target=0, steps=12, baseline=0.0,
                                 score="logit").auc < best_in.auc
    worst = metrics.deletion(model, x, -contribution, target=0, steps=12, baseline=0.0,
                             score="logit")
    assert worst.auc > best.auc


def test_ties_are_broken_by_pixel_index(linear):
    model, w, b = linear
    flat = np.zeros((H, W))
    assert metrics.pixel_order(flat).tolist() == list(range(H * W))
    x = np.random.default_rng(7).uniform(0, 1, (H, W, C)).astype(np.float32)
    a = metrics.deletion(model, x, flat, target=0, steps=9, baseline=0.0, score="logit")
    expected = _deletion_by_hand(x, w, b, np.arange(H * W), [4 * k for k in range(10)])
    np.testing.assert_allclose(a.scores, expected, rtol=1e-5, atol=1e-5)


def test_mufidelity_is_one_for_the_exact_contributions(linear):
    """For a linear logit and a zero baseline the drop of a subset is exactly its attribution
    sum (x·w), so the correlation is 1; a random map correlates far less."""
    model, w, b = linear
    x = np.random.default_rng(8).uniform(0, 1, (H, W, C)).astype(np.float32)
    exact = x * w[..., 0]
    with unchanged(model):
        r = metrics.mufidelity(model, x, exact, target=0, baseline=0.0, score="logit", grid=3,
                               subsets=40, seed=1)
    assert r.correlation == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(r.attribution_sums, r.score_drops, rtol=1e-4, atol=1e-4)
    again = metrics.mufidelity(model, x, exact, target=0, baseline=0.0, score="logit", grid=3,
                               subsets=40, seed=1)
    np.testing.assert_array_equal(r.score_drops, again.score_drops)  # seeded
    noise = np.random.default_rng(9).normal(0, 1, (H, W))
    assert metrics.mufidelity(model, x, noise, target=0, baseline=0.0, score="logit", grid=None,
                              subsets=60).correlation < 0.6


def test_completeness_of_integrated_gradients(linear):
    model, w, b = linear
    x = np.random.default_rng(10).uniform(0, 1, (H, W, C)).astype(np.float32)
    exact = (x - 0.2) * w[..., 1]  # linear: IG is exact
    c = metrics.completeness(model, x, exact, 0.2, target=1)
    assert c.difference == pytest.approx(_logit(x, w, b, 1) - _logit(np.full_like(x, 0.2), w, b, 1),
                                         rel=1e-5)
    assert c.total == pytest.approx(c.difference, rel=1e-5) and c.relative < 1e-5
    assert metrics.completeness(model, x, 2 * exact, 0.2, target=1).relative == pytest.approx(1.0,
                                                                                              rel=1e-4)


def test_pointing_game_and_energy_by_hand():
    a = np.zeros((8, 8))
    a[2, 3] = 5.0
    a[6, 6] = -9.0  # negative evidence is not a peak of an H×W map
    assert metrics.pointing_game(a, (1, 2, 4, 5))
    assert not metrics.pointing_game(a, (4, 4, 8, 8))
    assert metrics.pointing_game(a, (4, 4, 8, 8), tolerance=np.hypot(2, 1) + 1e-9)  # (2,3)->(4,4)
    mask = np.zeros((8, 8), bool)
    mask[2, 3] = True
    assert metrics.pointing_game(a, mask)
    assert not metrics.pointing_game(np.ones((8, 8)), (0, 0, 8, 7))  # a constant map never points
    assert metrics.pointing_game(np.ones((8, 8)), (0, 0, 8, 8))
    b = np.zeros((8, 8))
    b[0, 0], b[7, 7], b[3, 3] = 1.0, 3.0, -4.0
    assert metrics.energy_in_box(b, (0, 0, 4, 4)) == pytest.approx(0.25)
    rgb = np.zeros((8, 8, 3))
    rgb[1, 1] = (-2.0, 1.0, 0.0)  # H×W×C: sum |.| = 3
    rgb[5, 5, 2] = 1.0
    assert metrics.energy_in_box(rgb, (0, 0, 2, 2)) == pytest.approx(0.75)
    with pytest.warns(RuntimeWarning, match="no positive"):
        assert metrics.energy_in_box(-np.ones((8, 8)), (0, 0, 2, 2)) == 0.0


@pytest.fixture(scope="module")
def demo_model():
    return demo.load_model()


def test_true_mask_beats_a_random_map_on_every_metric(demo_model):
    """On demo scenes the object's own mask is a better map than noise, summed over 4 scenes."""
    samples = demo.load_images()
    rng = np.random.default_rng(0)
    truth, noise = np.zeros(5), np.zeros(5)
    for i in range(4):
        x, m, box = samples.images[i], samples.masks[i].astype(np.float64), samples.boxes[i]
        r = rng.random((64, 64))
        target = int(samples.labels[i])
        for store, a in ((truth, m + 1e-3 * r), (noise, r)):  # tiny noise: no tied peak
            store += (-metrics.deletion(demo_model, x, a, target=target).auc,
                      metrics.insertion(demo_model, x, a, target=target).auc,
                      metrics.mufidelity(demo_model, x, a, target=target, subsets=64).correlation,
                      metrics.pointing_game(a, box),
                      metrics.energy_in_box(a, box))
    assert np.all(truth > noise), (truth, noise)


def test_one_batch_per_curve_and_no_retrace_for_a_new_image_or_target(demo_model):
    samples = demo.load_images()
    p = probe(demo_model)
    a = np.random.default_rng(1).random((64, 64))
    with unchanged(demo_model):
        metrics.deletion(demo_model, samples.images[0], a)
    first = p.trace_count("metrics")
    keys = [k for k in p.traces if k[0] == "metrics"]
    assert any(k[1] == (1, 64, 64, 3) and 21 in k for k in keys)  # 21 rows: one batch
    metrics.curves(demo_model, samples.images[0], a)
    first = p.trace_count("metrics")
    metrics.deletion(demo_model, samples.images[1], a, target=2)
    metrics.insertion(demo_model, samples.images[2], a[::-1].copy(), baseline="mean")
    assert p.trace_count("metrics") == first


def test_integrated_gradients_warns_with_the_step_count(demo_model):
    x = demo.load_images().images[0]
    with pytest.warns(RuntimeWarning, match=r"completeness error .* with steps=2;.*steps="):
        integrated_gradients(demo_model, x, steps=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        integrated_gradients(demo_model, x, steps=2, tolerance=None)


@pytest.mark.parametrize("kwargs, error, words", [
    ({"steps": 0}, ValueError, "steps"),
    ({"steps": 2.5}, ValueError, "steps"),
    ({"baseline": "black"}, ValueError, "baseline"),
    ({"baseline": np.zeros((3, 3))}, ValueError, "baseline"),
    ({"score": "softmax"}, ValueError, "score"),
    ({"batch_size": 0}, ValueError, "batch_size"),
])
def test_bad_arguments_name_themselves(linear, kwargs, error, words):
    model, _, _ = linear
    x = np.ones((H, W, C), np.float32)
    with unchanged(model), pytest.raises(error, match=words):
        metrics.deletion(model, x, np.ones((H, W)), **kwargs)


def test_bad_attributions_name_the_argument(linear):
    model, _, _ = linear
    x = np.ones((H, W, C), np.float32)
    bad_nan = np.ones((H, W))
    bad_nan[1, 1] = np.nan
    for attribution, message in ((np.ones((H, W + 1)), "attribution has spatial shape"),
                                 (np.ones((H,)), "attribution must be H×W"),
                                 (bad_nan, "attribution contains NaN")):
        with pytest.raises(ValueError, match=message):
            metrics.insertion(model, x, attribution)
    with pytest.raises(ValueError, match="attribution contains NaN"):
        metrics.pointing_game(bad_nan, (0, 0, 2, 2))
    with pytest.raises(ValueError, match="box_or_mask"):
        metrics.energy_in_box(np.ones((H, W)), (0, 0, 9, 2))
    with pytest.raises(ValueError, match="box_or_mask"):
        metrics.pointing_game(np.ones((H, W)), np.zeros((H, W), bool))
    with pytest.raises(ValueError, match="one image"):
        metrics.deletion(model, np.ones((2, H, W, C)), np.ones((H, W)))
    with pytest.raises(ValueError, match="fraction"):
        metrics.mufidelity(model, x, np.ones((H, W)), fraction=1.5)


def test_curves_in_one_batch_equal_the_separate_curves(linear):
    model, w, b = linear
    x = np.random.default_rng(11).uniform(0, 1, (H, W, C)).astype(np.float32)
    a = np.random.default_rng(12).normal(0, 1, (H, W, C))
    both = metrics.curves(model, x, a, steps=6, baseline="mean")
    for kind, fn in (("deletion", metrics.deletion), ("insertion", metrics.insertion)):
        alone = fn(model, x, a, steps=6, baseline="mean")
        np.testing.assert_allclose(both[kind].scores, alone.scores, rtol=1e-6, atol=1e-7)
        assert both[kind].auc == pytest.approx(alone.auc) and both[kind].kind == kind
    assert any(k[0] == "metrics" and 14 in k for k in probe(model).traces)  # 2 × 7 rows, one batch


def test_the_step_estimate_is_measured_once_per_model_and_steps(demo_model):
    x, y = demo.image(3), demo.image(5)
    rates = probe(demo_model).cache("ig_completeness_rate")
    rates.clear()
    with pytest.warns(RuntimeWarning, match=r"steps=3;.* at steps=6; steps=\d+ should"):
        integrated_gradients(demo_model, x, steps=3)
    assert list(rates) == [(3, (64, 64, 3))] and rates[(3, (64, 64, 3))] > 0
    before = probe(demo_model).trace_count()
    with pytest.warns(RuntimeWarning, match=r"steps=3; steps=\d+ should") as caught:
        integrated_gradients(demo_model, y, steps=3)
    assert "at steps=6" not in str(caught[0].message)  # the measured rate is reused
    assert probe(demo_model).trace_count() == before
