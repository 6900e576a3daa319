"""Score-CAM (Wang et al. 2020, "Score-CAM: Score-Weighted Visual Explanations for Convolutional
Neural Networks", CVPR workshops).

With ``A_k`` the k-th channel of a spatial layer's output (default: the last one larger than
1×1), each channel becomes an input mask:

    ``H_k = s(Up(A_k))``,  ``s(M) = (M - min M) / (max M - min M)``  (0 for a constant channel)

where ``Up`` is bilinear upsampling to the input size. The channel's weight is the increase of
the explained score when the image is seen through that mask, against the baseline image
``X_b`` (the paper's "increase of confidence"):

    ``w_k = f(X_b + H_k ⊙ (X - X_b)) - f(X_b)``

and the map is ``relu(sum_k w_k A_k)`` at the layer's resolution, then the common CAM tail
(bilinear upsampling, division by the maximum: :func:`nbviz.methods.cam_tools.finish`).

Conventions:

* ``f`` is the explained score of :mod:`nbviz.methods.targets`: the **logit** when the model
  ends in a softmax, and no softmax is taken over the channel weights. (The paper uses class
  probabilities; pytorch-grad-cam's ``ScoreCAM`` weights the channels by a softmax over the
  channels of the masked images' target scores, without the ``- f(X_b)`` term.)
* ``baseline`` (default 0, i.e. ``X ⊙ H_k`` as in the paper) is in the model's input space,
  after ``preprocess``.
* ``top_n``: only the ``top_n`` channels with the largest mean activation (per image) are
  evaluated; the others get weight 0. None: every channel.

The masked images are built inside one compiled function and run in batches of ``batch_size``
(image, channel) pairs, across the images of a batch: ``N * C`` forward passes in all (plus one
pass for the images and the baselines), never one call per channel.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from nbviz.methods import core
from nbviz.methods import targets as _targets
from nbviz.methods.cam_tools import count, finish, first_pass, pairs

__all__ = ["scorecam"]


def scorecam(model, image, *, target=None, layer=None, preprocess=None, top_n=None,
             baseline=0.0, batch_size=64, extra_inputs=None) -> np.ndarray:
    """Score-CAM heatmap at ``layer``, H×W float32 in [0, 1] (N×H×W for a batch).

    ``top_n``: None (all channels) or the number of channels, by mean activation, to evaluate;
    ``baseline``: the image that masked-out pixels take (a number or an array broadcastable to
    the image, in the model's input space); ``batch_size``: masked images per forward pass.
    """
    top_n = count("top_n", top_n, none=True)
    batch_size = count("batch_size", batch_size)
    p, images, single = core.prepare(model, image, preprocess)
    info = p.spatial_layer(layer)
    base = core.as_baseline(baseline, images)
    sel = core.selection(p, target, images, None)
    path = info.path
    extra = core.extra_tensors(p, extra_inputs)
    first = first_pass(p, images, sel, path, "scorecam_pass", with_base=True)
    acts, resolved, _, base_score = first(images, base, *sel.tensors, extra)
    n, channels = int(acts.shape[0]), int(acts.shape[-1])
    if top_n is None or top_n >= channels:
        chosen = [np.arange(channels)] * n
    else:
        means = tf.reduce_mean(acts, axis=(1, 2)).numpy()
        chosen = [np.sort(np.argsort(-m, kind="stable")[:top_n]) for m in means]
    per_image = len(chosen[0])
    size = core.balanced(n * per_image, batch_size)
    rows, cols, total = pairs(chosen, size)
    height, width = (int(d) for d in images.shape[1:3])
    fn = sel.fn

    def masked(images, base, maps, rows, cols, region, resolved, extra):
        picked = tf.gather_nd(maps, tf.stack([rows, cols], axis=1))  # (B, h, w)
        up = tf.image.resize(picked[..., None], (height, width), method="bilinear")
        low = tf.reduce_min(up, axis=(1, 2, 3), keepdims=True)
        high = tf.reduce_max(up, axis=(1, 2, 3), keepdims=True)
        mask = tf.math.divide_no_nan(up - low, high - low)
        x, b = tf.gather(images, rows), tf.gather(base, rows)
        with p.logits():
            out = p.forward(b + mask * (x - b), extra_inputs=extra)
        return _targets.scores(out, fn, tf.gather(region, rows), tf.gather(resolved, rows),
                               tf.zeros(tf.shape(rows), tf.bool))

    f = core.compiled(p, core.key_of("scorecam", images, sel, path, size, top_n), masked)
    maps = tf.transpose(acts, (0, 3, 1, 2))  # (N, C, h, w): channel maps to gather
    region = sel.region
    found = np.empty(len(rows), np.float32)
    for start in range(0, len(rows), size):
        r, c = tf.constant(rows[start:start + size]), tf.constant(cols[start:start + size])
        found[start:start + size] = f(images, base, maps, r, c, region, resolved, extra).numpy()
    weights = np.zeros((n, channels), np.float32)
    increase = found[:total] - base_score.numpy()[rows[:total]]
    weights[rows[:total], cols[:total]] = increase
    low = tf.einsum("nijc,nc->nij", acts, tf.constant(weights))
    return core.numpy_maps(finish(low, (height, width)), single, "scorecam")
