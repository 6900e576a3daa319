"""lucid's redirected ReLU gradient, so that a unit that is off for the whole image can still
be switched on.

At the start of a feature visualisation the image is nearly grey and a ReLU whose input is
negative everywhere passes no gradient: the objective is stuck at zero. The redirected gradient is
the usual one, except for a batch item whose usual ReLU gradient is zero everywhere: there it
also passes the gradient through inactive units when it asks their input to rise (and still blocks
it when it asks a negative input to fall). Forward values are unchanged. ReLU6 is treated the same
way at both ends.

:func:`redirected` gives the replacement for one layer (for
:meth:`nbviz.probe.Probe.replace_activations`); :func:`nbviz.featvis.render` uses it on the layers
its objective reads.
"""

from __future__ import annotations

import keras
import tensorflow as tf

__all__ = ["redirected_relu", "redirected_relu6", "redirected"]


def _choose(x, dy, usual, redirected):
    n = tf.shape(dy)[0]
    magnitude = tf.reduce_sum(tf.abs(tf.reshape(usual, [n, -1])), axis=1)
    use_usual = tf.reshape(magnitude > 0, tf.concat([[n], tf.ones([tf.rank(dy) - 1], tf.int32)], 0))
    return tf.where(use_usual, usual, redirected)


@tf.custom_gradient
def redirected_relu(x):
    """``relu(x)``; gradient redirected as described in the module docstring."""
    y = tf.nn.relu(x)

    def grad(dy):
        zero = tf.zeros_like(dy)
        usual = tf.where(x > 0, dy, zero)
        redirected = tf.where((x <= 0) & (dy < 0), zero, dy)
        return _choose(x, dy, usual, redirected)

    return y, grad


@tf.custom_gradient
def redirected_relu6(x):
    """``relu6(x)``; gradient redirected at both ends."""
    y = tf.nn.relu6(x)

    def grad(dy):
        zero = tf.zeros_like(dy)
        usual = tf.where((x > 0) & (x < 6), dy, zero)
        blocked = ((x <= 0) & (dy < 0)) | ((x >= 6) & (dy > 0))
        redirected = tf.where(blocked, zero, dy)
        return _choose(x, dy, usual, redirected)

    return y, grad


def redirected(layer):
    """The redirected activation for a plain ReLU / ReLU6 layer or a layer with
    ``activation=relu``; None for every other layer (left alone)."""
    if isinstance(layer, keras.layers.ReLU):
        if float(layer.negative_slope) != 0.0 or float(layer.threshold) != 0.0:
            return None
        if layer.max_value is None:
            return redirected_relu
        if float(layer.max_value) == 6.0:
            return redirected_relu6
        return None
    activation = layer.__dict__.get("activation", None)
    if activation is keras.activations.relu:
        return redirected_relu
    if activation is keras.activations.relu6:
        return redirected_relu6
    return None
