"""Localisation: on a tiny CNN trained here, Grad-CAM and occlusion peak inside the object's box.

The scenes: noise plus dim rectangles of random colours (clutter), and one bright square or
disk whose dominant colour (red, green, blue) is the class, at a random position. The object's
box is known, so "the peak lies inside the box" is a check of the whole chain (gradients at the
right layer, channel weights, upsampling alignment) that cannot pass by accident.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import layers

from nbviz import gradcam, occlusion
from tests.conftest import unchanged

SIZE = 32


def scenes(n, seed):
    """Images (n, 32, 32, 3) in [0, 1], labels (n,), boxes (n, 4) as (top, left, bottom, right)."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(0.0, 0.35, (n, SIZE, SIZE, 3)).astype(np.float32)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    labels = rng.integers(0, 3, n)
    boxes = np.zeros((n, 4), int)
    for i, image in enumerate(images):
        for _ in range(4):
            t, l = rng.integers(0, SIZE - 6, 2)
            h, w = rng.integers(3, 8, 2)
            image[t:t + h, l:l + w] = rng.uniform(0.1, 0.45, 3)
        s = int(rng.integers(7, 12))
        t, l = (int(v) for v in rng.integers(0, SIZE - s + 1, 2))
        color = rng.uniform(0.0, 0.3, 3)
        color[labels[i]] = rng.uniform(0.85, 1.0)
        if rng.random() < 0.5:
            image[t:t + s, l:l + s] = color
        else:
            r = s / 2
            image[(yy - (t + r - 0.5)) ** 2 + (xx - (l + r - 0.5)) ** 2 <= r * r] = color
        boxes[i] = (t, l, t + s, l + s)
    return images, labels, boxes


@pytest.fixture(scope="module")
def trained():
    keras.utils.set_random_seed(0)
    inp = keras.Input((SIZE, SIZE, 3), name="image")
    x = layers.Conv2D(16, 3, padding="same", activation="relu", name="c1")(inp)
    x = layers.MaxPooling2D(name="p1")(x)
    x = layers.Conv2D(32, 3, padding="same", activation="relu", name="c2")(x)
    x = layers.MaxPooling2D(name="p2")(x)
    x = layers.Conv2D(32, 3, padding="same", activation="relu", name="c3")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    out = layers.Dense(3, activation="softmax", name="head")(x)
    model = keras.Model(inp, out, name="colour_objects")
    images, labels, _ = scenes(1000, seed=0)
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(images, labels, batch_size=64, epochs=3, verbose=0)
    return model


def _inside(maps, boxes):
    peaks = [np.unravel_index(np.argmax(m), m.shape) for m in maps]
    return np.array([t <= y < b and l <= x < r for (y, x), (t, l, b, r) in zip(peaks, boxes)])


def test_gradcam_peak_inside_the_box(trained):
    images, labels, boxes = scenes(100, seed=1)
    accuracy = (trained.predict(images, verbose=0).argmax(1) == labels).mean()
    assert accuracy >= 0.9  # the model learned the task; otherwise the test means nothing
    with unchanged(trained):
        maps = gradcam(trained, images, target=labels, layer="c3")
        top = gradcam(trained, images)  # target None: the predicted class
    assert _inside(maps, boxes).mean() >= 0.9
    assert _inside(top, boxes).mean() >= 0.9


def test_occlusion_peak_inside_the_box(trained):
    images, labels, boxes = scenes(30, seed=2)
    maps = occlusion(trained, images, target=labels, window=6, stride=2, batch_size=256)
    assert _inside(maps, boxes).mean() >= 0.9
