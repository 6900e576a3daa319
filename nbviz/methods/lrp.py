"""Layer-wise relevance propagation (Bach et al. 2015; Montavon et al. 2019) on Keras models.

``lrp(model, image, rule=...)`` returns the relevance ``R`` of every input value, H×W×C float32:
the relevance starts as the explained output (the selected logit, or the target's score of a
dense output) and is redistributed layer by layer back to the input by the layers' rules
(:mod:`nbviz.methods.lrp_rules` has the formulas).

How: the "gradient trick". During the trace of one compiled function the probe intercepts the
``call`` of every Conv/DepthwiseConv/Dense (and BatchNorm) layer with a ``tf.custom_gradient`` whose gradient is
the rule; with relevance carried as ``R = a * c`` for each activation ``a``, the gradient of the
score with respect to the input, times the input, is the relevance. ReLU, pooling (average:
proportional to the inputs; max: winner takes all), Flatten/Reshape, padding, Dropout (inference),
Add and Concatenate (proportional to the addends) need no rule of their own: their ordinary
gradient is already the LRP-0 redistribution. Capped ReLUs (ReLU6) and the elementwise
preprocessing layers Rescaling and Normalization pass relevance through unchanged. The relevance
is read at the input of the first Conv/Dense layer (``a * d score / da`` there), which is the
image's relevance value by value when only such layers (or Flatten) come before it; otherwise
at the image.

BatchNorm right after a Conv/Dense with a linear activation is folded into that layer's rule
computation (``W s``, ``(b - mean) s + beta`` with ``s = gamma / sqrt(var + eps)``) and never
into the model: during the trace the pair runs as that one unit (equal to the two layers up to
float rounding), unless the Conv/Dense itself is the explained ``layer``. A BatchNorm elsewhere
is its own per-channel linear unit. Interceptions are
scoped and undone in ``finally``; the model is never changed. A layer with no rule (recurrent,
transposed or separable convolutions, attention, other activations, custom leaf layers) raises
a ValueError naming every one. Nested models and custom layers made of sub-layers are
containers: their sub-layers get their rules, and any arithmetic of their own between them its
ordinary gradient.

``rule``: one of ``"epsilon"``, ``"gamma"``, ``"alpha_beta"``, ``"z_plus"`` for every layer, a
named composite, or a :class:`Composite`:

* ``"epsilon_gamma_box"`` (Zennit's EpsilonGammaBox, for VGG-like nets): z^B box rule on the
  first layer with input bounds ``low``/``high``, gamma on convolutions, epsilon on dense layers;
* ``"epsilon_plus"``: z+ on convolutions, epsilon on dense layers;
* ``"epsilon_alpha2_beta1"``: alpha-beta (``alpha``, ``beta``; 2 and 1 by default) on
  convolutions, epsilon on dense layers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import numbers

import keras
import numpy as np
import tensorflow as tf

from nbviz.methods import core
from nbviz.methods import targets as _targets
from nbviz.methods.lrp_rules import RULE_NAMES, Unit, linear_rule, pass_through
from nbviz.probe import _sublayers, _wrap_call, layer_kind

__all__ = ["lrp", "Composite", "COMPOSITES", "RULES"]


@dataclasses.dataclass(frozen=True)
class Composite:
    """Which rule each kind of layer gets. ``first``: the first Conv/Dense in call order (None:
    its kind's rule; ``"box"``: z^B); ``conv``: convolutions; ``dense``: Dense layers; ``norm``:
    a BatchNorm that is not folded into a preceding layer."""

    conv: str = "epsilon"
    dense: str = "epsilon"
    first: str | None = None
    norm: str = "epsilon"

    def __post_init__(self):
        for name in ("conv", "dense", "norm", "first"):
            value = getattr(self, name)
            if name == "first" and value is None:
                continue
            allowed = RULE_NAMES if name == "first" else RULE_NAMES[:-1]
            if value not in allowed:
                raise ValueError(f"Composite.{name} must be one of {list(allowed)}, got {value!r}")


COMPOSITES = {
    "epsilon_gamma_box": Composite(conv="gamma", dense="epsilon", first="box"),
    "epsilon_plus": Composite(conv="z_plus", dense="epsilon"),
    "epsilon_alpha2_beta1": Composite(conv="alpha_beta", dense="epsilon"),
}
#: every name ``rule=`` accepts
RULES = ("epsilon", "gamma", "alpha_beta", "z_plus", *COMPOSITES)

_PASS = ("InputLayer", "Flatten", "Reshape", "Dropout", "SpatialDropout1D", "SpatialDropout2D",
         "SpatialDropout3D", "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D", "Add",
         "Concatenate", "MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "AveragePooling1D",
         "AveragePooling2D", "AveragePooling3D", "GlobalAveragePooling1D",
         "GlobalAveragePooling2D", "GlobalAveragePooling3D", "GlobalMaxPooling1D",
         "GlobalMaxPooling2D", "GlobalMaxPooling3D")
_CONV = ("Conv1D", "Conv2D", "Conv3D", "DepthwiseConv1D", "DepthwiseConv2D")
_PREPROCESSING = ("Rescaling", "Normalization")  # elementwise: relevance passes through


def _composite(rule) -> Composite:
    if isinstance(rule, Composite):
        return rule
    if isinstance(rule, dict):
        try:
            return Composite(**rule)
        except TypeError as e:
            raise ValueError(f"rule as a dict takes the keys conv, dense, first, norm: {e}") from None
    if isinstance(rule, str):
        if rule in COMPOSITES:
            return COMPOSITES[rule]
        if rule in RULES:
            return Composite(conv=rule, dense=rule, norm=rule)
    raise ValueError(f"rule must be one of {list(RULES)}, a Composite or a dict "
                     f"(conv=, dense=, first=, norm=), got {rule!r}")


def _activation_name(act) -> str:
    return getattr(act, "__name__", type(act).__name__)


def _activation_kind(layer) -> str | None:
    """"plain" (ReLU/linear: ordinary gradient), "pass" (capped ReLU) or None (no rule)."""
    if isinstance(layer, keras.layers.ReLU):
        if float(layer.negative_slope) != 0.0 or float(layer.threshold) != 0.0:
            return None
        return "plain" if layer.max_value is None else "pass"
    name = _activation_name(layer.__dict__.get("activation", getattr(layer, "activation", None)))
    return {"linear": "plain", "relu": "plain", "relu6": "pass"}.get(name)


def _refs(value) -> list:
    if isinstance(value, dict):
        value = list(value.values())
    if not isinstance(value, (list, tuple)):
        value = [value]
    return [v.ref() for v in value if hasattr(v, "ref")]


def _first_arg(args, kwargs):
    return args[0] if args else kwargs.get("inputs", next(iter(kwargs.values()), None))


@dataclasses.dataclass(frozen=True)
class _Plan:
    """What one forward pass of the model calls: linear layers in order, BatchNorms folded into
    them (bn id -> linear layer), activation layers that pass relevance through."""

    linear: tuple
    folded: dict
    passing: tuple
    first: object


def _plan(p, size) -> _Plan:
    cache = p.cache("lrp_plan")
    if size in cache:
        return cache[size]
    order, inputs, outputs, ranks = [], {}, {}, {}

    def recorder(layer):
        def wrapper(original, *args, **kwargs):
            out = original(*args, **kwargs)
            if all(l is not layer for l in order):
                order.append(layer)
            first = _first_arg(args, kwargs)
            inputs[id(layer)] = _refs(first)
            ranks[id(layer)] = len(getattr(first, "shape", ()))
            outputs[id(layer)] = _refs(out)
            return out
        return wrapper

    walked = [(path, layer) for path, layer, _ in p.walk()]
    with contextlib.ExitStack() as stack:
        for _, layer in walked:
            if layer_kind(layer) != "input":
                stack.enter_context(_wrap_call(layer, recorder(layer)))
        with p.logits():
            p.forward(tf.zeros((1, *size, p.image_input.channels)), extra_inputs=p.zero_extra_inputs())
    called = {id(l) for l in order}
    output_softmax = p.output_layer if p.ends_in_softmax else None
    problems = []
    for path, layer in walked:
        if id(layer) not in called:
            continue
        cls = type(layer).__name__
        kind = layer_kind(layer)
        if kind == "model" or cls in _PASS or cls in _PREPROCESSING or (
                kind == "other" and _sublayers(layer)):  # a container: its parts are checked
            continue
        if cls in _CONV or cls == "Dense":
            if cls != "Dense" and layer.data_format != "channels_last":
                problems.append(f"lrp: no rule for layer {path!r} ({cls} with channels_first)")
            elif _activation_kind(layer) is None and layer is not output_softmax:
                act = _activation_name(layer.activation)
                problems.append(f"lrp: no rule for the activation {act!r} of layer {path!r} ({cls})")
            continue
        if cls == "BatchNormalization":
            if layer.axis not in (-1, ranks[id(layer)] - 1):
                problems.append(f"lrp: no rule for layer {path!r} (BatchNormalization on axis {layer.axis})")
            continue
        if cls in ("Activation", "ReLU", "Softmax"):
            if _activation_kind(layer) is None and layer is not output_softmax:
                what = {"ReLU": "a negative slope or threshold", "Softmax": "softmax"}.get(cls) or \
                    _activation_name(getattr(layer, "activation", None))
                problems.append(f"lrp: no rule for layer {path!r} ({cls}: {what})")
            continue
        problems.append(f"lrp: no rule for layer {path!r} ({cls})")
    if problems:
        raise ValueError("; ".join(problems) + ". Supported: Conv1D/2D/3D, DepthwiseConv1D/2D, Dense, "
                         "BatchNormalization, "
                         "Rescaling, Normalization, "
                         "ReLU/ReLU6/linear activations, average/max pooling (global too), Flatten, "
                         "Reshape, padding, Dropout, Add, Concatenate, nested models")
    consumers: dict = {}
    for layer in order:
        for r in inputs[id(layer)]:
            consumers[r] = consumers.get(r, 0) + 1
    producer = {}
    for layer in order:
        cls = type(layer).__name__
        if (cls in _CONV or cls == "Dense") and _activation_name(layer.activation) == "linear":
            for r in outputs[id(layer)]:
                producer[r] = layer
    folded = {}
    for layer in order:
        if type(layer).__name__ == "BatchNormalization":
            refs = inputs[id(layer)]
            if len(refs) == 1 and refs[0] in producer and consumers.get(refs[0]) == 1:
                folded[id(layer)] = producer[refs[0]]
    linear = tuple(l for l in order if type(l).__name__ in _CONV + ("Dense", "BatchNormalization"))
    first = next((l for l in linear if type(l).__name__ != "BatchNormalization"), None)
    passing = tuple(l for l in order if type(l).__name__ in _PREPROCESSING or (
        type(l).__name__ in ("Activation", "ReLU") and _activation_kind(l) == "pass"))
    plan = _Plan(linear, folded, passing, first)
    cache[size] = plan
    return plan


def _unit(layer, bn=None) -> Unit:
    """The linear map of a Conv/Dense layer (with a BatchNorm folded in) or of a BatchNorm alone."""
    if type(layer).__name__ == "BatchNormalization":
        scale, shift = _bn_affine(layer)
        return Unit(lambda x, k: x * k, scale, shift)
    kernel = tf.cast(tf.convert_to_tensor(layer.kernel), tf.float32)
    bias = None if getattr(layer, "bias", None) is None else tf.cast(
        tf.convert_to_tensor(layer.bias), tf.float32)
    if type(layer).__name__ == "Dense":
        op = lambda x, k: tf.cast(keras.ops.matmul(x, k), tf.float32)  # noqa: E731
    elif type(layer).__name__.startswith("Depthwise"):
        op = lambda x, k, _l=layer: tf.cast(keras.ops.depthwise_conv(  # noqa: E731
            x, k, strides=_l.strides, padding=_l.padding, dilation_rate=_l.dilation_rate,
            data_format=_l.data_format), tf.float32)
    else:
        op = lambda x, k, _l=layer: tf.cast(_l.convolution_op(x, k), tf.float32)  # noqa: E731
    if bn is not None:
        scale, shift = _bn_affine(bn)
        # output channel o of a depthwise kernel (.., in, multiplier) is in * multiplier + m
        kernel = kernel * tf.reshape(scale, kernel.shape[-2:]) if type(layer).__name__.startswith(
            "Depthwise") else kernel * scale
        bias = shift if bias is None else bias * scale + shift
    return Unit(op, kernel, bias)


def _bn_affine(bn):
    """BatchNorm at inference as ``x * scale + shift``."""
    var = tf.cast(tf.convert_to_tensor(bn.moving_variance), tf.float32)
    mean = tf.cast(tf.convert_to_tensor(bn.moving_mean), tf.float32)
    scale = tf.math.rsqrt(var + bn.epsilon)
    if bn.scale:
        scale = scale * tf.cast(tf.convert_to_tensor(bn.gamma), tf.float32)
    shift = -mean * scale
    if bn.center:
        shift = shift + tf.cast(tf.convert_to_tensor(bn.beta), tf.float32)
    return scale, shift


@contextlib.contextmanager
def _intercepted(plan: _Plan, composite: Composite, params, bounds, tape, state):
    """Every linear layer of ``plan`` computes with its rule's gradient for the block.

    ``state["entry"]`` receives the input of the first linear layer (where the relevance is
    read), and for the box rule ``state["low"]``/``["high"]``, its bounds (watched by ``tape``).
    """
    folded_into = {id(lin): bn_id for bn_id, lin in plan.folded.items()}
    seen_input = {}

    def rule_of(layer):
        if layer is plan.first and composite.first is not None:
            return composite.first
        return composite.dense if type(layer).__name__ == "Dense" else composite.conv

    def enter(layer, x):
        if layer is not plan.first:
            return
        state["entry"] = x
        if rule_of(layer) == "box":
            state["low"], state["high"] = _box_bounds(bounds, x, layer)
            tape.watch([state["low"], state["high"]])

    def box_bounds(layer):
        return (state["low"], state["high"]) if rule_of(layer) == "box" else None

    def linear_wrapper(layer):
        def wrapper(original, *args, **kwargs):
            x = tf.cast(_first_arg(args, kwargs), tf.float32)
            enter(layer, x)
            if id(layer) in folded_into:  # the BatchNorm after it applies the folded rule
                seen_input[id(layer)] = x
                return original(*args, **kwargs)
            z = linear_rule(_unit(layer), rule_of(layer), params, x, box_bounds(layer))
            act = layer.activation
            kind = _activation_kind(layer)
            return act(z) if kind == "plain" else pass_through(act, z)
        return wrapper

    def bn_wrapper(layer):
        def wrapper(original, *args, **kwargs):
            z_in = _first_arg(args, kwargs)
            lin = plan.folded.get(id(layer))
            if lin is None:
                return linear_rule(_unit(layer), composite.norm, params, tf.cast(z_in, tf.float32))
            x = seen_input[id(lin)]
            # the folded unit computes BatchNorm(linear(x)) in one go (equal up to rounding) and
            # carries the rule's gradient straight to the linear layer's input; the unfolded
            # linear output feeds nothing, so the compiled graph drops it
            return linear_rule(_unit(lin, layer), rule_of(lin), params, x, box_bounds(lin))
        return wrapper

    with contextlib.ExitStack() as stack:
        for layer in plan.linear:
            if type(layer).__name__ == "BatchNormalization":
                stack.enter_context(_wrap_call(layer, bn_wrapper(layer)))
            else:
                stack.enter_context(_wrap_call(layer, linear_wrapper(layer)))
        for layer in plan.passing:
            stack.enter_context(_wrap_call(
                layer, lambda original, *a, _l=layer, **k: pass_through(
                    lambda v: tf.cast(original(v), tf.float32), tf.cast(_first_arg(a, k), tf.float32))))
        yield


def _box_bounds(bounds, x, layer):
    """The box rule's (low, high) in the space of the first layer's input ``x``: given (image
    shaped, reshaped to ``x``), or ``x``'s own minimum and maximum per image."""
    low, high, default = bounds
    if default:
        axes = list(range(1, x.shape.rank))
        lo = tf.stop_gradient(tf.reduce_min(x, axis=axes, keepdims=True)) * tf.ones_like(x)
        hi = tf.stop_gradient(tf.reduce_max(x, axis=axes, keepdims=True)) * tf.ones_like(x)
        return lo, hi
    if low.shape.num_elements() == x.shape.num_elements():  # the image, maybe flattened
        return tf.reshape(low, tf.shape(x)), tf.reshape(high, tf.shape(x))
    raise ValueError(
        f"lrp: the box rule needs a first layer that takes the image (maybe rescaled or "
        f"flattened); layer {layer.name!r} gets shape {tuple(x.shape)}, the image is "
        f"{tuple(low.shape)}")


def _real(name, value, low=0.0):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value) \
            or value < low:
        raise ValueError(f"{name} must be a finite number >= {low}, got {value!r}")
    return float(value)


def lrp(model, image, *, target=None, layer=None, rule="epsilon", epsilon=1e-6, gamma=0.25,
        alpha=2.0, beta=1.0, low=None, high=None, preprocess=None, extra_inputs=None) -> np.ndarray:
    """Layer-wise relevance propagation: the relevance of every input value, H×W×C float32.

    See the module docstring for the rules and composites. ``epsilon`` (epsilon rule's
    stabiliser, 0: LRP-0), ``gamma`` (gamma rule), ``alpha``/``beta`` (alpha-beta rule) go in as
    tensors, so changing them never retraces. ``low``/``high``: the bounds of the box rule, in
    the space of the first layer's input (the model input, after Rescaling/Normalization layers
    when the model has them): numbers or arrays broadcastable to the image; None: the minimum
    and maximum of that input, per image. The relevance starts as the explained score (the selected
    logit; for ``layer``, the selected channel/region of that layer's output) and, with biases
    absent and ``epsilon`` small, sums to it (conservation). ``target``, ``layer``,
    ``preprocess``, ``extra_inputs`` as in every method.
    """
    composite = _composite(rule)
    params = tf.constant([_real("epsilon", epsilon), _real("gamma", gamma), _real("alpha", alpha),
                          _real("beta", beta)], tf.float32)
    p, images, single = core.prepare(model, image, preprocess)
    path = core.layer_path(p, layer)
    sel = core.selection(p, target, images, path)
    plan = _plan(p, tuple(images.shape[1:3]))
    if path is not None:  # an explained Conv/Dense keeps its own output: no BatchNorm folded in
        explained = p.layer(path).layer
        plan = dataclasses.replace(plan, folded={k: v for k, v in plan.folded.items()
                                                 if v is not explained})
    default = low is None and high is None
    lo = _bound("low", low, images, np.min)
    hi = _bound("high", high, images, np.max)
    fn = sel.fn

    def relevance(images, low, high, params, region, channels, top, extra):
        state = {}
        with tf.GradientTape() as tape:
            tape.watch(images)
            with _intercepted(plan, composite, params, (low, high, default), tape, state):
                out = core.explain(p, images, path, extra)
            score = _targets.scores(out, fn, region, channels, top)
        entry = state.get("entry")
        if entry is None or entry.shape.num_elements() != images.shape.num_elements():
            return images * tape.gradient(score, images)
        # read the relevance at the first linear layer's input: what comes before it
        # (Rescaling, Flatten, ...) only changes units or order, and keeps it per value
        if "low" in state:
            gx, gl, gh = tape.gradient(score, [entry, state["low"], state["high"]])
            total = entry * gx + state["low"] * gl + state["high"] * gh
        else:
            total = entry * tape.gradient(score, entry)
        return tf.reshape(total, tf.shape(images))

    f = core.compiled(p, core.key_of("lrp", images, sel, path, composite, default), relevance)
    maps = f(images, lo, hi, params, *sel.tensors, core.extra_tensors(p, extra_inputs))
    return core.numpy_maps(maps, single, "lrp")


def _bound(name, value, images, reduce):
    if value is None:
        array = images.numpy()
        per = reduce(array.reshape(array.shape[0], -1), axis=1)
        return tf.constant(np.broadcast_to(per[:, None, None, None], array.shape).astype(np.float32))
    try:
        return core.as_baseline(value, images)
    except ValueError as e:
        raise ValueError(f"{name}: {e}") from None
