"""The offline demo: a small CNN that tells five shapes apart, and held-out scenes with ground truth.

Everything here ships inside the package and works without a network connection::

    from nbviz import demo
    model = demo.load_model()          # a fresh keras.Model each call
    samples = demo.load_images()       # Samples(images, labels, boxes, masks), 32 held-out scenes
    demo.LABELS                        # ('circle', 'square', 'triangle', 'cross', 'ring')
    model.predict(samples.images)      # raw uint8 RGB 0..255 in: Rescaling(1/255) is inside

Data: 64 x 64 RGB scenes drawn by :mod:`nbviz.demo.shapes`: one solid shape (circle, square,
triangle, cross, ring; 16-32 px across, random colour, position and rotation) on clutter (colour
gradient, smooth noise, thin lines, soft blobs, pixel noise). The object's mask and its box
``(top, left, bottom, right)`` (bottom/right exclusive) are exact, so they measure localisation.

Model card (``card()`` returns ``card.json``; ``training_log.csv`` has loss and accuracy per epoch):

* held-out accuracy 0.962 on 1000 scenes (seed 1000, never trained on); 0.875 on the 32 shipped
  ones (``load_images()``, seed 2000);
* 102509 parameters, 1.31 MB file; stem conv 5x5/2, three conv-BN-ReLU blocks, two max-pools,
  global max pooling, dense softmax; last conv map 8 x 8, receptive field 39 px, stride 8;
* trained on 6000 scenes (seed 0, each epoch a new rotation/mirror/colour permutation of them),
  14 epochs, Adam, in 841 s wall time on 2 CPU cores shared with five other TensorFlow jobs:
  318 CPU-seconds, so about 2.7 minutes on 2 free cores (TensorFlow 2.21.0, Keras 3.15.1).

Re-train with ``python -m nbviz.demo.train`` (seeded, deterministic ops; it overwrites the shipped
files, ``--out DIR`` writes elsewhere).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np

from nbviz.demo.shapes import LABELS, Samples

__all__ = ["LABELS", "Samples", "card", "image", "load_images", "load_model", "MODEL_PATH"]

_HERE = Path(__file__).resolve().parent
MODEL_PATH = _HERE / "demo_model.keras"
_IMAGES_PATH = _HERE / "images.npz"
_CARD_PATH = _HERE / "card.json"


def card() -> dict:
    """The model card written by the training script: seed, data sizes, accuracies, time, versions."""
    return json.loads(_CARD_PATH.read_text())


def load_model():
    """Load the shipped demo model (a new ``keras.Model`` object on every call, never compiled).

    Input: ``(N, 64, 64, 3)`` RGB with raw values 0..255 (uint8 or float); output: ``(N, 5)``
    softmax probabilities over :data:`LABELS`.
    """
    import keras

    return keras.saving.load_model(MODEL_PATH, compile=False)


@functools.lru_cache(maxsize=1)
def _samples() -> Samples:
    with np.load(_IMAGES_PATH) as data:
        arrays = [data[k] for k in Samples._fields]
    for a in arrays:
        a.setflags(write=False)
    return Samples(*arrays)


def load_images() -> Samples:
    """The 32 shipped held-out scenes (never used in training), as writable copies.

    ``Samples(images uint8 (32, 64, 64, 3), labels int64 (32,), boxes int64 (32, 4), masks bool
    (32, 64, 64))``; boxes are ``(top, left, bottom, right)`` with bottom/right exclusive.
    """
    return Samples(*(a.copy() for a in _samples()))


def image(i: int = 0) -> np.ndarray:
    """Shipped scene ``i`` as a writable uint8 ``(64, 64, 3)`` array (``i`` in ``0..31``; negative
    ``i`` counts from the end, as in indexing)."""
    images = _samples().images
    if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
        raise TypeError(f"i must be an int, got {type(i).__name__}")
    if not -len(images) <= i < len(images):
        raise ValueError(f"i must be in 0..{len(images) - 1} (or -{len(images)}..-1), got {i}")
    return images[i].copy()
