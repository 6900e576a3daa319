"""Shared fixtures: a zoo of small and standard models, and the no-mutation check."""

from __future__ import annotations

import contextlib
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
import keras

from tests.models import (  # noqa: F401  (re-exported for tests)
    multi_input_model,
    nested_model,
    small_cnn,
    subclassed_model,
)


# --------------------------------------------------------------------------- no mutation


def snapshot(model) -> dict:
    """What must be identical after nbviz touched a model."""
    layers = list(model._flatten_layers(include_self=True, recursive=True))
    return {
        "weights": [np.array(w) for w in model.get_weights()],
        "call": [(l, l.__dict__.get("call", None), type(l).call) for l in layers],
        "activation": [(l, l.__dict__.get("activation", None)) for l in layers],
        "dict_keys": [(l, sorted(l.__dict__)) for l in layers],
        "config": _config(model),
    }


def _config(model):
    try:
        return model.get_config()
    except NotImplementedError:  # subclassed models without get_config
        return None


def assert_same(before: dict, after: dict) -> None:
    assert len(before["weights"]) == len(after["weights"])
    for a, b in zip(before["weights"], after["weights"]):
        np.testing.assert_array_equal(a, b)
    for (l1, c1, t1), (l2, c2, t2) in zip(before["call"], after["call"]):
        assert l1 is l2 and c1 is c2 and t1 is t2, f"call of {l1.name} changed"
    for (l1, a1), (l2, a2) in zip(before["activation"], after["activation"]):
        assert a1 is a2, f"activation of {l1.name} changed: {a1} -> {a2}"
    for (l1, k1), (_, k2) in zip(before["dict_keys"], after["dict_keys"]):
        assert k1 == k2, f"attributes of {l1.name} changed: {set(k1) ^ set(k2)}"
    assert before["config"] == after["config"]


@contextlib.contextmanager
def unchanged(model):
    """Assert that the block leaves ``model`` exactly as it was, also when the block raises."""
    before = snapshot(model)
    try:
        yield
    finally:
        assert_same(before, snapshot(model))


@pytest.fixture
def assert_unchanged():
    return unchanged


# --------------------------------------------------------------------------- models


@pytest.fixture(scope="session")
def resnet50():
    return keras.applications.ResNet50(weights=None)


@pytest.fixture(scope="session")
def mobilenetv2():
    return keras.applications.MobileNetV2(weights=None)


@pytest.fixture(scope="session")
def vgg16():
    return keras.applications.VGG16(weights=None)


@pytest.fixture(scope="session")
def inceptionv3():
    return keras.applications.InceptionV3(weights=None)


@pytest.fixture(scope="session")
def small():
    return small_cnn()


@pytest.fixture(scope="session")
def nested():
    return nested_model()


@pytest.fixture(scope="session")
def subclassed():
    return subclassed_model()


@pytest.fixture(scope="session")
def multi_input():
    return multi_input_model()
