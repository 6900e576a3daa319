"""Integrated gradients along other paths: Blur IG (Xu et al. 2020) and Guided IG (Kapishnikov
et al. 2021). Both return H×W×C float32 maps (N×H×W×C for a batch), in the model's input space.

**Blur IG** integrates along the path of Gaussian blurs ``b(σ) = G_σ * x`` from ``σ = max_sigma``
(the baseline: the most blurred image) down to ``σ = 0`` (the image):

    attribution = -Σ_{i=0}^{steps-1} (σ_{i+1} - σ_i) · ∂b/∂σ(σ_i) · ∇f(b(σ_i))

with PAIR saliency's grid ``σ_i = i · max_sigma / steps`` (``sqrt=True``: ``σ_i = sqrt(i ·
max_sigma / steps)``, which ends at ``sqrt(max_sigma)``, as PAIR's), left endpoints, and
``max_sigma = 50``, ``steps = 100`` by default. Unlike PAIR (a finite difference with
``grad_step = 0.01``), ``∂b/∂σ`` is the exact derivative of the discrete blur used. The blur is
separable, per channel, with scipy.ndimage's "reflect" boundary (``d c b a | a b c d | d c b a``)
and a kernel radius of ``int(4 · max_sigma + 0.5)`` for every σ on the path (scipy truncates at
``4 σ``; the tail beyond is below 1e-4 of the mass). The attributions sum to about
``f(x) - f(b(max_sigma))``. The path images run in batches of ``batch_size``.

**Guided IG** follows an adaptive path from ``baseline`` to the image: at each of ``steps`` steps
the L1 distance to the image shrinks by ``1/steps`` of the total, and the features moved are
those with the smallest absolute gradient (the ``fraction`` quantile, repeatedly until the
distance target is met), each kept within ``max_dist`` (as a fraction of the straight path) of
the straight-line point ``α = step / steps``; attributions accumulate ``Δx · ∇f`` along the way.
PAIR's defaults: ``steps = 200``, ``fraction = 0.25``, ``max_dist = 0.02``, baseline zeros. On a
linear model it equals IG, ``w · (x - baseline)``. The path is sequential (one gradient per step,
all images of a batch together); the per-step selection runs in numpy.

``target=None`` explains the image's own top class at every point of the path.
"""

from __future__ import annotations

import dataclasses
import numbers

import numpy as np
import tensorflow as tf

from nbviz.methods import core
from nbviz.methods import targets as _targets

__all__ = ["blur_ig", "guided_ig"]


def _positive_int(name, value):
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return int(value)


def _real(name, value, low, high, *, open_low=False):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value) \
            or value < low or value > high or (open_low and value == low):
        side = "(" if open_low else "["
        raise ValueError(f"{name} must be a number in {side}{low}, {high}], got {value!r}")
    return float(value)


# --------------------------------------------------------------------------- Blur IG


def _reflect_offsets(n: int, radius: int):
    """For the reflect boundary: arrays ``m_k`` (n×n) of kernel offsets with ``reflect(i + m) = j``
    (one per mirror image), and masks ``|m_k| <= radius``."""
    i = np.arange(n)[:, None]
    j = np.arange(n)[None, :]
    reps = radius // (2 * n) + 2
    offsets, masks = [], []
    for q in range(-reps, reps + 1):
        for m in (j - i + 2 * n * q, -1 - j - i + 2 * n * q):
            keep = np.abs(m) <= radius
            if keep.any():
                offsets.append(np.where(keep, m, 0).astype(np.float32))
                masks.append(keep.astype(np.float32))
    return np.stack(offsets), np.stack(masks)


def _blur_matrices(sigma, offsets, masks, radius):
    """Blur matrices ``A(σ)`` (S×n×n) along one axis and ``dA/dσ``, for a batch of σ."""
    s = tf.maximum(sigma, 1e-3)[:, None, None, None]
    m2 = tf.constant(offsets)[None] ** 2
    g = tf.exp(-m2 / (2.0 * s ** 2)) * tf.constant(masks)[None]  # (S, K, n, n)
    dg = g * m2 / s ** 3
    taps = tf.range(-radius, radius + 1, dtype=tf.float32)[None] ** 2
    s1 = s[:, 0, 0]
    weights = tf.exp(-taps / (2.0 * s1 ** 2))
    norm = tf.reduce_sum(weights, axis=1)[:, None, None]
    dnorm = tf.reduce_sum(weights * taps / s1 ** 3, axis=1)[:, None, None]
    a = tf.reduce_sum(g, axis=1) / norm
    da = tf.reduce_sum(dg, axis=1) / norm - a * dnorm / norm
    return a, da


def blur_ig(model, image, *, target=None, steps=100, max_sigma=50.0, sqrt=False, batch_size=32,
            preprocess=None, extra_inputs=None) -> np.ndarray:
    """Blur integrated gradients (Xu et al. 2020): IG along the Gaussian-blur path from
    ``max_sigma`` down to the image; H×W×C float32. See the module docstring for the formula and
    PAIR saliency's conventions (``steps``, ``max_sigma``, ``sqrt``)."""
    steps = _positive_int("steps", steps)
    batch_size = _positive_int("batch_size", batch_size)
    max_sigma = _real("max_sigma", max_sigma, 0.0, 1e4, open_low=True)
    if not isinstance(sqrt, bool):
        raise TypeError(f"sqrt must be True or False, got {sqrt!r}")
    p, images, single = core.prepare(model, image, preprocess)
    sel = core.selection(p, target, images, None)
    h, w = int(images.shape[1]), int(images.shape[2])
    radius = int(4.0 * max_sigma + 0.5)
    rows, cols = _reflect_offsets(h, radius), _reflect_offsets(w, radius)
    size = core.balanced(steps, batch_size)
    fn = sel.fn

    def chunk(x, sigmas, deltas, region, channels, top, extra):
        ah, dah = _blur_matrices(sigmas, *rows, radius)
        aw, daw = _blur_matrices(sigmas, *cols, radius)
        path = tf.einsum("sih,hwc,sjw->sijc", ah, x[0], aw)
        dpath = (tf.einsum("sih,hwc,sjw->sijc", dah, x[0], aw)
                 + tf.einsum("sih,hwc,sjw->sijc", ah, x[0], daw))
        with tf.GradientTape() as tape:
            tape.watch(path)
            out = core.explain(p, tf.concat([path, x], 0), None, extra)
            path_out, x_out = out[:size], out[size:]
            resolved = channels if fn is not None else _targets.resolve_channels(
                x_out, region, channels, top)
            score = _targets.scores(path_out, fn, tf.repeat(region, size, axis=0),
                                    tf.repeat(resolved, size, axis=0), tf.zeros((size,), tf.bool))
        grads = tape.gradient(score, path)
        return -tf.reduce_sum(deltas[:, None, None, None] * dpath * grads, axis=0, keepdims=True)

    f = core.compiled(p, core.key_of("blur_ig", images[:1], sel, size, radius), chunk)
    grid = np.arange(steps + 1, dtype=np.float64) * max_sigma / steps
    if sqrt:
        grid = np.sqrt(grid)
    sigmas, deltas = grid[:-1].astype(np.float32), np.diff(grid).astype(np.float32)
    extra = core.extra_tensors(p, extra_inputs)
    maps = []
    for i in range(images.shape[0]):
        x, sel_i, total = images[i:i + 1], sel.row(i), None
        for start in range(0, steps, size):
            s, d = sigmas[start:start + size], deltas[start:start + size]
            if len(s) < size:  # pad the last batch (same shape, no retrace); padded rows weigh 0
                s = np.concatenate([s, np.zeros(size - len(s), np.float32)])
                d = np.concatenate([d, np.zeros(size - len(d), np.float32)])
            g = f(x, tf.constant(s), tf.constant(d), *sel_i.tensors, extra)
            total = g if total is None else total + g
        maps.append(total)
    return core.numpy_maps(tf.concat(maps, 0), single, "blur_ig")


# --------------------------------------------------------------------------- Guided IG


def fixed_selection(p, sel, images, extra):
    """``sel`` with ``target=None`` resolved to each image's top channel, so that points of a path
    are explained for the image's class, not their own."""
    if sel.fn is not None:
        return sel

    def top_channels(images, region, channels, top, extra):
        return _targets.resolve_channels(core.explain(p, images, None, extra), region, channels, top)

    f = core.compiled(p, core.key_of("top_channels", images, sel), top_channels)
    resolved = f(images, *sel.tensors, extra)
    return dataclasses.replace(sel, channels=resolved, top=tf.zeros_like(sel.top))


def _guided_step(cur, x, base, grad, alpha, max_dist, fraction):
    """One Guided IG step for one image (flat float64 arrays); returns the new point."""
    diff = x - base
    total = np.abs(diff).sum()
    a_min, a_max = max(alpha - max_dist, 0.0), min(alpha + max_dist, 1.0)
    x_min, x_max = base + a_min * diff, base + a_max * diff
    target = total * (1.0 - alpha)
    grad = grad.copy()
    for _ in range(10_000):  # each pass moves at least a `fraction` of the movable features
        with np.errstate(divide="ignore", invalid="ignore"):
            progress = np.where(diff != 0, (cur - base) / diff, a_max)
        behind = progress < a_min
        cur = np.where(behind, x_min, cur)
        dist = np.abs(cur - x).sum()
        if np.isclose(target, dist, rtol=1e-9, atol=1e-9 * max(total, 1.0)):
            return cur
        grad[cur == x_max] = np.inf
        movable = np.isfinite(grad)
        if not movable.any():
            return cur
        threshold = np.quantile(np.abs(grad), fraction, method="lower")
        chosen = (np.abs(grad) <= threshold) & movable
        span = (np.abs(cur - x_max) * chosen).sum()
        gamma = (dist - target) / span if span > 0 else np.inf
        if gamma > 1.0:
            cur = np.where(chosen, x_max, cur)
        else:
            return np.where(chosen, cur + gamma * (x_max - cur), cur)
    return cur


def guided_ig(model, image, *, target=None, steps=200, fraction=0.25, max_dist=0.02,
              baseline=0.0, preprocess=None, extra_inputs=None) -> np.ndarray:
    """Guided integrated gradients (Kapishnikov et al. 2021): IG along an adaptive path that
    first moves the features with the smallest absolute gradient; H×W×C float32. See the module
    docstring for the path and PAIR saliency's conventions (``steps``, ``fraction``,
    ``max_dist``). ``baseline``: a number or an array broadcastable to the image."""
    steps = _positive_int("steps", steps)
    fraction = _real("fraction", fraction, 0.0, 1.0, open_low=True)
    max_dist = _real("max_dist", max_dist, 0.0, 1.0)
    p, images, single = core.prepare(model, image, preprocess)
    base = core.as_baseline(baseline, images)
    sel = core.selection(p, target, images, None)
    extra = core.extra_tensors(p, extra_inputs)
    sel = fixed_selection(p, sel, images, extra)
    f = core.gradient_function(p, "guided_ig", images, sel, None, _null)
    shape = tuple(images.shape)
    n = shape[0]
    x = images.numpy().reshape(n, -1).astype(np.float64)
    b = base.numpy().reshape(n, -1).astype(np.float64)
    cur, attr = b.copy(), np.zeros_like(x)
    for step in range(steps):
        grads = f(tf.constant(cur.reshape(shape), tf.float32), *sel.tensors, extra)
        grads = grads.numpy().reshape(n, -1).astype(np.float64)
        for i in range(n):
            if not np.abs(x[i] - b[i]).sum():
                continue
            new = _guided_step(cur[i], x[i], b[i], grads[i], (step + 1) / steps, max_dist, fraction)
            attr[i] += (new - cur[i]) * grads[i]
            cur[i] = new
    return core.numpy_maps(attr.reshape(shape), single, "guided_ig")


def _null():
    import contextlib
    return contextlib.nullcontext()
