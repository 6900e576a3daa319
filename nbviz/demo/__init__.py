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

Model card (the numbers are in ``card.json``, the per-epoch log in ``training_log.csv``):
{card}

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
    """Shipped scene ``i`` as a writable uint8 ``(64, 64, 3)`` array (``i`` in ``0..31``)."""
    images = _samples().images
    if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
        raise TypeError(f"i must be an int, got {type(i).__name__}")
    if not -len(images) <= i < len(images):
        raise ValueError(f"i must be in 0..{len(images) - 1}, got {i}")
    return images[i].copy()


def _card_text() -> str:
    try:
        c = card()
    except (OSError, ValueError):
        return "    (card.json missing: run python -m nbviz.demo.train)"
    return (
        f"    held-out accuracy {c['heldout_accuracy']:.3f} on {c['heldout_scenes']} scenes "
        f"({c['shipped_accuracy']:.3f} on the {c['shipped_scenes']} shipped ones);\n"
        f"    {c['parameters']} parameters, {c['file_bytes'] / 1e6:.2f} MB; trained on "
        f"{c['train_scenes']} scenes, {c['epochs']} epochs, seed {c['seed']}, in {c['train_seconds']:.0f} s\n"
        f"    on {c['cpu_count']} CPU cores (TensorFlow {c['versions']['tensorflow']}, "
        f"Keras {c['versions']['keras']})."
    )


__doc__ = __doc__.format(card=_card_text())
