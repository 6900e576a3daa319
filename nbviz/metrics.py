"""Can I trust this map? Faithfulness and localisation metrics for attribution maps.

All functions take one image (H×W×C) and its attribution map, run the model on perturbed copies
in batches (never one forward pass per step) and return numpy values. ``target``, ``preprocess``
and ``extra_inputs`` mean what they mean for the methods (:mod:`nbviz.methods.targets`): ``None``
explains the top class of the unperturbed image, and that class is scored on every perturbed
copy. The model is never changed.

**Which pixels matter most.** An ``H×W`` attribution is used as given (largest value first, so a
signed map's negative evidence comes last); an ``H×W×C`` attribution (saliency, SmoothGrad,
integrated gradients, guided backprop) is reduced to ``sum_c |a_c|`` per pixel, its magnitude.
Ties are broken by row-major pixel index (the upper-left pixel first), so the order, and the
curve, is deterministic. MuFidelity keeps the sign (``sum_c a_c``): it compares attribution sums
with score changes.

**Scores.** ``score="probability"``: the softmax of the logits over the last axis (the model's
own output when it ends in a softmax); ``score="logit"``: the logits, the score the gradient
methods explain. Results say which was used.

**Deletion / insertion** (Petsiuk et al. 2018, RISE). With the pixels sorted by importance and
``n_k = round(k · H·W / steps)`` for ``k = 0..steps``, deletion scores the image with its first
``n_k`` pixels replaced by the baseline, insertion the baseline with the first ``n_k`` pixels of
the image put back. The area under the curve is the trapezoid rule over the fraction of pixels
``n_k / (H·W)``::

    AUC = sum_k (f_k + f_{k+1}) / 2 · (n_{k+1} - n_k) / (H·W)

A faithful map has a low deletion AUC (the score collapses once the important pixels are gone)
and a high insertion AUC. All ``steps + 1`` copies run as one batch (``batch_size`` splits it).
The baseline (what a removed pixel becomes) is described in :mod:`nbviz.methods.baselines`:
``"blur"`` (default, as in Petsiuk et al.), ``"mean"``, a number or an array.

**MuFidelity** (Bhatt et al. 2020): the Pearson correlation, over random subsets ``S`` of
features, between ``sum_{i in S} a_i`` and ``f(x) - f(x with S set to the baseline)``. Features
are the cells of a ``grid × grid`` partition of the image (``grid=None``: single pixels); each
subset holds ``round(fraction · cells)`` cells, drawn by ``numpy.random.default_rng(seed)``.

**Pointing game** (Zhang et al. 2016): does the map's maximum fall inside the object's box or
mask (within ``tolerance`` pixels)? When several pixels share the maximum, every one of them must
be inside, so a constant map never scores unless the region covers the whole image.
**Energy in box** (Wang et al. 2020, Score-CAM): the share of the map's positive mass inside the
region.

**Completeness** (Sundararajan et al. 2017): integrated gradients should sum to
``f(x) - f(x')``; :func:`completeness` measures the relative error for any map.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import warnings

import numpy as np
import tensorflow as tf

from nbviz.methods import baselines as _baselines
from nbviz.methods import core
from nbviz.methods import targets as _targets

__all__ = ["Curve", "MuFidelity", "Completeness", "deletion", "insertion", "curves", "mufidelity",
           "pointing_game", "energy_in_box", "completeness", "pixel_order", "SCORES"]

#: the scores a curve can be measured on
SCORES = ("probability", "logit")


# --------------------------------------------------------------------------- results


@dataclasses.dataclass(frozen=True, eq=False)
class Curve:
    """A deletion or insertion curve.

    ``fractions`` (steps + 1,): share of pixels removed (deletion) or inserted (insertion);
    ``scores``: the target's score at each; ``auc``: trapezoid area under ``scores`` over
    ``fractions``; ``score``: "probability" or "logit"; ``baseline``: what removed pixels became;
    ``target``: the class/channel scored (None for a callable target).
    """

    kind: str
    fractions: np.ndarray
    scores: np.ndarray
    auc: float
    score: str
    baseline: str
    target: int | None

    def plot(self, ax=None):
        """Draw the curve on ``ax`` (a new figure when None); returns the axes."""
        if ax is None:
            from matplotlib.figure import Figure

            ax = Figure(figsize=(4, 3)).add_subplot()
        ax.plot(self.fractions, self.scores, marker=".")
        ax.fill_between(self.fractions, self.scores, alpha=0.2)
        ax.set_xlabel(f"fraction of pixels {'removed' if self.kind == 'deletion' else 'inserted'}")
        ax.set_ylabel(self.score)
        ax.set_title(f"{self.kind} (baseline {self.baseline}): AUC {self.auc:.3f}")
        ax.set_xlim(0, 1)
        return ax


@dataclasses.dataclass(frozen=True, eq=False)
class MuFidelity:
    """MuFidelity: ``correlation`` (Pearson) between ``attribution_sums`` and ``score_drops``
    over the random subsets; ``score`` and ``target`` as for :class:`Curve`."""

    correlation: float
    attribution_sums: np.ndarray
    score_drops: np.ndarray
    score: str
    baseline: str
    target: int | None


@dataclasses.dataclass(frozen=True)
class Completeness:
    """``total``: the attribution's sum; ``difference``: ``f(x) - f(baseline)`` (logits);
    ``relative``: ``|total - difference| / max(|difference|, 1e-6)``."""

    total: float
    difference: float
    relative: float


# --------------------------------------------------------------------------- checks


def _steps(steps) -> int:
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    return int(steps)


def _positive_int(value, name) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return int(value)


def _score_kind(score) -> str:
    if score not in SCORES:
        raise ValueError(f"score must be 'probability' or 'logit', got {score!r}")
    return score


def _array(attribution, name="attribution") -> np.ndarray:
    a = attribution.numpy() if isinstance(attribution, tf.Tensor) else np.asarray(attribution)
    if not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        raise TypeError(f"{name} must be a numeric array, got dtype {a.dtype}")
    a = a.astype(np.float64)
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or infinite values ({int((~np.isfinite(a)).sum())} "
                         f"of {a.size}); a metric of such a map would be meaningless")
    return a


def _plane(attribution, size=None, *, signed=False, name="attribution") -> np.ndarray:
    """H×W importance: an H×W map as given; H×W×C reduced by sum |.| (or sum with ``signed``)."""
    a = _array(attribution, name)
    if a.ndim == 3:
        a = a.sum(axis=-1) if signed else np.abs(a).sum(axis=-1)
    elif a.ndim != 2:
        raise ValueError(f"{name} must be H×W or H×W×C for one image, got shape {a.shape}")
    if size is not None and a.shape != tuple(size):
        raise ValueError(f"{name} has spatial shape {a.shape}, the image is {size[0]}×{size[1]}")
    return a


def pixel_order(attribution) -> np.ndarray:
    """Flat pixel indices, most important first (see the module doc); ties by row-major index."""
    plane = _plane(attribution)
    return np.argsort(-plane.ravel(), kind="stable")


def _single(model, image, preprocess):
    p, images, single = core.prepare(model, image, preprocess)
    if images.shape[0] != 1:
        raise ValueError(f"image must be one image (H×W×C), got a batch of {images.shape[0]}; "
                         f"call the metric once per image")
    return p, images


def _region(box_or_mask, size) -> np.ndarray:
    """Boolean H×W region from (top, left, bottom, right) or an H×W mask."""
    h, w = size
    if isinstance(box_or_mask, _targets.Box):
        box_or_mask = (box_or_mask.top, box_or_mask.left, box_or_mask.bottom, box_or_mask.right)
    value = np.asarray(box_or_mask)
    if value.shape == (4,) and (np.issubdtype(value.dtype, np.integer)
                                or (np.issubdtype(value.dtype, np.floating)
                                    and np.all(value == np.round(value)))):
        t, l, b, r = (int(v) for v in value)
        if not (0 <= t < b <= h and 0 <= l < r <= w):
            raise ValueError(f"box_or_mask: box (top, left, bottom, right) = {(t, l, b, r)} is "
                             f"empty or outside the {h}×{w} map")
        region = np.zeros((h, w), bool)
        region[t:b, l:r] = True
        return region
    if value.ndim == 2:
        if value.shape != (h, w):
            raise ValueError(f"box_or_mask: mask has shape {value.shape}, the map is {h}×{w}")
        if not (np.issubdtype(value.dtype, np.number) or value.dtype == bool):
            raise TypeError(f"box_or_mask: mask must be boolean or numeric, got {value.dtype}")
        region = value != 0
        if not region.any():
            raise ValueError("box_or_mask: the mask is empty")
        return region
    raise ValueError(f"box_or_mask must be (top, left, bottom, right) ints or an H×W mask, got "
                     f"shape {value.shape}")


# --------------------------------------------------------------------------- the batched scorer


def _scorer(p, x, sel, size: int, score: str):
    """Compiled ``f(keep, fill, hidden, x, region, channels, top, extra) -> (scores, channel)``.

    Row i is ``where(hidden[i], fill, keep)``; the image ``x`` runs as one more row and fixes the
    top class when the target is None. Keyed by the image shape, the batch size, the target kind
    and the score kind: new images, targets, orders and baselines never retrace.
    """
    fn = sel.fn
    probability = score == "probability"

    def scored(keep, fill, hidden, x, region, channels, top, extra):
        rows = tf.where(hidden[..., None], fill, keep)
        logits = core.explain(p, tf.concat([rows, x], 0), None, extra)
        out = tf.nn.softmax(logits, axis=-1) if probability else logits
        n = size + 1
        resolved = channels if fn is not None else _targets.resolve_channels(
            logits[size:], region, channels, top)
        values = _targets.scores(out, fn, tf.repeat(region, n, axis=0),
                                 tf.repeat(resolved, n, axis=0), tf.zeros((n,), tf.bool))
        return values, tf.argmax(resolved[0])

    return core.compiled(p, core.key_of("metrics", x, sel, size, score), scored)


def _run(p, x, keep, fill, hidden: np.ndarray, sel, score, batch_size, extra_inputs):
    """Scores of every row of ``hidden`` (B, H, W) bool, in balanced batches."""
    count = hidden.shape[0]
    size = core.balanced(count, batch_size)
    f = _scorer(p, x, sel, size, score)
    extra = core.extra_tensors(p, extra_inputs)
    out = np.empty(count, np.float64)
    channel = None
    for start in range(0, count, size):
        chunk = hidden[start:start + size]
        m = len(chunk)
        if m < size:  # same shape every batch: no retrace; padded rows are dropped
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], size - m, axis=0)])
        values, channel = f(keep, fill, tf.constant(chunk), x, *sel.tensors, extra)
        out[start:start + m] = values.numpy()[:m]
    return out, (None if sel.fn is not None else int(channel))


def _curves(kinds, model, image, attribution, target, steps, baseline, score, batch_size,
            preprocess, extra_inputs) -> dict:
    steps = _steps(steps)
    batch_size = _positive_int(batch_size, "batch_size")
    score = _score_kind(score)
    p, x = _single(model, image, preprocess)
    h, w = int(x.shape[1]), int(x.shape[2])
    plane = _plane(attribution, (h, w))
    base = _baselines.reference(baseline, x)
    sel = core.selection(p, target, x, None)
    order = np.argsort(-plane.ravel(), kind="stable")
    rank = np.empty(h * w, np.int64)
    rank[order] = np.arange(h * w)
    rank = rank.reshape(h, w)
    counts = np.rint(np.arange(steps + 1) * (h * w) / steps).astype(np.int64)
    chosen = rank[None] < counts[:, None, None]  # (steps + 1, H, W): the first n_k pixels
    # every row is where(hidden, baseline, image): deletion hides the chosen pixels, insertion
    # hides all the others; both curves can share one batch
    hidden = np.concatenate([chosen if k == "deletion" else ~chosen for k in kinds])
    values, channel = _run(p, x, x, base, hidden, sel, score, batch_size, extra_inputs)
    fractions = counts / float(h * w)
    out = {}
    for i, kind in enumerate(kinds):
        v = values[i * (steps + 1):(i + 1) * (steps + 1)]
        out[kind] = Curve(kind, fractions, v, float(np.trapezoid(v, fractions)), score,
                          _baselines.describe(baseline), channel)
    return out


def curves(model, image, attribution, *, target=None, steps=20, baseline="blur",
           score="probability", batch_size=64, preprocess=None, extra_inputs=None) -> dict:
    """``{"deletion": Curve, "insertion": Curve}`` from one batch of ``2 (steps + 1)`` images
    (one forward pass with the default ``batch_size``); the same curves as :func:`deletion` and
    :func:`insertion`."""
    return _curves(("deletion", "insertion"), model, image, attribution, target, steps, baseline,
                   score, batch_size, preprocess, extra_inputs)


def deletion(model, image, attribution, *, target=None, steps=20, baseline="blur",
             score="probability", batch_size=64, preprocess=None, extra_inputs=None) -> Curve:
    """Deletion curve and AUC (lower is better): remove the most important pixels first.

    ``steps`` + 1 points at pixel fractions ``round(k·H·W/steps)/(H·W)``; removed pixels take
    the ``baseline`` ("blur", "mean", a number or an array); see the module doc.
    """
    return _curves(("deletion",), model, image, attribution, target, steps, baseline, score,
                   batch_size, preprocess, extra_inputs)["deletion"]


def insertion(model, image, attribution, *, target=None, steps=20, baseline="blur",
              score="probability", batch_size=64, preprocess=None, extra_inputs=None) -> Curve:
    """Insertion curve and AUC (higher is better): put the most important pixels back first
    into the ``baseline`` image. Same arguments as :func:`deletion`."""
    return _curves(("insertion",), model, image, attribution, target, steps, baseline, score,
                   batch_size, preprocess, extra_inputs)["insertion"]


# --------------------------------------------------------------------------- MuFidelity


def mufidelity(model, image, attribution, *, target=None, subsets=128, fraction=0.2, grid=8,
               baseline=0.0, score="probability", seed=0, batch_size=64, preprocess=None,
               extra_inputs=None) -> MuFidelity:
    """MuFidelity (Bhatt et al. 2020), see the module doc: ``subsets`` random subsets of
    ``round(fraction · grid²)`` cells of a ``grid × grid`` partition (``grid=None``: pixels) set
    to ``baseline``; Pearson correlation of the signed attribution sums with the score drops."""
    subsets = _positive_int(subsets, "subsets")
    if subsets < 3:
        raise ValueError(f"subsets must be >= 3 for a correlation, got {subsets}")
    if isinstance(fraction, bool) or not isinstance(fraction, numbers.Real) or not 0 < fraction < 1:
        raise ValueError(f"fraction must be a number in (0, 1), got {fraction!r}")
    batch_size = _positive_int(batch_size, "batch_size")
    score = _score_kind(score)
    p, x = _single(model, image, preprocess)
    h, w = int(x.shape[1]), int(x.shape[2])
    plane = _plane(attribution, (h, w), signed=True)
    if grid is None:
        cells = np.arange(h * w).reshape(h, w)
    else:
        grid = _positive_int(grid, "grid")
        if grid > min(h, w):
            raise ValueError(f"grid must be <= the image's side ({min(h, w)}), got {grid}")
        rows = np.arange(h) * grid // h
        cols = np.arange(w) * grid // w
        cells = rows[:, None] * grid + cols[None, :]
    n_cells = int(cells.max()) + 1
    take = max(1, int(round(fraction * n_cells)))
    rng = np.random.default_rng(seed)
    picks = np.zeros((subsets, n_cells), bool)
    for i in range(subsets):
        picks[i, rng.choice(n_cells, take, replace=False)] = True
    hidden = picks[:, cells]  # (subsets, H, W)
    sums = (hidden * plane[None]).sum(axis=(1, 2))
    base = _baselines.reference(baseline, x)
    sel = core.selection(p, target, x, None)
    both = np.concatenate([np.zeros((1, h, w), bool), hidden])  # row 0: the image itself
    values, channel = _run(p, x, x, base, both, sel, score, batch_size, extra_inputs)
    drops = values[0] - values[1:]
    if np.ptp(sums) == 0 or np.ptp(drops) == 0:
        warnings.warn("mufidelity: the attribution sums or the score drops are constant over the "
                      "subsets (an all-zero map, or a saturated score); the correlation is "
                      "undefined and reported as NaN", RuntimeWarning, stacklevel=2)
        corr = math.nan
    else:
        corr = float(np.corrcoef(sums, drops)[0, 1])
    return MuFidelity(corr, sums, drops, score, _baselines.describe(baseline), channel)


# --------------------------------------------------------------------------- localisation


def pointing_game(attribution, box_or_mask, *, tolerance=0) -> bool:
    """True when the map's maximum lies in the box ``(top, left, bottom, right)`` (bottom/right
    exclusive) or the H×W mask, or within ``tolerance`` pixels (Euclidean) of it. Every pixel
    that attains the maximum must qualify (see the module doc)."""
    plane = _plane(attribution)
    region = _region(box_or_mask, plane.shape)
    if isinstance(tolerance, bool) or not isinstance(tolerance, numbers.Real) or tolerance < 0:
        raise ValueError(f"tolerance must be a number of pixels >= 0, got {tolerance!r}")
    if tolerance > 0:
        from scipy.ndimage import distance_transform_edt

        region = distance_transform_edt(~region) <= tolerance
    peaks = plane == plane.max()
    return bool(region[peaks].all())


def energy_in_box(attribution, box_or_mask) -> float:
    """Share of the map's positive mass inside the box or mask, in [0, 1]: ``sum_{in} a⁺ /
    sum a⁺`` (an H×W×C map is reduced by sum |.| first). An all-zero or all-negative map gives
    0.0 with a warning."""
    plane = _plane(attribution)
    region = _region(box_or_mask, plane.shape)
    positive = np.clip(plane, 0, None)
    total = positive.sum()
    if total <= 0:
        warnings.warn("energy_in_box: the map has no positive values; returning 0.0",
                      RuntimeWarning, stacklevel=2)
        return 0.0
    return float(positive[region].sum() / total)


# --------------------------------------------------------------------------- completeness


def completeness(model, image, attribution, baseline=0.0, *, target=None, preprocess=None,
                 extra_inputs=None) -> Completeness:
    """How far ``attribution`` (H×W×C, or H×W) sums from ``f(x) - f(baseline)``, the explained
    logit of the target (None: the top class of ``x``) on the image and on the baseline."""
    p, x = _single(model, image, preprocess)
    a = _array(attribution)
    if a.shape not in (tuple(x.shape[1:]), tuple(x.shape[1:3])):
        raise ValueError(f"attribution has shape {a.shape}; expected the image's "
                         f"{tuple(x.shape[1:])} or {tuple(x.shape[1:3])}")
    base = _baselines.reference(baseline, x)
    sel = core.selection(p, target, x, None)
    hidden = np.ones((1,) + tuple(x.shape[1:3]), bool)
    f = _scorer(p, x, sel, 1, "logit")
    values, _ = f(x, base, tf.constant(hidden), x, *sel.tensors,
                  core.extra_tensors(p, extra_inputs))
    values = values.numpy().astype(np.float64)
    difference = float(values[1] - values[0])  # row 1: the image, row 0: the baseline
    total = float(a.sum())
    return Completeness(total, difference, abs(total - difference) / max(abs(difference), 1e-6))


def warn_if_incomplete(model, images, maps, *, steps, baseline, target, tolerance, batch_size,
                       extra_inputs=None) -> None:
    """Integrated gradients' check: warn when a map's completeness error exceeds ``tolerance``,
    naming the step count that should bring it under.

    The error is measured with one forward pass of two images. The step count assumes
    ``error ∝ steps^-p`` and is rounded up to ``steps · 2^k`` (on the demo model the error at
    32, 48, 64, 96, 128 steps was 2.6, 0.6, 1.1, 0.6, 0.7 %: not monotone); ``p`` is measured once per model, step count and image shape by running
    integrated gradients again with twice the steps (only when the error is too large), and kept
    on the model's probe, so later calls cost just the two-image forward pass.

    ``images`` and ``baseline``: N×H×W×C in the model's input space (after ``preprocess``);
    ``maps``: the H×W×C map of one image or N×H×W×C."""
    from nbviz.methods.gradients import integrated_gradients
    from nbviz.probe import probe

    batch = np.asarray(maps)
    single = batch.ndim == 3
    if single:
        batch = batch[None]
    simple = target is None or isinstance(target, numbers.Integral) or callable(target) \
        or isinstance(target, (_targets.Box, _targets.Mask))
    targets = [target] * len(batch) if simple else [int(t) for t in np.asarray(target)]
    rates = probe(model).cache("ig_completeness_rate")
    for i in range(len(batch)):
        x, b = images[i], baseline[i]
        err = completeness(model, x, batch[i], b, target=targets[i],
                           extra_inputs=extra_inputs).relative
        if err <= tolerance:
            continue
        key = (int(steps), tuple(np.shape(x)))
        measured = ""
        if key not in rates:
            finer = integrated_gradients(model, x, target=targets[i], steps=2 * steps,
                                         baseline=b, batch_size=batch_size,
                                         extra_inputs=extra_inputs, tolerance=None)
            err2 = completeness(model, x, finer, b, target=targets[i],
                                extra_inputs=extra_inputs).relative
            rates[key] = math.log2(err / err2) if err2 > 0 else math.inf
            measured = f" {100 * err2:.2g} % at steps={2 * steps};"
        rate = rates[key]
        which = "" if single else f" (image {i})"
        if rate == math.inf:
            advice = f"steps={2 * steps} removes it"
        elif rate > 0.05:
            needed = steps * (err / tolerance) ** (1.0 / rate)
            doubled = int(steps * 2 ** max(1, math.ceil(math.log2(needed / steps))))
            advice = (f"steps={doubled} should bring it under {100 * tolerance:g} % (error ∝ "
                      f"steps^-{rate:.2g}, measured by doubling the steps, gives "
                      f"{int(math.ceil(needed))}; rounded up to a doubling because the error of a "
                      f"ReLU network is not monotone in the step count: check with "
                      f"nbviz.metrics.completeness)")
        else:
            advice = ("doubling the steps does not reduce it (a non-smooth score or an unusual "
                      "baseline)")
        warnings.warn(
            f"integrated_gradients{which}: completeness error {100 * err:.2g} % (|sum − "
            f"(f(x) − f(baseline))| relative to |f(x) − f(baseline)|) with steps={steps};"
            f"{measured} {advice}. Pass tolerance=None to skip this check.",
            RuntimeWarning, stacklevel=3)
