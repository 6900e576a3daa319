"""Receptive-field geometry read from a Keras model's layer graph, and the RF-mode copy.

Two things live here, both built by walking the graph of a Functional or Sequential model node by
node (nested models are walked inline, as if their layers sat in the outer graph):

* :func:`layer_geometries` composes, per spatial axis, the receptive-field size, stride and the
  centre of output cell 0 through every layer from the image input on, with no forward pass.
  TensorFlow's ``"same"`` padding depends on the input size, so sizes are carried along and the
  padding of every layer is computed from its actual input size:
  ``pad_total = max((ceil(n / s) - 1) * s + (k - 1) * d + 1 - n, 0)``, ``pad_before = pad_total // 2``.
* :func:`rf_mode_copy` returns a function that runs the graph in RF mode, for gradient receptive
  fields: one channel per convolution, constant positive kernels, no biases, identity in place of
  activations and normalisation, average in place of max pooling, sums in place of products and
  maxima, float64. Its input gradients are positive exactly on the receptive field: no NaN, no
  zero from a dead ReLU or a max pooling switch, no cancellation. It is made of tensor
  operations: no Keras layer is built and the user's layers are never called.
* :class:`SharedGraph` runs a Functional model's own layers on inputs of any size (used by
  ``fully_convolutional``).

Values are exact rationals (:class:`fractions.Fraction`), so strides below one (upsampling) and
half-pixel centres compose without rounding.
"""

from __future__ import annotations

import contextvars
import dataclasses
import math
from fractions import Fraction
from typing import Any, Callable

import keras

__all__ = ["Geometry", "FLAT", "UNKNOWN", "SharedGraph", "layer_geometries", "rf_mode_copy",
           "graph_of"]


@dataclasses.dataclass(frozen=True)
class Geometry:
    """Receptive field of a spatial tensor, per spatial axis.

    ``centre`` is the centre of output cell 0 in input pixel coordinates (pixel k's centre is k),
    ``stride`` the step between neighbouring cells' centres, ``size`` the extent of one cell's
    receptive field (a bounding box), ``shape`` the tensor's spatial size. ``aligned`` is False
    once branches whose centres disagree were merged (the size is then that of their union).
    ``whole`` marks tensors that also depend on the whole input (a squeeze-excitation gate).
    """

    size: tuple
    stride: tuple
    centre: tuple
    shape: tuple
    aligned: bool = True
    whole: bool = False
    exact: bool = True  # False after upsampling: the box is the smallest centred one containing it
    reach: tuple = ()  # per axis (first, end): the input pixels that influence the tensor at all

    def top(self, axis: int, cell: int) -> int:
        return math.floor(self.centre[axis] + cell * self.stride[axis] - (self.size[axis] - 1) / 2)

    def bottom(self, axis: int, cell: int) -> int:
        return math.ceil(self.centre[axis] + cell * self.stride[axis] + (self.size[axis] + 1) / 2)


def _reads(geo: Geometry, axis: int, first: int, end: int) -> tuple:
    """The reach after a layer that reads only cells [first, end) of its input along ``axis``."""
    lo, hi = geo.reach[axis]
    if end <= first:
        return (lo, lo)
    return (max(lo, geo.top(axis, first)), min(hi, geo.bottom(axis, end - 1)))


class _Marker:
    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return self.name


FLAT = _Marker("FLAT")  # not spatially indexed (after global pooling, Flatten, Dense, ...)
UNKNOWN = _Marker("UNKNOWN")  # geometry not known (a custom layer on the path)


# --------------------------------------------------------------------------- graph walking


def graph_of(model):
    """The Functional behind a model (a built Sequential's included), or None (subclassed)."""
    if isinstance(model, SharedGraph):
        model = model.graph
    if isinstance(model, keras.Sequential):
        model = getattr(model, "_functional", None)
        if model is None:
            return None
    if hasattr(model, "_nodes_by_depth") and getattr(model, "inputs", None):
        return model
    return None


def _is_graph_model(op) -> bool:
    return isinstance(op, (keras.Model, SharedGraph)) and graph_of(op) is not None


class SharedGraph(keras.layers.Layer):
    """Runs a Functional model's graph on inputs of any spatial size, with its own layers.

    Calling a Functional model checks its inputs against the shapes it was built with; this layer
    runs the graph without that check, so a backbone built for 224×224 also takes 320×480. No
    layer of the graph is called on symbolic tensors (the graph runs on TensorFlow tensors while
    Keras infers the output shape), so the model's layers keep their nodes and config.
    """

    def __init__(self, model, **kwargs):
        super().__init__(**kwargs)
        self.graph = model

    def call(self, inputs, training=None):
        return _run_unchecked(self.graph, inputs, training)

    def compute_output_spec(self, inputs, training=None):
        # shape arithmetic layer by layer, instead of tracing the whole graph
        return self.graph._run_through_graph(inputs, operation_fn=lambda op: op.compute_output_spec)


def _run_unchecked(model, inputs, training):
    """``model``'s graph on ``inputs``, nested graph models included, without shape checks."""
    graph = graph_of(model)

    def operation(op):
        if _is_graph_model(op):
            return lambda *args, **kwargs: _run_unchecked(
                op, args[0] if len(args) == 1 else list(args), training)

        def call(*args, **kwargs):
            if training is not None and "training" in getattr(op, "_call_context_args", {}):
                kwargs["training"] = training
            return op(*args, **kwargs)
        return call

    return graph._run_through_graph(inputs, operation_fn=operation)


def walk(model, inputs: list, visit: Callable, record: Callable | None = None) -> list:
    """Run ``visit(op, node, values, kwargs) -> output values`` over ``model``'s graph.

    ``inputs`` are the values of the model's inputs (any kind of value: geometries, symbolic
    tensors). Nested graph models are walked inline. ``record(layer, value)`` is told the output
    value of every layer (and of every nested model) as it is computed. Returns the output values.
    """
    graph = graph_of(model)
    if graph is None:
        raise _NoGraph(model)
    values: dict[int, Any] = {id(t): v for t, v in zip(graph.inputs, inputs)}
    depths = sorted(graph._nodes_by_depth, reverse=True)
    for depth in depths:
        for node in graph._nodes_by_depth[depth]:
            op = node.operation
            if op is None or node.is_input:
                continue
            if any(id(t) not in values for t in node.input_tensors):
                continue
            ins = [values[id(t)] for t in node.input_tensors]
            if _is_graph_model(op):
                outs = walk(op, ins, visit, record)
            else:
                outs = visit(op, node, ins, values)
                if not isinstance(outs, (list, tuple)):
                    outs = [outs]
            for t, v in zip(node.output_tensors, outs):
                values[id(t)] = v
            if record is not None and isinstance(op, keras.layers.Layer):
                record(op, outs[0])
    return [values[id(t)] for t in graph.outputs]


class _NoGraph(Exception):
    pass


class _NotThin(Exception):  # noqa: N818
    """A one-channel copy cannot be built (a layer's weights or shapes need the real width)."""


# --------------------------------------------------------------------------- layer kinds

_POINTWISE = {
    "Activation", "ReLU", "LeakyReLU", "PReLU", "ELU", "Softmax", "ThresholdedReLU",
    "BatchNormalization", "LayerNormalization", "GroupNormalization", "UnitNormalization",
    "Normalization", "Rescaling", "Dropout", "SpatialDropout1D", "SpatialDropout2D",
    "SpatialDropout3D", "GaussianNoise", "GaussianDropout", "AlphaDropout", "ActivityRegularization",
    "Identity", "Masking",
    # keras.applications' own per-pixel layers
    "LayerScale", "StochasticDepth",
}
_MERGES = {"Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate",
           "CustomScaleLayer"}
_FLATTENING = {"Flatten", "GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalMaxPooling1D",
               "GlobalMaxPooling2D", "GlobalAveragePooling3D", "GlobalMaxPooling3D"}
_CONVS = ("Conv1D", "Conv2D", "Conv3D", "DepthwiseConv1D", "DepthwiseConv2D", "SeparableConv1D",
          "SeparableConv2D")
_POOLS = ("MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "AveragePooling1D", "AveragePooling2D",
          "AveragePooling3D")


def _cls(op) -> str:
    return type(op).__name__


def _kind(op) -> str:
    name = _cls(op)
    if name in _POINTWISE:
        if name == "LayerNormalization" and not _normalises_channels_only(op):
            return "flat"
        if name == "Softmax" and tuple(_tuple(op.axis)) not in ((-1,),):
            return "unknown"
        return "pointwise"
    if name in _MERGES:
        return "merge"
    if name in _FLATTENING:
        return "flat"
    if name in _CONVS:
        return "conv"
    if name in _POOLS:
        return "pool"
    if name.startswith("ZeroPadding"):
        return "pad"
    if name.startswith("Cropping"):
        return "crop"
    if name.startswith("UpSampling"):
        return "upsample"
    if name in ("Dense", "EinsumDense"):
        return "dense"
    if name == "Reshape":
        return "reshape"
    if name == "InputLayer":
        return "pointwise"
    return "unknown"


def _normalises_channels_only(layer) -> bool:
    axes = _tuple(getattr(layer, "axis", -1))
    return all(a in (-1,) for a in axes)


def _tuple(value) -> tuple:
    if isinstance(value, (list, tuple)):
        return tuple(value)
    return (value,)


def _per_axis(value, rank: int) -> tuple:
    value = _tuple(value)
    if len(value) == 1:
        value = value * rank
    return tuple(int(v) for v in value)


def _pairs(value, rank: int) -> tuple:
    """ZeroPadding/Cropping amounts as ((before, after), ...) per spatial axis."""
    if isinstance(value, int):
        return ((value, value),) * rank
    value = tuple(value)
    if rank == 1 and len(value) == 2 and all(isinstance(v, int) for v in value):
        return (tuple(value),)
    out = []
    for v in value:
        out.append((v, v) if isinstance(v, int) else tuple(v))
    return tuple(out)


# --------------------------------------------------------------------------- geometry


def _channels_last(op) -> bool:
    return getattr(op, "data_format", "channels_last") in (None, "channels_last")


# whether the model being walked is channels-first (its Concatenate joins channels on axis 1)
_FIRST: "contextvars.ContextVar[bool]" = contextvars.ContextVar("nbviz_rf_channels_first",
                                                                default=False)


def _model_channels_first(model) -> bool:
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if _kind(layer) in ("conv", "pool", "pad", "crop", "upsample") or _cls(layer).startswith(
                "Global"):
            return not _channels_last(layer)
    return False


def _window(geo: Geometry, kernel, strides, dilation, padding) -> Geometry:
    size, stride, centre, shape, reach = [], [], [], [], []
    for a in range(len(geo.shape)):
        n, k, s, d = geo.shape[a], kernel[a], strides[a], dilation[a]
        keff = (k - 1) * d + 1
        if padding == "valid":
            if n < keff:
                raise ValueError(f"a window of {keff} does not fit an input of {n} (padding='valid')")
            out, before = (n - keff) // s + 1, 0
        elif padding == "same":
            out = -(-n // s)
            before = max((out - 1) * s + keff - n, 0) // 2
        elif padding == "causal":
            out, before = -(-n // s), keff - 1
        else:
            raise _Unknown(f"padding={padding!r}")
        reach.append(_reads(geo, a, 0, min(n, (out - 1) * s - before + keff)))
        size.append(geo.size[a] + geo.stride[a] * (keff - 1))
        centre.append(geo.centre[a] + geo.stride[a] * (Fraction(keff - 1, 2) - before))
        stride.append(geo.stride[a] * s)
        shape.append(out)
    return dataclasses.replace(geo, size=tuple(size), stride=tuple(stride), centre=tuple(centre),
                               shape=tuple(shape), reach=tuple(reach))


class _Unknown(Exception):
    pass


def _merge(values: list) -> Any:
    if any(v is UNKNOWN for v in values):
        return UNKNOWN
    spatial = [v for v in values if isinstance(v, Geometry)]
    if not spatial:
        return FLAT
    whole = len(spatial) < len(values) or any(v.whole for v in spatial)
    full = [v for v in spatial if v.shape == spatial[0].shape] if not whole else spatial
    shapes = {v.shape for v in spatial}
    if len(shapes) > 1:
        # broadcasting a 1×1 map (a gate computed from the whole input) over a spatial one
        big = max(shapes, key=lambda s: math.prod(s))
        if any(s != big and math.prod(s) != 1 for s in shapes):
            return UNKNOWN  # the model cannot run at this input size
        full = [v for v in spatial if v.shape == big]
        whole = True
    first = full[0]
    reach = tuple((min(v.reach[a][0] for v in full), max(v.reach[a][1] for v in full))
                  for a in range(len(first.shape)))
    aligned = all(v.aligned for v in full) and all(
        v.stride == first.stride and v.centre == first.centre for v in full)
    if aligned:
        size = tuple(max(v.size[a] for v in full) for a in range(len(first.shape)))
        return dataclasses.replace(first, size=size, whole=whole, reach=reach,
                                   exact=all(v.exact for v in full))
    size, centre = [], []
    for a in range(len(first.shape)):
        tops = [v.centre[a] - (v.size[a] - 1) / 2 for v in full]
        bottoms = [v.centre[a] + (v.size[a] + 1) / 2 for v in full]
        top, bottom = min(tops), max(bottoms)
        size.append(bottom - top)
        centre.append(top + (bottom - top - 1) / 2)
    stride = tuple(max(v.stride[a] for v in full) for a in range(len(first.shape)))
    return Geometry(tuple(size), stride, tuple(centre), first.shape, aligned=False, whole=whole,
                    exact=all(v.exact for v in full), reach=reach)


def _geometry_of(op, node, ins: list, rank: int) -> Any:
    kind = _kind(op)
    if all(v is FLAT for v in ins):
        return FLAT
    if kind == "merge":
        channel_axes = (1,) if _FIRST.get() else (-1, rank + 1)
        if _cls(op) == "Concatenate" and _tuple(op.axis)[0] not in channel_axes:
            return UNKNOWN
        return _merge(ins)
    if len(ins) != 1:
        return UNKNOWN
    geo = ins[0]
    if geo is UNKNOWN:
        return UNKNOWN
    if kind == "flat":
        return FLAT
    if kind == "pointwise":
        return geo
    if kind == "dense":  # Dense on a spatial map acts on each pixel's channels
        return geo if _cls(op) == "Dense" else UNKNOWN
    if kind == "reshape":
        return UNKNOWN if isinstance(geo, Geometry) else FLAT
    if not isinstance(geo, Geometry):
        return FLAT if geo is FLAT else UNKNOWN
    # data_format only says where the channels are: the spatial geometry is the same
    try:
        if kind == "conv":
            return _window(geo, _per_axis(op.kernel_size, rank), _per_axis(op.strides, rank),
                           _per_axis(op.dilation_rate, rank), op.padding)
        if kind == "pool":
            strides = op.strides if op.strides is not None else op.pool_size
            return _window(geo, _per_axis(op.pool_size, rank), _per_axis(strides, rank),
                           (1,) * rank, op.padding)
    except _Unknown:
        return UNKNOWN
    if kind in ("pad", "crop"):
        amounts = _pairs(op.padding if kind == "pad" else op.cropping, rank)
        sign = -1 if kind == "pad" else 1
        centre = tuple(c + sign * st * before for c, st, (before, _) in
                       zip(geo.centre, geo.stride, amounts))
        shape = tuple(n - sign * (b + e) for n, (b, e) in zip(geo.shape, amounts))
        reach = geo.reach if kind == "pad" else tuple(
            _reads(geo, a, b, n - e) for a, (n, (b, e)) in enumerate(zip(geo.shape, amounts)))
        return dataclasses.replace(geo, centre=centre, shape=shape, reach=reach)
    if kind == "upsample":
        factors = _per_axis(op.size, rank)
        bilinear = getattr(op, "interpolation", "nearest") != "nearest"
        size, stride, centre = [], [], []
        for a, u in enumerate(factors):
            st = geo.stride[a]
            # cell j samples the input at (j + 1/2)/u - 1/2 (half-pixel centres); nearest takes
            # one input cell, at most (u-1)/(2u) cells away; bilinear spans two neighbours
            grow = st * Fraction(2 * u - 1, u) if bilinear else st * Fraction(u - 1, u)
            size.append(geo.size[a] + (grow if u > 1 else 0))
            stride.append(st / u)
            centre.append(geo.centre[a] - st * Fraction(u - 1, 2 * u))
        return dataclasses.replace(geo, size=tuple(size), stride=tuple(stride),
                                   centre=tuple(centre), shape=tuple(n * u for n, u in
                                                                      zip(geo.shape, factors)),
                                   exact=geo.exact and all(u == 1 for u in factors))
    return UNKNOWN


def layer_geometries(model, input_size: tuple, image_index: int = 0) -> tuple[dict, list]:
    """Geometry of every layer's output for an image input of spatial size ``input_size``.

    Returns ``(by_layer, order)``: ``id(layer) -> Geometry | FLAT | UNKNOWN`` and the layers in
    the order they were reached. Raises ``_NoGraph`` for a model without a layer graph.
    """
    graph = graph_of(model)
    if graph is None:
        raise _NoGraph(model)
    rank = len(input_size)
    one = (Fraction(1),) * rank
    start = Geometry(one, one, (Fraction(0),) * rank, tuple(int(n) for n in input_size),
                     reach=tuple((0, int(n)) for n in input_size))
    inputs = [start if i == image_index else FLAT for i in range(len(graph.inputs))]
    by_layer: dict[int, Any] = {}
    order: list = []

    def record(layer, value):
        if id(layer) not in by_layer:
            order.append(layer)
        by_layer[id(layer)] = value

    def visit(op, node, ins, _values):
        return _geometry_of(op, node, ins, rank)

    token = _FIRST.set(_model_channels_first(model))
    try:
        walk(model, inputs, visit, record)
    finally:
        _FIRST.reset(token)
    for i, t in enumerate(graph.inputs):  # the input layers themselves
        op = getattr(getattr(t, "_keras_history", None), "operation", None)
        if op is not None and id(op) not in by_layer:
            by_layer[id(op)] = inputs[i]
            order.insert(0, op)
    return by_layer, order


# --------------------------------------------------------------------------- RF-mode copy


def rf_mode_copy(model, layers: list, *, image_index: int = 0, dtype: str = "float64",
                 thin: bool = True) -> Callable:
    """A function ``f(images) -> [output of each layer]`` computing an RF-mode version of ``model``.

    ``f`` walks ``model``'s graph with tensors, replacing every layer by its RF-mode counterpart
    made of tensor operations: convolutions with constant positive kernels (one output channel
    when ``thin``), no biases, identity for activations and normalisation, average pooling for
    max pooling, sums for products and maxima. Its input gradients are positive exactly where a
    layer's receptive field lies. No Keras layer is built and the user's layers are never
    called: trace ``f`` once in a ``tf.function``. Layers of unknown geometry are called as fresh
    copies holding the user's weights (full width only). Raises ``_NoGraph`` for models without a
    layer graph and ``_NotThin`` when ``thin`` and some layer needs its real channel count.
    """
    graph = graph_of(model)
    if graph is None:
        raise _NoGraph(model)
    copies: dict[int, Any] = {}
    if not thin:  # build fresh copies of unknown layers now, not while tracing
        def prepare(op, node, ins, values):
            if _kind(op) == "unknown" and ins:
                copies[id(op)] = _copied(op, node, dtype)
            return [None] * len(node.output_tensors)
        walk(model, [None] * len(graph.inputs), prepare)
    wanted = [id(layer) for layer in layers]

    def f(images):
        inputs = [images if i == image_index else _CONST for i in range(len(graph.inputs))]
        outputs: dict[int, Any] = {}

        def record(layer, value):
            outputs[id(layer)] = value

        def visit(op, node, ins, values):
            return _rf_op(op, node, ins, dtype=dtype, thin=thin, copies=copies)

        walk(model, inputs, visit, record)
        for i, t in enumerate(graph.inputs):
            op = getattr(getattr(t, "_keras_history", None), "operation", None)
            if op is not None:
                outputs.setdefault(id(op), inputs[i])
        picked = []
        for key, layer in zip(wanted, layers):
            value = outputs.get(key)
            if value is None or value is _CONST:
                raise ValueError(f"layer {layer.name!r} is not computed from the image input")
            picked.append(value)
        return picked

    return f


_CONST = _Marker("CONST")  # a value computed from non-image inputs alone: no gradient to the image


class _Unsupported(Exception):
    pass


def _rf_op(op, node, ins: list, *, dtype: str, thin: bool, copies: dict):
    ops = keras.ops
    name = _cls(op)
    tensors = [v for v in ins if v is not _CONST]
    if not tensors:
        return [_CONST] * len(node.output_tensors)
    kind = _kind(op)
    if name == "InputLayer":
        return tensors[0]
    if kind == "merge":
        if name == "Concatenate":
            return ops.concatenate(tensors, axis=op.axis) if len(tensors) > 1 else tensors[0]
        total = None
        for t in _summable(tensors):
            total = t if total is None else total + t
        return total
    if len(tensors) != 1 or len(ins) != 1:
        raise _NotThin(name) if thin else _Unsupported(name)
    x = tensors[0]
    rank = len(x.shape) - 2
    if kind == "pointwise":
        return x
    if kind == "conv":
        return _constant_conv(op, x, dtype, thin)
    if kind == "pool":
        strides = op.strides if op.strides is not None else op.pool_size
        return ops.average_pool(x, op.pool_size, strides, op.padding, op.data_format)
    if kind == "flat":
        if name.startswith("Global"):
            return ops.mean(x, axis=tuple(range(1, rank + 1)), keepdims=op.keepdims)
        if name == "LayerNormalization":
            return x
        return ops.reshape(x, (ops.shape(x)[0], -1))
    if kind == "pad":
        pairs = _pairs(op.padding, rank)
        return ops.pad(x, ((0, 0), *pairs, (0, 0)))
    if kind == "crop":
        pairs = _pairs(op.cropping, rank)
        index = (slice(None),) + tuple(slice(b, -e if e else None) for b, e in pairs) + (
            slice(None),)
        return x[index]
    if kind == "upsample":
        factors = _per_axis(op.size, rank)
        if getattr(op, "interpolation", "nearest") == "nearest":
            for axis, u in enumerate(factors, start=1):
                x = ops.repeat(x, u, axis=axis)
            return x
        size = tuple(int(n) * u for n, u in zip(x.shape[1:-1], factors))
        return ops.image.resize(x, size, interpolation=op.interpolation)
    if kind == "dense":
        cin = int(x.shape[-1])
        kernel = ops.full((cin, 1 if thin else op.units), 1.0 / cin, dtype=dtype)
        return ops.matmul(x, kernel)
    if kind == "reshape":
        target = tuple(op.target_shape)
        if thin:
            target = target[:-1] + (-1,)
        return ops.reshape(x, (ops.shape(x)[0], *target))
    if thin:
        raise _NotThin(name)
    return ops.cast(copies[id(op)](ops.cast(x, copies[id(op)].compute_dtype)), dtype)


def _summable(tensors):
    """Inputs of a sum: in a thin copy channel counts may differ (1 vs C); sum channels then."""
    channels = {int(t.shape[-1]) for t in tensors}
    if len(channels) == 1:
        return tensors
    return [keras.ops.sum(t, axis=-1, keepdims=True) for t in tensors]


def _constant_conv(op, x, dtype, thin):
    ops = keras.ops
    name = _cls(op)
    k = _tuple(op.kernel_size)
    cin = int(x.shape[-1])
    padding = op.padding
    if padding == "causal":
        keff = (k[0] - 1) * _tuple(op.dilation_rate)[0] + 1
        x = ops.pad(x, ((0, 0), (keff - 1, 0), (0, 0)))
        padding = "valid"
    spatial = math.prod(k)
    if "Depthwise" in name or "Separable" in name:
        mult = 1 if thin else op.depth_multiplier
        kernel = ops.full((*k, cin, mult), 1.0 / spatial, dtype=dtype)
        if "Depthwise" in name:
            return ops.depthwise_conv(x, kernel, op.strides, padding, op.data_format,
                                      op.dilation_rate)
        filters = 1 if thin else op.filters
        point = ops.full((*(1,) * len(k), cin * mult, filters), 1.0 / (cin * mult), dtype=dtype)
        return ops.separable_conv(x, kernel, point, op.strides, padding, op.data_format,
                                  op.dilation_rate)
    groups = 1 if thin else getattr(op, "groups", 1)
    filters = 1 if thin else op.filters
    kernel = ops.full((*k, cin // groups, filters), 1.0 / (spatial * cin // groups), dtype=dtype)
    return ops.conv(x, kernel, op.strides, padding, op.data_format, op.dilation_rate)


def _copied(op, node, dtype):
    """A layer of unknown geometry as a fresh copy with the user's weights."""
    try:
        config = op.get_config()
        config.pop("name", None)
        layer = type(op).from_config(config)
        shapes = [tuple(t.shape) for t in node.input_tensors]
        layer.build(shapes[0] if len(shapes) == 1 else shapes)
        weights = op.get_weights()
        if weights:
            layer.set_weights(weights)
    except Exception as err:  # noqa: BLE001 - anything from a custom from_config or build
        raise _Unsupported(f"{_cls(op)} cannot be copied: {err}") from err
    return layer
