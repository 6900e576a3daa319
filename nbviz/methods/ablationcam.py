"""Ablation-CAM (Desai & Ramaswamy 2020, "Ablation-CAM: Visual Explanations for Deep
Convolutional Network via Gradient-free Localization", WACV).

With ``A_k`` the k-th channel of a spatial layer's output (default: the last one larger than
1×1), ``y`` the explained score of the image and ``y_k`` the same score when channel k of that
layer is set to zero (the rest of the network runs as usual on the ablated output), the
channel's weight is the relative drop

    ``w_k = (y - y_k) / y``

and the map is ``relu(sum_k w_k A_k)``, then the common CAM tail (bilinear upsampling,
division by the maximum: :func:`nbviz.methods.cam_tools.finish`).

Conventions:

* ``y`` is the explained score of :mod:`nbviz.methods.targets` (the logit when the model ends in
  a softmax). As in the paper the division is by ``y`` itself: a negative score flips every
  weight's sign, and ``y = 0`` gives zero weights (an all-zero map, with a warning).
* the channel is **zeroed**, as in the paper. pytorch-grad-cam's ``AblationLayer`` sets it to
  ``min(A) - 1e7`` instead whenever the layer's minimum is not 0.
* a layer called more than once in the model is ablated at every call.

The ablation is a scoped interception of the layer's ``call`` (:mod:`nbviz.probe`): the model is
neither rebuilt nor changed. Every (image, channel) pair is one row of a batched forward pass
whose layer output is multiplied by a per-row channel mask; ``batch_size`` rows per pass, across
the images of a batch, inside one compiled function.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from nbviz.methods import core
from nbviz.methods import targets as _targets
from nbviz.methods.cam_tools import count, finish, first_pass, pairs
from nbviz.probe import _wrap_call

__all__ = ["ablationcam"]


def ablationcam(model, image, *, target=None, layer=None, preprocess=None, batch_size=64,
                extra_inputs=None) -> np.ndarray:
    """Ablation-CAM heatmap at ``layer``, H×W float32 in [0, 1] (N×H×W for a batch).

    ``batch_size``: ablated copies per forward pass.
    """
    batch_size = count("batch_size", batch_size)
    p, images, single = core.prepare(model, image, preprocess)
    if p.image_input.channels_first:
        raise ValueError("ablationcam: channels_first models are not supported yet (the ablation "
                         "zeroes channels on the last axis); use gradcam or scorecam")
    info = p.spatial_layer(layer)
    sel = core.selection(p, target, images, None)
    path = info.path
    extra = core.extra_tensors(p, extra_inputs)
    first = first_pass(p, images, sel, path, "ablationcam_pass", with_base=False)
    acts, resolved, score, _ = first(images, images, *sel.tensors, extra)
    n, channels = int(acts.shape[0]), int(acts.shape[-1])
    size = core.balanced(n * channels, batch_size)
    rows, cols, total = pairs([np.arange(channels)] * n, size)
    fn = sel.fn
    target_layer = info.layer

    def ablated(images, rows, cols, region, resolved, extra):
        keep = 1.0 - tf.one_hot(cols, channels, dtype=tf.float32)  # (B, C)

        def zero(original, *args, **kwargs):
            out = original(*args, **kwargs)
            if isinstance(out, (list, tuple)):
                return type(out)([out[0] * tf.cast(keep[:, None, None, :], out[0].dtype),
                                  *out[1:]])
            return out * tf.cast(keep[:, None, None, :], out.dtype)

        with _wrap_call(target_layer, zero), p.logits():
            out = p.forward(tf.gather(images, rows), extra_inputs=extra)
        return _targets.scores(out, fn, tf.gather(region, rows), tf.gather(resolved, rows),
                               tf.zeros(tf.shape(rows), tf.bool))

    f = core.compiled(p, core.key_of("ablationcam", images, sel, path, size), ablated)
    found = np.empty(len(rows), np.float32)
    for start in range(0, len(rows), size):
        r, c = tf.constant(rows[start:start + size]), tf.constant(cols[start:start + size])
        found[start:start + size] = f(images, r, c, sel.region, resolved, extra).numpy()
    y = score.numpy()
    ablated_scores = np.zeros((n, channels), np.float32)
    ablated_scores[rows[:total], cols[:total]] = found[:total]
    weights = np.divide(y[:, None] - ablated_scores, y[:, None],
                        out=np.zeros_like(ablated_scores), where=y[:, None] != 0)
    low = tf.einsum("nijc,nc->nij", acts, tf.constant(weights))
    return core.numpy_maps(finish(low, (int(images.shape[1]), int(images.shape[2]))), single,
                           "ablationcam")
