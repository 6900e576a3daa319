"""The floors: what any library must at least do, as bare compiled TensorFlow functions.

* ``forward@N``: ``model(x, training=False)`` on a batch of N images; ``forward@N:B``: N images
  as forward passes of B at a time (the method's own batch size: all N at once would need
  tens of GiB for Score-CAM's 1280 masked copies);
* ``fwd_bwd@N``: that forward plus the gradient of one class score per image with respect to
  the input images (the work of a saliency map), on a batch of N images; ``jit_compile=True``
  gives the XLA-compiled variant (measured once as its own row, never used by nbviz).

A batched method's floor is the batch its work needs: SmoothGrad with 20 samples
``fwd_bwd@20``, integrated gradients with 32 steps ``fwd_bwd@32``, occlusion of a 224×224 image
with 32×32 windows at stride 32 ``forward@49:64``, Score-CAM over 320 channels
``forward@320:64``, RISE with 4000 masks ``forward@1000:256`` (1000 masks).

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
    ``first + b`` of ``layer`` (a sub-model up to that layer), the picture resized to a fixed-size
    model's input. No parametrisation, transforms or preprocessing: the least any
    feature-visualisation library must compute."""
    sub = tf.keras.Model(model.inputs, model.get_layer(layer).output)
    fixed = tuple(model.inputs[0].shape[1:3])  # a fixed-size model sees the picture resized
    image = tf.Variable(tf.zeros((batch, size, size, 3)))
    opt = tf.keras.optimizers.Adam(0.05)

    @tf.function
    def step(channels):
        with tf.GradientTape() as tape:
            x = image if None in fixed or fixed == (size, size) else tf.image.resize(image, fixed)
            out = sub(x, training=False)
            picked = tf.gather(out, channels, axis=-1, batch_dims=0)
            score = tf.reduce_sum(tf.linalg.diag_part(tf.reduce_mean(picked, axis=(1, 2))))
        opt.apply_gradients([(-tape.gradient(score, image), image)])

    def run(first: int):
        image.assign(tf.random.stateless_uniform(image.shape, (first, 0)))
        channels = tf.range(first, first + batch) % int(sub.output.shape[-1])
        for _ in range(steps):
            step(channels)
        return image.numpy()
    return run
