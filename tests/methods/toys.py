"""Hand-weighted toy models whose attributions are known in closed form (captum-style).

Each builder returns the model and the weights it was given, so a test can compute the right
answer with numpy alone.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers


class ReluChain:
    """Flatten, then four dense stages, each with a different ReLU-like activation, then logits.

    stage 1: Dense(activation="relu"); stage 2: Dense + layers.ReLU(max_value=2);
    stage 3: Dense(activation="relu6"); stage 4: Dense + Activation("relu");
    head: Dense(2, activation="softmax") (so the logits are explained).
    ``caps`` are the upper gates (None: no cap) of the four stages.
    """

    caps = (None, 2.0, 6.0, None)

    def __init__(self, shape=(2, 2, 1), width=4, seed=0):
        rng = np.random.default_rng(seed)
        n_in = int(np.prod(shape))
        dims = [n_in, width, width, width, width]
        self.weights = []
        for k in range(4):
            w = rng.normal(0, 1.0, (dims[k], dims[k + 1])).astype(np.float32)
            b = rng.normal(0, 0.5, dims[k + 1]).astype(np.float32)
            if k == 2:  # large enough that some units pass 6 (ReLU6's upper gate)
                w *= 4.0
            self.weights.append((w, b))
        self.head = (rng.normal(0, 1.0, (width, 2)).astype(np.float32),
                     np.zeros(2, np.float32))
        self.shape = shape

    def layers(self, prefix=""):
        """Fresh layers with the chain's weights (a list, to use in any kind of model)."""
        made = [
            layers.Flatten(name=prefix + "flat"),
            layers.Dense(4, activation="relu", name=prefix + "d1"),
            layers.Dense(4, name=prefix + "d2"),
            layers.ReLU(max_value=2.0, name=prefix + "relu_cap2"),
            layers.Dense(4, activation="relu6", name=prefix + "d3"),
            layers.Dense(4, name=prefix + "d4"),
            layers.Activation("relu", name=prefix + "act4"),
            layers.Dense(2, activation="softmax", name=prefix + "head"),
        ]
        return made

    def _set(self, made):
        dense = [l for l in made if isinstance(l, layers.Dense)]
        for layer, (w, b) in zip(dense, self.weights + [self.head]):
            layer.set_weights([w, b])

    def sequential(self):
        made = self.layers()
        model = keras.Sequential([keras.Input(self.shape)] + made, name="relu_chain")
        self._set(made)
        return model

    def nested(self):
        inner = self.sequential()
        inp = keras.Input(self.shape, name="image")
        return keras.Model(inp, inner(inp), name="nested_chain")

    def subclassed(self):
        made = self.layers()
        model = _ChainModel(made, name="subclassed_chain")
        model(np.zeros((1,) + self.shape, np.float32))
        self._set(made)
        return model

    # ---------------------------------------------------------------- closed forms

    def forward(self, x):
        """Pre-activations z_k and the logits for one image."""
        h = np.asarray(x, np.float32).reshape(-1)
        zs = []
        for (w, b), cap in zip(self.weights, self.caps):
            z = h @ w + b
            zs.append(z)
            h = np.clip(z, 0, cap if cap is not None else np.inf)
        return zs, h @ self.head[0] + self.head[1]

    def gradient(self, x, cls, guided):
        """d logit[cls] / d x, plain or guided (gate: 0 < z < cap and, if guided, dy > 0)."""
        zs, _ = self.forward(x)
        dy = self.head[0][:, cls].copy()
        for (w, _), cap, z in reversed(list(zip(self.weights, self.caps, zs))):
            gate = (z > 0) & ((z < cap) if cap is not None else True)
            if guided:
                gate &= dy > 0
            dy = w @ (dy * gate)
        return dy.reshape(self.shape)


class _ChainModel(keras.Model):
    def __init__(self, made, **kwargs):
        super().__init__(**kwargs)
        self.block = _Block(made[:-1], name="block")
        self.head = made[-1]

    def call(self, x):
        return self.head(self.block(x))


class _Block(layers.Layer):
    def __init__(self, made, **kwargs):
        super().__init__(**kwargs)
        self.parts = made

    def call(self, x):
        for part in self.parts:
            x = part(x)
        return x


def cam_toy(size=6, channels_in=2, channels=3, classes=2, seed=1):
    """Conv 1×1 (linear) -> "feat" -> GAP -> Dense(softmax).

    For class t the gradient at "feat" is ``head[c, t] / size²`` everywhere, so Grad-CAM's map is
    ``relu(sum_c head[c, t] / size² * A_c)`` divided by its maximum.
    Returns ``(model, kernel (channels_in, channels), bias, head (channels, classes))``.
    """
    rng = np.random.default_rng(seed)
    kernel = rng.normal(0, 1, (channels_in, channels)).astype(np.float32)
    bias = rng.normal(0, 0.1, channels).astype(np.float32)
    head = rng.normal(0, 1, (channels, classes)).astype(np.float32)
    inp = keras.Input((size, size, channels_in), name="image")
    x = layers.Conv2D(channels, 1, name="feat")(inp)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    out = layers.Dense(classes, activation="softmax", name="head")(x)
    model = keras.Model(inp, out, name="cam_toy")
    model.get_layer("feat").set_weights([kernel[None, None], bias])
    model.get_layer("head").set_weights([head, np.zeros(classes, np.float32)])
    return model, kernel, bias, head


def linear_toy(shape=(10, 12, 2), classes=2, seed=2):
    """``logits = flatten(x) @ w + b``: gradients are ``w``, occlusion drops are sums of
    ``w * (x - baseline)`` over the window. Returns ``(model, w (H, W, C, classes), b)``."""
    rng = np.random.default_rng(seed)
    w = rng.normal(0, 1, shape + (classes,)).astype(np.float32)
    b = rng.normal(0, 1, classes).astype(np.float32)
    inp = keras.Input(shape, name="image")
    out = layers.Dense(classes, name="linear")(layers.Flatten(name="flat")(inp))
    model = keras.Model(inp, out, name="linear_toy")
    model.get_layer("linear").set_weights([w.reshape(-1, classes), b])
    return model, w, b


def smooth_toy(size=8, seed=3):
    """A small smooth (softplus/tanh) CNN: integrated gradients converge fast on it."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((size, size, 3), name="image")
    x = layers.Conv2D(6, 3, padding="same", activation="softplus", name="c1")(inp)
    x = layers.Conv2D(6, 3, padding="same", activation="tanh", name="c2")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    out = layers.Dense(3, name="logits")(x)
    return keras.Model(inp, out, name="smooth_toy")


def dead_toy(size=8):
    """Every unit dead: a ReLU conv with zero kernel and negative bias, so all gradients are 0."""
    inp = keras.Input((size, size, 3), name="image")
    x = layers.Conv2D(4, 3, padding="same", activation="relu", name="dead")(inp)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    out = layers.Dense(2, name="logits")(x)
    model = keras.Model(inp, out, name="dead_toy")
    conv = model.get_layer("dead")
    conv.set_weights([np.zeros_like(conv.get_weights()[0]), -np.ones(4, np.float32)])
    return model
