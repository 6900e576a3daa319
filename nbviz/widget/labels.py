"""Class names for the target dropdown, and the model's top predictions.

Names come from ``labels=`` when given; for 1000-class models from Keras' ImageNet class index
when that file is already cached on this machine (``~/.keras/models/imagenet_class_index.json``,
never downloaded here); otherwise a class shows as ``class N``.
"""

from __future__ import annotations

import json
import os

import numpy as np

__all__ = ["class_names", "top_predictions"]


def _imagenet_names() -> list[str] | None:
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    path = os.path.join(home, "models", "imagenet_class_index.json")
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            index = json.load(f)
        return [index[str(i)][1] for i in range(1000)]
    except (OSError, ValueError, KeyError, IndexError):
        return None


def class_names(n_classes: int | None, labels=None) -> list[str]:
    """A name for each of ``n_classes`` outputs (see the module docstring)."""
    n = int(n_classes or 0)
    if labels is not None:
        names = [str(v) for v in labels]
        return names + [f"class {i}" for i in range(len(names), n)]
    if n == 1000:
        names = _imagenet_names()
        if names:
            return names
    return [f"class {i}" for i in range(n)]


def top_predictions(scores, k: int = 5) -> list[tuple[int, float]]:
    """The ``k`` highest-scoring classes of one output vector (a spatial map is max-pooled)."""
    s = np.asarray(scores, np.float64)
    if s.ndim > 1:
        s = s.reshape(-1, s.shape[-1]).max(axis=0)
    order = np.argsort(-s, kind="stable")[:k]
    return [(int(i), float(s[i])) for i in order]
