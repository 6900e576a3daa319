"""What a feature visualisation maximises: small immutable objectives that compose.

An :class:`Objective` is a weighted sum of terms. ``+``, ``-``, ``*`` and ``/`` by numbers build a
new objective and never change their operands; equal terms merge (``a + a == 2 * a``). Higher is
better: a regulariser you want small is subtracted, ``fv.channel("conv3", 5) - 0.1 *
fv.total_variation()``.

Every term gives one value per batch item (shape ``(N,)``); the objective of item ``k`` is the
weighted sum of its terms and :func:`nbviz.featvis.render` maximises the sum over the batch.
Terms that take a channel, class or neuron index accept a sequence too: batch item ``k`` then
uses entry ``k % len(sequence)``, so ``channel("conv3", [3, 7, 9])`` renders three images as one
batch, one per channel (see :attr:`Objective.batch`).

Layers are given as paths or names (``"mixed4"``, ``"mobilenetv2/block_3_add"``) or as layer
objects; they are resolved by the model's probe when rendering.
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Any, Mapping

import numpy as np
import tensorflow as tf

__all__ = [
    "Objective",
    "Term",
    "Context",
    "neuron",
    "channel",
    "layer",
    "logit",
    "direction",
    "directions",
    "total_variation",
    "l1",
    "l2",
    "diversity",
]


@dataclasses.dataclass(frozen=True)
class Context:
    """What terms read during one forward pass.

    ``images``: the parametrised images in [0, 1] before transforms, ``(N, H, W, 3)``;
    ``activations``: layer spec (as given to the term) -> output; ``logits``: the model's output
    with a final softmax dropped (None when no term asked for it).
    """

    images: tf.Tensor
    activations: Mapping[Any, tf.Tensor]
    logits: tf.Tensor | None = None

    @property
    def batch(self) -> tf.Tensor:
        return tf.shape(self.images)[0]


# --------------------------------------------------------------------------- terms


class Term:
    """One part of an objective. Subclasses are frozen dataclasses (hashable, comparable).

    What may change without recompiling (channel, class and neuron indices, direction vectors) is
    returned by :meth:`params` as numpy arrays and reaches :meth:`value` as tensors; the rest,
    :meth:`structure`, keys the compiled step.
    """

    layers: tuple = ()  # layer specs whose outputs the term reads
    needs_logits: bool = False

    def params(self) -> tuple:
        return ()

    def structure(self):
        return self

    def value(self, ctx: Context, params=None) -> tf.Tensor:  # (N,) float32
        raise NotImplementedError

    def check(self, shape_of, logits_shape) -> None:
        """Raise ValueError for indices outside the layers' shapes (``shape_of(spec)`` -> shape
        with batch axis, or None when unknown)."""

    @property
    def batch(self) -> int:
        """How many batch items the term distinguishes (length of its index sequence, else 1)."""
        return 1

    def describe(self) -> str:
        raise NotImplementedError


def _index(value, what: str):
    """An int or a non-empty tuple of ints (one per batch item)."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{what} must be an int or a sequence of ints, got {value!r}")
    if isinstance(value, numbers.Integral):
        if value < 0:
            raise ValueError(f"{what} must be >= 0, got {value}")
        return int(value)
    if isinstance(value, (list, tuple, np.ndarray, range)):
        items = tuple(value.tolist() if isinstance(value, np.ndarray) else value)
        if not items:
            raise ValueError(f"{what} is an empty sequence; give at least one index")
        return tuple(_index(v, what) for v in items)
    raise TypeError(f"{what} must be an int or a sequence of ints, got {type(value).__name__}")


def _layer_spec(spec, what="layer"):
    if isinstance(spec, str):
        if not spec:
            raise ValueError(f"{what} is an empty string; give a layer name or path")
        return spec
    if hasattr(spec, "call") and hasattr(spec, "name"):  # a Keras layer (hashable by identity)
        return spec
    raise TypeError(f"{what} must be a layer name, path or Keras layer, got {type(spec).__name__}")


def _per_item(table, n) -> tf.Tensor:
    """Index per batch item (item k takes entry k % len) as an int32 (N,) tensor."""
    table = tf.convert_to_tensor(table, tf.int32)
    return tf.gather(table, tf.math.floormod(tf.range(n), tf.shape(table)[0]))


def _count(index) -> int:
    return len(index) if isinstance(index, tuple) else 1


def _array(index) -> np.ndarray:
    return np.asarray(index if isinstance(index, tuple) else (index,), np.int32)


def _given(params, term):
    return term.params() if params is None else params


def _float(output) -> tf.Tensor:
    if isinstance(output, (list, tuple)):
        output = output[0]
    return tf.cast(output, tf.float32)


def _check_channel(shape, channels, spec, what="channel"):
    top = max(channels) if isinstance(channels, tuple) else channels
    if shape and shape[-1] is not None and top >= shape[-1]:
        raise ValueError(f"{what} {top} is out of range for layer {spec!r} with "
                         f"{shape[-1]} channels (0..{shape[-1] - 1})")


def _mean_over_space(act) -> tf.Tensor:
    """(N, ..., C) -> (N, C): mean over every axis between batch and channels."""
    axes = list(range(1, len(act.shape) - 1))
    return tf.reduce_mean(act, axis=axes) if axes else act


@dataclasses.dataclass(frozen=True)
class Neuron(Term):
    layer_spec: Any
    channel: int | tuple
    y: int | None = None
    x: int | None = None

    @property
    def layers(self):
        return (self.layer_spec,)

    @property
    def batch(self):
        return _count(self.channel)

    def params(self):
        yx = [-1 if self.y is None else self.y, -1 if self.x is None else self.x]
        return _array(self.channel), np.asarray(yx, np.int32)

    def structure(self):
        return ("neuron", self.layer_spec, self.batch)

    def check(self, shape_of, logits_shape):
        shape = shape_of(self.layer_spec)
        _check_channel(shape, self.channel, self.layer_spec)
        if shape is None:
            return
        if len(shape) == 2 and (self.y is not None or self.x is not None):
            raise ValueError(f"layer {self.layer_spec!r} has no spatial axes (shape "
                             f"{tuple(shape)}); leave y and x as None")
        if len(shape) == 4:
            for name, v, size in (("y", self.y, shape[1]), ("x", self.x, shape[2])):
                if v is not None and size is not None and v >= size:
                    raise ValueError(f"neuron {name}={v} is outside layer {self.layer_spec!r} "
                                     f"of spatial size {shape[1]}×{shape[2]}")

    def value(self, ctx, params=None):
        channels, yx = _given(params, self)
        act = _float(ctx.activations[self.layer_spec])
        if len(act.shape) == 4:
            shape = tf.shape(act)
            y = tf.where(yx[0] < 0, shape[1] // 2, yx[0])
            x = tf.where(yx[1] < 0, shape[2] // 2, yx[1])
            act = act[:, y, x, :]
        elif len(act.shape) != 2:
            raise ValueError(f"neuron needs a (N, H, W, C) or (N, C) output; layer "
                             f"{self.layer_spec!r} gives shape {tuple(act.shape)}")
        n = tf.shape(act)[0]
        return tf.gather(act, _per_item(channels, n), axis=1, batch_dims=1)

    def describe(self):
        where = "" if self.y is None and self.x is None else f", y={self.y}, x={self.x}"
        return f"neuron({self.layer_spec!r}, {self.channel!r}{where})"


@dataclasses.dataclass(frozen=True)
class Channel(Term):
    layer_spec: Any
    channel: int | tuple

    @property
    def layers(self):
        return (self.layer_spec,)

    @property
    def batch(self):
        return _count(self.channel)

    def params(self):
        return (_array(self.channel),)

    def structure(self):
        return ("channel", self.layer_spec, self.batch)

    def check(self, shape_of, logits_shape):
        _check_channel(shape_of(self.layer_spec), self.channel, self.layer_spec)

    def value(self, ctx, params=None):
        (channels,) = _given(params, self)
        means = _mean_over_space(_float(ctx.activations[self.layer_spec]))
        n = tf.shape(means)[0]
        return tf.gather(means, _per_item(channels, n), axis=1, batch_dims=1)

    def describe(self):
        return f"channel({self.layer_spec!r}, {self.channel!r})"


@dataclasses.dataclass(frozen=True)
class Layer(Term):
    layer_specs: tuple
    squared: bool = True

    @property
    def layers(self):
        return self.layer_specs

    def value(self, ctx, params=None):
        total = 0.0
        for spec in self.layer_specs:
            act = _float(ctx.activations[spec])
            if self.squared:
                act = tf.square(act)
            axes = list(range(1, len(act.shape)))
            total = total + tf.reduce_mean(act, axis=axes)
        return total

    def describe(self):
        specs = ", ".join(repr(s) for s in self.layer_specs)
        return f"layer({specs}, squared={self.squared})"


@dataclasses.dataclass(frozen=True)
class Logit(Term):
    index: int | tuple
    needs_logits = True

    @property
    def batch(self):
        return _count(self.index)

    def params(self):
        return (_array(self.index),)

    def structure(self):
        return ("logit", self.batch)

    def check(self, shape_of, logits_shape):
        if logits_shape is not None:
            flat = (None, int(np.prod(logits_shape[1:])))
            _check_channel(flat, self.index, "model output", what="logit index")

    def value(self, ctx, params=None):
        (index,) = _given(params, self)
        logits = _float(ctx.logits)
        if len(logits.shape) != 2:
            logits = tf.reshape(logits, [tf.shape(logits)[0], -1])
        n = tf.shape(logits)[0]
        return tf.gather(logits, _per_item(index, n), axis=1, batch_dims=1)

    def describe(self):
        return f"logit({self.index!r})"


@dataclasses.dataclass(frozen=True)
class Direction(Term):
    layer_spec: Any
    vector: tuple  # unit length

    @property
    def layers(self):
        return (self.layer_spec,)

    def params(self):
        return (np.asarray(self.vector, np.float32),)

    def structure(self):
        return ("direction", self.layer_spec, len(self.vector))

    def check(self, shape_of, logits_shape):
        shape = shape_of(self.layer_spec)
        if shape and shape[-1] is not None and shape[-1] != len(self.vector):
            raise ValueError(f"direction vector has {len(self.vector)} entries but layer "
                             f"{self.layer_spec!r} has {shape[-1]} channels")

    def value(self, ctx, params=None):
        (vector,) = _given(params, self)
        act = _float(ctx.activations[self.layer_spec])
        projected = tf.tensordot(act, tf.cast(vector, tf.float32), axes=[[-1], [0]])
        axes = list(range(1, len(projected.shape)))
        return tf.reduce_mean(projected, axis=axes) if axes else projected

    def describe(self):
        return f"direction({self.layer_spec!r}, <{len(self.vector)} values>)"



@dataclasses.dataclass(frozen=True)
class Directions(Term):
    """One direction per batch item: item k projects on row ``k % len(vectors)``."""

    layer_spec: Any
    vectors: tuple  # rows of unit length

    @property
    def layers(self):
        return (self.layer_spec,)

    @property
    def batch(self):
        return len(self.vectors)

    def params(self):
        return (np.asarray(self.vectors, np.float32),)

    def structure(self):
        return ("directions", self.layer_spec, len(self.vectors), len(self.vectors[0]))

    def check(self, shape_of, logits_shape):
        shape = shape_of(self.layer_spec)
        width = len(self.vectors[0])
        if shape and shape[-1] is not None and shape[-1] != width:
            raise ValueError(f"direction vectors have {width} entries but layer "
                             f"{self.layer_spec!r} has {shape[-1]} channels")

    def value(self, ctx, params=None):
        (vectors,) = _given(params, self)
        act = _float(ctx.activations[self.layer_spec])
        n = tf.shape(act)[0]
        rows = tf.gather(tf.cast(vectors, tf.float32), tf.math.floormod(tf.range(n),
                                                                        tf.shape(vectors)[0]))
        shape = tf.concat([[n], tf.ones([len(act.shape) - 2], tf.int32), [-1]], axis=0)
        projected = tf.reduce_sum(act * tf.reshape(rows, shape), axis=-1)
        axes = list(range(1, len(projected.shape)))
        return tf.reduce_mean(projected, axis=axes) if axes else projected

    def describe(self):
        return (f"directions({self.layer_spec!r}, <{len(self.vectors)}×{len(self.vectors[0])} "
                f"values>)")


@dataclasses.dataclass(frozen=True)
class TotalVariation(Term):
    def value(self, ctx, params=None):
        img = ctx.images
        dy = tf.abs(img[:, 1:, :, :] - img[:, :-1, :, :])
        dx = tf.abs(img[:, :, 1:, :] - img[:, :, :-1, :])
        return tf.reduce_mean(dy, axis=[1, 2, 3]) + tf.reduce_mean(dx, axis=[1, 2, 3])

    def describe(self):
        return "total_variation()"


@dataclasses.dataclass(frozen=True)
class Norm(Term):
    power: int  # 1 or 2
    layer_spec: Any = None  # None: the image
    constant: float = 0.0

    @property
    def layers(self):
        return () if self.layer_spec is None else (self.layer_spec,)

    def value(self, ctx, params=None):
        t = ctx.images if self.layer_spec is None else _float(ctx.activations[self.layer_spec])
        d = t - self.constant
        d = tf.abs(d) if self.power == 1 else tf.square(d)
        return tf.reduce_mean(d, axis=list(range(1, len(d.shape))))

    def describe(self):
        where = "" if self.layer_spec is None else f"{self.layer_spec!r}, "
        return f"l{self.power}({where}constant={self.constant})"


@dataclasses.dataclass(frozen=True)
class Diversity(Term):
    layer_spec: Any

    @property
    def layers(self):
        return (self.layer_spec,)

    def value(self, ctx, params=None):
        act = _float(ctx.activations[self.layer_spec])
        if len(act.shape) != 4:
            raise ValueError(f"diversity needs a spatial (N, H, W, C) layer; {self.layer_spec!r} "
                             f"gives shape {tuple(act.shape)}")
        n = tf.shape(act)[0]
        flat = tf.reshape(act, [n, -1, tf.shape(act)[-1]])
        gram = tf.matmul(flat, flat, transpose_a=True)  # (N, C, C)
        gram = tf.reshape(gram, [n, -1])
        gram = tf.math.l2_normalize(gram, axis=1)
        sim = tf.matmul(gram, gram, transpose_b=True)  # cosine similarities (N, N)
        others = tf.reduce_sum(sim, axis=1) - tf.linalg.diag_part(sim)
        return -others / tf.cast(tf.maximum(n - 1, 1), tf.float32)

    def describe(self):
        return f"diversity({self.layer_spec!r})"


# --------------------------------------------------------------------------- the objective


@dataclasses.dataclass(frozen=True)
class Objective:
    """A weighted sum of terms: ``terms`` is a tuple of ``(weight, term)`` pairs."""

    terms: tuple

    def __post_init__(self):
        merged: dict = {}
        for weight, term in self.terms:
            if not isinstance(term, Term):
                raise TypeError(f"objective terms must be Term objects, got {type(term).__name__}")
            merged[term] = merged.get(term, 0.0) + float(weight)
        object.__setattr__(self, "terms", tuple((w, t) for t, w in merged.items() if w != 0.0))

    # ----------------------------------------------------------- arithmetic (new objects)

    def __add__(self, other):
        if not isinstance(other, Objective):
            return NotImplemented
        return Objective(self.terms + other.terms)

    def __sub__(self, other):
        if not isinstance(other, Objective):
            return NotImplemented
        return Objective(self.terms + tuple((-w, t) for w, t in other.terms))

    def __neg__(self):
        return Objective(tuple((-w, t) for w, t in self.terms))

    def __mul__(self, k):
        if not _is_number(k):
            return NotImplemented
        return Objective(tuple((w * float(k), t) for w, t in self.terms))

    __rmul__ = __mul__

    def __truediv__(self, k):
        if not _is_number(k):
            return NotImplemented
        if float(k) == 0.0:
            raise ZeroDivisionError("cannot divide an objective by zero")
        return Objective(tuple((w / float(k), t) for w, t in self.terms))

    def __radd__(self, other):
        if isinstance(other, numbers.Number) and other == 0:  # sum([...]) starts from 0
            return self
        return NotImplemented

    # ----------------------------------------------------------- what rendering needs

    @property
    def layers(self) -> tuple:
        """Every layer spec a term reads, in order of appearance, without repeats."""
        seen = []
        for _, term in self.terms:
            for spec in term.layers:
                if spec not in seen:
                    seen.append(spec)
        return tuple(seen)

    @property
    def needs_logits(self) -> bool:
        return any(term.needs_logits for _, term in self.terms)

    @property
    def batch(self) -> int:
        """The smallest batch that covers every index sequence (their least common multiple)."""
        n = 1
        for _, term in self.terms:
            n = int(np.lcm(n, term.batch))
        return n

    def structure(self) -> tuple:
        """What the compiled step depends on: term kinds, layers and batch lengths, not the
        weights, indices or vectors (those are :meth:`params`)."""
        return tuple(term.structure() for _, term in self.terms)

    def params(self) -> list:
        """Weights (one float32 array) then every term's parameters, as numpy arrays."""
        out = [np.asarray([w for w, _ in self.terms], np.float32)]
        for _, term in self.terms:
            out.extend(term.params())
        return out

    def check(self, shape_of, logits_shape=None) -> None:
        """Raise ValueError when an index does not fit the layer shapes (see :meth:`Term.check`)."""
        for _, term in self.terms:
            term.check(shape_of, logits_shape)

    def value(self, ctx: Context, params=None) -> tf.Tensor:
        """Objective per batch item, shape (N,); ``params`` as tensors (default: this objective's
        own :meth:`params`)."""
        if params is None:
            params = self.params()
        weights, rest = params[0], list(params[1:])
        total = tf.zeros([ctx.batch], tf.float32)
        for i, (_, term) in enumerate(self.terms):
            k = len(term.params())
            mine, rest = rest[:k], rest[k:]
            total = total + weights[i] * term.value(ctx, tuple(mine))
        return total

    def __repr__(self):
        if not self.terms:
            return "Objective(0)"
        parts = []
        for w, t in self.terms:
            sign = "-" if w < 0 else "+"
            a = abs(w)
            text = t.describe() if a == 1.0 else f"{a:g} * {t.describe()}"
            parts.append((sign, text))
        first_sign, first = parts[0]
        out = ("-" if first_sign == "-" else "") + first
        return "Objective(" + out + "".join(f" {s} {x}" for s, x in parts[1:]) + ")"


def _is_number(k) -> bool:
    real = isinstance(k, numbers.Real) and not isinstance(k, (bool, np.bool_))
    if real and not np.isfinite(k):
        raise TypeError(f"an objective can only be scaled by a finite number, got {k!r}")
    return real


def _single(term: Term) -> Objective:
    return Objective(((1.0, term),))


# --------------------------------------------------------------------------- constructors


def neuron(layer, channel, y: int | None = None, x: int | None = None) -> Objective:
    """One unit: channel ``channel`` of ``layer`` at position ``(y, x)`` (default: the centre).

    For a layer without spatial axes (Dense) the unit itself; leave ``y``/``x`` as None.
    """
    for name, v in (("y", y), ("x", x)):
        if v is not None and (not isinstance(v, numbers.Integral) or isinstance(v, bool) or v < 0):
            raise TypeError(f"neuron {name} must be None or an int >= 0, got {v!r}")
    return _single(Neuron(_layer_spec(layer), _index(channel, "channel"),
                          None if y is None else int(y), None if x is None else int(x)))


def channel(layer, channel) -> Objective:
    """Mean activation of channel ``channel`` of ``layer`` over all positions."""
    return _single(Channel(_layer_spec(layer), _index(channel, "channel")))


def layer(*layers, squared: bool = True) -> Objective:
    """DeepDream: mean of squared (or, with ``squared=False``, plain) activations, summed over
    one or several layers."""
    if not layers:
        raise ValueError("layer() needs at least one layer name, path or Keras layer")
    return _single(Layer(tuple(_layer_spec(s) for s in layers), bool(squared)))


def logit(index) -> Objective:
    """Pre-softmax output ``index`` of the model (its final softmax, if any, is dropped)."""
    return _single(Logit(_index(index, "class index")))


def direction(layer, vector) -> Objective:
    """Mean over positions of the projection of ``layer``'s activations on ``vector`` (normalised
    to unit length)."""
    v = np.asarray(vector, dtype=np.float64)
    if v.ndim != 1 or v.size == 0:
        raise ValueError(f"direction vector must be 1-D and non-empty, got shape {v.shape}")
    norm = np.linalg.norm(v)
    if not np.isfinite(norm) or norm == 0:
        raise ValueError("direction vector must be finite and non-zero")
    return _single(Direction(_layer_spec(layer), tuple(float(a) for a in v / norm)))


def directions(layer, vectors) -> Objective:
    """One direction per batch item: item ``k`` maximises the mean over positions of its
    projection on row ``k % n`` of the ``n×c`` matrix ``vectors`` (rows normalised to unit
    length), so ``n`` directions of one layer render as one batch (e.g. the channel loadings of
    :func:`nbviz.neuron_groups`)."""
    v = np.asarray(vectors, dtype=np.float64)
    if v.ndim != 2 or v.shape[0] == 0 or v.shape[1] == 0:
        raise ValueError(f"directions needs a non-empty 2-D array (one row per image), got shape "
                         f"{v.shape}")
    norms = np.linalg.norm(v, axis=1)
    if not np.isfinite(v).all() or not (norms > 0).all():
        raise ValueError("direction vectors must be finite and every row non-zero")
    rows = v / norms[:, None]
    return _single(Directions(_layer_spec(layer), tuple(tuple(float(a) for a in r) for r in rows)))


def total_variation() -> Objective:
    """Mean absolute difference of neighbouring pixels (vertical plus horizontal) of the image in
    [0, 1]. Subtract it to smooth: ``obj - 0.05 * total_variation()``."""
    return _single(TotalVariation())


def l1(layer=None, constant: float = 0.5) -> Objective:
    """Mean ``|t - constant|`` of the image in [0, 1] (``layer=None``) or of a layer's output."""
    return _single(Norm(1, None if layer is None else _layer_spec(layer), float(constant)))


def l2(layer=None, constant: float = 0.5) -> Objective:
    """Mean ``(t - constant)**2`` of the image in [0, 1] (``layer=None``) or of a layer's output."""
    return _single(Norm(2, None if layer is None else _layer_spec(layer), float(constant)))


def diversity(layer) -> Objective:
    """Minus the mean cosine similarity between an item's Gram matrix of ``layer`` and every other
    item's: adding it pushes the images of a batch apart (zero for a batch of one)."""
    return _single(Diversity(_layer_spec(layer)))
