"""Eigen-CAM (Muhammad & Yeasin 2020, "Eigen-CAM: Class Activation Map using Principal
Components", IJCNN).

With ``A`` the output of a spatial layer reshaped to an (h·w)×c matrix, the map is the
projection of ``A`` on its first right singular vector ``v1``:

    ``M = A v1``  (h·w values, reshaped to h×w)

Conventions (stated, since the paper leaves them open):

* **no centring**: the SVD is of ``A`` itself, as the paper writes it, so ``v1`` is the
  direction of largest second moment, not of largest variance. For a rank-1 activation
  ``A_ijc = u_ij v_c`` the map is exactly ``u`` (up to scale). pytorch-grad-cam's
  ``get_2d_projection`` subtracts the per-channel mean over positions first (the first
  principal component proper), which makes the projection ``±(u - mean(u))`` for the same
  activation (after its ReLU and min-max scaling, ``u`` rescaled to [0, 1] only when the sign
  comes out positive and ``min u = 0``).
* **sign**: a singular vector's sign is arbitrary, so it is fixed from the activations: the map
  is flipped when its inner product over positions with the mean activation over channels,
  ``sum_ij M_ij mean_c A_ijc``, is negative (uncentred, like the SVD; when it is zero, when the
  map's sum is negative). For non-negative activations (after a ReLU) ``v1`` can be taken
  non-negative (Perron-Frobenius) and this rule picks exactly that sign, so the map is >= 0.
  When that sign leaves no positive value (signed activations whose channel mean is negative
  everywhere, e.g. a convolution before its ReLU), the other sign is taken, so the map is never
  empty for lack of a sign. pytorch-grad-cam leaves the sign to the SVD routine.
* then the common CAM tail (:func:`nbviz.methods.cam_tools.finish`): ReLU, bilinear
  upsampling, division by the maximum.

Eigen-CAM does not depend on the class: ``target`` is accepted (and validated) for the common
signature but does not change the map. No gradient is computed; the model runs only up to the
layer.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from nbviz.methods import core
from nbviz.methods.cam_tools import finish

__all__ = ["eigencam", "principal_map"]


def principal_map(acts: tf.Tensor) -> tf.Tensor:
    """(N, h, w, c) activations -> (N, h, w) projections on the first right singular vector,
    sign fixed as described in the module docstring (before ReLU and normalisation)."""
    acts = tf.cast(acts, tf.float32)
    shape = tf.shape(acts)
    flat = tf.reshape(acts, (shape[0], shape[1] * shape[2], shape[3]))
    _, _, v = tf.linalg.svd(flat, full_matrices=False)
    proj = tf.linalg.matvec(flat, v[:, :, 0])  # (N, h·w)
    mean = tf.reduce_mean(flat, axis=-1)  # (N, h·w): the mean activation over channels
    sign = tf.sign(tf.reduce_sum(proj * mean, axis=-1))
    sign = tf.where(sign == 0, tf.sign(tf.reduce_sum(proj, axis=-1)), sign)
    sign = tf.where(sign == 0, tf.ones_like(sign), sign)
    # a layer with signed activations (a convolution before its ReLU) can have a mean activation
    # below zero everywhere: that rule then leaves nothing positive, and the other sign is kept
    empty = tf.reduce_max(proj * sign[:, None], axis=-1) <= 0
    sign = tf.where(empty, -sign, sign)
    return tf.reshape(proj * sign[:, None], shape[:3])


def eigencam(model, image, *, target=None, layer=None, preprocess=None,
             extra_inputs=None) -> np.ndarray:
    """Eigen-CAM heatmap at ``layer``, H×W float32 in [0, 1] (N×H×W for a batch).

    ``layer``: a layer with an h×w×c output (default: the last spatial layer larger than 1×1);
    ``target`` is validated but not used (the map is class-agnostic).
    """
    p, images, single = core.prepare(model, image, preprocess)
    info = p.spatial_layer(layer)
    core.selection(p, target, images, None)  # a bad target fails here as in every method
    path = info.path
    size = tuple(images.shape[1:3])

    def cam(images, extra):
        acts = core.explain(p, images, path, extra)
        return finish(principal_map(acts), size)

    f = core.compiled(p, ("eigencam", tuple(images.shape), path), cam)
    maps = f(images, core.extra_tensors(p, extra_inputs))
    return core.numpy_maps(maps, single, "eigencam")
