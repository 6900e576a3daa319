"""Guided backpropagation (Springenberg et al. 2015) with a guided ReLU from ``tf.custom_gradient``.

The guided ReLU computes the layer's own forward value and passes a gradient only where the
forward input is active (above the threshold, and below ``max_value`` for a capped ReLU such as
ReLU6) and the incoming gradient is positive.

During the trace of the compiled guided-backprop function every ReLU-like activation of the
model is swapped through the probe (and swapped back in ``finally``): ``Activation("relu")``,
``activation="relu"``/``"relu6"`` in Conv/Dense layers, ``tf.nn.relu``/``relu6``, and
``keras.layers.ReLU`` without a negative slope (``max_value`` included), in nested models and in
the sub-layers of custom layers too. The model is never edited, rebuilt or cloned.
"""

from __future__ import annotations

import functools

import keras
import numpy as np
import tensorflow as tf

from nbviz.methods import core

__all__ = ["guided_relu", "guided_backprop", "guided_swap"]


@functools.lru_cache(maxsize=None)
def _guided(max_value: float | None, threshold: float):
    if threshold == 0.0 and max_value in (None, 6.0):
        return _fused(max_value)

    @tf.custom_gradient
    def relu(x):
        y = keras.activations.relu(x, max_value=max_value, threshold=threshold)

        def grad(dy):
            gate = tf.logical_and(x > threshold, dy > 0)
            if max_value is not None:
                gate = tf.logical_and(gate, x < max_value)
            return tf.where(gate, dy, tf.zeros_like(dy))

        return y, grad

    return relu


def _fused(max_value):
    """ReLU and ReLU6 with TensorFlow's own fused gradient kernels applied to ``relu(dy)``:
    ``ReluGrad(relu(dy), x) = dy [x > 0] [dy > 0]``, and ReLU6Grad adds ``[x < 6]``."""
    forward, backward = ((tf.nn.relu, tf.raw_ops.ReluGrad) if max_value is None
                         else (tf.nn.relu6, tf.raw_ops.Relu6Grad))

    @tf.custom_gradient
    def relu(x):
        def grad(dy):
            return backward(gradients=tf.nn.relu(dy), features=x)

        return forward(x), grad

    return relu


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
    f = core.gradient_function(p, "guided_backprop", images, sel, path,
                             lambda: p.replace_activations(guided_swap))
    maps = f(images, *sel.tensors, core.extra_tensors(p, extra_inputs))
    return core.numpy_maps(maps, single, "guided_backprop")
