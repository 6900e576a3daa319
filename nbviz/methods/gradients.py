"""Input gradients: saliency, SmoothGrad, integrated gradients (on :mod:`nbviz.methods.core`).

Maps are gradients of the score with respect to the model's input (after ``preprocess``), float32,
H×W×C for one image and N×H×W×C for a batch. A map that is all zero (dead units, a constant
model) comes back as zeros with a warning.
"""

from __future__ import annotations

import contextlib

import numpy as np
import tensorflow as tf

from nbviz.methods import targets as _targets
from nbviz.methods.core import (
    as_baseline, balanced, compiled, explain, extra_tensors, gradient_function, key_of, numpy_maps,
    prepare, selection)

__all__ = ["saliency", "smoothgrad", "integrated_gradients"]


# --------------------------------------------------------------------------- saliency


def saliency(model, image, *, target=None, preprocess=None, extra_inputs=None) -> np.ndarray:
    """Vanilla gradient: d score / d input, H×W×C float32 (N×H×W×C for a batch).

    Signed and raw (take ``np.abs(...).max(-1)`` for the usual map).
    ``extra_inputs``: values (for one example) of a multi-input model's other inputs.
    """
    p, images, single = prepare(model, image, preprocess)
    sel = selection(p, target, images, None)
    f = gradient_function(p, "saliency", images, sel, None, contextlib.nullcontext)
    return numpy_maps(f(images, *sel.tensors, extra_tensors(p, extra_inputs)), single, "saliency")


# --------------------------------------------------------------------------- SmoothGrad


def smoothgrad(model, image, *, target=None, n=20, noise=0.15, seed=0, preprocess=None,
               extra_inputs=None, progress=None) -> np.ndarray:
    """SmoothGrad (Smilkov et al. 2017): the mean gradient over ``n`` noisy copies.

    The noise is Gaussian with standard deviation ``noise * (max - min)`` of each image; all
    copies run as one batch together with the clean image, whose top class is the one explained
    when ``target`` is None. ``seed`` makes the noise reproducible. H×W×C float32.

    ``progress``: ``progress(partial, fraction)`` (one image only) is called with the mean over
    the copies done so far, in about four chunks of the same noisy copies (the same noise as
    without it); the last call gets the returned map.
    """
    n = _noise_arguments(n, noise, seed, minimum=1)
    p, images, single = prepare(model, image, preprocess)
    sel = selection(p, target, images, None)
    seed_t = tf.constant([int(seed), 0], tf.int64)
    if progress is not None:
        return _smoothgrad_chunks(p, images, sel, n, seed_t, noise, extra_tensors(p, extra_inputs), progress)
    maps = _noise_gradients(p, images, sel, n, seed_t, noise, extra_tensors(p, extra_inputs),
                            "smoothgrad", tf.reduce_mean)
    return numpy_maps(maps, single, "smoothgrad")


def _noise_arguments(n, noise, seed, *, minimum: int) -> int:
    """Check SmoothGrad's and VarGrad's ``n``, ``noise`` and ``seed``; returns ``n``."""
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < minimum:
        why = " for a variance" if minimum == 2 else ""
        raise ValueError(f"n (noisy copies) must be an int >= {minimum}{why}, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int (the noise's random seed), got {seed!r}")
    if isinstance(noise, bool) or not isinstance(noise, (int, float, np.integer, np.floating)):
        raise TypeError(f"noise must be a number (a fraction of the input range), got {noise!r}")
    if not np.isfinite(noise) or noise < 0:
        raise ValueError(f"noise must be a finite fraction >= 0 of the input range, got {noise!r}")
    return int(n)


def _noisy_copies(images, seed, noise, n):
    """Inside a traced function: ``n`` copies of each image (rows ``i * n ... i * n + n - 1``
    for image i) plus Gaussian noise of standard deviation ``noise * (max - min)`` of the image,
    from ``tf.random.stateless_normal`` with ``seed``."""
    copies = tf.repeat(images, n, axis=0)
    span = tf.reduce_max(images, axis=(1, 2, 3)) - tf.reduce_min(images, axis=(1, 2, 3))
    sigma = tf.repeat(span * noise, n)[:, None, None, None]
    return copies + sigma * tf.random.stateless_normal(tf.shape(copies), seed)


def _noise_gradients(p, images, sel, n, seed_t, noise, extra, purpose: str, reduce):
    """``reduce`` (mean: SmoothGrad, variance: VarGrad) over the ``n`` noisy copies of each
    image of the score's input gradient, in one compiled batch with the clean images (whose top
    class is explained when the target is None)."""
    fn = sel.fn

    def noisy_gradients(images, seed, noise, region, channels, top, extra):
        count = tf.shape(images)[0]
        noisy = _noisy_copies(images, seed, noise, n)
        with tf.GradientTape() as tape:
            tape.watch(noisy)
            out = explain(p, tf.concat([noisy, images], 0), None, extra)
            noisy_out, clean_out = out[: count * n], out[count * n:]
            if fn is None:
                resolved = _targets.resolve_channels(clean_out, region, channels, top)
                channels_n = tf.repeat(resolved, n, axis=0)
            else:
                channels_n = channels
            score = _targets.scores(noisy_out, fn, tf.repeat(region, n, axis=0),
                                    channels_n, tf.zeros(tf.shape(noisy)[:1], tf.bool))
        grads = tape.gradient(score, noisy)
        grads = tf.reshape(grads, tf.concat([[count, n], tf.shape(images)[1:]], 0))
        return reduce(grads, axis=1)

    f = compiled(p, key_of(purpose, images, sel, n), noisy_gradients)
    return f(images, seed_t, tf.constant(noise, tf.float32), *sel.tensors, extra)


def _smoothgrad_chunks(p, images, sel, n, seed_t, noise, extra, progress):
    """SmoothGrad of one image in chunks of ``k`` copies, reporting the running mean."""
    if images.shape[0] != 1:
        raise ValueError("smoothgrad(progress=...) takes one image")
    fn = sel.fn
    k = balanced(n, max(2, -(-n // 4)))

    def copies(images, seed, noise, extra):  # the noisy copies exactly as the one-shot version makes them
        return _noisy_copies(images, seed, noise, n)

    def chunk(noisy, weights, images, region, channels, top, extra):
        with tf.GradientTape() as tape:
            tape.watch(noisy)
            out = explain(p, tf.concat([noisy, images], 0), None, extra)
            resolved = channels if fn is not None else _targets.resolve_channels(out[k:], region, channels, top)
            score = _targets.scores(out[:k], fn, tf.repeat(region, k, axis=0), tf.repeat(resolved, k, axis=0),
                                    tf.zeros((k,), tf.bool)) * weights
        return tf.reduce_sum(tape.gradient(score, noisy), axis=0, keepdims=True)

    noisy = compiled(p, key_of("smoothgrad.copies", images, sel, n), copies)(
        images, seed_t, tf.constant(noise, tf.float32), None)
    f = compiled(p, key_of("smoothgrad.chunk", images, sel, k), chunk)
    total = None
    for start in range(0, n, k):
        part = noisy[start:start + k]
        m = int(part.shape[0])
        w = np.zeros(k, np.float32)
        w[:m] = 1.0
        if m < k:  # pad to the compiled shape; padded copies weigh 0
            part = tf.concat([part, tf.repeat(part[-1:], k - m, axis=0)], 0)
        g = f(part, tf.constant(w), images, *sel.tensors, extra)
        total = g if total is None else total + g
        done = start + m
        mean = numpy_maps(total / done, True, "smoothgrad")
        if done < n:
            progress(mean, done / n)
    progress(mean, 1.0)
    return mean


# --------------------------------------------------------------------------- integrated gradients


def integrated_gradients(model, image, *, target=None, steps=32, baseline=0.0, batch_size=32,
                         preprocess=None, extra_inputs=None, tolerance=0.01, progress=None) -> np.ndarray:
    """Integrated gradients (Sundararajan et al. 2017) from ``baseline`` to the image.

    ``(x - baseline) * mean_k grad(baseline + a_k (x - baseline))`` with ``steps`` midpoints
    ``a_k = (k + 1/2) / steps``; the path images run in batches of ``batch_size`` (each batch
    also runs the image itself, whose top class is explained when ``target`` is None). The
    attributions sum to about ``f(x) - f(baseline)`` (completeness). ``baseline`` is a number or
    an array broadcastable to the image (in the model's input space). H×W×C float32.

    ``progress``: ``progress(partial, fraction)`` (one image only) is called after each batch of
    path points; the batches are then about four, each spread evenly along the path (point
    ``k`` in batch ``k mod batches``), so each partial is a coarser Riemann sum of the same
    integral; the last call gets the returned map (the same sum in another order).

    ``tolerance``: after the run, the completeness error ``|sum − (f(x) − f(baseline))| /
    |f(x) − f(baseline)|`` is measured (one forward of two images,
    :func:`nbviz.metrics.completeness`); above ``tolerance`` a RuntimeWarning gives it and the
    step count that should fix it, estimated by running again with twice the steps (only then).
    ``None`` skips the check.
    """
    for name, value in (("steps", steps), ("batch_size", batch_size)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    p, images, single = prepare(model, image, preprocess)
    base = as_baseline(baseline, images)
    sel = selection(p, target, images, None)
    steps = int(steps)
    if progress is not None and images.shape[0] != 1:
        raise ValueError("integrated_gradients(progress=...) takes one image")
    size = balanced(steps, int(batch_size) if progress is None else min(int(batch_size), max(2, -(-steps // 4))))
    fn = sel.fn

    def chunk(x, base, alphas, weights, region, channels, top, extra):
        path = base + alphas[:, None, None, None] * (x - base)
        with tf.GradientTape() as tape:
            tape.watch(path)
            out = explain(p, tf.concat([path, x], 0), None, extra)
            path_out, x_out = out[:size], out[size:]
            resolved = channels if fn is not None else _targets.resolve_channels(
                x_out, region, channels, top)
            score = _targets.scores(
                path_out, fn, tf.repeat(region, size, axis=0),
                tf.repeat(resolved, size, axis=0), tf.zeros((size,), tf.bool))
            score = score * weights
        return tf.reduce_sum(tape.gradient(score, path), axis=0, keepdims=True)

    f = compiled(p, key_of("integrated_gradients", images[:1], sel, steps, size), chunk)
    alphas = (np.arange(steps, dtype=np.float32) + 0.5) / steps
    if progress is not None:  # batch j holds the points j, j + B, j + 2B, ... (B batches)
        batches = -(-steps // size)
        alphas = np.concatenate([alphas[j::batches] for j in range(batches)])
    extra = extra_tensors(p, extra_inputs)
    maps = []
    for i in range(images.shape[0]):
        x, b = images[i:i + 1], base[i:i + 1]
        sel_i = sel.row(i)
        total = None
        for start in range(0, steps, size):
            a = alphas[start:start + size]
            w = np.ones(size, np.float32)
            if len(a) < size:  # pad the last batch: same shape, no retrace; padded rows weigh 0
                w[len(a):] = 0.0
                a = np.concatenate([a, np.ones(size - len(a), np.float32)])
            g = f(x, b, tf.constant(a), tf.constant(w), *sel_i.tensors, extra)
            total = g if total is None else total + g
            done = min(start + size, steps)
            if progress is not None and done < steps:
                progress(numpy_maps((x - b) * total / done, True, "integrated_gradients"), done / steps)
        maps.append((x - b) * total / steps)
    result = numpy_maps(tf.concat(maps, 0), single, "integrated_gradients")
    if progress is not None:
        progress(result, 1.0)
    if tolerance is not None:
        from nbviz.metrics import warn_if_incomplete

        warn_if_incomplete(model, images.numpy(), result, steps=steps, baseline=base.numpy(),
                           target=target, tolerance=float(tolerance), batch_size=batch_size,
                           extra_inputs=extra_inputs)
    return result


# --------------------------------------------------------------------------- VarGrad, gradient × input

__all__ += ["vargrad", "gradient_x_input"]


def vargrad(model, image, *, target=None, n=20, noise=0.15, seed=0, preprocess=None,
            extra_inputs=None) -> np.ndarray:
    """VarGrad (Adebayo et al. 2018, "Local explanation methods for deep neural networks lack
    sensitivity to parameter values"; Hooker et al. 2019): the variance of the gradient over
    ``n`` noisy copies of the image, H×W×C float32 >= 0 (N×H×W×C for a batch).

    ``var_k g(x + e_k) = mean_k (g_k - mean_k g_k)²`` (the population variance, divided by n),
    per pixel and channel. The noise is the same as :func:`smoothgrad`'s for the same
    ``seed``, ``n`` and ``noise``: Gaussian with standard deviation ``noise * (max - min)`` of
    each image, from ``tf.random.stateless_normal`` with seed ``(seed, 0)`` over the
    ``(N * n, H, W, C)`` copies (image i's copies are rows ``i * n ... i * n + n - 1``). So
    SmoothGrad and VarGrad of one call pair are the mean and the variance of the same
    gradients. The clean image runs in the same batch; its top class is explained when
    ``target`` is None. ``n`` must be >= 2.
    """
    n = _noise_arguments(n, noise, seed, minimum=2)
    p, images, single = prepare(model, image, preprocess)
    sel = selection(p, target, images, None)
    maps = _noise_gradients(p, images, sel, n, tf.constant([int(seed), 0], tf.int64), noise,
                            extra_tensors(p, extra_inputs), "vargrad", tf.math.reduce_variance)
    return numpy_maps(maps, single, "vargrad")


def gradient_x_input(model, image, *, target=None, preprocess=None,
                     extra_inputs=None) -> np.ndarray:
    """Gradient × input (Shrikumar et al. 2016, "Not just a black box"): ``x ⊙ d score / d x``,
    signed, H×W×C float32 (N×H×W×C for a batch), with ``x`` in the model's input space (after
    ``preprocess``). It shares :func:`saliency`'s compiled gradient (no extra trace). On a
    bias-free ReLU network its sum over pixels is the score (Euler's theorem), and it equals
    LRP-0.
    """
    p, images, single = prepare(model, image, preprocess)
    sel = selection(p, target, images, None)
    f = gradient_function(p, "saliency", images, sel, None, contextlib.nullcontext)
    grads = f(images, *sel.tensors, extra_tensors(p, extra_inputs))
    return numpy_maps(grads * images, single, "gradient_x_input")
