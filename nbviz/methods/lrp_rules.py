"""The LRP rules as custom gradients, for :mod:`nbviz.methods.lrp` (the "gradient trick").

Relevance travels backwards as a gradient ``c`` with ``R = a * c`` for every tensor ``a`` of the
forward pass, so that at the input the relevance is ``x * d score / dx`` (and at the top the
relevance of the explained logit is the logit itself). A linear unit ``z = W x + b`` (Conv,
Dense, a BatchNorm folded into one of them, or a BatchNorm alone as ``z = s * x + b``) turns the
incoming ``c`` at ``z`` into ``R = z * c`` and returns

    c_x = d z'(x) / dx  ^T  (R / stab(z'))          so that     R_x = x * c_x,

where ``z'`` is the rule's modified forward pass (Montavon et al. 2019, "Layer-wise relevance
propagation: an overview"); ``stab(z) = z + e * sign(z)`` with ``sign(0) = 1``, and a zero
denominator gives a zero share. ``W+ = max(W, 0)``, ``W- = min(W, 0)``, likewise for inputs:

* ``epsilon``: ``z' = W x + b``, ``e = epsilon`` (``epsilon=0``: LRP-0, which is gradient ×
  input for a bias-free ReLU net).
* ``gamma``: ``z' = (W + gamma W+) x + (b + gamma b+)``, ``e = 1e-6``.
* ``alpha_beta``: positive and negative contributions apart, biases left out:
  ``z+ = W+ x+ + W- x-``, ``z- = W- x+ + W+ x-``;
  ``R_x = x+ (alpha W+^T s+ - beta W-^T s-) + x- (alpha W-^T s+ - beta W+^T s-)`` with
  ``s+ = R / (z+ + e)``, ``s- = R / (z- - e)``, ``e = 1e-6``. Conserves relevance when
  ``alpha - beta = 1``.
* ``z_plus``: ``alpha_beta`` with ``alpha = 1``, ``beta = 0``.
* ``box`` (z^B, first layer only): with input bounds ``l <= x <= h``,
  ``z^B = W x - W+ l - W- h`` (bias left out), ``s = R / stab(z^B)``, and the relevance of an
  input pixel is ``x W^T s - l W+^T s - h W-^T s``. The bounds enter as extra inputs of the
  unit, so the method reads it as ``x * dx + l * dl + h * dh``.

The ``d z'/dx ^T s`` products are vector-Jacobian products of the layer's own linear operation
(``tf.GradientTape`` inside the custom gradient), so strides, padding and dilation are exactly
the layer's.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import tensorflow as tf

__all__ = ["Unit", "linear_rule", "pass_through", "RULE_NAMES"]

RULE_NAMES = ("epsilon", "gamma", "alpha_beta", "z_plus", "box")
_STABILIZER = 1e-6


@dataclasses.dataclass
class Unit:
    """A linear map ``z = op(x, kernel) + bias`` (``op`` linear in both arguments)."""

    op: Callable
    kernel: tf.Tensor
    bias: tf.Tensor | None

    def forward(self, x, kernel=None, bias=None):
        z = self.op(x, self.kernel if kernel is None else kernel)
        b = self.bias if bias is None else bias
        return z if b is None else z + b


def _stab(z, e):
    return z + e * tf.where(z >= 0, tf.ones_like(z), -tf.ones_like(z))


def _vjp(op, kernel, inputs, s):
    """``(d op(inputs, kernel) / d inputs)^T s``: the transposed linear map applied to ``s``."""
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        z = op(inputs, kernel)
    return tape.gradient(z, inputs, output_gradients=s)


def linear_rule(unit: Unit, rule: str, params: tf.Tensor, x: tf.Tensor, bounds=None) -> tf.Tensor:
    """``z = unit(x)`` with the LRP ``rule``'s gradient. ``params`` = [epsilon, gamma, alpha, beta];
    ``bounds`` = (low, high) tensors of x's shape for the ``box`` rule."""
    op, kernel, bias = unit.op, unit.kernel, unit.bias
    if rule == "box":
        low, high = bounds

        @tf.custom_gradient
        def boxed(x, low, high):
            z = unit.forward(x)

            def grad(c):
                R = z * c
                pos, neg = tf.nn.relu(kernel), tf.minimum(kernel, 0.0)
                zb = op(x, kernel) - op(low, pos) - op(high, neg)
                s = tf.math.divide_no_nan(R, _stab(zb, _STABILIZER))
                gx, gl, gh = _vjp(op, kernel, x, s), _vjp(op, pos, low, s), _vjp(op, neg, high, s)
                return gx, -gl, -gh

            return z, grad

        return boxed(x, low, high)

    @tf.custom_gradient
    def ruled(x):
        z = unit.forward(x)

        def grad(c):
            R = z * c
            if rule == "epsilon":
                s = tf.math.divide_no_nan(R, _stab(z, params[0]))
                return _vjp(op, kernel, x, s)
            if rule == "gamma":
                g = params[1]
                k = kernel + g * tf.nn.relu(kernel)
                b = None if bias is None else bias + g * tf.nn.relu(bias)
                s = tf.math.divide_no_nan(R, _stab(unit.forward(x, k, b), _STABILIZER))
                return _vjp(op, k, x, s)
            # alpha_beta / z_plus
            alpha, beta = (params[2], params[3]) if rule == "alpha_beta" else (1.0, 0.0)
            pos_w, neg_w = tf.nn.relu(kernel), tf.minimum(kernel, 0.0)
            pos_x, neg_x = tf.nn.relu(x), tf.minimum(x, 0.0)
            z_pos = op(pos_x, pos_w) + op(neg_x, neg_w)
            z_neg = op(pos_x, neg_w) + op(neg_x, pos_w)
            s_pos = tf.math.divide_no_nan(R, z_pos + _STABILIZER)
            s_neg = tf.math.divide_no_nan(R, z_neg - _STABILIZER)
            # gradient of x+ and x- parts; R_x = x * c_x with x+ = x where x > 0, x- where x < 0
            up = alpha * _vjp(op, pos_w, pos_x, s_pos) - beta * _vjp(op, neg_w, pos_x, s_neg)
            down = alpha * _vjp(op, neg_w, neg_x, s_pos) - beta * _vjp(op, pos_w, neg_x, s_neg)
            return tf.where(x > 0, up, tf.where(x < 0, down, tf.zeros_like(x)))

        return z, grad

    return ruled(x)


def pass_through(activation: Callable, z: tf.Tensor) -> tf.Tensor:
    """``activation(z)`` passing relevance unchanged (``R_z = R_y``): ``c_z = y * c / z``.

    For ReLU this is its own gradient; for a capped ReLU (ReLU6) it keeps the relevance of units
    above the cap, whose plain gradient is zero."""

    @tf.custom_gradient
    def passed(z):
        y = activation(z)

        def grad(c):
            return tf.math.divide_no_nan(y * c, z)

        return y, grad

    return passed(z)
