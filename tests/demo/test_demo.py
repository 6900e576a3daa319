"""The shipped demo: model, held-out scenes, card and log agree; loads offline; fresh objects."""

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest

from nbviz import demo
from nbviz.demo import shapes, train

HERE = Path(demo.__file__).resolve().parent


@pytest.fixture(scope="module")
def model():
    return demo.load_model()


def test_shipped_files_exist_and_model_is_small():
    for name in ("demo_model.keras", "images.npz", "card.json", "training_log.csv"):
        assert (HERE / name).is_file(), name
    assert (HERE / "demo_model.keras").stat().st_size < 5_000_000
    assert demo.card()["file_bytes"] == (HERE / "demo_model.keras").stat().st_size


def test_model_takes_raw_uint8_and_reproduces_the_card(model):
    card = demo.card()
    s = demo.load_images()
    assert model.input_shape == (None, 64, 64, 3)
    assert model.output_shape == (None, len(demo.LABELS))
    assert [l.__class__.__name__ for l in model.layers[:2]] == ["InputLayer", "Rescaling"]
    probs = np.asarray(model(s.images.astype("float32"), training=False))
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    pred = probs.argmax(-1)
    assert pred.tolist() == card["shipped_predictions"]
    assert np.mean(pred == s.labels) == pytest.approx(card["shipped_accuracy"], abs=1e-4)
    # uint8 in gives the same answer as float 0..255 in
    np.testing.assert_allclose(model.predict(s.images, verbose=0), probs, atol=1e-5)


def test_card_claims_are_consistent():
    card = demo.card()
    assert card["labels"] == list(demo.LABELS)
    assert card["heldout_accuracy"] >= 0.9
    assert abs(card["shipped_accuracy"] - card["heldout_accuracy"]) <= 0.15  # 32 vs 1000 scenes
    # < 5 minutes on 2 cores: CPU time is what does not depend on other jobs sharing the cores
    assert card["train_cpu_seconds"] < 2 * 300
    assert np.sum(card["heldout_confusion"]) == card["heldout_scenes"]
    assert np.trace(card["heldout_confusion"]) / card["heldout_scenes"] == pytest.approx(
        card["heldout_accuracy"], abs=1e-4
    )
    assert {"python", "tensorflow", "keras", "numpy"} <= set(card["versions"])
    # the training log ends with the accuracy the card reports
    with open(HERE / "training_log.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == card["epochs"]
    assert float(rows[-1]["heldout_accuracy"]) == pytest.approx(card["heldout_accuracy"], abs=2e-3)
    # the docstring states the card's numbers
    assert f"held-out accuracy {card['heldout_accuracy']:.3f} on {card['heldout_scenes']}" in demo.__doc__
    assert f"{card['shipped_accuracy']:.3f} on the {card['shipped_scenes']} shipped" in " ".join(demo.__doc__.split())
    assert f"in {card['train_seconds']:.0f} s wall time" in demo.__doc__
    assert f"{card['train_cpu_seconds']:.0f} CPU-seconds" in demo.__doc__
    assert f"{card['parameters']} parameters, {card['file_bytes'] / 1e6:.2f} MB" in demo.__doc__


def test_shipped_scenes_are_the_held_out_draw():
    """The shipped images are exactly the generator's scenes for seed + 2000 (never trained on)."""
    card = demo.card()
    s = demo.load_images()
    again = shapes.scenes(card["shipped_scenes"], seed=card["seed"] + 2000)
    for a, b in zip(s, again):
        np.testing.assert_array_equal(a, b)
    trained_on = shapes.scenes(50, seed=card["seed"])
    assert not any((trained_on.images == img).all(axis=(1, 2, 3)).any() for img in s.images)


def test_load_model_returns_a_fresh_object_each_call(model):
    other = demo.load_model()
    assert other is not model
    w = other.get_weights()
    other.layers[-1].kernel.assign(np.zeros_like(w[-2]))
    np.testing.assert_array_equal(demo.load_model().get_weights()[-2], w[-2])
    np.testing.assert_array_equal(model.get_weights()[-2], w[-2])


def test_load_images_and_image_return_copies():
    s = demo.load_images()
    assert s.images.shape == (32, 64, 64, 3) and s.images.dtype == np.uint8
    assert s.labels.shape == (32,) and s.boxes.shape == (32, 4) and s.masks.shape == (32, 64, 64)
    assert set(s.labels.tolist()) == set(range(len(demo.LABELS)))
    s.images[:] = 0
    assert demo.load_images().images.any()
    img = demo.image(3)
    np.testing.assert_array_equal(img, demo.load_images().images[3])
    img[:] = 0
    assert demo.image(3).any()
    for box, mask in zip(s.boxes, s.masks):  # exact boxes of the masks
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        assert box.tolist() == [rows[0], cols[0], rows[-1] + 1, cols[-1] + 1]


@pytest.mark.parametrize("i, error", [(32, ValueError), (-33, ValueError), ("0", TypeError), (1.0, TypeError)])
def test_image_bad_index(i, error):
    with pytest.raises(error, match="i must be"):
        demo.image(i)


def test_training_smoke_run_writes_everything_and_is_seeded(tmp_path):
    kwargs = dict(seed=3, train_scenes=24, heldout_scenes=8, shipped_scenes=4, epochs=1, batch_size=8, verbose=0)
    determinism = train.op_determinism_enabled()
    card = train.train(tmp_path / "a", **kwargs)
    assert train.op_determinism_enabled() == determinism  # process setting restored
    for name in ("demo_model.keras", "images.npz", "card.json", "training_log.csv"):
        assert (tmp_path / "a" / name).is_file()
    assert json.loads((tmp_path / "a" / "card.json").read_text()) == card
    assert card["train_scenes"] == 24 and card["epochs"] == 1 and card["seed"] == 3
    train.train(tmp_path / "b", **kwargs)
    import keras

    a = keras.saving.load_model(tmp_path / "a" / "demo_model.keras", compile=False).get_weights()
    b = keras.saving.load_model(tmp_path / "b" / "demo_model.keras", compile=False).get_weights()
    for x, y in zip(a, b):  # same seed, same weights
        np.testing.assert_array_equal(x, y)
    with np.load(tmp_path / "a" / "images.npz") as data:
        assert data["images"].shape == (4, 64, 64, 3)


def test_training_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="epochs must be a positive int, got 0"):
        train.train(tmp_path, epochs=0)
    with pytest.raises(ValueError, match="train_scenes must be a positive int, got 2.5"):
        train.train(tmp_path, train_scenes=2.5)
