"""Re-train the demo model reproducibly: ``python -m nbviz.demo.train [--out DIR]``.

Draws the scenes of :mod:`nbviz.demo.shapes` from fixed seeds, trains a small CNN with fixed seeds
and deterministic TensorFlow ops, and writes into ``DIR`` (default: this package's folder, i.e. it
replaces the shipped files):

* ``demo_model.keras``  the model (input: raw RGB 0..255 images, a ``Rescaling`` layer inside);
* ``card.json``         seeds, data sizes, held-out accuracy, training time, library versions;
* ``training_log.csv``  loss and accuracy per epoch on the training and held-out scenes;
* ``images.npz``        the shipped held-out scenes: images, labels, boxes, masks.

With ``--record DIR`` a :class:`nbviz.callbacks.Recorder` watches the first ``--record-scenes``
shipped scenes (Grad-CAM and saliency maps, the effective receptive field of every convolution,
feature visualisations of two ``block3_relu`` channels) before training and after every epoch,
into the run store ``DIR`` (``nbviz.callbacks.open_run(DIR)``); ``--tensorboard LOGDIR`` also
writes them for TensorBoard. The Recorder does not change the training: the model is bit for bit
the one trained without it.

Seeds: training scenes come from ``seed``, held-out scenes from ``seed + 1000``, the shipped
scenes from ``seed + 2000``, the per-epoch augmentation (:func:`augment`) from ``seed + 3000``;
weights and shuffling from ``keras.utils.set_random_seed(seed)``. The times in the card are wall
and CPU seconds of the whole run, scene drawing included.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from nbviz.demo.shapes import LABELS, scenes

__all__ = ["augment", "build_model", "train", "main"]

PACKAGE_DIR = Path(__file__).resolve().parent
SIZE = 64


def build_model(size: int = SIZE, classes: int = len(LABELS)):
    """The demo CNN: a 5x5 stride-2 stem and three 3x3 conv-BN-ReLU blocks (max-pools after the
    first two), global max pooling, dense softmax.

    Input ``(size, size, 3)`` raw RGB in 0..255 (``Rescaling(1/255)`` is the first layer). The last
    conv map (``block3_relu``) is ``size/8`` wide (8 x 8 at 64 x 64): receptive field 39 px,
    stride 8. Global max pooling (rather than average) lets the one object among clutter drive
    the score from the start, which makes training several times faster.
    """
    import keras
    from keras import layers

    inp = keras.Input((size, size, 3), name="image")
    x = layers.Rescaling(1.0 / 255.0, name="rescale")(inp)
    x = layers.Conv2D(24, 5, strides=2, padding="same", use_bias=False, name="stem_conv")(x)
    x = layers.BatchNormalization(momentum=0.9, name="stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    for name, filters, pool in [("block1", 32, True), ("block2", 64, True), ("block3", 128, False)]:
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv")(x)
        x = layers.BatchNormalization(momentum=0.9, name=f"{name}_bn")(x)
        x = layers.ReLU(name=f"{name}_relu")(x)
        if pool:
            x = layers.MaxPooling2D(name=f"{name}_pool")(x)
    x = layers.GlobalMaxPooling2D(name="gmp")(x)
    out = layers.Dense(classes, activation="softmax", name="predictions")(x)
    return keras.Model(inp, out, name="nbviz_demo_shapes")


def augment(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Label-preserving variants of uint8 scenes: a rotation by a multiple of 90 degrees, a
    mirror, a permutation of the colour channels, and for a quarter of them inverted colours."""
    n = len(images)
    out = np.empty_like(images)
    turns, mirror = rng.integers(4, size=n), rng.random(n) < 0.5
    for k in range(4):
        for m in (False, True):
            sel = (turns == k) & (mirror == m)
            rotated = np.rot90(images[sel], k, axes=(1, 2))
            out[sel] = rotated[:, :, ::-1] if m else rotated
    order = np.argsort(rng.random((n, 3)), axis=1)
    out = np.take_along_axis(out, order[:, None, None, :], axis=3)
    invert = rng.random(n) < 0.25
    out[invert] = 255 - out[invert]
    return out


def _tf_config():
    # is/disable_op_determinism are not exported under tf.config (TF 2.21); enable_op_determinism is
    from tensorflow.python.framework import config

    return config


def op_determinism_enabled() -> bool:
    """Whether TensorFlow's deterministic ops are on (process-wide)."""
    return bool(_tf_config().is_op_determinism_enabled())


def _versions() -> dict:
    import keras
    import tensorflow as tf

    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
    }


def train(
    out: str | os.PathLike = PACKAGE_DIR,
    *,
    seed: int = 0,
    train_scenes: int = 6000,
    heldout_scenes: int = 1000,
    shipped_scenes: int = 32,
    epochs: int = 14,
    batch_size: int = 64,
    learning_rate: float = 3e-3,
    size: int = SIZE,
    verbose: int = 2,
    record: str | os.PathLike | None = None,
    record_scenes: int = 4,
    tensorboard: str | os.PathLike | None = None,
) -> dict:
    """Train, evaluate and write the four files into ``out``; returns the card (a dict).

    ``record``: a run-store folder for a :class:`nbviz.callbacks.Recorder` on the first
    ``record_scenes`` shipped scenes (see the module docstring); ``tensorboard``: its TensorBoard
    log folder. The card then has ``recorder_seconds`` (its cost per record)."""
    import keras
    import tensorflow as tf

    for name, value in (("train_scenes", train_scenes), ("heldout_scenes", heldout_scenes),
                        ("shipped_scenes", shipped_scenes), ("epochs", epochs),
                        ("record_scenes", record_scenes)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start, cpu_start = time.perf_counter(), time.process_time()

    keras.utils.set_random_seed(seed)
    was_deterministic = op_determinism_enabled()
    tf.config.experimental.enable_op_determinism()  # undone below: it is process-wide
    try:
        data = scenes(train_scenes, seed=seed, size=size)
        heldout = scenes(heldout_scenes, seed=seed + 1000, size=size)
        shipped = scenes(shipped_scenes, seed=seed + 2000, size=size)
        data_seconds = time.perf_counter() - start

        model = build_model(size)
        steps = epochs * -(-train_scenes // batch_size)
        schedule = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=steps, alpha=0.02)
        model.compile(optimizer=keras.optimizers.Adam(schedule), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        augment_rng = np.random.default_rng(seed + 3000)
        recorder = None
        if record is not None or tensorboard is not None:
            recorder = recorder_for(shipped.images[:record_scenes], record, tensorboard)
        history: dict[str, list[float]] = {}
        for epoch in range(epochs):  # a new augmentation of the training scenes every epoch
            h = model.fit(
                augment(data.images, augment_rng).astype("float32"),
                data.labels,
                batch_size=batch_size,
                initial_epoch=epoch,
                epochs=epoch + 1,
                validation_data=(heldout.images.astype("float32"), heldout.labels),
                shuffle=True,
                verbose=verbose,
                callbacks=[] if recorder is None else [recorder],
            )
            for k, v in h.history.items():
                history.setdefault(k, []).extend(v)
        train_seconds = time.perf_counter() - start
        cpu_seconds = time.process_time() - cpu_start

        probs = model.predict(heldout.images.astype("float32"), batch_size=256, verbose=0)
        heldout_accuracy = float(np.mean(probs.argmax(-1) == heldout.labels))
        shipped_pred = model.predict(shipped.images.astype("float32"), batch_size=256, verbose=0).argmax(-1)
        confusion = np.zeros((len(LABELS), len(LABELS)), int)
        np.add.at(confusion, (heldout.labels, probs.argmax(-1)), 1)
    finally:
        if not was_deterministic:
            _tf_config().disable_op_determinism()

    model_path = out / "demo_model.keras"
    model.save(model_path)
    np.savez_compressed(
        out / "images.npz", images=shipped.images, labels=shipped.labels, boxes=shipped.boxes, masks=shipped.masks
    )
    with open(out / "training_log.csv", "w", newline="") as f:
        writer = csv.writer(f)
        keys = ["loss", "accuracy", "val_loss", "val_accuracy"]
        writer.writerow(["epoch", "loss", "accuracy", "heldout_loss", "heldout_accuracy"])
        for e in range(epochs):
            writer.writerow([e + 1, *(f"{history[k][e]:.4f}" for k in keys)])

    card = {
        "model": model.name,
        "labels": list(LABELS),
        "input": f"RGB {size}x{size}, raw values 0..255 (uint8 or float), Rescaling(1/255) inside",
        "parameters": int(model.count_params()),
        "file_bytes": model_path.stat().st_size,
        "seed": seed,
        "train_scenes": train_scenes,
        "heldout_scenes": heldout_scenes,
        "heldout_accuracy": round(heldout_accuracy, 4),
        "heldout_confusion": confusion.tolist(),
        "shipped_scenes": shipped_scenes,
        "shipped_accuracy": round(float(np.mean(shipped_pred == shipped.labels)), 4),
        "shipped_predictions": shipped_pred.astype(int).tolist(),
        "epochs": epochs,
        "batch_size": batch_size,
        "optimizer": f"Adam, cosine decay from {learning_rate}",
        "data_seconds": round(data_seconds, 1),
        "train_seconds": round(train_seconds, 1),
        "train_cpu_seconds": round(cpu_seconds, 1),
        "cpu_count": os.cpu_count(),
        "created": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "versions": _versions(),
        "command": "python -m nbviz.demo.train",
    }
    if recorder is not None:
        card["recorder_seconds"] = [round(c["total"], 3) for c in recorder.seconds]
        card["record"] = None if record is None else str(record)
    (out / "card.json").write_text(json.dumps(card, indent=1) + "\n")
    return card


def recorder_for(images, record, tensorboard):
    """The demo's :class:`~nbviz.callbacks.Recorder`: Grad-CAM and saliency of ``images``, the
    ERF of every convolution, 32-step feature visualisations of ``block3_relu`` channels 0 and 1
    (64 px, pixel parametrisation), before training and after every epoch."""
    from nbviz.callbacks import Recorder

    return Recorder(images, methods=("gradcam", "saliency"),
                    featvis=(("block3_relu", 0), ("block3_relu", 1)),
                    featvis_options={"steps": 32, "preprocess": _to_raw},
                    out=record, tensorboard=tensorboard)


def _to_raw(x):
    """Feature visualisation renders RGB in [0, 1]; the demo model takes 0..255."""
    return x * 255.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nbviz.demo.train", description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(PACKAGE_DIR), help="output folder (default: the package's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=14)
    parser.add_argument("--train-scenes", type=int, default=6000)
    parser.add_argument("--heldout-scenes", type=int, default=1000)
    parser.add_argument("--shipped-scenes", type=int, default=32)
    parser.add_argument("--record", metavar="DIR", default=None,
                        help="record maps, ERF and feature visualisations of fixed scenes every "
                             "epoch into this run store (nbviz.callbacks.open_run)")
    parser.add_argument("--record-scenes", type=int, default=4, help="scenes recorded (default 4)")
    parser.add_argument("--tensorboard", metavar="LOGDIR", default=None,
                        help="also write the records as TensorBoard summaries")
    args = parser.parse_args(argv)
    card = train(
        args.out,
        seed=args.seed,
        epochs=args.epochs,
        train_scenes=args.train_scenes,
        heldout_scenes=args.heldout_scenes,
        shipped_scenes=args.shipped_scenes,
        record=args.record,
        record_scenes=args.record_scenes,
        tensorboard=args.tensorboard,
    )
    print(
        f"held-out accuracy {card['heldout_accuracy']:.3f} on {card['heldout_scenes']} scenes, "
        f"{card['train_seconds']:.0f} s; wrote {args.out}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
