"""Small models the tests build: every kind of Keras model nbviz promises to read."""

from __future__ import annotations

import keras
import numpy as np
from keras import layers


def small_cnn(size=32, classes=4, seed=0, softmax=True):
    """Functional: conv-relu-pool x2, conv, global pooling, dense (softmax)."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((size, size, 3), name="image")
    x = layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(inp)
    x = layers.MaxPooling2D(name="pool1")(x)
    x = layers.Conv2D(16, 3, padding="same", name="conv2")(x)
    x = layers.BatchNormalization(name="bn2")(x)
    x = layers.ReLU(name="relu2")(x)
    x = layers.MaxPooling2D(name="pool2")(x)
    x = layers.Conv2D(16, 3, padding="same", activation="relu", name="conv3")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    out = layers.Dense(classes, activation="softmax" if softmax else None, name="logits")(x)
    return keras.Model(inp, out, name="small_cnn")


def nested_model(size=64, classes=3, seed=0):
    """An applications backbone used as a layer under a new head."""
    keras.utils.set_random_seed(seed)
    backbone = keras.applications.MobileNetV2(
        weights=None, include_top=False, input_shape=(size, size, 3), alpha=0.35
    )
    inp = keras.Input((size, size, 3), name="image")
    x = backbone(inp)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    out = layers.Dense(classes, activation="softmax", name="head")(x)
    return keras.Model(inp, out, name="nested")


class Block(layers.Layer):
    """A custom layer with sub-layers (conv + ReLU + skip)."""

    def __init__(self, filters, **kwargs):
        super().__init__(**kwargs)
        self.conv = layers.Conv2D(filters, 3, padding="same", name="conv")
        self.act = layers.Activation("relu", name="act")

    def call(self, x):
        return self.act(self.conv(x)) + x


class Subclassed(keras.Model):
    """A subclassed model whose ``call`` uses layers, one of them a custom block."""

    def __init__(self, classes=3, **kwargs):
        super().__init__(**kwargs)
        self.stem = layers.Conv2D(8, 3, padding="same", activation="relu", name="stem")
        self.block = Block(8, name="block")
        self.pool = layers.GlobalAveragePooling2D(name="gap")
        self.head = layers.Dense(classes, name="head")
        self.softmax = layers.Softmax(name="softmax")

    def call(self, x):
        return self.softmax(self.head(self.pool(self.block(self.stem(x)))))


def subclassed_model(size=32, seed=0):
    keras.utils.set_random_seed(seed)
    model = Subclassed(name="subclassed")
    model(np.zeros((1, size, size, 3), np.float32))
    return model


def multi_input_model(size=32, seed=0):
    """An image plus a metadata vector."""
    keras.utils.set_random_seed(seed)
    image = keras.Input((size, size, 3), name="image")
    meta = keras.Input((4,), name="meta")
    x = layers.Conv2D(8, 3, padding="same", activation="relu", name="conv")(image)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Concatenate(name="concat")([x, meta])
    out = layers.Dense(3, activation="softmax", name="head")(x)
    return keras.Model([image, meta], out, name="multi_input")


def mixed_precision_cnn(size=32, seed=0):
    """small_cnn under the mixed_float16 policy (final layer kept float32)."""
    keras.utils.set_random_seed(seed)
    policy = keras.mixed_precision.DTypePolicy("mixed_float16")
    inp = keras.Input((size, size, 3), name="image")
    x = layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1", dtype=policy)(inp)
    x = layers.Conv2D(8, 3, padding="same", activation="relu", name="conv2", dtype=policy)(x)
    x = layers.GlobalAveragePooling2D(name="gap", dtype=policy)(x)
    out = layers.Dense(3, activation="softmax", name="head", dtype="float32")(x)
    return keras.Model(inp, out, name="mixed")
