"""Grad-CAM (Selvaraju et al. 2017), Grad-CAM++ (Chattopadhyay et al. 2018), guided Grad-CAM.

With ``A`` the output of a spatial layer (default: the last one larger than 1×1) and ``G`` the
gradient of the score with respect to ``A``:

* Grad-CAM: channel weights ``w_c = mean_ij G_ijc``, map ``relu(sum_c w_c A_ijc)``;
* Grad-CAM++: ``w_c = sum_ij a_ijc relu(G_ijc)`` with
  ``a = G² / (2 G² + sum_ij(A) G³)`` (0 where the denominator is 0);

then bilinear upsampling to the input size and division by the maximum, so the map lies in
[0, 1] (an all-zero map, with a warning, when nothing is positive). Only the part of the model
after the layer is differentiated: the compiled function never backpropagates to the input.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from nbviz.methods import core
from nbviz.methods.guided import guided_backprop

__all__ = ["gradcam", "gradcam_plus_plus", "guided_gradcam"]


def gradcam(model, image, *, target=None, layer=None, preprocess=None,
            extra_inputs=None) -> np.ndarray:
    """Grad-CAM heatmap at ``layer``, H×W float32 in [0, 1] (N×H×W for a batch)."""
    return _cam(model, image, target, layer, preprocess, extra_inputs, plus_plus=False)


def gradcam_plus_plus(model, image, *, target=None, layer=None, preprocess=None,
                      extra_inputs=None) -> np.ndarray:
    """Grad-CAM++ heatmap at ``layer``, H×W float32 in [0, 1] (N×H×W for a batch)."""
    return _cam(model, image, target, layer, preprocess, extra_inputs, plus_plus=True)


def guided_gradcam(model, image, *, target=None, layer=None, preprocess=None,
                   extra_inputs=None) -> np.ndarray:
    """Guided Grad-CAM: guided backprop (of the model output) times the Grad-CAM map at
    ``layer``, H×W×C float32."""
    guided = guided_backprop(model, image, target=target, preprocess=preprocess,
                             extra_inputs=extra_inputs)
    cam = gradcam(model, image, target=target, layer=layer, preprocess=preprocess,
                  extra_inputs=extra_inputs)
    return guided * cam[..., None]


def cam_function(p, images, sel, layer: str, plus_plus: bool):
    """Compiled ``f(images, region, channels, top, extra) -> (cam (N,H,W), A, G)``."""
    fn = sel.fn
    size = tuple(images.shape[1:3])

    def cam(images, region, channels, top, extra):
        lp = core.layer_pass(p, images, layer, fn, region, channels, top, extra)
        return cam_from(lp.acts, lp.grads, size, plus_plus)

    key = core.key_of("gradcam_plus_plus" if plus_plus else "gradcam", images, sel, layer)
    return core.compiled(p, key, cam)


def cam_from(acts, grads, size, plus_plus: bool):
    """``(cam (N,H,W) in [0, 1], A, G)`` from a layer's activations ``A`` and the score's
    gradient ``G`` with respect to them (the formulas in the module docstring), in TensorFlow."""
    grads = tf.cast(grads, tf.float32)
    acts = tf.cast(acts, tf.float32)
    if plus_plus:
        g2 = tf.square(grads)
        g3 = g2 * grads
        total = tf.reduce_sum(acts, axis=(1, 2), keepdims=True)
        denom = 2.0 * g2 + total * g3
        alpha = tf.math.divide_no_nan(g2, denom)
        weights = tf.reduce_sum(alpha * tf.nn.relu(grads), axis=(1, 2))
    else:
        weights = tf.reduce_mean(grads, axis=(1, 2))
    low = tf.nn.relu(tf.einsum("nijc,nc->nij", acts, weights))
    high = tf.image.resize(low[..., None], size, method="bilinear")[..., 0]
    peak = tf.reduce_max(high, axis=(1, 2), keepdims=True)
    return tf.math.divide_no_nan(high, peak), acts, grads


def _cam(model, image, target, layer, preprocess, extra_inputs, *, plus_plus):
    p, images, single = core.prepare(model, image, preprocess)
    info = p.spatial_layer(layer)
    sel = core.selection(p, target, images, None)
    f = cam_function(p, images, sel, info.path, plus_plus)
    maps, _, _ = f(images, *sel.tensors, core.extra_tensors(p, extra_inputs))
    name = "gradcam_plus_plus" if plus_plus else "gradcam"
    return core.numpy_maps(maps, single, name)
