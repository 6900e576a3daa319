"""Rendering: optimise images so that an objective rises, with octaves, live progress and a stop.

One optimisation step (parametrise -> transform -> preprocess -> forward with the needed layers
captured -> objective -> gradient -> normalise -> Adam or SGD update) is one compiled function per
(objective structure, image size, batch, parametrisation, transforms, optimiser, preprocess),
cached on the model's probe. Everything that changes between steps (the raw parameters, Adam's
moments, the step count, learning rate, random seed and schedule progress) goes in as tensors, so
steps never retrace; so do the objective's weights, channel / class / neuron indices and direction
vectors, so rendering another channel of the same layer, or the same settings again, reuses the
compiled step. Only layers up to
the deepest one the objective reads are computed: TensorFlow prunes the rest of the model from the
compiled step.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import threading
from typing import Callable

import numpy as np
import tensorflow as tf

from nbviz.probe import fn_key, probe as get_probe
from nbviz.featvis import transforms as T
from nbviz.featvis.objectives import Context, Objective
from nbviz.featvis.params import parametrisation
from nbviz.featvis.relu import redirected

__all__ = ["render", "Stop", "octave_sizes"]

_BETA1, _BETA2, _ADAM_EPS = 0.9, 0.999, 1e-8
_NORMALIZE = ("std", "l2", None)


class Stop:
    """A stop handle: ``stop.set()`` (from any thread) ends a running :func:`render` before its
    next step; ``render`` then returns the images it has. ``clear()`` makes it reusable."""

    def __init__(self):
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    def clear(self) -> None:
        self._event.clear()

    def is_set(self) -> bool:
        return self._event.is_set()

    def __repr__(self):
        return f"Stop(set={self.is_set()})"


def octave_sizes(size, octaves: int, octave_scale: float) -> list[tuple[int, int]]:
    """Image size of each octave: the last is ``size``, each earlier one ``octave_scale`` times
    smaller (rounded), e.g. ``octave_sizes((224, 224), 3, 1.4) == [(114, 114), (160, 160),
    (224, 224)]``."""
    h, w = size
    out = []
    for i in range(octaves):
        f = octave_scale ** (octaves - 1 - i)
        out.append((max(1, int(round(h / f))), max(1, int(round(w / f)))))
    return out


def render(model, objective: Objective, *, steps: int = 256, size=None, batch: int | None = None,
           param="fft", lr: float = 0.05, optimizer: str = "adam", normalize: str | None = "std",
           jitter: int = 8, scale=(0.9, 1.1), rotate: float = 10.0, blur=0.0, pad: int = 8,
           transforms=None, octaves: int = 1, octave_scale: float = 1.3, seed: int = 0,
           preprocess: Callable | None = None, callback: Callable | None = None, every: int = 10,
           stop=None, relu_redirect: bool = True) -> np.ndarray:
    """Images that maximise ``objective`` for ``model``: float32 ``(N, H, W, 3)`` in [0, 1].

    Parameters
    ----------
    objective: built from :mod:`nbviz.featvis.objectives` (``fv.channel(...) - 0.1 * fv.l1()``).
    steps: optimisation steps per octave (``octaves * steps`` in all).
    size: ``(H, W)`` or one int for the final images; default: the model's input size (224 when
        the model takes any size). For a model with a fixed input size, the transformed images
        are resampled about their centre to it (scale ``model size / size``, padding cropped
        off), so any ``size`` works; a model that takes any size sees them padded as they are.
    batch: number of images; default ``objective.batch`` (e.g. 3 for ``fv.channel(l, [3, 7,
        9])``: item k optimises channel k). More items than the objective distinguishes start from
        different random images (item k uses index ``k % len``).
    param: ``"fft"`` (lucid's decorrelated spectrum) or ``"pixel"``, or a
        :class:`~nbviz.featvis.params.FFT` / :class:`~nbviz.featvis.params.Pixel` object.
    lr, optimizer, normalize: learning rate; ``"adam"`` or ``"sgd"``; the gradient of each image is
        first divided by its standard deviation (``"std"``), its root mean square (``"l2"``) or
        left alone (None).
    jitter, scale, rotate, blur, pad: the random transforms applied before every forward pass, in
        the order pad (reflect, pixels), jitter (pixels), scale (``(low, high)``), rotate
        (degrees), blur (sigma in pixels, or ``(start, end)``: linear over each octave); 0 or None
        switches one off. ``transforms``: a tuple of :mod:`nbviz.featvis.transforms` objects
        replacing all of these.
    octaves, octave_scale: coarse to fine: octave i renders at ``size / octave_scale ** (octaves
        - 1 - i)``; the images of one octave are resized (bilinear) and become the start of the
        next, for the FFT parametrisation by inverting it at the new size.
    seed: the random start and every random transform follow from it: same seed, same images.
    preprocess: maps RGB in [0, 1] (a tensor) to the model's input space, differentiably, e.g.
        ``lambda x: x * 2 - 1`` for MobileNetV2 or ``lambda x: x * 255`` for a model with a
        Rescaling layer inside. Default: the images as they are (one-channel models get their
        mean over RGB). Pass the same function object on every call to reuse the compiled step.
    callback: ``callback(step, images, value)`` after every ``every`` steps and after the last
        one; ``step`` counts steps done over all octaves, ``images`` is a numpy copy in [0, 1],
        ``value`` the objective (mean over the batch, at that step's start).
    stop: a :class:`Stop` or ``threading.Event``; when set, the run ends before its next step and
        returns the current images (resized to ``size`` when stopped in an earlier octave).
    relu_redirect: lucid's redirected ReLU gradient (:mod:`nbviz.featvis.relu`) on the layers the
        objective reads (a ReLU / ReLU6 layer, or a layer with ``activation="relu"``), so that a
        unit that is off for the whole starting image can be switched on; forward values are
        unchanged, other layers keep their true gradient (and their speed).
    """
    p = get_probe(model)
    if not isinstance(objective, Objective):
        raise TypeError(f"objective must be built with nbviz.featvis (fv.channel(...), fv.neuron(...)"
                        f", ...), got {type(objective).__name__}")
    if not objective.terms:
        raise ValueError("objective has no terms (all weights are zero)")
    steps = _int(steps, "steps", 0)
    octaves = _int(octaves, "octaves", 1)
    every = _int(every, "every", 1)
    seed = _int(seed, "seed", 0)
    if not (_real(octave_scale) and octave_scale >= 1.0):
        raise ValueError(f"octave_scale must be a number >= 1, got {octave_scale!r}")
    if not (_real(lr) and lr > 0):
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    if optimizer not in ("adam", "sgd"):
        raise ValueError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}")
    if normalize not in _NORMALIZE:
        raise ValueError(f"normalize must be 'std', 'l2' or None, got {normalize!r}")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable(step, images, value), got {type(callback).__name__}")
    if preprocess is not None and not callable(preprocess):
        raise TypeError(f"preprocess must be a callable on a tensor, got {type(preprocess).__name__}")
    if stop is not None and not callable(getattr(stop, "is_set", None)):
        raise TypeError(f"stop must be fv.Stop() or a threading.Event, got {type(stop).__name__}")
    param = parametrisation(param)
    final = _size(size, p)
    if batch is None:
        batch = objective.batch
    batch = _int(batch, "batch", 1)
    if batch < objective.batch:
        raise ValueError(f"batch={batch} is smaller than the {objective.batch} images the "
                         f"objective asks for ({objective!r}); leave batch=None or raise it")
    if transforms is None:
        transforms = T.standard(pad=pad, jitter=jitter, scale=scale, rotate=rotate, blur=blur)
    transforms = tuple(transforms)
    T.compose(transforms)  # validates
    if p.image_input.channels not in (1, 3) and preprocess is None:
        raise ValueError(f"the model takes {p.image_input.channels} channels; pass preprocess= to "
                         "map RGB images in [0, 1] to its input")
    paths = {spec: p.layer(spec).path for spec in objective.layers}
    objective.check(lambda spec: _shape(p, paths[spec]), _output_shape(p))
    obj_params = [tf.constant(a) for a in objective.params()]
    sizes = octave_sizes(final, octaves, float(octave_scale))
    _check_sizes(sizes, transforms)

    rng = np.random.default_rng(seed)
    raw = tf.constant(param.init(batch, *sizes[0], rng))
    done = 0
    total = octaves * steps
    value = float("nan")
    for octave, hw in enumerate(sizes):
        if octave > 0:
            previous = param.images(raw, sizes[octave - 1])
            raw = param.from_images(tf.image.resize(previous, hw, method="bilinear"))
        step = _step_function(p, objective, paths, param, hw, batch, transforms, optimizer,
                              normalize, preprocess, bool(relu_redirect))
        if optimizer == "adam":
            m = tf.zeros_like(raw)
            v = tf.zeros_like(raw)
        else:
            m = v = tf.zeros([])
        lr_t = tf.constant(float(lr), tf.float32)
        for i in range(steps):
            if stop is not None and stop.is_set():
                return _finish(param, raw, hw, final)
            raw, m, v, values = step(
                raw, m, v, obj_params,
                tf.constant(float(i + 1), tf.float32),
                lr_t,
                tf.constant([seed, done], tf.int64),
                tf.constant(i / max(steps - 1, 1), tf.float32),
            )
            done += 1
            if callback is not None and (done % every == 0 or done == total):
                value = float(np.mean(values.numpy()))
                callback(done, param.images(raw, hw).numpy(), value)
    return _finish(param, raw, sizes[-1], final)


def _finish(param, raw, hw, final) -> np.ndarray:
    images = param.images(raw, hw)
    if tuple(hw) != tuple(final):
        images = tf.image.resize(images, final, method="bilinear")
    return np.clip(images.numpy(), 0.0, 1.0).astype(np.float32)


def _step_function(p, objective, paths, param, hw, batch, transforms, optimizer, normalize,
                   preprocess, relu_redirect):
    key = ("featvis.step", objective.structure(), tuple(hw), batch, param, transforms, optimizer,
           normalize, None if preprocess is None else fn_key(preprocess), relu_redirect)
    spec = p.image_input
    fit = ()
    if spec.height is not None and spec.width is not None:
        factor = (hw[0] / spec.height, hw[1] / spec.width)
        fit = (T.Fit(int(spec.height), int(spec.width), factor),)
    apply = T.compose(transforms + fit)
    extra = p.zero_extra_inputs()

    def step(raw, m, v, obj_params, t, lr, seed, progress):
        with tf.GradientTape() as tape:
            tape.watch(raw)
            images = param.images(raw, hw)
            x = apply(images, seed, progress)
            if preprocess is not None:
                x = preprocess(x)
            elif spec.channels == 1:
                x = tf.reduce_mean(x, axis=-1, keepdims=True)
            values = _evaluate(p, objective, obj_params, paths, images, x, extra, relu_redirect)
            total = tf.reduce_sum(values)
        g = tape.gradient(total, raw)
        if g is None:
            raise ValueError(f"the objective {objective!r} does not depend on the image")
        g = _normalized(g, normalize)
        if optimizer == "adam":
            m = _BETA1 * m + (1.0 - _BETA1) * g
            v = _BETA2 * v + (1.0 - _BETA2) * tf.square(g)
            m_hat = m / (1.0 - tf.pow(_BETA1, t))
            v_hat = v / (1.0 - tf.pow(_BETA2, t))
            raw = raw + lr * m_hat / (tf.sqrt(v_hat) + _ADAM_EPS)
        else:
            raw = raw + lr * g
        return raw, m, v, values

    return p.compiled(key, step)


def _evaluate(p, objective, obj_params, paths, images, x, extra, redirect):
    specs = list(paths)
    with contextlib.ExitStack() as stack:
        if redirect:  # before capturing: a captured ReLU layer records the redirected output
            targets = {id(p.layer(paths[s]).layer) for s in specs}
            stack.enter_context(p.replace_activations(
                lambda layer: redirected(layer) if id(layer) in targets else None))
        captured = stack.enter_context(p.capture(*[paths[s] for s in specs]))
        if objective.needs_logits:
            with p.logits():
                out = p.forward(x, extra_inputs=extra)
        else:
            out = p.forward(x, extra_inputs=extra)
        missing = [s for s in specs if paths[s] not in captured]
    if missing:
        raise ValueError(f"layers {[paths[s] for s in missing]} were not called during the "
                         "forward pass, so the objective cannot read them")
    acts = {s: captured[paths[s]] for s in specs}
    ctx = Context(images, acts, out if objective.needs_logits else None)
    return objective.value(ctx, obj_params)


def _shape(p, path):
    """Recorded output shape of a layer; spatial sizes only when the model's input size is
    fixed (otherwise they depend on the rendered size)."""
    shape = p.layer(path).output_shape
    if shape is None:
        return None
    if len(shape) == 4 and (p.image_input.height is None or p.image_input.width is None):
        return (shape[0], None, None, shape[3])
    return shape


def _output_shape(p):
    layer = p.output_layer
    if layer is None:
        return None
    try:
        return p.layer(layer).output_shape
    except ValueError:
        return None


def _normalized(g, how):
    if how is None:
        return g
    axes = list(range(1, len(g.shape)))
    if how == "std":
        scale = tf.math.reduce_std(g, axis=axes, keepdims=True)
    else:
        scale = tf.sqrt(tf.reduce_mean(tf.square(g), axis=axes, keepdims=True))
    return g / (scale + 1e-8)


def _int(value, name, low):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return int(value)


def _real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _size(size, p) -> tuple[int, int]:
    if size is None:
        return p.input_size()
    if isinstance(size, numbers.Integral) and not isinstance(size, bool):
        size = (size, size)
    if (not isinstance(size, (tuple, list)) or len(size) != 2
            or not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) for s in size)):
        raise TypeError(f"size must be an int or a (height, width) pair of ints, got {size!r}")
    if min(size) < 4:
        raise ValueError(f"size must be at least 4×4 pixels, got {tuple(size)}")
    return int(size[0]), int(size[1])


def _check_sizes(sizes, transforms):
    h, w = min(s[0] for s in sizes), min(s[1] for s in sizes)
    for t in transforms:
        if isinstance(t, T.Pad) and t.mode == "reflect" and t.width >= min(h, w):
            raise ValueError(f"pad={t.width} needs images larger than {t.width} pixels; the "
                             f"smallest octave is {h}×{w}: lower pad or octaves")
        if isinstance(t, T.Blur) and t.radius >= min(h, w) + 2 * _padding(transforms):
            raise ValueError(f"blur sigma {max(t.start, t.end)} is too large for {h}×{w} images")


def _padding(transforms):
    return sum(t.width for t in transforms if isinstance(t, T.Pad))
