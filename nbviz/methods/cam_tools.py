"""Parts shared by the class activation maps of :mod:`layercam`, :mod:`eigencam`,
:mod:`scorecam` and :mod:`ablationcam`.

* :func:`finish`: the CAM tail, the same as Grad-CAM's (:mod:`nbviz.methods.gradcam`): ReLU of
  the low-resolution map ``(N, h, w)``, bilinear upsampling to the input's H×W
  (``tf.image.resize``, half-pixel centres, no corner alignment), division by the maximum. The
  map lies in [0, 1] with its maximum at 1, or is all zero when nothing is positive.
* :func:`first_pass`: one compiled forward pass giving the layer's activations, the resolved
  target and the explained score of each image (and of a baseline image, for Score-CAM).
* :func:`count`: the argument checks for counts (``batch_size``, ``top_n``, ...).
"""

from __future__ import annotations

import numbers

import numpy as np
import tensorflow as tf

from nbviz.methods import core
from nbviz.methods import targets as _targets

__all__ = ["finish", "first_pass", "count", "pairs"]


def finish(low: tf.Tensor, size: tuple[int, int]) -> tf.Tensor:
    """ReLU, bilinear upsampling of ``low`` (N, h, w) to ``size``, division by the maximum."""
    low = tf.nn.relu(tf.cast(low, tf.float32))
    high = tf.image.resize(low[..., None], size, method="bilinear")[..., 0]
    peak = tf.reduce_max(high, axis=(1, 2), keepdims=True)
    return tf.math.divide_no_nan(high, peak)


def count(name: str, value, low: int = 1, *, none: bool = False, high: int | None = None):
    """``value`` as an int in [low, high] (None passes when ``none``), else a ValueError/TypeError
    that names the argument."""
    if value is None and none:
        return None
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        accepted = f"an int >= {low}" + (" or None" if none else "")
        raise TypeError(f"{name} must be {accepted}, got {value!r}")
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{name} must be {bound}, got {value!r}")
    return int(value)


def first_pass(p, images: tf.Tensor, sel: _targets.Selection, layer: str, purpose: str,
               with_base: bool):
    """Compiled ``f(images, base, region, channels, top, extra) -> (acts, resolved, score,
    base_score)``.

    ``acts`` (N, h, w, c) float32: the layer's output for the images; ``resolved`` (N, K): the
    target's channel weights with the top channel filled in (``target=None``); ``score`` (N,):
    the explained score of each image; ``base_score`` (N,): the same target's score of the
    ``base`` images (zeros unless ``with_base``). One forward pass over images and bases.
    """
    fn = sel.fn
    n = int(images.shape[0])

    def run(images, base, region, channels, top, extra):
        batch = tf.concat([images, base], 0) if with_base else images
        with p.capture(layer) as captured, p.logits():
            out = p.forward(batch, extra_inputs=extra)
        acts = captured[layer]
        acts = acts[0] if isinstance(acts, (list, tuple)) else acts
        acts = tf.cast(acts, tf.float32)[:n]
        resolved = channels if fn is not None else _targets.resolve_channels(
            out[:n], region, channels, top)
        plain = tf.zeros((n,), tf.bool)
        score = _targets.scores(out[:n], fn, region, resolved, plain)
        if with_base:
            base_score = _targets.scores(out[n:], fn, region, resolved, plain)
        else:
            base_score = tf.zeros_like(score)
        return acts, resolved, score, base_score

    return core.compiled(p, core.key_of(purpose, images, sel, layer, with_base), run)


def pairs(chosen: list[np.ndarray], size: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Flat (image, channel) index pairs for per-image channel lists, padded to a multiple of
    ``size`` by repeating the last pair (padded results are dropped). Returns ``(images,
    channels, real count)``."""
    rows = np.concatenate([np.full(len(c), i, np.int32) for i, c in enumerate(chosen)])
    cols = np.concatenate([np.asarray(c, np.int32) for c in chosen])
    total = len(rows)
    padded = -(-total // size) * size
    if padded > total:
        rows = np.concatenate([rows, np.repeat(rows[-1:], padded - total)])
        cols = np.concatenate([cols, np.repeat(cols[-1:], padded - total)])
    return rows, cols, total
