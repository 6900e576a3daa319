"""Input gradients: saliency, SmoothGrad, integrated gradients, and the gradient core they share.

Every method here (and guided backprop in :mod:`nbviz.methods.guided`) runs one compiled
function per (purpose, layer, input shape, options), cached on the model's probe. Images and the
resolved target go in as tensors, so a new image or a new class never retraces. The explained
score is described in :mod:`nbviz.methods.targets`; when the model ends in a softmax the logit is
explained.

Maps are gradients of the score with respect to the model's input (after ``preprocess``), float32,
H×W×C for one image and N×H×W×C for a batch. A map that is all zero (dead units, a constant
model) comes back as zeros with a warning.
"""

from __future__ import annotations

import contextlib
import warnings
import weakref
from typing import Callable

import numpy as np
import tensorflow as tf

from nbviz.methods import targets as _targets
from nbviz.probe import Probe, probe

__all__ = ["saliency", "smoothgrad", "integrated_gradients"]


# --------------------------------------------------------------------------- shared core


def prepare(model, image, preprocess) -> tuple[Probe, tf.Tensor, bool]:
    """The model's probe, the validated float32 batch, and whether one image was given.

    ``preprocess`` (raw image -> model input space) gets a copy of the image."""
    p = probe(model)
    if preprocess is not None:
        # on a copy: some preprocessors (keras.applications' preprocess_input) work in place
        image = preprocess(image.numpy() if isinstance(image, tf.Tensor) else np.array(image))
    images, single = p.prepare(image)
    return p, images, single


_SHAPES: "weakref.WeakKeyDictionary[Probe, dict]" = weakref.WeakKeyDictionary()


def explained_shape(p: Probe, layer: str | None, size: tuple[int, int]) -> tuple:
    """Shape (batch 1) of the explained tensor: the model's output, or a layer's output."""
    cache = _SHAPES.setdefault(p, {})
    key = (layer, size)
    if key not in cache:
        infos = p.layers(size)
        if layer is not None:
            shape = next(i.output_shape for i in infos if i.path == layer)
        else:
            out = p.output_layer
            found = [i.output_shape for i in infos if out is not None and i.layer is out]
            if found and found[0]:
                shape = found[0]
            else:  # the output is not one layer's output (e.g. a sum in a subclassed call)
                zeros = tf.zeros((1, *size, p.image_input.channels))
                shape = tuple(p.forward(zeros, extra_inputs=p.zero_extra_inputs()).shape)
        cache[key] = tuple(shape)
    return cache[key]


def layer_path(p: Probe, layer) -> str | None:
    """The path of ``layer`` (object, name or path), or None for the model's output."""
    return None if layer is None else p.layer(layer).path


def selection(p: Probe, target, images: tf.Tensor, layer: str | None) -> _targets.Selection:
    size = tuple(images.shape[1:3])
    shape = explained_shape(p, layer, size)
    what = "model output" if layer is None else f"output of layer {layer!r}"
    return _targets.resolve(target, shape, int(images.shape[0]), input_size=size, what=what)


def explain(p: Probe, images: tf.Tensor, layer: str | None, extra) -> tf.Tensor:
    """Forward pass returning the explained tensor: logits of the model output, or a layer's
    output (the part of the model after that layer is pruned from the compiled graph)."""
    if layer is None:
        with p.logits():
            return p.forward(images, extra_inputs=extra)
    with p.capture(layer) as captured:
        p.forward(images, extra_inputs=extra)
    out = captured[layer]
    if isinstance(out, (list, tuple)):
        out = out[0]
    return tf.cast(out, tf.float32)


def key_of(purpose: str, images: tf.Tensor, sel: _targets.Selection, *options) -> tuple:
    """Compiled-function key: purpose, input shape (batch size included), target kind, options."""
    return (purpose, tuple(images.shape), sel.key, *options)


def extra_tensors(p: Probe, extra_inputs):
    """Other inputs of a multi-input model as tensors (values for one example, shared by all)."""
    if extra_inputs is None:
        return None
    return {name: tf.convert_to_tensor(value) for name, value in dict(extra_inputs).items()}


_CONCRETE: "weakref.WeakKeyDictionary[Probe, dict]" = weakref.WeakKeyDictionary()


def compiled(p: Probe, key: tuple, fn: Callable) -> Callable:
    """``p.compiled(key, fn)``, called through its concrete function.

    Every argument's shape follows from ``key`` except the last one, the extra inputs of a
    multi-input model, whose shapes join the cache key. Calling the concrete function skips
    ``tf.function``'s argument dispatch (about half a millisecond per call), which matters when
    the model itself runs in a few milliseconds on a GPU.
    """
    function = p.compiled(key, fn)
    cache = _CONCRETE.setdefault(p, {})

    def call(*args):
        extra = args[-1]
        sig = (key, None if extra is None else tuple(
            (name, tuple(v.shape), v.dtype) for name, v in sorted(extra.items())))
        concrete = cache.get(sig)
        if concrete is None:
            concrete = cache[sig] = function.get_concrete_function(*args)
        return concrete(*args)

    return call


def gradient_function(p: Probe, purpose: str, images: tf.Tensor, sel: _targets.Selection,
                      layer: str | None, scope: Callable[[], contextlib.AbstractContextManager]
                      ) -> Callable:
    """Compiled ``f(images, region, channels, top, extra) -> d score / d images``.

    ``scope()`` is entered while tracing (e.g. guided ReLU swaps); ``purpose`` names the cache.
    """
    fn = sel.fn

    def gradient(images, region, channels, top, extra):
        with tf.GradientTape() as tape:
            tape.watch(images)
            with scope():
                out = explain(p, images, layer, extra)
            score = _targets.scores(out, fn, region, channels, top)
        return tape.gradient(score, images)

    return compiled(p, key_of(purpose, images, sel, layer), gradient)


def balanced(count: int, batch_size: int) -> int:
    """Batch size for ``count`` items in as few batches of at most ``batch_size`` as possible,
    made even so that padding the last batch wastes less than one row per batch."""
    batches = -(-count // batch_size)
    return -(-count // batches)


def numpy_maps(maps, single: bool, method: str) -> np.ndarray:
    """Tensor maps -> numpy float32; warns for an all-zero map; drops the batch axis for one image."""
    array = maps.numpy() if hasattr(maps, "numpy") else np.asarray(maps)
    array = array.astype(np.float32, copy=False)
    flat = array.reshape(array.shape[0], -1)
    dead = ~flat.any(axis=1)
    if dead.any():
        which = "the image" if single else f"images {np.flatnonzero(dead).tolist()}"
        warnings.warn(
            f"{method}: the map is zero everywhere for {which} (a zero gradient: dead units, a "
            f"saturated or constant score; for a CAM also no positive evidence); returning zeros",
            RuntimeWarning,
            stacklevel=3,
        )
    return array[0] if single else array


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
               extra_inputs=None) -> np.ndarray:
    """SmoothGrad (Smilkov et al. 2017): the mean gradient over ``n`` noisy copies.

    The noise is Gaussian with standard deviation ``noise * (max - min)`` of each image; all
    copies run as one batch together with the clean image, whose top class is the one explained
    when ``target`` is None. ``seed`` makes the noise reproducible. H×W×C float32.
    """
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n (noisy copies) must be an int >= 1, got {n!r}")
    if not np.isfinite(noise) or noise < 0:
        raise ValueError(f"noise must be a finite fraction >= 0 of the input range, got {noise!r}")
    p, images, single = prepare(model, image, preprocess)
    sel = selection(p, target, images, None)
    fn = sel.fn
    n = int(n)

    def smooth(images, seed, noise, region, channels, top, extra):
        count = tf.shape(images)[0]
        copies = tf.repeat(images, n, axis=0)
        span = tf.reduce_max(images, axis=(1, 2, 3)) - tf.reduce_min(images, axis=(1, 2, 3))
        sigma = tf.repeat(span * noise, n)[:, None, None, None]
        noisy = copies + sigma * tf.random.stateless_normal(tf.shape(copies), seed)
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
        return tf.reduce_mean(grads, axis=1)

    f = compiled(p, key_of("smoothgrad", images, sel, n), smooth)
    seed_t = tf.constant([int(seed), 0], tf.int64)
    maps = f(images, seed_t, tf.constant(noise, tf.float32), *sel.tensors,
             extra_tensors(p, extra_inputs))
    return numpy_maps(maps, single, "smoothgrad")


# --------------------------------------------------------------------------- integrated gradients


def integrated_gradients(model, image, *, target=None, steps=32, baseline=0.0, batch_size=32,
                         preprocess=None, extra_inputs=None) -> np.ndarray:
    """Integrated gradients (Sundararajan et al. 2017) from ``baseline`` to the image.

    ``(x - baseline) * mean_k grad(baseline + a_k (x - baseline))`` with ``steps`` midpoints
    ``a_k = (k + 1/2) / steps``; the path images run in batches of ``batch_size`` (each batch
    also runs the image itself, whose top class is explained when ``target`` is None). The
    attributions sum to about ``f(x) - f(baseline)`` (completeness). ``baseline`` is a number or
    an array broadcastable to the image (in the model's input space). H×W×C float32.
    """
    for name, value in (("steps", steps), ("batch_size", batch_size)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    p, images, single = prepare(model, image, preprocess)
    base = _baseline(baseline, images)
    sel = selection(p, target, images, None)
    steps, size = int(steps), balanced(int(steps), int(batch_size))
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
        maps.append((x - b) * total / steps)
    return numpy_maps(tf.concat(maps, 0), single, "integrated_gradients")


def _baseline(baseline, images: tf.Tensor) -> tf.Tensor:
    value = np.asarray(baseline, dtype=np.float32) if not isinstance(baseline, tf.Tensor) \
        else baseline.numpy().astype(np.float32)
    try:
        value = np.broadcast_to(value, images.shape)
    except ValueError:
        raise ValueError(f"baseline of shape {value.shape} does not broadcast to the image batch "
                         f"{tuple(images.shape)}; give a number or an H×W×C array") from None
    if not np.isfinite(value).all():
        raise ValueError("baseline contains NaN or infinite values")
    return tf.constant(value)
