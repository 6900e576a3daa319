"""What to explain: the one place where a method's ``target`` argument gets its meaning.

``target`` means the same in every method:

* ``None``: the top prediction. For a class vector, the class with the highest score; for a dense
  output (segmentation, FCN score map, edge map, or an intermediate layer's output), the channel
  with the highest total score inside the region (the whole map).
* ``int`` (or one int per image of a batch): a class, or a channel of a dense output (whole map).
* :func:`box` / :func:`mask`: a region of a dense output map, optionally with a channel.
* a callable ``f(outputs) -> (N,) scores`` on the model's output tensor.

The explained score is ``sum(outputs * region * channel_weights)`` per image. When the model
ends in a softmax the methods explain the logits (the output with the softmax dropped), also for
callables.

A resolved target is a :class:`Selection`: the tensors a compiled function takes as arguments
(so changing the class or the image never retraces) and a small hashable ``key`` for what does
change the graph (vector or dense output, or the callable itself).
"""

from __future__ import annotations

import dataclasses
import numbers
import threading
from typing import Any, Callable

import numpy as np
import tensorflow as tf

from nbviz.probe import fn_key

__all__ = ["Box", "Mask", "Selection", "box", "mask", "point", "resolve", "scores",
           "resolve_channels"]


@dataclasses.dataclass(frozen=True)
class Box:
    """A rectangle on a dense output map, ``(top, left, bottom, right)``, bottom/right exclusive.

    Coordinates are cells of the output map (for a segmentation model whose output has the
    input's size, input pixels). ``channel`` None: the top channel inside the box.
    """

    top: int
    left: int
    bottom: int
    right: int
    channel: int | None = None


@dataclasses.dataclass(frozen=True, eq=False)
class Mask:
    """Weights over a dense output map (h×w, or the input's H×W, resized by area averaging)."""

    array: np.ndarray
    channel: int | None = None


def box(top: int, left: int, bottom: int, right: int, channel: int | None = None) -> Box:
    """Explain the (channel's) total score inside a box of a dense output map."""
    values = (top, left, bottom, right)
    if not all(isinstance(v, numbers.Integral) for v in values):
        raise TypeError(f"box coordinates must be integers (top, left, bottom, right), got {values}")
    if not (top < bottom and left < right):
        raise ValueError(f"box {values} is empty: need top < bottom and left < right")
    return Box(*(int(v) for v in values), channel=_channel(channel))


def point(y: int, x: int, channel: int | None = None) -> Box:
    """Explain the (channel's) score at one cell ``(y, x)`` of a dense output map: a 1×1
    :func:`box` (what clicking an output pixel selects). ``channel`` None: the top channel
    there."""
    if not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in (y, x)):
        raise TypeError(f"point coordinates must be integers (y, x), got {(y, x)!r}")
    return box(int(y), int(x), int(y) + 1, int(x) + 1, channel=channel)


def mask(array, channel: int | None = None) -> Mask:
    """Explain the (channel's) score weighted by ``array`` over a dense output map."""
    values = np.asarray(array)
    if values.ndim != 2 or not (np.issubdtype(values.dtype, np.number) or values.dtype == bool):
        raise ValueError(f"mask must be a 2-D numeric or boolean array, got shape {values.shape} "
                         f"and dtype {values.dtype}")
    values = values.astype(np.float32)
    if not np.isfinite(values).all() or not values.any():
        raise ValueError("mask must be finite and not all zero")
    return Mask(values, channel=_channel(channel))


def _channel(channel):
    if channel is None:
        return None
    if not isinstance(channel, numbers.Integral) or isinstance(channel, bool):
        raise TypeError(f"channel must be an int or None, got {channel!r}")
    return int(channel)


@dataclasses.dataclass(frozen=True, eq=False)
class Selection:
    """A resolved target for a batch of ``n`` images.

    ``region`` (n, *spatial) float32 weights over the output map ((n,) ones for class vectors);
    ``channels`` (n, K) float32 weights over classes/channels; ``top`` (n,) bool: replace
    ``channels`` by the one-hot top channel computed from the outputs; ``fn``: a callable target.
    """

    key: tuple
    region: tf.Tensor
    channels: tf.Tensor
    top: tf.Tensor
    fn: Callable | None = None

    @property
    def tensors(self) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        return (self.region, self.channels, self.top)

    def row(self, i: int) -> "Selection":
        """The selection of the i-th image alone."""
        return dataclasses.replace(self, region=self.region[i:i + 1],
                                   channels=self.channels[i:i + 1], top=self.top[i:i + 1])


def resolve(target: Any, output_shape, n: int, *, input_size=None, what: str = "model output",
            cache: dict | None = None) -> Selection:
    """Turn a user ``target`` into a :class:`Selection` for ``n`` images.

    ``output_shape`` is the explained tensor's shape (batch axis first, its size ignored);
    ``input_size`` (H, W) lets a mask be given at the input's size; ``what`` names the tensor in
    error messages. ``cache``: a per-model dict (``probe.cache("targets")``) keeping the
    selections of None and int targets, so the same tensors serve every call.
    """
    simple = target is None or (isinstance(target, numbers.Integral)
                                and not isinstance(target, bool))
    if not simple or cache is None:
        return _resolve(target, output_shape, n, input_size, what)
    key = (None if target is None else int(target), tuple(output_shape)[1:], n)
    hit = cache.get(key)
    if hit is None:
        hit = cache[key] = _resolve(target, output_shape, n, input_size, what)
    return hit


def _resolve(target, output_shape, n, input_size, what) -> Selection:
    shape = tuple(output_shape)[1:]
    if len(shape) == 0:
        shape = (1,)
    spatial, k = shape[:-1], shape[-1]
    if None in shape:
        raise ValueError(f"the {what} has an unknown shape {tuple(output_shape)}")
    dense = len(spatial) > 0
    ones_region = np.ones((n,) + spatial, np.float32)
    zeros = np.zeros((n, k), np.float32)
    if callable(target) and not isinstance(target, (Box, Mask)):
        # keyed by what the callable computes (code and closure values), so a fresh lambda per
        # call reuses the compiled function
        return Selection(("callable", fn_key(target)), tf.constant(ones_region), tf.constant(zeros),
                         tf.zeros((n,), tf.bool), fn=target)
    key = ("dense",) if dense else ("vector",)
    if target is None:
        return Selection(key, tf.constant(ones_region), tf.constant(zeros), tf.ones((n,), tf.bool))
    if isinstance(target, (Box, Mask)):
        if not dense:
            raise ValueError(
                f"a box or mask target needs a dense (spatial) output map, but the {what} has "
                f"shape {tuple(output_shape)}; use target=None, a class index or a callable"
            )
        region = _region(target, spatial, input_size)
        region = np.broadcast_to(region, (n,) + spatial).astype(np.float32)
        if target.channel is None:
            return Selection(key, tf.constant(region), tf.constant(zeros), tf.ones((n,), tf.bool))
        channels = _one_hot([target.channel] * n, k, what, output_shape)
        return Selection(key, tf.constant(region), tf.constant(channels), tf.zeros((n,), tf.bool))
    indices = _indices(target, n)
    channels = _one_hot(indices, k, what, output_shape)
    return Selection(key, tf.constant(ones_region), tf.constant(channels), tf.zeros((n,), tf.bool))


def _indices(target, n):
    if isinstance(target, numbers.Integral) and not isinstance(target, bool):
        return [int(target)] * n
    values = np.asarray(target) if not isinstance(target, (str, bytes)) else np.asarray(None)
    if values.ndim == 1 and np.issubdtype(values.dtype, np.integer):
        if len(values) != n:
            raise ValueError(f"target has {len(values)} class indices for a batch of {n} images")
        return [int(v) for v in values]
    raise TypeError(
        f"target must be None (top class), an int class index (or one per image), "
        f"nbviz.methods.targets.box(...)/mask(...) for dense outputs, or a callable "
        f"outputs -> (N,) scores; got {target!r}"
    )


def _one_hot(indices, k, what, output_shape):
    for i in indices:
        if not 0 <= i < k:
            raise ValueError(
                f"target {i} is out of range: the {what} has {k} "
                f"{'channels' if len(tuple(output_shape)) > 2 else 'classes'} (0..{k - 1}), "
                f"shape {tuple(output_shape)}"
            )
    out = np.zeros((len(indices), k), np.float32)
    out[np.arange(len(indices)), indices] = 1.0
    return out


def _region(target, spatial, input_size):
    if len(spatial) != 2:
        raise ValueError(f"box and mask targets need an output map (h, w, channels); got spatial "
                         f"dims {spatial}")
    h, w = spatial
    if isinstance(target, Box):
        t, l, b, r = target.top, target.left, target.bottom, target.right
        if t < 0 or l < 0 or b > h or r > w:
            raise ValueError(f"box (top, left, bottom, right) = {(t, l, b, r)} is outside the "
                             f"output map of {h}×{w} cells")
        region = np.zeros((h, w), np.float32)
        region[t:b, l:r] = 1.0
        return region
    array = target.array
    if array.shape == (h, w):
        return array
    if input_size is not None and array.shape == tuple(input_size):
        resized = tf.image.resize(array[:, :, None], (h, w), method="area")[:, :, 0].numpy()
        return resized.astype(np.float32)
    sizes = f"{h}×{w}" + (f" (or the input's {input_size[0]}×{input_size[1]})" if input_size else "")
    raise ValueError(f"mask has shape {array.shape}, the output map is {sizes}")


# --------------------------------------------------------------------------- in-graph parts


def _as_map(outputs: tf.Tensor) -> tf.Tensor:
    outputs = tf.cast(outputs, tf.float32)
    return outputs[:, None] if outputs.shape.rank == 1 else outputs


def resolve_channels(outputs: tf.Tensor, region, channels, top) -> tf.Tensor:
    """Channel weights (N, K) with the top channel filled in where ``top`` is set (in-graph)."""
    outputs = _as_map(outputs)
    rank = outputs.shape.rank
    per_channel = outputs * region[..., None] if rank > 2 else outputs
    if rank > 2:
        per_channel = tf.reduce_sum(per_channel, axis=list(range(1, rank - 1)))
    best = tf.one_hot(tf.argmax(per_channel, axis=-1), tf.shape(per_channel)[-1], dtype=tf.float32)
    return tf.where(top[:, None], best, channels)


def scores(outputs: tf.Tensor, fn: Callable | None, region, channels, top) -> tf.Tensor:
    """The explained score per image, (N,) float32 (in-graph).

    ``fn`` is the callable target (or None); ``region``, ``channels`` and ``top`` are a
    selection's tensors as seen inside a compiled function (its arguments).
    """
    if fn is not None:
        try:
            values = fn(outputs)
        except Exception as err:
            _USER.error = err  # re-raised as itself by the caller (not as a tracing error)
            raise
        values = tf.cast(values, tf.float32)
        if values.shape.rank != 1:
            raise ValueError(f"a callable target must return one score per image, shape (N,); "
                             f"it returned shape {values.shape}")
        return tf.debugging.check_numerics(values, CALLABLE_NAN)
    outputs = _as_map(outputs)
    channels = resolve_channels(outputs, region, channels, top)
    rank = outputs.shape.rank
    weighted = outputs * tf.reshape(channels, [-1] + [1] * (rank - 2) + [tf.shape(channels)[-1]])
    if rank > 2:
        weighted = weighted * region[..., None]
    return tf.debugging.check_numerics(tf.reduce_sum(weighted, axis=list(range(1, rank))),
                                       SCORE_NAN)


#: check_numerics messages: a non-finite score from a callable target / from the model's output
CALLABLE_NAN = "nbviz: target callable returned a non-finite score"
SCORE_NAN = "nbviz: explained score is not finite"

_USER = threading.local()


def take_user_error() -> BaseException | None:
    """The exception a callable target raised while being traced in this thread (then forgotten)."""
    err = getattr(_USER, "error", None)
    _USER.error = None
    return err
