"""The zoo of models users bring, built small (<= 64 px, few filters) with fixed seeds.

Each builder returns models whose answers are known: a twin computing the same function the
ordinary way (channels-last, Activation layers, one output, a functional graph), or weights that
give a closed form.
"""

from __future__ import annotations

import warnings

import keras
import numpy as np
import tensorflow as tf
from keras import layers


class SubFCN(keras.Model):
    """A subclassed fully convolutional net built at 64×64 in ``__init__``; a 2-channel score map
    at stride 2 for any input size."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.c1 = layers.Conv2D(4, 3, padding="same", activation="relu", name="c1")
        self.c2 = layers.Conv2D(4, 3, strides=2, padding="same", activation="relu", name="c2")
        self.c3 = layers.Conv2D(2, 1, name="score")
        with warnings.catch_warnings():  # keras: "build() ... has unbuilt state" (it builds fine)
            warnings.simplefilter("ignore")
            self.build((None, 64, 64, 3))

    def call(self, x):
        return self.c3(self.c2(self.c1(x)))


def sub_fcn(seed=0):
    """(subclassed FCN built at 64, its functional any-size twin sharing the same layers)."""
    keras.utils.set_random_seed(seed)
    model = SubFCN(name="sub_fcn")
    inp = keras.Input((None, None, 3), name="image")
    twin = keras.Model(inp, model.c3(model.c2(model.c1(inp))), name="sub_fcn_twin")
    return model, twin


def segmentation(size=32, classes=3, seed=0):
    """A dense segmentation net: conv, pool, conv, upsample, 1×1 conv to per-pixel classes."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((size, size, 3), name="image")
    x = layers.Conv2D(4, 3, padding="same", activation="relu", name="enc1")(inp)
    x = layers.MaxPooling2D(name="pool")(x)
    x = layers.Conv2D(4, 3, padding="same", activation="relu", name="enc2")(x)
    x = layers.UpSampling2D(name="up")(x)
    x = layers.Conv2D(4, 3, padding="same", activation="relu", name="dec")(x)
    out = layers.Conv2D(classes, 1, activation="softmax", name="classes")(x)
    return keras.Model(inp, out, name="segmentation")


def _cnn(fmt, size, seed, channels=3, classes=3):
    keras.utils.set_random_seed(seed)
    shape = (channels, size, size) if fmt == "channels_first" else (size, size, channels)
    inp = keras.Input(shape, name="image")
    x = layers.Conv2D(4, 3, padding="same", activation="relu", data_format=fmt, name="conv1")(inp)
    x = layers.MaxPooling2D(data_format=fmt, name="pool")(x)
    x = layers.Conv2D(6, 3, padding="same", activation="relu", data_format=fmt, name="conv2")(x)
    x = layers.GlobalAveragePooling2D(data_format=fmt, name="gap")(x)
    out = layers.Dense(classes, name="logits")(x)
    return keras.Model(inp, out, name=f"cnn_{fmt}")


def channels_first_pair(size=32, seed=0):
    """(channels_first net, its channels_last twin with the same weights)."""
    first = _cnn("channels_first", size, seed)
    last = _cnn("channels_last", size, seed + 1)
    last.set_weights(first.get_weights())  # kernels are (kh, kw, cin, cout) in both formats
    return first, last


def lambda_relu_pair(size=32, seed=0):
    """(ReLUs as tf.nn.relu / keras.ops.relu in Lambda layers, the twin with Activation layers)."""
    def build(relu1, relu2, name):
        keras.utils.set_random_seed(seed)
        inp = keras.Input((size, size, 3), name="image")
        x = layers.Conv2D(4, 3, padding="same", name="conv1")(inp)
        x = relu1(x)
        x = layers.Conv2D(4, 3, padding="same", name="conv2")(x)
        x = relu2(x)
        x = layers.GlobalAveragePooling2D(name="gap")(x)
        return keras.Model(inp, layers.Dense(3, name="logits")(x), name=name)

    lam = build(layers.Lambda(lambda t: tf.nn.relu(t), name="relu1"),
                layers.Lambda(lambda t: keras.ops.relu(t), name="relu2"), "lambda_relu")
    twin = build(layers.Activation("relu", name="relu1"), layers.Activation("relu", name="relu2"),
                 "activation_relu")
    twin.set_weights(lam.get_weights())
    return lam, twin


def hidden_relu_model(size=32, seed=0):
    """A ReLU the probe cannot reach: the function object was taken before nbviz ran."""
    relu = tf.nn.relu
    keras.utils.set_random_seed(seed)
    inp = keras.Input((size, size, 3), name="image")
    x = layers.Conv2D(4, 3, padding="same", name="conv1")(inp)
    x = layers.Lambda(lambda t: relu(t), name="hidden")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inp, layers.Dense(3, name="logits")(x), name="hidden_relu")


def multi_output_pair(size=32, seed=0):
    """(a model with outputs [logits, auxiliary map], the one-output twin on the same layers)."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((size, size, 3), name="image")
    x = layers.Conv2D(4, 3, padding="same", activation="relu", name="conv1")(inp)
    aux = layers.Conv2D(1, 1, name="aux")(x)
    y = layers.Conv2D(4, 3, padding="same", activation="relu", name="conv2")(x)
    y = layers.GlobalAveragePooling2D(name="gap")(y)
    logits = layers.Dense(3, name="logits")(y)
    return (keras.Model(inp, [logits, aux], name="multi_output"),
            keras.Model(inp, logits, name="single_output"))


def grayscale(size=32, seed=0):
    """A one-channel classifier whose first layer is linear: conv (1 channel in), ReLU, GAP."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((size, size, 1), name="image")
    x = layers.Conv2D(4, 3, padding="same", activation="relu", name="conv1")(inp)
    x = layers.Conv2D(4, 3, padding="same", activation="relu", name="conv2")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inp, layers.Dense(3, name="logits")(x), name="grayscale")


def image(size, channels=3, seed=0):
    return np.random.default_rng(seed).random((size, size, channels)).astype(np.float32)


class SubDeep(keras.Model):
    """Subclassed, any size, built at 32: three 5×5 stride-2 convolutions, a receptive field of
    1 + 4 (1 + 2 + 4) = 29 px at stride 8, which reaches the border of a 32×32 input."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.convs = [layers.Conv2D(2, 5, strides=2, padding="same", activation="relu",
                                    name=f"c{i}") for i in range(3)]

    def call(self, x):
        for conv in self.convs:
            x = conv(x)
        return x


def sub_deep(seed=0):
    keras.utils.set_random_seed(seed)
    model = SubDeep(name="sub_deep")
    model(np.zeros((1, 32, 32, 3), np.float32))  # first called at 32×32
    return model


def valid_fcn(seed=0):
    """Variable size, "valid" padding: two 5×5 convolutions; the smallest input that runs is
    9×9 (9 -> 5 -> 1)."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((None, None, 3), name="image")
    x = layers.Conv2D(2, 5, activation="relu", name="c1")(inp)
    return keras.Model(inp, layers.Conv2D(2, 5, name="c2")(x), name="valid_fcn")
