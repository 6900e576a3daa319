"""XRAI: the regions partition the image, are sorted by attribution density, follow the greedy
rule (against a plain reference), the map holds the densities; batches, no retrace, errors."""

from __future__ import annotations

import numpy as np
import pytest

from nbviz import integrated_gradients, xrai
from nbviz.methods.xrai import rank_regions, xrai_segments
from nbviz.probe import probe
from tests.conftest import unchanged
from tests.methods.toys import linear_toy


def _reference_greedy(attr, masks, min_pixel_diff):
    """XRAI's greedy selection written plainly: the picks in order with their densities."""
    current = np.zeros(attr.shape, bool)
    remaining = list(range(len(masks)))
    picks = []
    while not current.all():
        best, best_gain = None, -np.inf
        for k in list(remaining):
            new = masks[k] & ~current
            if new.sum() < min_pixel_diff:
                remaining.remove(k)
                continue
            gain = attr[new].mean()
            if gain > best_gain:
                best, best_gain = k, gain
        if best is None:
            break
        picks.append((masks[best] & ~current, best_gain))
        current |= masks[best]
        remaining.remove(best)
    if not current.all():
        picks.append((~current, attr[~current].mean()))
    return picks


def _check_partition_and_order(regions, densities, attr):
    regions = np.asarray(regions)
    assert regions.dtype == bool
    np.testing.assert_array_equal(regions.sum(0), 1)  # every pixel in exactly one region
    np.testing.assert_allclose(densities, [attr[r].mean() for r in regions], rtol=1e-6)
    assert np.all(np.diff(densities) <= 0)  # highest density first


def test_greedy_ranking_against_a_plain_reference():
    rng = np.random.default_rng(31)
    attr = rng.normal(0, 1, (20, 24))
    attr[3:9, 4:12] += 2.0
    masks = []
    for _ in range(25):  # overlapping random rectangles, some tiny
        t, l = rng.integers(0, 18), rng.integers(0, 22)
        masks.append(np.zeros((20, 24), bool))
        masks[-1][t:t + rng.integers(2, 10), l:l + rng.integers(2, 12)] = True
    regions, densities = rank_regions(attr, masks, min_pixel_diff=6)
    _check_partition_and_order(regions, densities, attr)
    picks = _reference_greedy(attr, masks, 6)
    order = sorted(range(len(picks)), key=lambda k: -picks[k][1])
    assert len(regions) == len(picks)
    for region, k in zip(regions, order):
        np.testing.assert_array_equal(region, picks[k][0])


@pytest.fixture(scope="module")
def linear():
    return linear_toy(shape=(32, 32, 3), classes=2)


def test_xrai_end_to_end_on_a_linear_model(linear):
    model, w, _ = linear
    rng = np.random.default_rng(32)
    images = rng.uniform(0, 1, (2, 32, 32, 3)).astype(np.float32)
    images[:, 6:18, 10:24] += 1.0  # an object Felzenszwalb can find
    with unchanged(model):
        maps, regions = xrai(model, images, target=[0, 1], steps=8, return_regions=True)
    assert maps.shape == (2, 32, 32) and len(regions) == 2
    for i, cls in enumerate((0, 1)):
        x = images[i]
        attr = 0.5 * sum(w[..., cls] * (x - b) for b in (x.min(), x.max())).max(-1)
        ig = 0.5 * sum(integrated_gradients(model, x, target=cls, steps=8, baseline=b)
                       for b in (x.min(), x.max())).max(-1)
        np.testing.assert_allclose(ig, attr, rtol=1e-4, atol=1e-5)  # the attribution XRAI ranks
        densities = np.array([maps[i][r][0] for r in regions[i]])
        _check_partition_and_order(regions[i], densities, attr)
        for r, d in zip(regions[i], densities):  # the map holds its region's density
            np.testing.assert_allclose(maps[i][r], d)
        masks = xrai_segments(x)
        assert len(regions[i]) == len(_reference_greedy(attr, masks, 50))
    # a single image is the batch's row; rank scores are (K - k) / K; no retrace
    p = probe(model)
    before = p.trace_count()
    single, reg1 = xrai(model, images[1], target=1, steps=8, return_regions=True)
    assert p.trace_count() == before
    np.testing.assert_allclose(single, maps[1], rtol=1e-5)
    ranks = xrai(model, images[1], target=1, steps=8, score="rank")
    k = len(reg1)
    np.testing.assert_allclose([ranks[r][0] for r in reg1], (k - np.arange(k)) / k)


def test_given_attribution_and_segments(linear):
    model, _, _ = linear
    image = np.zeros((32, 32, 3), np.float32)
    attr = np.zeros((32, 32))
    attr[:16] = 1.0
    attr[16:, :16] = 3.0
    labels = np.zeros((32, 32), int)
    labels[16:] = 1
    labels[16:, :16] = 2
    out, regions = xrai(model, image, attribution=attr, segments=labels, return_regions=True,
                        min_pixel_diff=1)
    np.testing.assert_array_equal(regions[0], labels == 2)
    np.testing.assert_array_equal(regions[1], labels == 0)
    np.testing.assert_array_equal(regions[2], labels == 1)
    np.testing.assert_allclose(out[labels == 2], 3.0)


def test_argument_errors(linear):
    model, _, _ = linear
    image = np.zeros((32, 32, 3), np.float32)
    with pytest.raises(ValueError, match="score must be"):
        xrai(model, image, score="percentile")
    with pytest.raises(ValueError, match="attribution must be"):
        xrai(model, image, attribution=np.zeros((5, 5)))
    with pytest.raises(ValueError, match="scales must be"):
        xrai(model, image, scales=())
