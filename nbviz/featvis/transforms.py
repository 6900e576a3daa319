"""Random image transforms applied before every forward pass of a feature visualisation.

A transform is a frozen dataclass called as ``t(images, seed, progress=0.0) -> images`` on a
float32 ``(N, H, W, C)`` batch. ``seed`` is a shape-[2] integer tensor: every random draw comes
from ``tf.random.stateless_*`` with it, so one compiled step stays valid for every step and the
same seed gives the same images. ``progress`` (a scalar in [0, 1], the fraction of the current
octave done) drives schedules such as :class:`Blur`'s sigma.

:func:`compose` chains a tuple of transforms; consecutive affine ones (:class:`Jitter`,
:class:`RandomScale`, :class:`RandomRotate`) are fused into one resampling per image, done by
``tf.raw_ops.ImageProjectiveTransformV3`` (bilinear, reflected borders; :class:`Fit`, the
resampling to the model's input size, joins the fused map), which TensorFlow can
differentiate. Coordinates: pixel ``k``'s centre is at ``k``; rotations and scalings are about
the image centre ``((H - 1) / 2, (W - 1) / 2)``. TensorFlow's gradient of that op is the inverse
warp (not the exact adjoint of bilinear sampling): close for the near-rigid maps used here, and
an ascent direction all the same.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np
import tensorflow as tf

__all__ = [
    "Pad",
    "Jitter",
    "RandomScale",
    "RandomRotate",
    "Blur",
    "Fit",
    "compose",
    "standard",
]


def _sub_seed(seed, index: int) -> tf.Tensor:
    return tf.random.experimental.stateless_fold_in(tf.cast(seed, tf.int64), index)


class Transform:
    """Base class: ``__call__(images, seed, progress=0.0)``."""

    def __call__(self, images, seed, progress=0.0):
        raise NotImplementedError


class Affine(Transform):
    """A transform given by one output->input pixel map per image (a (N, 3, 3) matrix acting on
    homogeneous ``(x, y, 1)``)."""

    def matrices(self, seed, n, height, width) -> tf.Tensor:
        raise NotImplementedError

    def output_size(self, height, width):
        """Output (height, width) for an input of that size (same size unless overridden)."""
        return height, width

    def __call__(self, images, seed, progress=0.0):
        shape = tf.shape(images)
        return warp(images, self.matrices(seed, shape[0], shape[1], shape[2]))


def warp(images, matrices, output_size=None, interpolation="BILINEAR") -> tf.Tensor:
    """Resample ``images`` at ``matrices @ (x, y, 1)`` for every output pixel ``(x, y)``; borders
    are reflected."""
    images = tf.convert_to_tensor(images, tf.float32)
    if output_size is None:
        output_size = tf.shape(images)[1:3]
    m = tf.cast(matrices, tf.float32)
    m = m / m[:, 2:3, 2:3]
    flat = tf.reshape(m, [-1, 9])[:, :8]
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=flat, output_shape=tf.cast(output_size, tf.int32),
        fill_value=0.0, interpolation=interpolation, fill_mode="REFLECT")


def _about_centre(linear, height, width):
    """(N, 2, 2) linear maps about the image centre -> (N, 3, 3) output->input matrices."""
    cy = (tf.cast(height, tf.float32) - 1.0) / 2.0
    cx = (tf.cast(width, tf.float32) - 1.0) / 2.0
    centre = tf.stack([cx, cy])
    offset = centre - tf.linalg.matvec(linear, tf.broadcast_to(centre, tf.shape(linear)[:-1]))
    top = tf.concat([linear, offset[..., None]], axis=-1)  # (N, 2, 3)
    n = tf.shape(linear)[0]
    bottom = tf.broadcast_to(tf.constant([[0.0, 0.0, 1.0]]), [n, 1, 3])
    return tf.concat([top, bottom], axis=1)


@dataclasses.dataclass(frozen=True)
class Pad(Transform):
    """Pad ``width`` pixels on every side, reflecting the image (``mode="reflect"``) or with the
    constant ``value``."""

    width: int
    mode: str = "reflect"
    value: float = 0.5

    def __post_init__(self):
        if not isinstance(self.width, (int, np.integer)) or self.width < 0:
            raise ValueError(f"pad width must be an int >= 0, got {self.width!r}")
        if self.mode not in ("reflect", "constant"):
            raise ValueError(f"pad mode must be 'reflect' or 'constant', got {self.mode!r}")

    def __call__(self, images, seed=None, progress=0.0):
        w = int(self.width)
        if w == 0:
            return images
        paddings = [[0, 0], [w, w], [w, w], [0, 0]]
        if self.mode == "reflect":
            return tf.pad(images, paddings, mode="REFLECT")
        return tf.pad(images, paddings, constant_values=self.value)


@dataclasses.dataclass(frozen=True)
class Jitter(Affine):
    """Shift every image by a random whole number of pixels in ``[-pixels, pixels]`` along each
    axis (drawn per image); ``out[y, x] = in[y - dy, x - dx]``, borders reflected."""

    pixels: int

    def __post_init__(self):
        if not isinstance(self.pixels, (int, np.integer)) or self.pixels < 0:
            raise ValueError(f"jitter must be an int >= 0 (pixels), got {self.pixels!r}")

    def shifts(self, seed, n) -> tf.Tensor:
        """(N, 2) integer shifts (dy, dx) as float32."""
        d = int(self.pixels)
        s = tf.random.stateless_uniform([n, 2], _sub_seed(seed, 1), minval=-d, maxval=d + 1,
                                        dtype=tf.int32)
        return tf.cast(s, tf.float32)

    def matrices(self, seed, n, height, width):
        s = self.shifts(seed, n)
        dy, dx = s[:, 0], s[:, 1]
        one, zero = tf.ones_like(dx), tf.zeros_like(dx)
        rows = [tf.stack([one, zero, -dx], -1), tf.stack([zero, one, -dy], -1),
                tf.stack([zero, zero, one], -1)]
        return tf.stack(rows, axis=1)


@dataclasses.dataclass(frozen=True)
class RandomScale(Affine):
    """Zoom about the centre by a factor drawn uniformly from ``[low, high]`` per image (> 1
    magnifies); the image keeps its size, borders reflected."""

    low: float
    high: float

    def __post_init__(self):
        if not (0 < self.low <= self.high):
            raise ValueError(f"scale must be (low, high) with 0 < low <= high, got "
                             f"({self.low!r}, {self.high!r})")

    def factors(self, seed, n):
        return tf.random.stateless_uniform([n], _sub_seed(seed, 2), self.low, self.high)

    def matrices(self, seed, n, height, width):
        inv = 1.0 / self.factors(seed, n)
        zero = tf.zeros_like(inv)
        linear = tf.stack([tf.stack([inv, zero], -1), tf.stack([zero, inv], -1)], axis=1)
        return _about_centre(linear, height, width)


@dataclasses.dataclass(frozen=True)
class RandomRotate(Affine):
    """Rotate about the centre by an angle drawn uniformly from ``[-degrees, degrees]`` per image
    (positive: counter-clockwise on screen); the image keeps its size, borders reflected."""

    degrees: float

    def __post_init__(self):
        if not (self.degrees >= 0):
            raise ValueError(f"rotate must be a number of degrees >= 0, got {self.degrees!r}")

    def angles(self, seed, n):
        """Angles in radians, shape (N,)."""
        d = float(self.degrees)
        return tf.random.stateless_uniform([n], _sub_seed(seed, 3), -d, d) * (math.pi / 180.0)

    def matrices(self, seed, n, height, width):
        a = self.angles(seed, n)
        c, s = tf.cos(a), tf.sin(a)
        # output (x, y) samples input R(a) (x - c) + c: the picture turns counter-clockwise
        linear = tf.stack([tf.stack([c, -s], -1), tf.stack([s, c], -1)], axis=1)
        return _about_centre(linear, height, width)


@dataclasses.dataclass(frozen=True)
class Blur(Transform):
    """Gaussian blur whose sigma (pixels) goes linearly from ``start`` to ``end`` over an octave
    (``progress`` 0 -> 1). The kernel has a fixed radius ``ceil(3 * max(start, end))``; borders
    are reflected. Sigma 0 leaves the image unchanged."""

    start: float
    end: float | None = None

    def __post_init__(self):
        end = self.start if self.end is None else self.end
        if not (self.start >= 0 and end >= 0):
            raise ValueError(f"blur sigma must be >= 0, got ({self.start!r}, {self.end!r})")
        object.__setattr__(self, "end", float(end))
        object.__setattr__(self, "start", float(self.start))

    @property
    def radius(self) -> int:
        return int(math.ceil(3.0 * max(self.start, self.end)))

    def sigma(self, progress) -> tf.Tensor:
        p = tf.clip_by_value(tf.cast(progress, tf.float32), 0.0, 1.0)
        return self.start + (self.end - self.start) * p

    def kernel(self, progress) -> tf.Tensor:
        """The normalised 1-D kernel, length ``2 * radius + 1``."""
        r = self.radius
        x = tf.range(-r, r + 1, dtype=tf.float32)
        sigma = tf.maximum(self.sigma(progress), 1e-3)
        k = tf.exp(-0.5 * tf.square(x / sigma))
        return k / tf.reduce_sum(k)

    def __call__(self, images, seed=None, progress=0.0):
        r = self.radius
        if r == 0:
            return images
        c = images.shape[-1]
        k = self.kernel(progress)
        padded = tf.pad(images, [[0, 0], [r, r], [r, r], [0, 0]], mode="REFLECT")
        ky = tf.tile(tf.reshape(k, [-1, 1, 1, 1]), [1, 1, c, 1])
        kx = tf.tile(tf.reshape(k, [1, -1, 1, 1]), [1, 1, c, 1])
        out = tf.nn.depthwise_conv2d(padded, ky, [1, 1, 1, 1], "VALID")
        return tf.nn.depthwise_conv2d(out, kx, [1, 1, 1, 1], "VALID")


@dataclasses.dataclass(frozen=True)
class Fit(Affine):
    """Resample to ``(height, width)``, the size the model takes, about the centre: output
    pixels are ``factor`` input pixels apart (``factor = image size / model size`` of the
    unpadded image keeps the picture's scale, so padding is cropped off instead of squeezed in).
    Bilinear; a no-op at the same size with factor 1."""

    height: int
    width: int
    factor: tuple = (1.0, 1.0)  # (y, x)

    def output_size(self, height, width):
        return self.height, self.width

    def matrices(self, seed, n, height, width):
        fy, fx = (float(f) for f in self.factor)
        cy_in = (tf.cast(height, tf.float32) - 1.0) / 2.0
        cx_in = (tf.cast(width, tf.float32) - 1.0) / 2.0
        cy_out, cx_out = (self.height - 1) / 2.0, (self.width - 1) / 2.0
        m = tf.stack([tf.stack([fx, 0.0, cx_in - fx * cx_out]),
                      tf.stack([0.0, fy, cy_in - fy * cy_out]),
                      tf.constant([0.0, 0.0, 1.0])])
        return tf.tile(m[None], [n, 1, 1])

    def __call__(self, images, seed=None, progress=0.0):
        if (images.shape[1] == self.height and images.shape[2] == self.width
                and tuple(self.factor) == (1.0, 1.0)):
            return images
        shape = tf.shape(images)
        return warp(images, self.matrices(seed, shape[0], shape[1], shape[2]),
                    output_size=(self.height, self.width))


def compose(transforms: Sequence[Transform]):
    """One function ``(images, seed, progress) -> images`` applying ``transforms`` in order;
    consecutive affine transforms are fused into one resampling (bilinear)."""
    transforms = tuple(transforms)
    for t in transforms:
        if not isinstance(t, Transform):
            raise TypeError(f"transforms must be nbviz.featvis.transforms objects, got "
                            f"{type(t).__name__}")

    def apply(images, seed, progress=0.0):
        pending = []

        def flush(x):
            if not pending:
                return x
            if len(pending) == 1:
                out = pending[0](x, seed, progress)
            else:
                shape = tf.shape(x)
                size = (shape[1], shape[2])
                m = None
                for t in pending:  # first transform's map is applied last to coordinates
                    mt = t.matrices(seed, shape[0], *size)
                    m = mt if m is None else tf.matmul(m, mt)
                    size = t.output_size(*size)
                out = warp(x, m, output_size=tf.stack(size))
            pending.clear()
            return out

        x = images
        for t in transforms:
            if isinstance(t, Affine):
                pending.append(t)
            else:
                x = t(flush(x), seed, progress)
        return flush(x)

    return apply


def standard(*, pad=8, jitter=8, scale=(0.9, 1.1), rotate=10.0, blur=0.0) -> tuple:
    """The transforms :func:`nbviz.featvis.render` builds from its options, in order: pad, jitter,
    random scale, random rotation, blur. Zero / None switches one off; ``blur`` is a sigma or a
    ``(start, end)`` schedule."""
    out = []
    if pad:
        out.append(Pad(int(pad)))
    if jitter:
        out.append(Jitter(int(jitter)))
    if scale is not None and tuple(scale) != (1.0, 1.0):
        if isinstance(scale, (int, float)):
            raise TypeError(f"scale must be a (low, high) pair or None, got {scale!r}")
        low, high = scale
        out.append(RandomScale(float(low), float(high)))
    if rotate:
        out.append(RandomRotate(float(rotate)))
    if blur is not None:
        start, end = (blur, blur) if isinstance(blur, (int, float)) else tuple(blur)
        if start or end:
            out.append(Blur(float(start), float(end)))
    return tuple(out)
