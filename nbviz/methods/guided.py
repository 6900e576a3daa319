"""Guided backpropagation (Springenberg et al. 2015) with a guided ReLU from ``tf.custom_gradient``.

The guided ReLU computes the layer's own forward value and passes a gradient only where the
forward input is active (above the threshold, and below ``max_value`` for a capped ReLU such as
ReLU6) and the incoming gradient is positive.

During the trace of the compiled guided-backprop function every ReLU-like activation of the
model is swapped through the probe (and swapped back in ``finally``): ``Activation("relu")``,
``activation="relu"``/``"relu6"`` in Conv/Dense layers, ``tf.nn.relu``/``relu6``, and
``keras.layers.ReLU`` without a negative slope (``max_value`` included), in nested models and in
the sub-layers of custom layers too. The model is never edited, rebuilt or cloned.

ReLUs called as functions inside a ``Lambda`` layer or a subclassed ``call`` are guided too when
they are looked up through their module at call time: ``tf.nn.relu``/``relu6``,
``keras.ops.relu``/``relu6`` and ``keras.activations.relu`` are swapped for the guided ones on
their modules for the duration of the trace (under the probe's lock; undone in ``finally``), and
a ``Lambda`` whose function *is* one of them has its call swapped. A ReLU the trace cannot reach
(a name imported with ``from ... import relu`` before, a raw op) keeps its plain gradient; the
compiled graph is then searched for ReLU ops outside the guided ones and a warning says "N ReLU
ops were not guided".
"""

from __future__ import annotations

import contextlib
import functools
import warnings

import keras
import numpy as np
import tensorflow as tf

from nbviz.methods import core
from nbviz.probe import patched

__all__ = ["guided_relu", "guided_backprop", "guided_swap", "guided_functions"]

# the originals, taken at import: the guided functions use these, never the swapped names
_TF_RELU, _TF_RELU6 = tf.nn.relu, tf.nn.relu6
_KERAS_ACT_RELU = keras.activations.relu
_KERAS_OPS_RELU, _KERAS_OPS_RELU6 = keras.ops.relu, keras.ops.relu6
_SCOPE = "nbviz_guided"  # name scope of every op a guided ReLU creates (to count the others)


@functools.lru_cache(maxsize=None)
def _guided(max_value: float | None, threshold: float):
    if threshold == 0.0 and max_value in (None, 6.0):
        return _fused(max_value)

    @tf.custom_gradient
    def relu(x):
        with tf.name_scope(_SCOPE):
            y = _KERAS_ACT_RELU(x, max_value=max_value, threshold=threshold)

        def grad(dy):
            with tf.name_scope(_SCOPE):
                gate = tf.logical_and(x > threshold, dy > 0)
                if max_value is not None:
                    gate = tf.logical_and(gate, x < max_value)
                return tf.where(gate, dy, tf.zeros_like(dy))

        return y, grad

    return relu


def _fused(max_value):
    """ReLU and ReLU6 with TensorFlow's own fused gradient kernels applied to ``relu(dy)``:
    ``ReluGrad(relu(dy), x) = dy [x > 0] [dy > 0]``, and ReLU6Grad adds ``[x < 6]``."""
    forward, backward = ((_TF_RELU, tf.raw_ops.ReluGrad) if max_value is None
                         else (_TF_RELU6, tf.raw_ops.Relu6Grad))

    @tf.custom_gradient
    def relu(x):
        def grad(dy):
            with tf.name_scope(_SCOPE):
                return backward(gradients=_TF_RELU(dy), features=x)

        with tf.name_scope(_SCOPE):
            return forward(x), grad

    return relu


def _guided_keras_relu(x, negative_slope=0.0, max_value=None, threshold=0.0):
    if negative_slope != 0.0:  # leaky: not a ReLU gate
        return _KERAS_ACT_RELU(x, negative_slope=negative_slope, max_value=max_value,
                               threshold=threshold)
    return _guided(None if max_value is None else float(max_value), float(threshold))(x)


def _guided_relu_fn(x, name=None):
    return _guided(None, 0.0)(x)


def _guided_relu6_fn(x, name=None):
    return _guided(6.0, 0.0)(x)


@contextlib.contextmanager
def guided_functions():
    """For the block, ``tf.nn.relu``/``relu6``, ``keras.ops.relu``/``relu6`` and
    ``keras.activations.relu`` are guided ReLUs (module attributes swapped, always restored)."""
    swaps = [(tf.nn, "relu", _guided_relu_fn), (tf.nn, "relu6", _guided_relu6_fn),
             (keras.ops, "relu", _guided_relu_fn), (keras.ops, "relu6", _guided_relu6_fn),
             (keras.activations, "relu", _guided_keras_relu)]
    with contextlib.ExitStack() as stack:
        for module, name, fn in swaps:
            stack.enter_context(patched(module, name, fn))
        yield


def guided_relu(x, max_value: float | None = None, threshold: float = 0.0):
    """ReLU (capped at ``max_value`` if given) whose gradient is the guided one:
    ``dy`` where ``threshold < x < max_value`` and ``dy > 0``, else 0."""
    return _guided(None if max_value is None else float(max_value), float(threshold))(x)


_RELU_NAMES = {"relu": None, "relu6": 6.0}


def guided_swap(layer):
    """The guided replacement for a ReLU-like layer or activation, or None (for
    :meth:`nbviz.probe.Probe.replace_activations`)."""
    if isinstance(layer, keras.layers.ReLU):
        if float(layer.negative_slope) != 0.0:  # leaky: not a ReLU gate, left alone
            return None
        max_value = None if layer.max_value is None else float(layer.max_value)
        return _guided(max_value, float(layer.threshold))
    if isinstance(layer, keras.Model):
        return None
    if isinstance(layer, keras.layers.Lambda):
        fn = getattr(layer, "function", None)
        if fn in (_TF_RELU, _KERAS_OPS_RELU, _KERAS_ACT_RELU) or fn is keras.activations.get("relu"):
            return _guided(None, 0.0)
        if fn in (_TF_RELU6, _KERAS_OPS_RELU6):
            return _guided(6.0, 0.0)
        return None
    act = layer.__dict__.get("activation", None)
    if act is None:
        return None
    name = getattr(act, "__name__", None)
    if name in _RELU_NAMES:
        return _guided(_RELU_NAMES[name], 0.0)
    return None


def guided_backprop(model, image, *, target=None, layer=None, preprocess=None,
                    extra_inputs=None) -> np.ndarray:
    """Guided backprop: the gradient of the score through guided ReLUs, H×W×C float32.

    ``layer`` None explains the model's output (``target`` as everywhere); a layer (name, path
    or object) explains that layer's output, ``target`` then selecting a channel (None: the most
    active one), a box/mask on its map, or a callable on it.
    """
    p, images, single = core.prepare(model, image, preprocess)
    path = core.layer_path(p, layer)
    sel = core.selection(p, target, images, path)
    f = core.gradient_function(p, "guided_backprop", images, sel, path, lambda: _scope(p))
    args = (images, *sel.tensors, core.extra_tensors(p, extra_inputs))
    maps = f(*args)
    _warn_unguided(p, core.key_of("guided_backprop", images, sel, path), args)
    return core.numpy_maps(maps, single, "guided_backprop")


@contextlib.contextmanager
def _scope(p):
    with p.replace_activations(guided_swap), guided_functions():
        yield


def _warn_unguided(p, key, args) -> None:
    """Warn once per compiled function when its graph computes ReLUs outside the guided ones."""
    cache = p.cache("unguided_relus", maxsize=p.max_functions)
    if key not in cache:
        graph = p.compiled(key, None).get_concrete_function(*args).graph
        cache[key] = sum(1 for op in graph.get_operations()
                         if op.type in ("Relu", "Relu6") and _SCOPE not in op.name)
        if cache[key]:
            warnings.warn(
                f"guided_backprop: {cache[key]} ReLU ops were not guided (a relu the probe cannot "
                f"reach, e.g. imported by name into a Lambda or a subclassed call); their "
                f"gradient is the plain one", RuntimeWarning, stacklevel=3)
