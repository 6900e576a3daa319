"""Receptive-field geometry read from a Keras model's layer graph, and the RF-mode copy.

Two things live here, both built by walking the graph of a Functional or Sequential model node by
node (nested models are walked inline, as if their layers sat in the outer graph):

* :func:`layer_geometries` composes, per spatial axis, the receptive-field size, stride and the
  centre of output cell 0 through every layer from the image input on, with no forward pass.
  TensorFlow's ``"same"`` padding depends on the input size, so sizes are carried along and the
  padding of every layer is computed from its actual input size:
  ``pad_total = max((ceil(n / s) - 1) * s + (k - 1) * d + 1 - n, 0)``, ``pad_before = pad_total // 2``.
* :func:`rf_mode_copy` rebuilds the graph as a new model for gradient receptive fields: one channel
  per convolution, constant positive kernels, no biases, identity in place of activations and
  normalisation, average in place of max pooling, sums in place of products and maxima, float64.
  Its input gradients are positive exactly on the receptive field: no NaN, no zero from a dead
  ReLU or a max pooling switch, no cancellation. The user's layers are never called: the copy is
  made of new layers.

Values are exact rationals (:class:`fractions.Fraction`), so strides below one (upsampling) and
half-pixel centres compose without rounding.
"""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction
from typing import Any, Callable

import keras

__all__ = ["Geometry", "FLAT", "UNKNOWN", "layer_geometries", "rf_mode_copy", "graph_of"]


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
    if isinstance(model, keras.Sequential):
        model = getattr(model, "_functional", None)
        if model is None:
            return None
    if hasattr(model, "_nodes_by_depth") and getattr(model, "inputs", None):
        return model
    return None


def _is_graph_model(op) -> bool:
    return isinstance(op, keras.Model) and graph_of(op) is not None


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


class _NotThin(Exception):
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


def _window(geo: Geometry, kernel, strides, dilation, padding) -> Geometry:
    size, stride, centre, shape = [], [], [], []
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
        size.append(geo.size[a] + geo.stride[a] * (keff - 1))
        centre.append(geo.centre[a] + geo.stride[a] * (Fraction(keff - 1, 2) - before))
        stride.append(geo.stride[a] * s)
        shape.append(out)
    return dataclasses.replace(geo, size=tuple(size), stride=tuple(stride), centre=tuple(centre),
                               shape=tuple(shape))


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
    aligned = all(v.aligned for v in full) and all(
        v.stride == first.stride and v.centre == first.centre for v in full)
    if aligned:
        size = tuple(max(v.size[a] for v in full) for a in range(len(first.shape)))
        return dataclasses.replace(first, size=size, whole=whole,
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
                    exact=all(v.exact for v in full))


def _geometry_of(op, node, ins: list, rank: int) -> Any:
    kind = _kind(op)
    if all(v is FLAT for v in ins):
        return FLAT
    if kind == "merge":
        if _cls(op) == "Concatenate" and _tuple(op.axis)[0] not in (-1, rank + 1):
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
    if not _channels_last(op):
        return UNKNOWN
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
        return dataclasses.replace(geo, centre=centre, shape=shape)
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
    start = Geometry(one, one, (Fraction(0),) * rank, tuple(int(n) for n in input_size))
    inputs = [start if i == image_index else FLAT for i in range(len(graph.inputs))]
    by_layer: dict[int, Any] = {}
    order: list = []

    def record(layer, value):
        if id(layer) not in by_layer:
            order.append(layer)
        by_layer[id(layer)] = value

    def visit(op, node, ins, _values):
        return _geometry_of(op, node, ins, rank)

    walk(model, inputs, visit, record)
    for i, t in enumerate(graph.inputs):  # the input layers themselves
        op = getattr(getattr(t, "_keras_history", None), "operation", None)
        if op is not None and id(op) not in by_layer:
            by_layer[id(op)] = inputs[i]
            order.insert(0, op)
    return by_layer, order


# --------------------------------------------------------------------------- RF-mode copy


def rf_mode_copy(model, layers: list, input_shape: tuple, *, image_index: int = 0,
                 dtype: str = "float64", thin: bool = True):
    """A new model computing RF-mode versions of ``layers``' outputs from an image input.

    ``input_shape`` is (height, width, channels). Output ``i`` has one channel per input branch
    reaching it (a single channel when ``thin``); its input gradients are positive exactly where
    the layer's receptive field lies. Raises ``_NoGraph`` for models without a layer graph and
    ``_NotThin`` when ``thin`` and some layer needs its real channel count.
    """
    graph = graph_of(model)
    if graph is None:
        raise _NoGraph(model)
    image = keras.Input(shape=tuple(input_shape), dtype=dtype, name="rf_image")
    inputs = []
    for i, t in enumerate(graph.inputs):
        if i == image_index:
            inputs.append(image)
        else:  # other inputs: constants that carry no gradient to the image
            inputs.append(_Const(t))
    outputs: dict[int, Any] = {}

    def record(layer, value):
        outputs[id(layer)] = value

    def visit(op, node, ins, values):
        return _rf_op(op, node, ins, values, dtype=dtype, thin=thin)

    walk(model, inputs, visit, record)
    for i, t in enumerate(graph.inputs):
        op = getattr(getattr(t, "_keras_history", None), "operation", None)
        if op is not None:
            outputs.setdefault(id(op), inputs[i])
    picked = []
    for layer in layers:
        value = outputs.get(id(layer))
        if value is None or isinstance(value, _Const):
            raise ValueError(f"layer {layer.name!r} is not computed from the image input")
        picked.append(value)
    return keras.Model(image, picked, name=f"rf_mode_{model.name}")


class _Const:
    """Stands for a non-image input (or anything computed from it alone) in the RF-mode copy."""

    def __init__(self, tensor):
        self.tensor = tensor


def _fresh(op, dtype, **changes):
    config = op.get_config()
    config.update(changes)
    config.pop("name", None)
    config["dtype"] = dtype
    return type(op).from_config(config)


def _rf_op(op, node, ins: list, values: dict, *, dtype: str, thin: bool):
    name = _cls(op)
    tensors = [v for v in ins if not isinstance(v, _Const)]
    if not tensors:
        return [_Const(t) for t in node.output_tensors]
    kind = _kind(op)
    if name == "InputLayer":
        return tensors[0]
    if kind == "merge":
        if name == "Concatenate":
            return _fresh(op, dtype)(tensors) if len(tensors) > 1 else tensors[0]
        if name == "CustomScaleLayer" or len(tensors) > 1:
            return keras.layers.Add(dtype=dtype)(_broadcastable(tensors))
        return tensors[0]
    if len(tensors) != 1 or len(ins) != 1:
        raise _NotThin(name) if thin else _Unsupported(name)
    x = tensors[0]
    if kind == "pointwise":
        return x
    if kind == "conv":
        channels = 1 if thin else None
        return _constant_conv(op, x, dtype, channels)
    if kind == "pool":
        cls = {1: keras.layers.AveragePooling1D, 2: keras.layers.AveragePooling2D,
               3: keras.layers.AveragePooling3D}[len(_tuple(op.pool_size))]
        return cls(pool_size=op.pool_size, strides=op.strides, padding=op.padding,
                   data_format=op.data_format, dtype=dtype)(x)
    if kind == "flat":
        if name.startswith("Global"):
            dims = len(x.shape) - 2
            cls = {1: keras.layers.GlobalAveragePooling1D, 2: keras.layers.GlobalAveragePooling2D,
                   3: keras.layers.GlobalAveragePooling3D}[dims]
            return cls(keepdims=getattr(op, "keepdims", False), dtype=dtype)(x)
        if name == "LayerNormalization":
            return x
        return _fresh(op, dtype)(x)
    if kind in ("pad", "crop", "upsample"):
        return _fresh(op, dtype)(x)
    if kind == "dense":
        units = 1 if thin else op.units
        init = keras.initializers.Constant(1.0 / max(int(x.shape[-1]), 1))
        return keras.layers.Dense(units, use_bias=False, kernel_initializer=init, dtype=dtype)(x)
    if kind == "reshape":
        target = tuple(op.target_shape)
        if thin:
            target = target[:-1] + (-1,)
        return keras.layers.Reshape(target, dtype=dtype)(x)
    if thin:
        raise _NotThin(name)
    return _copied(op, x, dtype)


class _Unsupported(Exception):
    pass


def _broadcastable(tensors):
    """Inputs of a sum: in a thin copy channel counts may differ (1 vs C); sum channels then."""
    channels = {t.shape[-1] for t in tensors}
    if len(channels) == 1:
        return tensors
    return [keras.layers.Lambda(lambda t: keras.ops.sum(t, axis=-1, keepdims=True))(t)
            if t.shape[-1] != 1 else t for t in tensors]


def _constant_conv(op, x, dtype, channels):
    name = _cls(op)
    fan_in = math.prod(_tuple(op.kernel_size)) * (1 if "Depthwise" in name else int(x.shape[-1]))
    init = keras.initializers.Constant(1.0 / fan_in)
    common = dict(kernel_size=op.kernel_size, strides=op.strides, padding=op.padding,
                  dilation_rate=op.dilation_rate, use_bias=False, dtype=dtype,
                  data_format=op.data_format)
    rank = len(_tuple(op.kernel_size))
    if "Depthwise" in name:
        cls = keras.layers.DepthwiseConv1D if rank == 1 else keras.layers.DepthwiseConv2D
        return cls(depth_multiplier=1 if channels else op.depth_multiplier,
                   depthwise_initializer=init, **common)(x)
    if "Separable" in name:
        cls = keras.layers.SeparableConv1D if rank == 1 else keras.layers.SeparableConv2D
        filters = channels or op.filters
        depth = 1 if channels else op.depth_multiplier
        point = keras.initializers.Constant(1.0 / (int(x.shape[-1]) * depth))
        spatial = keras.initializers.Constant(1.0 / math.prod(_tuple(op.kernel_size)))
        return cls(filters, depth_multiplier=depth, depthwise_initializer=spatial,
                   pointwise_initializer=point, **common)(x)
    cls = {1: keras.layers.Conv1D, 2: keras.layers.Conv2D, 3: keras.layers.Conv3D}[rank]
    groups = 1 if channels else getattr(op, "groups", 1)
    if groups > 1:
        init = keras.initializers.Constant(1.0 / (math.prod(_tuple(op.kernel_size)) *
                                                  int(x.shape[-1]) // groups))
    return cls(channels or op.filters, groups=groups, kernel_initializer=init, **common)(x)


def _copied(op, x, dtype):
    """A layer of unknown geometry, as a fresh copy with the user's weights cast to ``dtype``."""
    try:
        layer = _fresh(op, dtype)
    except Exception as err:  # noqa: BLE001 - anything from a custom from_config
        raise _Unsupported(f"{_cls(op)} cannot be copied: {err}") from err
    out = layer(x)
    weights = op.get_weights()
    if weights:
        layer.set_weights(weights)
    return out
