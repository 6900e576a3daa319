"""The floors: what any library must at least do, as bare compiled TensorFlow functions.

* ``forward@N``: ``model(x, training=False)`` on a batch of N images;
* ``fwd_bwd@N``: that forward plus the gradient of one class score per image with respect to
  the input images (the work of a saliency map), on a batch of N images.

The batched floors are what the batched methods must at least do: SmoothGrad with 20 samples
(``fwd_bwd@20``), integrated gradients with 32 steps (``fwd_bwd@32``), occlusion of a 224×224
image with 32×32 windows at stride 32 (``forward@49``: one forward of its 49 occluded copies),
Grad-CAM on 8 images (``fwd_bwd@8``).

Only TensorFlow/Keras: the peers' virtualenv measures the same floors under its TensorFlow.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from catalog import occlusion_copies
from timing import guarded, measure


def forward_fn(model):
    @tf.function
    def forward(x):
        return model(x, training=False)
    return forward


def fwd_bwd_fn(model):
    @tf.function
    def fwd_bwd(x, onehot):
        with tf.GradientTape() as tape:
            tape.watch(x)
            score = tf.reduce_sum(model(x, training=False) * onehot)
        return tape.gradient(score, x)
    return fwd_bwd


def onehot(classes, n_classes: int) -> tf.Tensor:
    return tf.one_hot(np.asarray(classes), n_classes, dtype=tf.float32)


def floor_specs(size: int) -> dict[str, tuple[str, int]]:
    """Floor key -> (kind, batch) for the benchmark at ``size``×``size``."""
    return {
        "forward@1": ("forward", 1),
        "fwd_bwd@1": ("fwd_bwd", 1),
        "fwd_bwd@8": ("fwd_bwd", 8),
        "fwd_bwd@20": ("fwd_bwd", 20),
        "fwd_bwd@32": ("fwd_bwd", 32),
        f"forward@{occlusion_copies(size)}": ("forward", occlusion_copies(size)),
    }


def measure_floors(model, images: np.ndarray, classes: np.ndarray, *, repeats: int,
                   keys=None, batch_repeats: int | None = None) -> dict[str, dict]:
    """Measure each floor; inputs are consecutive slices of ``images`` (new images per call).

    ``images`` must hold at least ``(repeats + 1) * largest batch`` images (they are reused
    cyclically otherwise); ``classes`` gives each image's class for the gradient.
    """
    size = images.shape[1]
    n_classes = int(model.outputs[0].shape[-1])
    out = {}
    for key, (kind, batch) in floor_specs(size).items():
        if keys is not None and key not in keys:
            continue
        calls = (batch_repeats or repeats) if batch > 1 else repeats
        args = []
        for i in range(calls + 1):
            idx = np.arange(i * batch, (i + 1) * batch) % len(images)
            x = tf.constant(images[idx])
            args.append(x if kind == "forward" else (x, onehot(classes[idx], n_classes)))
        # a fresh function per floor: each is traced once, for its own batch shape
        forward, fwd_bwd = forward_fn(model), fwd_bwd_fn(model)
        if kind == "forward":
            record = guarded(lambda: measure(forward, args))
        else:
            record = guarded(lambda: measure(lambda a: fwd_bwd(*a), args))
        record.update(kind=kind, batch=batch)
        out[key] = record
    return out
