"""The size of the effective receptive field (Luo, Li, Urtasun, Zemel, NeurIPS 2016).

The *effective receptive field* (ERF) of a layer is the input-gradient map of its centre output
cell through the model's real weights and activations: with ``y`` the layer's output
(N×h×w×c), centre cell ``(ci, cj) = (h // 2, w // 2)`` and probe images ``x_n``,

    G(u, v) = mean_n  sum_k | d (sum_c y[n, ci, cj, c]) / d x[n, u, v, k] |

(Luo et al. put a gradient of 1 on the centre pixel of every channel and 0 elsewhere, and average
over images: the same thing). The theoretical receptive field (TRF, :func:`nbviz.methods.
receptive_field.receptive_field`) is the support of this map; the ERF is where most of its mass
is, and Luo et al. show it is much smaller than the TRF and grows during training.

Its size, as measured here (:func:`erf_size`), for a mass fraction ``mass`` (default 0.95):

* centre ``(cy, cx)``: the centre of the centre cell's TRF in input pixel coordinates (pixel
  ``k``'s centre is ``k``; a half-integer centre lies between two pixels);
* ``side``: the side, in pixels, of the smallest square centred on ``(cy, cx)`` whose pixels
  hold at least ``mass`` of the total mass ``sum G``. With ``d(u, v) = max(|u - cy|, |v - cx|)``
  and ``d*`` the smallest value of ``d`` over the pixels with ``sum_{d(u,v) <= d*} G >= mass *
  sum G``, ``side = 2 d* + 1`` (an odd number for an integer centre, even for a half-integer
  one). Pixels outside the image do not exist: a square may reach past the border;
* ``radius``: the same with the Euclidean distance ``sqrt((u - cy)² + (v - cx)²)``: the smallest
  distance ``r`` from the centre such that pixel centres within ``r`` hold ``mass`` of the mass;
* ``trf``: the TRF side ``max(size)`` of the layer; ``ratio = side / trf``.

A map that is zero everywhere (dead units: no gradient reaches the input) has no ERF: ``side`` and
``radius`` are NaN and a warning says so.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Sequence

import numpy as np
import tensorflow as tf

from nbviz.probe import probe

__all__ = ["ErfSize", "erf_size", "erf_gradients", "effective_rf"]

_TOLERANCE = 1e-6  # relative slack on the mass threshold (float sums of exact fractions)


@dataclasses.dataclass(frozen=True)
class ErfSize:
    """The ERF size of one layer; see the module docstring for every definition.

    ``layer``: path; ``side``, ``radius``: pixels (NaN for an all-zero map); ``trf``: TRF side;
    ``ratio``: ``side / trf``; ``center``: (cy, cx); ``cell``: the centre output cell (i, j);
    ``mass``: the fraction used."""

    layer: str
    side: float
    radius: float
    trf: float
    ratio: float
    center: tuple
    cell: tuple
    mass: float

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def _smallest(distance: np.ndarray, values: np.ndarray, mass: float) -> float:
    """Smallest distance value ``d`` with ``sum(values[distance <= d]) >= mass * sum(values)``."""
    order = np.argsort(distance, kind="stable")
    d, v = distance[order], values[order].astype(np.float64)
    cum = np.cumsum(v)
    total = cum[-1]
    # the cumulative sum at the last pixel of each group of equal distance
    last = np.r_[np.flatnonzero(np.diff(d) > 0), d.size - 1]
    enough = cum[last] >= mass * total * (1.0 - _TOLERANCE)
    return float(d[last[np.argmax(enough)]])


def erf_size(gradient, center, *, mass: float = 0.95) -> tuple[float, float]:
    """``(side, radius)`` of the ERF of an H×W map of gradient magnitudes ``gradient`` around
    ``center`` (y, x) in pixel coordinates; see the module docstring. NaN, NaN when the map is
    all zero. Negative values are taken as magnitudes (``abs``)."""
    g = np.abs(np.asarray(gradient, dtype=np.float64))
    if g.ndim != 2 or g.size == 0:
        raise ValueError(f"gradient must be a non-empty H×W map, got shape {g.shape}")
    if not np.isfinite(g).all():
        raise ValueError("gradient contains NaN or infinite values")
    _check_mass(mass)
    try:
        cy, cx = (float(c) for c in center)
    except (TypeError, ValueError):
        raise TypeError(f"center must be (y, x) numbers, got {center!r}") from None
    if g.sum() <= 0:
        return math.nan, math.nan
    yy, xx = np.meshgrid(np.arange(g.shape[0]), np.arange(g.shape[1]), indexing="ij")
    dy, dx = np.abs(yy - cy).ravel(), np.abs(xx - cx).ravel()
    flat = g.ravel()
    side = 2.0 * _smallest(np.maximum(dy, dx), flat, mass) + 1.0
    radius = _smallest(np.hypot(dy, dx), flat, mass)
    return side, radius


def _check_mass(mass) -> float:
    if isinstance(mass, bool) or not isinstance(mass, (int, float, np.floating)) or not (
            math.isfinite(mass) and 0 < mass <= 1):
        raise ValueError(f"erf_mass must be a fraction in (0, 1], got {mass!r}")
    return float(mass)


def centre_cell(output_shape) -> tuple[int, int]:
    """The centre cell ``(h // 2, w // 2)`` of an (N, h, w, c) output shape."""
    return int(output_shape[1]) // 2, int(output_shape[2]) // 2


def erf_gradients(model, images, layers: Sequence[str]) -> np.ndarray:
    """``G`` of the module docstring for each layer: float32 (L, H, W), one compiled function per
    (layers, batch shape) on the model's probe; ``images`` is a batch already in the model's
    input space. Layers must be paths of spatial layers (``probe(model).layer(...).path``)."""
    p = probe(model)
    batch = tf.convert_to_tensor(images, tf.float32)
    paths = tuple(layers)
    cells = tuple(centre_cell(p.layer(path).output_shape) for path in paths)
    extra = p.zero_extra_inputs()

    def gradients(x):
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(x)
            with p.capture(*paths) as captured:
                p.forward(x, extra_inputs=extra)
            centres = []
            for path, (i, j) in zip(paths, cells):
                out = captured[path]
                out = out[0] if isinstance(out, (list, tuple)) else out
                centres.append(tf.reduce_sum(tf.cast(out[:, i, j, :], tf.float32)))
        maps = []
        for score in centres:
            g = tape.gradient(score, x)
            g = tf.zeros_like(x) if g is None else g
            maps.append(tf.reduce_mean(tf.reduce_sum(tf.abs(g), axis=-1), axis=0))
        del tape
        return tf.stack(maps)

    f = p.compiled(("erf.gradients", paths, tuple(batch.shape)), gradients)
    return f(batch).numpy()


def effective_rf(model, images, *, layers=None, mass: float = 0.95, preprocess=None
                 ) -> tuple[list[ErfSize], np.ndarray]:
    """ERF sizes of ``layers`` (default: every convolution) on probe ``images`` (H×W×C or
    N×H×W×C, raw: ``preprocess`` maps them to the model's input), and the maps ``G`` (L, H, W).

    The TRF comes from :func:`nbviz.methods.receptive_field.receptive_field`.
    """
    from nbviz.methods.receptive_field import receptive_field

    mass = _check_mass(mass)
    p = probe(model)
    batch, _ = p.prepare(images, preprocess=preprocess)
    paths = spatial_paths(p, layers)
    maps = erf_gradients(model, batch, paths)
    size = tuple(batch.shape[1:3])
    out = []
    for path, g in zip(paths, maps):
        out.append(measure(model, path, g, size, mass, receptive_field))
    return out, maps


def measure(model, path, g, size, mass, receptive_field) -> ErfSize:
    """:class:`ErfSize` of one layer's map ``g`` (used by :func:`effective_rf` and the Recorder)."""
    p = probe(model)
    cell = centre_cell(p.layer(path).output_shape)
    rf = receptive_field(model, path, input_shape=size)
    center = rf.center(cell)
    trf = float(max(rf.size))
    side, radius = erf_size(g, center, mass=mass)
    if math.isnan(side):
        warnings.warn(f"the effective receptive field of {path!r} is empty: no gradient reaches "
                      "the input from its centre cell (dead units?); its size is NaN",
                      RuntimeWarning, stacklevel=3)
    return ErfSize(path, side, radius, trf, side / trf, tuple(center), cell, mass)


def spatial_paths(p, layers, argument: str = "layers") -> tuple[str, ...]:
    """Paths of the given layers (default: every convolution with a spatial output); a
    ValueError naming ``argument`` for a layer without a spatial output."""
    if layers is None:
        paths = tuple(i.path for i in p.spatial_layers() if i.kind == "conv")
        if not paths:
            paths = tuple(i.path for i in p.spatial_layers())
        if not paths:
            raise ValueError(f"{argument}: model {p.model.name!r} has no layer with a spatial output")
        return paths
    if isinstance(layers, str) or not isinstance(layers, (list, tuple)):
        layers = (layers,)
    out = []
    for spec in layers:
        try:
            info = p.layer(spec)
        except (ValueError, TypeError) as e:
            raise type(e)(f"{argument}: {e}") from None
        if not info.is_spatial or info.kind in ("input", "model"):
            raise ValueError(
                f"{argument}: layer {info.path!r} has output shape {info.output_shape}, not a "
                f"spatial (batch, height, width, channels) map; choose among "
                + ", ".join(i.path for i in p.spatial_layers()[-5:]))
        out.append(info.path)
    if not out:
        raise ValueError(f"{argument} is empty: give None (every convolution) or layer names")
    return tuple(out)
