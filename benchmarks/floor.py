"""The floors: what any library must at least do, as bare compiled TensorFlow functions.

* ``forward@N``: ``model(x, training=False)`` on a batch of N images;
* ``fwd_bwd@N``: that forward plus the gradient of one class score per image with respect to
  the input images (the work of a saliency map), on a batch of N images; ``jit_compile=True``
  gives the XLA-compiled variant (measured once as its own row, never used by nbviz).

A batched method's floor is the batch its work needs: SmoothGrad with 20 samples
``fwd_bwd@20``, integrated gradients with 32 steps ``fwd_bwd@32``, occlusion of a 224×224 image
with 32×32 windows at stride 32 ``forward@49``, RISE with 4000 masks ``forward@4000``.

Only TensorFlow/Keras: the peers' virtualenv measures the same floors under its TensorFlow.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def forward_fn(model):
    @tf.function
    def forward(x):
        return model(x, training=False)
    return lambda x: forward(x).numpy()


def fwd_bwd_fn(model, jit_compile: bool = False):
    @tf.function(jit_compile=jit_compile)
    def fwd_bwd(x, onehot):
        with tf.GradientTape() as tape:
            tape.watch(x)
            score = tf.reduce_sum(model(x, training=False) * onehot)
        return tape.gradient(score, x)
    return lambda x, onehot: fwd_bwd(x, onehot).numpy()


def onehot(classes, n_classes: int) -> tf.Tensor:
    return tf.one_hot(np.asarray(classes), n_classes, dtype=tf.float32)


def ascent_fn(model, layer: str, *, batch: int, size: int, steps: int):
    """The bare work of rendering ``batch`` channel visualisations at once: ``steps`` Adam steps
    on a ``batch``×size×size×3 pixel image, each the gradient of the mean of channel
    ``first + b`` of ``layer`` (a sub-model up to that layer). No parametrisation, transforms or
    preprocessing: the least any feature-visualisation library must compute."""
    sub = tf.keras.Model(model.inputs, model.get_layer(layer).output)
    image = tf.Variable(tf.zeros((batch, size, size, 3)))
    opt = tf.keras.optimizers.Adam(0.05)

    @tf.function
    def step(channels):
        with tf.GradientTape() as tape:
            out = sub(image, training=False)
            picked = tf.gather(out, channels, axis=-1, batch_dims=0)
            score = tf.reduce_sum(tf.linalg.diag_part(tf.reduce_mean(picked, axis=(1, 2))))
        opt.apply_gradients([(-tape.gradient(score, image), image)])

    def run(first: int):
        image.assign(tf.random.stateless_uniform(image.shape, (first, 0)))
        channels = tf.range(first, first + batch)
        for _ in range(steps):
            step(channels)
        return image.numpy()
    return run
