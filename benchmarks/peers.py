"""Peer rows: the same methods in tf-keras-vis, tf-explain and xplique.

Runs in its own long-lived worker process under its own virtualenv (``benchmarks/.peers-venv``:
xplique pins TensorFlow <= 2.20): ``benchmarks/.peers-venv/bin/python benchmarks/worker.py
peers``. The model is rebuilt from the weights file the driver saved. Each peer is used as its
documentation shows; an explainer object is built on the first call and reused, so a row's cold
sample is construction plus the first call. The floors are measured here too, under this
virtualenv's TensorFlow, in the same rounds, so a difference between the two TensorFlow builds
shows. A library or method that fails is reported with its error.
"""

from __future__ import annotations

import os
import platform
import warnings
from importlib import metadata

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
warnings.filterwarnings("ignore")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import models  # noqa: E402
from catalog import FEATVIS_LAYER, GRADCAM_LAYER, occlusion_window  # noqa: E402

DISTRIBUTIONS = ("tensorflow", "keras", "numpy", "tf-keras-vis", "tf-explain", "xplique",
                 "tensorflow-probability", "tf_keras")


def versions() -> dict:
    out = {"env": "peers", "python": platform.python_version()}
    for name in DISTRIBUTIONS:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def lazily(make, use):
    """``call(arg)`` that builds the explainer on the first call and reuses it afterwards."""
    state = {}

    def call(arg):
        if "explainer" not in state:
            state["explainer"] = make()
        return use(state["explainer"], arg)
    return call


def _batch(x):
    return x if x.ndim == 4 else x[None]


# ----------------------------------------------------------------------------- tf-keras-vis


def tf_keras_vis(model, method, ctx):
    from tf_keras_vis.utils.model_modifiers import ExtractIntermediateLayer, ReplaceToLinear
    from tf_keras_vis.utils.scores import CategoricalScore

    def score(x, k):
        return CategoricalScore([k] * len(_batch(x)))

    if method == "saliency":
        from tf_keras_vis.saliency import Saliency
        return lazily(lambda: Saliency(model, model_modifier=ReplaceToLinear(), clone=True),
                      lambda s, a: s(score(a[0], a[1]), a[0]))
    if method == "smoothgrad":
        from tf_keras_vis.saliency import Saliency
        return lazily(lambda: Saliency(model, model_modifier=ReplaceToLinear(), clone=True),
                      lambda s, a: s(score(a[0], a[1]), a[0], smooth_samples=20,
                                     smooth_noise=0.15))
    if method in ("gradcam", "gradcam@8"):
        from tf_keras_vis.gradcam import Gradcam
        return lazily(lambda: Gradcam(model, model_modifier=ReplaceToLinear(), clone=True),
                      lambda g, a: g(score(a[0], a[1]), a[0], penultimate_layer=-1))
    if method == "featvis":
        from tf_keras_vis.activation_maximization import ActivationMaximization
        layer = ctx["featvis_layer"]

        def make():
            return ActivationMaximization(
                model, model_modifier=[ExtractIntermediateLayer(layer)], clone=True)

        def use(am, channel):
            return am(lambda out: tf.reduce_mean(out[..., channel], axis=(1, 2)),
                      steps=ctx["featvis_steps"], input_range=(-1.0, 1.0))
        return lazily(make, use)
    raise KeyError(method)


# ----------------------------------------------------------------------------- tf-explain


def tf_explain(model, method, ctx):
    size = ctx["size"]
    if method == "saliency":
        from tf_explain.core.vanilla_gradients import VanillaGradients
        return lazily(VanillaGradients,
                      lambda e, a: e.explain((_batch(a[0]), None), model, class_index=a[1]))
    if method in ("gradcam", "gradcam@8"):
        from tf_explain.core.grad_cam import GradCAM
        # the layer is named: tf-explain's own search for it fails on Keras 3 (see notes)
        return lazily(GradCAM,
                      lambda e, a: e.explain((_batch(a[0]), None), model, class_index=a[1],
                                             layer_name=ctx["gradcam_layer"]))
    if method == "smoothgrad":
        from tf_explain.core.smoothgrad import SmoothGrad
        # noise is a standard deviation here: 0.15 of the [-1, 1] range
        return lazily(SmoothGrad,
                      lambda e, a: e.explain((_batch(a[0]), None), model, class_index=a[1],
                                             num_samples=20, noise=0.3))
    if method == "integrated_gradients":
        from tf_explain.core.integrated_gradients import IntegratedGradients
        return lazily(IntegratedGradients,
                      lambda e, a: e.explain((_batch(a[0]), None), model, class_index=a[1],
                                             n_steps=32))
    if method == "occlusion":
        from tf_explain.core.occlusion_sensitivity import OcclusionSensitivity
        return lazily(lambda: OcclusionSensitivity(batch_size=64),
                      lambda e, a: e.explain((_batch(a[0]), None), model, class_index=a[1],
                                             patch_size=occlusion_window(size)))
    raise KeyError(method)


# ----------------------------------------------------------------------------- xplique


def xplique(model, method, ctx):
    size = ctx["size"]
    n_classes = int(model.outputs[0].shape[-1])

    def targets(x, k):
        return tf.one_hot([k] * len(_batch(x)), n_classes)

    def explainer(make):
        return lazily(make, lambda e, a: e.explain(_batch(a[0]), targets(a[0], a[1])))

    from xplique import attributions as xa
    if method == "saliency":
        return explainer(lambda: xa.Saliency(model))
    if method == "guided_backprop":
        return explainer(lambda: xa.GuidedBackprop(model))
    if method in ("gradcam", "gradcam@8"):
        return explainer(lambda: xa.GradCAM(model))
    if method == "smoothgrad":
        # noise is a standard deviation here: 0.15 of the [-1, 1] range
        return explainer(lambda: xa.SmoothGrad(model, nb_samples=20, noise=0.3, batch_size=32))
    if method == "integrated_gradients":
        return explainer(lambda: xa.IntegratedGradients(model, steps=32, batch_size=32))
    if method == "occlusion":
        w = occlusion_window(size)
        return explainer(lambda: xa.Occlusion(model, patch_size=w, patch_stride=w,
                                              batch_size=64, occlusion_value=0.0))
    if method == "featvis":
        from xplique.features_visualizations import Objective, optimize
        layer = ctx["featvis_layer"]

        def render(channel):
            objective = Objective.channel(model, layer, channel)
            images, _ = optimize(objective, nb_steps=ctx["featvis_steps"],
                                 custom_shape=(size, size), values_range=(-1.0, 1.0))
            return images
        return render
    raise KeyError(method)


PEER_FUNCTIONS = {"tf-keras-vis": tf_keras_vis, "tf-explain": tf_explain, "xplique": xplique}


# ----------------------------------------------------------------------------- the worker

_MODELS: dict = {}


def factory(spec: dict):
    """``call(i)`` of one peer row (``{"kind": "peer", "library": ..., "name": method}``) or of a
    floor under this virtualenv's TensorFlow (``{"kind": "floor", ...}``); see rows.py."""
    key = (spec["model"], spec["size"], spec["weights"])
    if key not in _MODELS:
        _MODELS[key] = models.load(spec["model"], spec["size"], spec["weights"])
    model = _MODELS[key]
    if spec["kind"] == "floor":
        from rows import floor_row
        return floor_row(model, spec)
    from rows import batches
    get = batches(spec)
    ctx = {"size": spec["size"], "featvis_layer": FEATVIS_LAYER.get(spec["model"]),
           "gradcam_layer": GRADCAM_LAYER.get(spec["model"]),
           "featvis_steps": int(spec.get("options", {}).get("steps", 100))}
    method = spec["name"]
    call = PEER_FUNCTIONS[spec["library"]](model, method, ctx)
    if method == "featvis":
        return lambda i: call(i)
    return lambda i: call(get(i))
