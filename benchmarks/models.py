"""The benchmark models and images, identical for nbviz and every peer library.

Only numpy and Keras are imported here: the peers' virtualenv (another TensorFlow) imports this
module too. The main process builds each model once (:func:`build`), saves its weights to a
``.weights.h5`` file and the images to ``.npy``; the peers' process rebuilds the same architecture
and loads those files (:func:`load`), so both see the same weights and BatchNorm statistics.

Random-weight networks (``weights=None``) have BatchNorm moving statistics of 0 and 1, which
leave activations unnormalised and the logits nearly equal, so some libraries return NaN
heatmaps. :func:`init_batchnorm` sets every BatchNorm layer's moving mean and variance to the
statistics of its input on a seeded batch of images, in one forward pass in training mode: in
training mode each BatchNorm normalises with exactly these statistics, so afterwards the model
in inference mode computes on that batch what it computed in training mode.
"""

from __future__ import annotations

import numpy as np
import keras

MODELS = ("mobilenetv2", "resnet50", "tiny")
BN_SEED = 12345


def architecture(name: str, size: int = 224, seed: int = 0) -> keras.Model:
    """The bare architecture (random weights from ``seed``, BatchNorm statistics 0/1)."""
    keras.utils.set_random_seed(seed)
    shape = (size, size, 3)
    if name == "mobilenetv2":
        return keras.applications.MobileNetV2(weights=None, input_shape=shape)
    if name == "resnet50":
        return keras.applications.ResNet50(weights=None, input_shape=shape)
    if name == "tiny":
        return _tiny(shape)
    raise ValueError(f"unknown benchmark model {name!r}; choose one of {MODELS}")


def _tiny(shape) -> keras.Model:
    """A small conv net with BatchNorm and a softmax head: the smoke test's stand-in."""
    layers = keras.layers
    inp = keras.Input(shape, name="image")
    x = layers.Conv2D(8, 3, strides=2, padding="same", name="conv1")(inp)
    x = layers.BatchNormalization(name="bn1")(x)
    x = layers.ReLU(name="relu1")(x)
    x = layers.Conv2D(16, 3, strides=2, padding="same", name="conv2")(x)
    x = layers.BatchNormalization(name="bn2")(x)
    x = layers.ReLU(name="relu2")(x)
    x = layers.Conv2D(16, 3, padding="same", activation="relu", name="conv3")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    out = layers.Dense(10, activation="softmax", name="predictions")(x)
    return keras.Model(inp, out, name="tiny")


def images(n: int, size: int, seed: int) -> np.ndarray:
    """``n`` smooth random RGB images in [-1, 1], float32 ``n×size×size×3``, from ``seed``.

    Each channel is a sum of four random plane waves (up to four cycles across the image) plus a
    little pixel noise: structure at several scales, so attributions have something to find.
    """
    rng = np.random.default_rng(seed)
    grid = np.arange(size, dtype=np.float64) / size
    yy, xx = np.meshgrid(grid, grid, indexing="ij")
    out = np.empty((n, size, size, 3), np.float32)
    for i in range(n):
        for c in range(3):
            img = np.zeros((size, size))
            for _ in range(4):
                fy, fx = rng.uniform(-4, 4, size=2)
                phase = rng.uniform(0, 2 * np.pi)
                img += rng.uniform(0.2, 0.5) * np.sin(2 * np.pi * (fy * yy + fx * xx) + phase)
            img += 0.1 * rng.standard_normal((size, size))
            out[i, :, :, c] = np.clip(img, -1, 1)
    return out


def batchnorm_layers(model) -> list:
    return [l for l in model._flatten_layers(include_self=False, recursive=True)
            if isinstance(l, keras.layers.BatchNormalization)]


def init_batchnorm(model, batch: np.ndarray) -> int:
    """Set each BatchNorm's moving mean/variance to its input's statistics on ``batch``.

    Returns how many BatchNorm layers were set. One forward pass in training mode through a
    model that outputs every BatchNorm input (Functional models whose BatchNorm layers are each
    called once, like keras.applications).
    """
    bns = batchnorm_layers(model)
    if not bns:
        return 0
    taps = keras.Model(model.input, [bn.input for bn in bns])
    inputs = taps(batch, training=True)
    for bn, x in zip(bns, inputs):
        x = np.asarray(x, np.float64)
        axes = tuple(i for i in range(x.ndim) if i != (bn.axis if bn.axis >= 0 else x.ndim + bn.axis))
        bn.moving_mean.assign(x.mean(axis=axes).astype(np.float32))
        bn.moving_variance.assign(x.var(axis=axes).astype(np.float32))
    return len(bns)


def build(name: str, size: int = 224, seed: int = 0) -> keras.Model:
    """The benchmark model: architecture from ``seed``, BatchNorm statistics from a seeded batch."""
    model = architecture(name, size, seed)
    init_batchnorm(model, images(16, size, BN_SEED))
    return model


def load(name: str, size: int, weights_path: str) -> keras.Model:
    """Rebuild ``name`` and load the weights saved by the main process (peers use this)."""
    model = architecture(name, size)
    model.load_weights(weights_path)
    return model
