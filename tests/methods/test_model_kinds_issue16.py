"""The new methods on the kinds of model nbviz reads: subclassed (a layer inside a custom
block), multi-input and mixed precision; the model is unchanged afterwards. (Nested models go
through the same probe interception; tracing a backbone per method costs too much here.)"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from nbviz import (ablationcam, eigencam, gradient_x_input, layercam, rise, scorecam, vargrad)
from tests.conftest import unchanged
from tests.models import mixed_precision_cnn

CAMS = {
    "layercam": lambda m, x, **k: layercam(m, x, **k),
    "eigencam": lambda m, x, **k: eigencam(m, x, **k),
    "scorecam": lambda m, x, **k: scorecam(m, x, top_n=4, **k),
    "ablationcam": lambda m, x, **k: ablationcam(m, x, **k),
}
OTHERS = {
    "rise": lambda m, x, **k: rise(m, x, n=64, cells=4, **k),
    "vargrad": lambda m, x, **k: vargrad(m, x, n=3, **k),
    "gradient_x_input": lambda m, x, **k: gradient_x_input(m, x, **k),
}


def _run(fn, model, x, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an untrained net may give a zero map
        with unchanged(model):
            return fn(model, x, **kwargs)


@pytest.mark.parametrize("name", list(CAMS))
def test_cams_on_subclassed_multi_input_mixed(name, subclassed, multi_input):
    fn = CAMS[name]
    rng = np.random.default_rng(0)
    x32 = rng.uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
    assert _run(fn, subclassed, x32, layer="block/conv").shape == (2, 32, 32)
    out = _run(fn, multi_input, x32[0], extra_inputs={"meta": np.ones(4, np.float32)})
    assert out.shape == (32, 32)
    assert _run(fn, mixed_precision_cnn(), x32, layer="conv1").shape == (2, 32, 32)
    with unchanged(subclassed), pytest.raises(ValueError, match="not a spatial"):
        fn(subclassed, x32, layer="gap")


@pytest.mark.parametrize("name", list(OTHERS))
def test_others_on_subclassed_and_multi_input(name, subclassed, multi_input):
    fn = OTHERS[name]
    x = np.random.default_rng(1).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
    out = _run(fn, subclassed, x)
    assert out.shape[:3] == (2, 32, 32) and np.isfinite(out).all()
    out = _run(fn, multi_input, x[0], extra_inputs={"meta": np.ones(4, np.float32)})
    assert out.shape[:2] == (32, 32)
