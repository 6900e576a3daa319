"""The method-table rows of Layer-CAM, Eigen-CAM, Score-CAM, Ablation-CAM, VarGrad,
gradient × input and RISE: each loads its exported function, and the function accepts every
control's keyword with its default and limits."""

from __future__ import annotations

import inspect

import pytest

import nbviz
from nbviz.methods import table

ROWS = ("layercam", "eigencam", "scorecam", "ablationcam", "vargrad", "gradient_x_input", "rise")


@pytest.mark.parametrize("key", ROWS)
def test_row_function_and_controls(key):
    row = table.method(key)
    function = row.function_object()
    assert function is getattr(nbviz, key)
    params = inspect.signature(function).parameters
    for name in ("model", "image", "target", "preprocess"):
        assert name in params
    if "layer" in row.needs:
        assert "layer" in params
    for control in row.controls:
        assert params[control.keyword].kind is inspect.Parameter.KEYWORD_ONLY
    assert set(row.kwargs({})) <= set(params)
    assert row.display == {"gradient_x_input": "signed"}.get(key, "unsigned")


def test_control_values_are_checked():
    row = table.method("rise")
    assert row.kwargs({"masks": 200, "cells": 4, "keep": 0.3}) == {"n": 200, "cells": 4, "p": 0.3}
    with pytest.raises(ValueError, match="keep must be in"):
        row.kwargs({"keep": 1.0})
    assert table.method("scorecam").kwargs({}) == {"top_n": None}
    assert table.method("vargrad").kwargs({"samples": 8}) == {"n": 8, "noise": 0.15}
