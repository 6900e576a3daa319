"""Receptive fields: analytic, gradient and effective; RF grids; fully convolutional classifiers.

Coordinates: pixel ``k``'s centre is ``k`` (its edges are ``k - 1/2`` and ``k + 1/2``). A box is
``(top, left, bottom, right)`` with bottom/right exclusive. The ``receptivefield`` package counts
from pixel edges instead, so its offsets are ours plus 0.5: our 16.5 is its 17 (size and stride
are the same in both).

* :func:`receptive_field` gives size, stride and offset of a layer's output cells. It is
  *analytic* (composed layer by layer from the graph, see :mod:`nbviz.methods.rf_geometry`, no
  forward pass) when every layer between the image and the chosen layer has known geometry, and
  *numeric* otherwise: measured from input gradients of a one-hot output mask at the centre cell
  and its diagonal neighbour, computed on an RF-mode copy of the model (one channel per
  convolution, constant positive kernels, no biases, no activations or normalisation, average
  instead of max pooling, float64), so gradients are positive exactly on the receptive field.
* :func:`gradient_rf` maps the input gradient of one output cell, a weighted mask over the output
  map, or the most activated cell: ``"theoretical"`` on the RF-mode copy, ``"effective"`` with the
  model's own weights on a given image (Luo et al. 2016).
* :func:`rf_grid` gives what a receptive-field grid plot shows, as data.
* :func:`fully_convolutional` turns a classifier ending in global pooling or Flatten + Dense
  into a model that returns a score map per class for any input size.

Published receptive fields (Araujo, Norris, Sim, "Computing Receptive Fields of Convolutional
Neural Networks", Distill 2019) are for TF-Slim networks at 224×224 (299×299 for Inception); the
keras.applications equivalents give the same size and stride: VGG16 ``block5_pool`` 212 / 32,
MobileNet ``conv_pw_13_relu`` 315 / 32, ResNet50 ``conv5_block3_out`` 483 / 32, InceptionV3
``mixed10`` (Slim's Mixed_7c) 1311 / 32. The effective padding (``(size - 1) / 2 - offset``)
agrees too (VGG16 90, InceptionV3 618) except for ResNet50: 241 here, 239 in the table, because
Keras pads the 3×3/2 max pooling after the stem with one pixel on each side (ZeroPadding2D(1),
then "valid") where TF-Slim uses "same", which at 112 pixels pads one pixel after and none
before; one pixel at stride 2 is two input pixels. With "same" padding the offset depends on the
input size, and it is computed from the actual sizes.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from fractions import Fraction
from typing import Any

import numpy as np
import tensorflow as tf
import keras

from nbviz.probe import patched, probe
from nbviz.methods import rf_geometry as geo

__all__ = [
    "ReceptiveField",
    "receptive_field",
    "GradientRF",
    "gradient_rf",
    "RFGrid",
    "rf_grid",
    "fully_convolutional",
]


# --------------------------------------------------------------------------- values


def _number(value):
    value = Fraction(value)
    return int(value) if value.denominator == 1 else float(value)


@dataclasses.dataclass(frozen=True)
class ReceptiveField:
    """Where the cells of a layer's output look in the input image.

    ``size`` (h, w): extent of one cell's receptive field (a bounding box, unclipped);
    ``stride`` (h, w): input pixels between neighbouring cells; ``offset`` (y, x): centre of cell
    (0, 0) in input pixel coordinates, pixel k's centre being k (add 0.5 for the ``receptivefield``
    package's convention); ``input_shape`` / ``output_shape``: (H, W) and (h, w) the values hold
    for; ``method``: "analytic" or "numeric"; ``aligned``: False when merged branches disagree on
    the centre (size is then that of their union); ``covers_input``: every cell also depends on
    the whole image (e.g. through a squeeze-excitation gate), so :meth:`box` is the whole input;
    ``reach`` (top, left, bottom, right): the input pixels that influence the layer at all (a
    "valid" strided convolution may leave the last rows and columns unread).
    """

    size: tuple
    stride: tuple
    offset: tuple
    input_shape: tuple
    output_shape: tuple
    method: str
    aligned: bool = True
    layer: str = ""
    covers_input: bool = False
    reach: tuple = ()

    def __post_init__(self):
        if not self.reach:
            object.__setattr__(self, "reach", (0, 0, *self.input_shape))

    def center(self, cell) -> tuple[float, float]:
        """Centre (y, x) of output ``cell`` (i, j) in input pixel coordinates."""
        i, j = _cell_pair(cell)
        return (float(self.offset[0] + i * self.stride[0]),
                float(self.offset[1] + j * self.stride[1]))

    def box(self, cell) -> tuple[int, int, int, int]:
        """Input box (top, left, bottom, right) of output ``cell``; unclipped, bottom/right
        exclusive. The whole input when :attr:`covers_input`."""
        if self.covers_input:
            _cell_pair(cell)
            return (0, 0, int(self.input_shape[0]), int(self.input_shape[1]))
        out = []
        for c, s in zip(self.center(cell), self.size):
            out.append((math.floor(c - (s - 1) / 2 + 1e-9), math.ceil(c + (s + 1) / 2 - 1e-9)))
        return (out[0][0], out[1][0], out[0][1], out[1][1])

    def clipped_box(self, cell) -> tuple[int, int, int, int]:
        """:meth:`box` cut to the input pixels the layer reads at all (:attr:`reach`): the
        image, less the rows and columns a "valid" strided layer or a cropping leaves unread."""
        box = self.box(cell)
        r = self.reach
        return (max(box[0], r[0]), max(box[1], r[1]), min(box[2], r[2]), min(box[3], r[3]))

    def cell(self, point) -> tuple[int, int]:
        """The output cell whose centre is nearest the input point (y, x), clipped to the map."""
        try:
            y, x = (float(v) for v in point)
        except (TypeError, ValueError):
            raise TypeError(f"point must be (y, x) numbers, got {point!r}") from None
        out = []
        for v, o, s, n in zip((y, x), self.offset, self.stride, self.output_shape):
            out.append(int(min(max(math.floor((v - o) / s + 0.5), 0), n - 1)))
        return tuple(out)


def _cell_pair(cell) -> tuple[int, int]:
    if (isinstance(cell, (tuple, list, np.ndarray)) and len(cell) == 2
            and all(isinstance(v, (int, np.integer)) for v in cell)):
        return int(cell[0]), int(cell[1])
    raise TypeError(f"cell must be a pair of integers (i, j), got {cell!r}")


@dataclasses.dataclass(frozen=True)
class GradientRF:
    """An input-gradient map of output cells: ``map`` H×W float32 in [0, 1] (|gradient| summed
    over channels, divided by its maximum), ``box`` the tight (top, left, bottom, right) box of its
    non-zero pixels (None when all zero), ``cell`` the cell (i, j) or None for a weighted mask,
    ``mode`` "theoretical" or "effective", ``layer`` the layer's path."""

    map: np.ndarray = dataclasses.field(repr=False)
    box: tuple | None
    cell: tuple | None
    mode: str
    layer: str


@dataclasses.dataclass(frozen=True)
class RFGrid:
    """What a receptive-field grid plot shows: the receptive field, the boxes of the top-left,
    centre and bottom-right cells (``boxes`` and ``cells`` keyed "top_left", "center",
    "bottom_right"), and ``centers`` h×w×2 (y, x) of every cell."""

    rf: ReceptiveField
    cells: dict
    boxes: dict
    centers: np.ndarray = dataclasses.field(repr=False)


# --------------------------------------------------------------------------- caches

def _cache(model) -> dict:
    """This module's per-model cache, on the model's probe (cleared by ``nbviz.clear_cache``)."""
    return probe(model).cache("receptive_field")


def _paths(model) -> list[tuple[str, Any]]:
    cache = _cache(model)
    if "paths" not in cache:
        cache["paths"] = [(path, layer) for path, layer, _ in probe(model).walk()]
    return cache["paths"]


def _resolve(model, spec) -> tuple[str, Any]:
    """(path, layer) of a layer given as object, path or unique name, without a forward pass."""
    paths = _paths(model)
    if isinstance(spec, keras.layers.Layer):
        for path, layer in paths:
            if layer is spec:
                return path, layer
        raise ValueError(f"layer {spec.name!r} is not part of model {model.name!r}")
    if not isinstance(spec, str):
        raise TypeError(f"layer must be a Keras layer, a name or a path, got {type(spec).__name__}")
    for path, layer in paths:
        if path == spec:
            return path, layer
    named = [(p, l) for p, l in paths if l.name == spec]
    if len(named) == 1:
        return named[0]
    if named:
        raise ValueError(f"layer name {spec!r} is ambiguous in {model.name!r}; use a path: "
                         + ", ".join(p for p, _ in named))
    close = difflib.get_close_matches(spec, [p for p, _ in paths], n=5, cutoff=0.5)
    hint = f"did you mean {', '.join(map(repr, close))}?" if close else (
        "its layers end with " + ", ".join(repr(p) for p, _ in paths[-5:]))
    raise ValueError(f"model {model.name!r} has no layer {spec!r}; {hint}")


def _input_size(model, input_shape) -> tuple[int, int]:
    p = probe(model)
    spec = p.image_input
    if input_shape is not None:
        shape = tuple(input_shape)
        if len(shape) not in (2, 3) or not all(isinstance(v, (int, np.integer)) and v > 0
                                               for v in shape):
            raise ValueError(f"input_shape must be (height, width) or (height, width, channels) "
                             f"positive integers, got {input_shape!r}")
        if len(shape) == 3 and shape[2] != spec.channels:
            raise ValueError(f"input_shape {shape} has {shape[2]} channels; model "
                             f"{model.name!r} takes {spec.channels}")
        if (shape[0], shape[1]) != (spec.height, spec.width):
            try:  # any-size models: the given size rules when the model runs at it
                p.check_size(int(shape[0]), int(shape[1]))
            except ValueError as err:
                raise ValueError(f"input_shape {shape}: {err}") from None
        return int(shape[0]), int(shape[1])
    return p.input_size()


def _geometries(model, size):
    cache = _cache(model)
    key = ("geometry", size)
    if key not in cache:
        try:
            index = probe(model).image_input.index
            cache[key] = geo.layer_geometries(model, size, index)
        except geo._NoGraph:
            cache[key] = None
    return cache[key]


# --------------------------------------------------------------------------- receptive_field


def receptive_field(model, layer=None, *, input_shape=None, method: str | None = None,
                    verify: bool = False) -> ReceptiveField:
    """Receptive field of the output cells of ``layer`` (default: the last spatial layer).

    ``input_shape`` (height, width[, channels]) is needed only for models without a fixed input
    size (default 224×224); "same" padding makes offsets depend on it. ``method`` forces
    "analytic" (raises when the geometry of some layer on the path is unknown) or "numeric";
    by default analytic when possible. Cached per model, layer and input size.

    ``verify=True`` checks the result on the model itself: the input-gradient support of three
    cells (first, centre, last; through the RF-mode copy, see :func:`gradient_rf`) must equal
    their :meth:`ReceptiveField.clipped_box`; a RuntimeError names the cell and both boxes
    otherwise (then ``method="numeric"`` measures the geometry instead).
    """
    if method not in (None, "analytic", "numeric"):
        raise ValueError(f"method must be None, 'analytic' or 'numeric', got {method!r}")
    size = _input_size(model, input_shape)
    cache = _cache(model)
    key = ("rf", layer if isinstance(layer, (str, type(None))) else id(layer), size, method)
    hit = cache.get(key)
    if hit is not None:
        if verify:
            _verify(model, hit, layer, size)
        return hit
    path, lay, value = _layer_and_geometry(model, layer, size)
    if method != "numeric" and isinstance(value, geo.Geometry):
        result = _from_geometry(value, size, path)
    elif value is geo.FLAT:
        raise ValueError(
            f"layer {path!r} has no spatial output (it comes after global pooling, Flatten or "
            f"Dense): every unit sees the whole input; choose a spatial layer such as "
            f"{_last_spatial_path(model, size)!r}")
    elif method == "analytic":
        raise ValueError(
            f"the receptive field of {path!r} cannot be computed analytically: "
            + ("the model has no layer graph (subclassed)" if value is None else
               "a layer of unknown geometry lies on the path from the image")
            + "; use method='numeric' or leave method=None")
    else:
        result = _numeric(model, path, lay, size)
    cache[key] = result
    if verify:
        _verify(model, result, layer, size)
    return result


def _verify(model, rf: ReceptiveField, layer, size) -> None:
    """Gradient support of three cells == their clipped boxes, or a RuntimeError."""
    path, lay, _ = _layer_and_geometry(model, layer, size)
    runner = _theoretical_runner(model, path, lay, size)
    h, w = runner.output_shape
    for cell in dict.fromkeys([(0, 0), (h // 2, w // 2), (h - 1, w - 1)]):
        measured = _support_box(runner.gradient(_one_hot((h, w), cell)))
        expected = rf.clipped_box(cell)
        if measured != expected:
            raise RuntimeError(
                f"receptive field of {path!r} does not verify: cell {cell} has the {rf.method} "
                f"box {expected} (top, left, bottom, right) but its input gradient's support is "
                f"{measured}; use method='numeric' and please report the model")


def _layer_and_geometry(model, layer, size):
    geoms = _geometries(model, size)
    if layer is None:
        if geoms is not None:
            by_layer, order = geoms
            for lay in reversed(order):
                value = by_layer[id(lay)]
                if isinstance(lay, keras.Model):
                    continue
                if value is geo.UNKNOWN:  # shapes unknown from here on: ask the probe
                    break
                if isinstance(value, geo.Geometry) and math.prod(value.shape) > 1:
                    return _resolve(model, lay) + (value,)
        info = probe(model).spatial_layer()
        return info.path, info.layer, None if geoms is None else geoms[0].get(id(info.layer))
    path, lay = _resolve(model, layer)
    if geoms is None:
        return path, lay, None
    value = geoms[0].get(id(lay), geo.UNKNOWN)
    return path, lay, value


def _last_spatial_path(model, size) -> str:
    try:
        return _layer_and_geometry(model, None, size)[0]
    except Exception:  # noqa: BLE001 - only a hint in an error message
        return "?"


def _from_geometry(value: geo.Geometry, size, path) -> ReceptiveField:
    return ReceptiveField(
        size=tuple(_number(s) for s in value.size),
        stride=tuple(_number(s) for s in value.stride),
        offset=tuple(float(c) for c in value.centre),
        input_shape=tuple(size),
        output_shape=tuple(int(n) for n in value.shape),
        method="analytic",
        aligned=value.aligned,
        layer=path,
        covers_input=value.whole,
        reach=(int(value.reach[0][0]), int(value.reach[1][0]), int(value.reach[0][1]),
               int(value.reach[1][1])),
    )


#: the numeric receptive field grows its probe input by doubling up to this side (pixels)
NUMERIC_MAX_SIZE = 2048


class _Border(Exception):
    pass


def _numeric(model, path, layer, size) -> ReceptiveField:
    """Measure the field at ``size``; while it reaches the input's border, measure again at
    twice the size (when the model runs there) up to :data:`NUMERIC_MAX_SIZE` per side. The
    result holds for the input it was measured on (its ``input_shape``)."""
    p = probe(model)
    current = tuple(size)
    while True:
        try:
            return _measure(model, path, layer, current)
        except _Border:
            bigger = (current[0] * 2, current[1] * 2)
            if max(bigger) > NUMERIC_MAX_SIZE:
                raise ValueError(
                    f"the receptive field of {path!r} reaches the border of the input even at "
                    f"{current[0]}×{current[1]} (grown by doubling from {size[0]}×{size[1]} up to "
                    f"the limit of {NUMERIC_MAX_SIZE} px, NUMERIC_MAX_SIZE), so it cannot be "
                    f"measured numerically; it covers the whole input") from None
            if not p.accepts(*bigger):
                raise ValueError(
                    f"the receptive field of {path!r} reaches the border of a "
                    f"{current[0]}×{current[1]} input, so it cannot be measured numerically, and "
                    f"model {model.name!r} does not run on a larger input ({bigger[0]}×{bigger[1]} "
                    f"tried): the field covers (at least) the whole input") from None
            current = bigger


def _measure(model, path, layer, size) -> ReceptiveField:
    runner = _theoretical_runner(model, path, layer, size)
    h, w = runner.output_shape
    if h < 2 and w < 2:
        raise ValueError(f"layer {path!r} has a {h}×{w} output at input size {size}: a numeric "
                         f"stride needs two cells; pass a larger input_shape")
    centre = (h // 2, w // 2)
    neighbour = tuple(c + 1 if c + 1 < n else max(c - 1, 0) for c, n in zip(centre, (h, w)))
    boxes = {}
    for cell in (centre, neighbour):
        grad = runner.gradient(_one_hot((h, w), cell))
        box = _support_box(grad)
        if box is None:
            raise ValueError(f"the input gradient of cell {cell} of {path!r} is zero everywhere")
        top, left, bottom, right = box
        if top <= 0 or left <= 0 or bottom >= size[0] or right >= size[1]:
            raise _Border()
        boxes[cell] = box
    c0, c1 = boxes[centre], boxes[neighbour]
    size_hw = (c0[2] - c0[0], c0[3] - c0[1])
    mid0 = ((c0[0] + c0[2] - 1) / 2, (c0[1] + c0[3] - 1) / 2)
    mid1 = ((c1[0] + c1[2] - 1) / 2, (c1[1] + c1[3] - 1) / 2)
    stride = []
    for a in range(2):
        step = neighbour[a] - centre[a]
        stride.append(_number(Fraction(mid1[a] - mid0[a]).limit_denominator(64) / step)
                      if step else size[a])
    offset = tuple(float(mid0[a] - centre[a] * stride[a]) for a in range(2))
    return ReceptiveField(size=size_hw, stride=tuple(stride), offset=offset,
                          input_shape=tuple(size), output_shape=(h, w), method="numeric",
                          aligned=True, layer=path)


def _one_hot(shape, cell) -> np.ndarray:
    mask = np.zeros(shape, np.float64)
    mask[cell] = 1.0
    return mask


def _support_box(grad: np.ndarray):
    ys, xs = np.nonzero(grad)
    if ys.size == 0:
        return None
    return (int(ys.min()), int(xs.min()), int(ys.max()) + 1, int(xs.max()) + 1)


# --------------------------------------------------------------------------- RF-mode gradients


def _plain(fn):
    """Trace ``fn`` as Python: autograph would rewrite the graph walk at great cost (seconds)."""
    return tf.autograph.experimental.do_not_convert(fn)


class _Runner:
    """Input gradients of a masked layer output on an RF-mode version of the model."""

    def __init__(self, model, path, fn, output_shape, dtype):
        self.model, self.path, self.fn = model, path, fn
        self.output_shape = output_shape
        self.dtype = dtype

    def gradient(self, mask: np.ndarray) -> np.ndarray:
        mask = tf.convert_to_tensor(np.asarray(mask, np.float64)[None, :, :, None], self.dtype)
        return self.fn(mask).numpy()[0]


def _theoretical_runner(model, path, layer, size) -> _Runner:
    cache = _cache(model)
    key = ("runner", path, size)
    if key in cache:
        return cache[key]
    p = probe(model)
    channels = p.image_input.channels
    copy = out_shape = None
    if geo.graph_of(model) is not None and not p.image_input.channels_first:
        dtype = tf.float64
        ones = tf.ones((1, *size, channels), dtype)
        for thin in (True, False):
            try:
                candidate = geo.rf_mode_copy(model, [layer], image_index=p.image_input.index,
                                             thin=thin)
                out = candidate(ones)[0]  # one eager pass: checks the copy, gives the shape
            except (geo._NotThin, geo._Unsupported):
                continue
            if len(out.shape) != 4:
                raise ValueError(f"layer {path!r} has output shape {tuple(out.shape)}, not a "
                                 f"spatial (batch, height, width, channels) map")
            copy, out_shape = candidate, tuple(int(n) for n in out.shape[1:3])
            break
    if copy is not None:

        def gradient(mask):
            with tf.GradientTape() as tape:
                tape.watch(ones)
                out = copy(ones)[0]
                loss = tf.reduce_sum(tf.reduce_sum(out, axis=-1, keepdims=True) * mask)
            return tf.reduce_sum(tape.gradient(loss, ones), axis=-1)
    else:  # no layer graph: RF-mode interceptions on the model itself, inside the trace
        dtype = tf.float32
        ones = tf.ones((1, *size, channels), dtype)
        with _rf_mode_interceptions(model), p.capture(path) as captured:
            p.forward(ones)
        out_shape = tuple(int(n) for n in captured[path].shape[1:3])

        def gradient(mask):
            with tf.GradientTape() as tape:
                tape.watch(ones)
                with _rf_mode_interceptions(model), p.capture(path) as captured:
                    p.forward(ones)
                out = tf.cast(captured[path], dtype)
                loss = tf.reduce_sum(tf.reduce_sum(out, axis=-1, keepdims=True) * mask)
            return tf.reduce_sum(tape.gradient(loss, ones), axis=-1)

    fn = p.compiled(("rf-theoretical", path, size), _plain(gradient))
    runner = _Runner(model, path, fn, out_shape, dtype)
    cache[key] = runner
    return runner


def _rf_mode_interceptions(model):
    """Scoped swaps on a model without a layer graph: constant positive kernels, no biases, no
    activations or normalisation, average pooling. Nothing is assigned; every swap is undone."""
    import contextlib

    stack = contextlib.ExitStack()
    for _, layer, _ in probe(model).walk():
        replacement = _rf_call(layer)
        if replacement is not None:
            stack.enter_context(patched(layer, "call", replacement))
    return stack


def _rf_call(layer):
    name = type(layer).__name__
    kind = geo._kind(layer)
    if kind == "pointwise" and name != "InputLayer":
        return lambda x, *a, **k: x
    if kind == "conv" and name in ("Conv1D", "Conv2D", "DepthwiseConv2D", "DepthwiseConv1D"):
        rank = len(layer.kernel_size)
        depthwise = "Depthwise" in name

        first = getattr(layer, "data_format", "channels_last") == "channels_first"

        def call(x, *a, **k):
            cin = int(x.shape[1 if first else -1])
            if depthwise:
                shape = (*layer.kernel_size, cin, layer.depth_multiplier)
                kernel = tf.fill(shape, tf.constant(1.0 / math.prod(layer.kernel_size), x.dtype))
                return keras.ops.depthwise_conv(x, kernel, layer.strides, layer.padding,
                                                layer.data_format, layer.dilation_rate)
            shape = (*layer.kernel_size, cin // layer.groups, layer.filters)
            kernel = tf.fill(shape, tf.constant(1.0 / math.prod(shape[:-1]), x.dtype))
            return keras.ops.conv(x, kernel, layer.strides, layer.padding, layer.data_format,
                                  layer.dilation_rate)
        del rank
        return call
    if kind == "pool" and "Max" in name:
        return lambda x, *a, **k: keras.ops.average_pool(
            x, layer.pool_size, layer.strides, layer.padding, layer.data_format)
    if name.startswith("GlobalMax"):
        return lambda x, *a, **k: keras.ops.mean(
            x, axis=tuple(range(1, len(x.shape) - 1)), keepdims=layer.keepdims)
    if name == "Dense":
        def dense(x, *a, **k):
            kernel = tf.fill((int(x.shape[-1]), layer.units),
                             tf.constant(1.0 / int(x.shape[-1]), x.dtype))
            return keras.ops.matmul(x, kernel)
        return dense
    return None


# --------------------------------------------------------------------------- gradient_rf


def gradient_rf(model, cell, *, layer=None, image=None, mode: str = "theoretical", target=None,
                input_shape=None, preprocess=None) -> GradientRF:
    """Input-gradient map of output cells of ``layer`` (default: the last spatial layer).

    ``cell``: (i, j) for one cell (a one-hot output mask); an h×w array of weights over the output
    map (e.g. a class score map, for the receptive field of the whole map); or "max", the most
    activated cell of channel ``target`` (None: of the largest activation over all channels),
    which needs ``image``. ``mode="theoretical"`` backpropagates through the RF-mode copy (weights
    and image play no part; the map's support is the receptive field); ``"effective"`` through
    the model itself with its weights on ``image`` (the effective receptive field), summing the
    channels of the layer or taking channel ``target``. The map is |gradient| summed over input
    channels and divided by its maximum. Without ``image``, ``input_shape`` (height, width) sets
    the size for models without a fixed one (default 224×224). Compiled once per layer and input size: other cells,
    masks and images do not retrace.
    """
    if mode not in ("theoretical", "effective"):
        raise ValueError(f"mode must be 'theoretical' or 'effective', got {mode!r}")
    p = probe(model)
    batch = None
    if image is not None:
        batch, single = p.prepare(image, preprocess=preprocess)
        if not single and batch.shape[0] != 1:
            raise ValueError(f"gradient_rf takes one image (H×W×C), got a batch of "
                             f"{batch.shape[0]}")
        size = (int(batch.shape[1]), int(batch.shape[2]))
    elif mode == "effective":
        raise ValueError("mode='effective' needs the image whose effective receptive field is "
                         "wanted: pass image=H×W×C array")
    else:
        size = _input_size(model, input_shape)
    if target is not None and not isinstance(target, (int, np.integer)):
        raise TypeError(f"target must be None or a channel index (int), got {target!r}")
    path, lay, _ = _layer_and_geometry(model, layer, size)
    eff = _effective_runner(model, path, size) if (mode == "effective" or
                                                   isinstance(cell, str)) else None
    out_shape = eff.output_shape if eff is not None else \
        _theoretical_runner(model, path, lay, size).output_shape
    channels = eff.channels if eff is not None else None
    if target is not None and channels is not None and not 0 <= int(target) < channels:
        raise ValueError(f"target {target} is out of range: layer {path!r} has {channels} channels")
    mask, picked, target = _mask(cell, out_shape, eff, batch, target, path)
    if mode == "theoretical":
        grad = np.abs(_theoretical_runner(model, path, lay, size).gradient(mask))
    else:
        weights = np.ones(channels, np.float32) if target is None else \
            np.eye(channels, dtype=np.float32)[int(target)]
        grad = eff.gradient(batch, mask, weights)
    top = float(grad.max()) if grad.size else 0.0
    norm = (grad / top if top > 0 else grad).astype(np.float32)
    return GradientRF(map=norm, box=_support_box(grad), cell=picked, mode=mode, layer=path)


def _mask(cell, out_shape, eff, batch, target, path):
    h, w = out_shape
    if isinstance(cell, str):
        if cell != "max":
            raise ValueError(f"cell must be (i, j), an h×w weight array or 'max', got {cell!r}")
        if batch is None:
            raise ValueError("cell='max' needs image=: the most activated cell depends on it")
        acts = eff.activations(batch)
        if target is None:
            flat = int(np.argmax(acts))
            i, j, target = np.unravel_index(flat, acts.shape)
        else:
            i, j = np.unravel_index(int(np.argmax(acts[..., int(target)])), (h, w))
        picked = (int(i), int(j))
        return _one_hot((h, w), picked), picked, None if target is None else int(target)
    if isinstance(cell, (tuple, list)) and len(cell) == 2 and all(
            isinstance(v, (int, np.integer)) for v in cell):
        i, j = int(cell[0]), int(cell[1])
        if not (0 <= i < h and 0 <= j < w):
            raise ValueError(f"cell {(i, j)} is outside the {h}×{w} output of {path!r}")
        return _one_hot((h, w), (i, j)), (i, j), target
    array = np.asarray(cell)
    if array.dtype == object or not np.issubdtype(array.dtype, np.number):
        raise TypeError(f"cell must be (i, j), an h×w weight array or 'max', got {cell!r}")
    if array.shape != (h, w):
        raise ValueError(f"a weight mask must have the output map's shape {(h, w)} of {path!r}, "
                         f"got {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError("the weight mask contains NaN or infinite values")
    return array.astype(np.float64), None, target


class _Effective:
    def __init__(self, grad_fn, act_fn, output_shape, channels):
        self.grad_fn, self.act_fn = grad_fn, act_fn
        self.output_shape, self.channels = output_shape, channels

    def gradient(self, batch, mask, weights) -> np.ndarray:
        grad = self.grad_fn(batch, tf.constant(mask[None, :, :, None], tf.float32),
                            tf.constant(weights, tf.float32))
        return np.abs(grad.numpy()[0]).sum(axis=-1)

    def activations(self, batch) -> np.ndarray:
        return self.act_fn(batch).numpy()[0]


def _effective_runner(model, path, size) -> _Effective:
    cache = _cache(model)
    key = ("effective", path, size)
    if key in cache:
        return cache[key]
    p = probe(model)
    extra = p.zero_extra_inputs()

    def gradient(images, mask, weights):
        with tf.GradientTape() as tape:
            tape.watch(images)
            with p.capture(path) as captured:
                p.forward(images, extra_inputs=extra)
            out = tf.cast(captured[path], tf.float32)
            loss = tf.reduce_sum(out * mask * weights)
        return tape.gradient(loss, images)

    def activations(images):
        with p.capture(path) as captured:
            p.forward(images, extra_inputs=extra)
        return tf.cast(captured[path], tf.float32)

    act_fn = p.compiled(("rf-activations", path, size), _plain(activations))
    grad_fn = p.compiled(("rf-effective", path, size), _plain(gradient))
    probe_out = act_fn(tf.zeros((1, *size, p.image_input.channels), tf.float32))
    if len(probe_out.shape) != 4:
        raise ValueError(f"layer {path!r} has output shape {tuple(probe_out.shape)}, not a "
                         f"spatial (batch, height, width, channels) map")
    runner = _Effective(grad_fn, act_fn, tuple(int(n) for n in probe_out.shape[1:3]),
                        int(probe_out.shape[3]))
    cache[key] = runner
    return runner


# --------------------------------------------------------------------------- rf_grid


def rf_grid(model, layer=None, *, input_shape=None) -> RFGrid:
    """Receptive-field boxes of the top-left, centre and bottom-right cells of ``layer`` and the
    centres of all its cells (what ``receptivefield``'s ``plot_rf_grid`` draws), as data."""
    rf = receptive_field(model, layer, input_shape=input_shape)
    h, w = rf.output_shape
    cells = {"top_left": (0, 0), "center": (h // 2, w // 2), "bottom_right": (h - 1, w - 1)}
    boxes = {name: rf.box(cell) for name, cell in cells.items()}
    ys = rf.offset[0] + np.arange(h) * rf.stride[0]
    xs = rf.offset[1] + np.arange(w) * rf.stride[1]
    centers = np.stack(np.meshgrid(ys, xs, indexing="ij"), axis=-1).astype(np.float32)
    return RFGrid(rf=rf, cells=cells, boxes=boxes, centers=centers)


# --------------------------------------------------------------------------- fully_convolutional


def fully_convolutional(model, *, name: str | None = None) -> keras.Model:
    """A model returning a score map per class for any input size, with ``model``'s weights.

    ``model`` must end in global pooling or Flatten, then Dense layers (Dropout, Reshape and
    activations in between are fine). The backbone (everything up to the pooling) is reused as it
    is, the same layer objects, run by a :class:`~nbviz.methods.rf_geometry.SharedGraph` layer
    named "backbone" on an input of any size (the result is for use in memory: that layer has no
    saved form);
    global average/max pooling becomes average/max pooling over the backbone's native output
    size (stride 1), Flatten + Dense a convolution with that kernel size, later Dense layers 1×1
    convolutions; weights are copied into the new layers. At the native input size the map is
    1×1 and equals the original output. ``model`` is not changed (no layer is called on a new
    tensor, so its layers' nodes and config stay as they were).
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"fully_convolutional needs a Keras classifier model (Functional or "
                        f"Sequential), got {type(model).__name__} {model!r}")
    if probe(model).image_input.channels_first:
        raise ValueError(f"fully_convolutional supports channels_last models only; "
                         f"{model.name!r} uses data_format='channels_first'")
    graph = geo.graph_of(model)
    if graph is None:
        raise TypeError(f"fully_convolutional needs a Functional or Sequential model; "
                        f"{model.name!r} is subclassed ({type(model).__name__})")
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise ValueError(f"fully_convolutional needs one input and one output; {model.name!r} "
                         f"has {len(graph.inputs)} and {len(graph.outputs)}")
    head, spatial = _head(graph)
    native = tuple(spatial.shape[1:3])
    backbone = keras.Model(graph.inputs[0], spatial, name=f"{model.name}_backbone")
    channels = graph.inputs[0].shape[-1]
    inp = keras.Input(shape=(None, None, channels), name="image",
                      dtype=graph.inputs[0].dtype)
    x = geo.SharedGraph(backbone, name="backbone")(inp)
    flattened = False
    for op in head:
        name_ = type(op).__name__
        if name_ in ("GlobalAveragePooling2D", "GlobalMaxPooling2D"):
            if None in native:
                raise ValueError(f"the backbone of {model.name!r} has no fixed output size "
                                 f"({spatial.shape}); build the model with a fixed input size")
            cls = (keras.layers.AveragePooling2D if "Average" in name_
                   else keras.layers.MaxPooling2D)
            x = cls(pool_size=native, strides=1, padding="valid", name=op.name)(x)
        elif name_ == "Flatten":
            flattened = True
        elif name_ == "Dense":
            kernel, *bias = op.get_weights()
            size = native if flattened else (1, 1)
            conv = keras.layers.Conv2D(op.units, size, use_bias=bool(bias), name=op.name,
                                       dtype=op.dtype_policy)
            x = conv(x)
            conv.set_weights([kernel.reshape(*size, -1, op.units), *bias])
            if op.activation is not None and op.activation is not keras.activations.linear:
                x = keras.layers.Activation(op.activation, name=f"{op.name}_activation")(x)
            flattened = False
        elif name_ == "Conv2D" and op.kernel_size == (1, 1):
            conv = _copy_layer(op)
            x = conv(x)
            conv.set_weights(op.get_weights())
        elif name_ in ("Dropout", "Reshape"):
            continue
        else:  # pointwise layers on channels
            x = _copy_layer(op)(x)
    return keras.Model(inp, x, name=name or f"{model.name}_fully_convolutional")


def _copy_layer(op):
    config = op.get_config()
    return type(op).from_config(config)


def _head(graph):
    """The layers after the last spatial tensor, and that tensor (a chain of one-input layers)."""
    head = []
    tensor = graph.outputs[0]
    while True:
        history = getattr(tensor, "_keras_history", None)
        if history is None:
            break
        op = history.operation
        if isinstance(op, keras.layers.InputLayer):
            break
        node = op._inbound_nodes[history.node_index]
        ins = node.input_tensors
        if len(ins) != 1:
            raise ValueError(f"cannot make {graph.name!r} fully convolutional: layer {op.name!r} "
                             f"({type(op).__name__}) has {len(ins)} inputs")
        name_ = type(op).__name__
        if isinstance(op, keras.Model):
            raise ValueError(f"cannot make {graph.name!r} fully convolutional: its head holds the "
                             f"nested model {op.name!r}")
        allowed = ("GlobalAveragePooling2D", "GlobalMaxPooling2D", "Flatten", "Dense", "Dropout",
                   "Reshape", "Activation", "Softmax", "Conv2D", "ReLU")
        if name_ not in allowed:
            raise ValueError(f"cannot make {graph.name!r} fully convolutional: its head has "
                             f"{op.name!r} ({name_}); supported: global pooling or Flatten, then "
                             f"Dense, Dropout, Reshape, activations")
        head.insert(0, op)
        tensor = ins[0]
        if name_ in ("GlobalAveragePooling2D", "GlobalMaxPooling2D", "Flatten"):
            if len(tensor.shape) != 4:
                raise ValueError(f"{op.name!r} of {graph.name!r} does not take a 4-D map")
            return head, tensor
    raise ValueError(f"cannot make {graph.name!r} fully convolutional: it has no global pooling "
                     f"or Flatten followed by Dense layers")
