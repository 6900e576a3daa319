"""The gradient core every attribution method shares: one probe, one target selection, one
compiled function per (purpose, layer, input shape, options).

Images and the resolved target go in as tensors, so a new image or a new class never retraces.
The explained score is described in :mod:`nbviz.methods.targets`; when the model ends in a
softmax the logit is explained. Per-model state (shapes, compiled and concrete functions) lives
on the model's :class:`~nbviz.probe.Probe`, so :func:`nbviz.probe.clear_cache` clears it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from typing import Callable

import numpy as np
import tensorflow as tf

from nbviz.methods import targets as _targets
from nbviz.probe import Probe, probe

__all__ = ["prepare", "explained_shape", "layer_path", "selection", "explain", "key_of", "extra_tensors",
           "compiled", "gradient_function", "LayerPass", "layer_pass", "balanced", "numpy_maps", "as_baseline"]


def prepare(model, image, preprocess) -> tuple[Probe, tf.Tensor, bool]:
    """The model's probe, the validated float32 batch, and whether one image was given.

    ``preprocess`` (raw image -> model input space) gets a copy of the image."""
    p = probe(model)
    # on a copy: some preprocessors (keras.applications' preprocess_input) work in place; a
    # preprocess that is not callable, or that makes NaN, is named in the error
    images, single = p.prepare(image, preprocess=preprocess)
    return p, images, single


def explained_shape(p: Probe, layer: str | None, size: tuple[int, int]) -> tuple:
    """Shape (batch 1) of the explained tensor: the model's output, or a layer's output."""
    cache = p.cache("explained_shape")
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
    if layer is None:
        return None
    info = p.layer(layer)
    if info.kind == "input":
        raise ValueError(
            f"layer={info.path!r} is the model's input layer, whose output is the image itself; "
            f"pass a later layer (e.g. {p.spatial_layer().path!r}) or layer=None for the model's "
            f"output")
    return info.path


#: resolved None/int targets kept per model (LRU)
TARGET_CACHE_SIZE = 256


def selection(p: Probe, target, images: tf.Tensor, layer: str | None) -> _targets.Selection:
    size = tuple(images.shape[1:3])
    shape = explained_shape(p, layer, size)
    what = "model output" if layer is None else f"output of layer {layer!r}"
    return _targets.resolve(target, shape, int(images.shape[0]), input_size=size, what=what,
                            cache=p.cache("targets", maxsize=TARGET_CACHE_SIZE))


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


def compiled(p: Probe, key: tuple, fn: Callable) -> Callable:
    """``p.compiled(key, fn)``, called through its concrete function.

    Every argument's shape follows from ``key`` except the last one, the extra inputs of a
    multi-input model, whose shapes join the cache key. Calling the concrete function skips
    ``tf.function``'s argument dispatch (about half a millisecond per call), which matters when
    the model itself runs in a few milliseconds on a GPU.
    """
    function = p.compiled(key, fn)
    cache = p.cache("concrete", maxsize=p.max_functions)

    def call(*args):
        extra = args[-1]
        sig = (key, None if extra is None else tuple(
            (name, tuple(v.shape), v.dtype) for name, v in sorted(extra.items())))
        concrete = cache.get(sig)
        if concrete is None:
            _targets.take_user_error()
            try:
                concrete = function.get_concrete_function(*args)
            except Exception:
                own = _targets.take_user_error()
                if own is not None:  # the user's target raised: their exception, as it is
                    raise own.with_traceback(own.__traceback__) from None
                raise
            cache[sig] = concrete
        try:
            return concrete(*args)
        except tf.errors.InvalidArgumentError as err:
            raise non_finite_error(err) from None

    return call


def non_finite_error(err: Exception) -> Exception:
    """The ValueError for a score found NaN or infinite in a compiled function (by the
    ``check_numerics`` of :func:`nbviz.methods.targets.scores`); other errors unchanged."""
    text = str(err)
    if _targets.CALLABLE_NAN in text:
        return ValueError("the target function returned NaN or infinite scores, so every map "
                          "would be NaN; make the target callable return finite (N,) scores")
    if _targets.SCORE_NAN in text:
        return ValueError("the explained score is NaN or infinite: the model's output (logits) is "
                          "not finite on this input; check the image scale and preprocess")
    return err


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


@dataclasses.dataclass(frozen=True)
class LayerPass:
    """What :func:`layer_pass` gives, as tensors of the traced function."""

    out: tf.Tensor            # the model output explained: logits when a softmax was dropped
    softmax: bool             # whether the model's final softmax was dropped from ``out``
    acts: tf.Tensor | None    # A, the layer's activations (float32); None without a layer
    score: tf.Tensor          # S, (N,) the explained score
    grads: tf.Tensor | None   # dS/dA (float32); None without a layer
    d_images: tf.Tensor | None  # dS/dx when asked for


def layer_pass(p: Probe, images, layer: str | None, sel_fn, region, channels, top, extra, *,
               wrt_images: bool = False) -> LayerPass:
    """Inside a traced function: one forward pass with ``layer`` captured, the explained score,
    and its gradient with respect to the layer (and the images when ``wrt_images``; ``layer``
    None: the images' gradient only). The shared first step of Grad-CAM, Grad-CAM++, Layer-CAM,
    the semantic dictionary and :mod:`nbviz.methods.gradient_pass`."""
    with tf.GradientTape() as tape:
        if wrt_images:
            tape.watch(images)
        with (p.capture(layer) if layer is not None else contextlib.nullcontext({})) as captured, \
                p.logits() as dropped:
            out = p.forward(images, extra_inputs=extra)
        acts = captured.get(layer)
        acts = acts[0] if isinstance(acts, (list, tuple)) else acts
        score = _targets.scores(out, sel_fn, region, channels, top)
    sources = ([acts] if acts is not None else []) + ([images] if wrt_images else [])
    grads = tape.gradient(score, sources)
    if acts is not None and grads[0] is None:
        raise ValueError(f"the explained score is not differentiable with respect to layer {layer!r} "
                         f"(it feeds another output or none); pass a layer on the path to the output")
    return LayerPass(out, bool(dropped), None if acts is None else tf.cast(acts, tf.float32), score,
                     None if acts is None else tf.cast(grads[0], tf.float32),
                     grads[-1] if wrt_images else None)


def balanced(count: int, batch_size: int) -> int:
    """Batch size for ``count`` items in as few batches of at most ``batch_size`` as possible,
    made even so that padding the last batch wastes less than one row per batch."""
    batches = -(-count // batch_size)
    return -(-count // batches)


def numpy_maps(maps, single: bool, method: str) -> np.ndarray:
    """Tensor maps -> numpy float32; warns for an all-zero map; drops the batch axis for one image."""
    array = maps.numpy() if hasattr(maps, "numpy") else np.asarray(maps)
    array = array.astype(np.float32, copy=False)
    if not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).sum())
        raise ValueError(
            f"{method}: {bad} of {array.size} values of the map are NaN or infinite although the "
            f"score was finite: the gradient of the model (or of a target callable) is not "
            f"finite at this input, e.g. sqrt or log at 0")
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


def as_baseline(baseline, images: tf.Tensor) -> tf.Tensor:
    """``baseline`` (a number or an array broadcastable to the batch) as a float32 tensor."""
    try:
        value = np.asarray(baseline, dtype=np.float32) if not isinstance(baseline, tf.Tensor) \
            else baseline.numpy().astype(np.float32)
    except (TypeError, ValueError):
        raise TypeError(f"baseline must be a number or an array broadcastable to the image "
                        f"(in the model's input space, e.g. 0.0), got {baseline!r}") from None
    try:
        value = np.broadcast_to(value, images.shape)
    except ValueError:
        raise ValueError(f"baseline of shape {value.shape} does not broadcast to the image batch "
                         f"{tuple(images.shape)}; give a number or an H×W×C array") from None
    if not np.isfinite(value).all():
        raise ValueError("baseline contains NaN or infinite values")
    return tf.constant(value)
