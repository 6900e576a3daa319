"""Peer rows: the same methods in tf-keras-vis, tf-explain and xplique.

Runs in its own virtualenv (``benchmarks/.peers-venv``: xplique pins TensorFlow <= 2.20), started
by ``run.py`` as a subprocess::

    benchmarks/.peers-venv/bin/python benchmarks/peers.py SPEC.json OUT.json

SPEC names, per model, the weights file and images the main process saved, the class of each
image and the methods to measure. Each peer is used as its documentation shows; an explainer
object is built once and then called per image, so a row's cold call is construction plus the
first call, and its warm calls reuse the explainer. The floors ``forward@1`` and ``fwd_bwd@1``
are measured here too, under this virtualenv's TensorFlow, to show whether the two TensorFlow
builds differ in raw speed. A library or method that fails is reported with its error.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import warnings
from importlib import metadata

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
warnings.filterwarnings("ignore")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import models  # noqa: E402
from catalog import FEATVIS_LAYER, GRADCAM_LAYER, PEER_METHODS, occlusion_window  # noqa: E402
from floor import measure_floors  # noqa: E402
from timing import configure, guarded, measure  # noqa: E402

DISTRIBUTIONS = ("tensorflow", "keras", "numpy", "tf-keras-vis", "tf-explain", "xplique",
                 "tensorflow-probability", "tf_keras")


def versions() -> dict:
    out = {"python": platform.python_version()}
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


# ----------------------------------------------------------------------------- the run


def inputs_for(method, images, classes, spec, model_spec):
    repeats, batch_repeats = spec["repeats"], spec["batch_repeats"]
    n = len(images)
    if method == "featvis":
        return list(range(spec["featvis_repeats"] + 1))
    if method == "gradcam@8":
        return [(images[(8 * i + np.arange(8)) % n], int(classes[(8 * i) % n]))
                for i in range(batch_repeats + 1)]
    calls = batch_repeats if method in ("smoothgrad", "integrated_gradients", "occlusion") \
        else repeats
    return [(images[i % n], int(classes[i % n])) for i in range(calls + 1)]


def run_model(model_spec, spec, log):
    name, size = model_spec["name"], model_spec["size"]
    model = models.load(name, size, model_spec["weights"])
    images = np.load(model_spec["images"])
    classes = np.asarray(model_spec["classes"])
    check = np.asarray(model(images[:4], training=False)).argmax(-1)
    out = {"weights_check": {"classes_here": check.tolist(),
                             "classes_main": classes[:4].tolist()},
           "floors": {}, "peers": {}}
    floors = measure_floors(model, images, classes, repeats=spec["repeats"],
                            keys=model_spec["floors"])
    out["floors"] = floors
    for key, record in floors.items():
        log(f"  {name}/floor-peers-venv/{key}: {record.get('warm_s', float('nan')) * 1000:.1f} ms"
            if record.get("status") == "ok" else f"  {name}/floor-peers-venv/{key}: {record}")
    ctx = {"size": size, "featvis_layer": FEATVIS_LAYER.get(name),
           "gradcam_layer": GRADCAM_LAYER.get(name),
           "featvis_steps": spec["featvis_steps"]}
    for peer, methods in model_spec["methods"].items():
        rows = out["peers"].setdefault(peer, {})
        for method in methods:
            if method not in PEER_METHODS[peer]:
                continue
            args = inputs_for(method, images, classes, spec, model_spec)
            record = guarded(lambda: measure(PEER_FUNCTIONS[peer](model, method, ctx), args))
            rows[method] = record
            if record.get("status") == "ok":
                log(f"  {name}/{peer}/{method}: cold {record['cold_s'] * 1000:.0f} ms, "
                    f"warm {record['warm_s'] * 1000:.1f} ms (cpu {record['warm_cpu_s'] * 1000:.1f})")
            else:
                log(f"  {name}/{peer}/{method}: {record['status']}: {record['error'][:300]}")
    out["notes"] = notes(model, images, classes, model_spec)
    return out


def notes(model, images, classes, model_spec) -> list[str]:
    """Default paths of the peers that fail on Keras 3 (the rows above work around them)."""
    found = []
    if "gradcam" in model_spec["methods"].get("tf-explain", ()):
        from tf_explain.core.grad_cam import GradCAM
        try:
            GradCAM().explain((images[:1], None), model, class_index=int(classes[0]))
        except Exception as exc:
            found.append("tf-explain GradCAM without layer_name (its search for the last conv "
                         f"layer) fails on Keras 3: {type(exc).__name__}: {exc}; the rows pass "
                         "layer_name explicitly")
    return found


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    spec_path, out_path = argv
    with open(spec_path) as f:
        spec = json.load(f)
    tf.get_logger().setLevel("ERROR")
    configure(budget_s=spec.get("budget_s"))

    def log(line):
        print(line, flush=True)

    result = {"versions": versions(), "models": {}}
    log(f"peers venv: {result['versions']}")
    for model_spec in spec["models"]:
        result["models"][model_spec["name"]] = guarded(lambda: run_model(model_spec, spec, log))
        with open(out_path, "w") as f:  # written after each model: a crash keeps what was done
            json.dump(result, f, indent=1, default=float)
    return 0


if __name__ == "__main__":
    sys.exit(main())
