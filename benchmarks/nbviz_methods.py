"""The nbviz rows: each public method timed cold and warm on the benchmark model.

Every row starts from an empty probe cache (``nbviz.probe.clear_cache()``), so its cold call
includes what a user's first call pays: reading the model and tracing the compiled function.
Warm calls each get a new image (or a new cell / channel) and the explicit class of that image;
the probe's trace counter tells whether any warm call traced again. Rows compared with the
batch-1 floor run that floor right before each warm call (``paired_floor_s``), so both see the
same machine load.

A method whose module is not in this checkout is reported as ``status="not available"``.
"""

from __future__ import annotations

import importlib
from typing import Callable

import numpy as np
import tensorflow as tf

from catalog import FEATVIS_LAYER, FEATVIS_MODELS, GENERIC, METHODS, TABLE, occlusion_window
from floor import fwd_bwd_fn, onehot
from timing import guarded, measure


def _resolve(module: str, name: str):
    """``module.name``, or None when that module or name does not exist (not landed yet)."""
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None


def _missing(what: str) -> dict:
    return {"status": "not available", "error": f"{what} is not in this checkout"}


def _cells(shape: tuple[int, int], count: int) -> list[tuple[int, int]]:
    """``count`` different cells spread over an output map of ``shape``."""
    h, w = shape
    return [((3 * i + h // 2) % h, (5 * i + w // 2) % w) for i in range(count)]


def plans(model, model_name: str, images: np.ndarray, classes: np.ndarray, *, repeats: int,
          batch_repeats: int, featvis_steps: int, featvis_repeats: int
          ) -> dict[str, Callable[[], dict]]:
    """Method name -> a function that measures its row."""
    import nbviz
    from nbviz.probe import clear_cache, probe

    size = images.shape[1]
    singles = [(images[i % len(images)], int(classes[i % len(images)]))
               for i in range(repeats + 1)]
    batched_singles = singles[: batch_repeats + 1]

    def counter():
        return probe(model).trace_count()

    # the batch-1 floor, run right before each warm call of the rows compared with it
    floor_fn = fwd_bwd_fn(model)
    n_classes = int(model.outputs[0].shape[-1])
    floor_args = [(tf.constant(image[None]), onehot([k], n_classes)) for image, k in singles]
    paired_floor = (lambda a: floor_fn(*a), floor_args)

    def timed(fn: Callable, args: list, paired=None) -> dict:
        clear_cache()
        return measure(fn, args, counter=counter, paired=paired)

    def attribution(key: str, args: list, paired=None, **options):
        """A table row's function (``"module:name"`` in nbviz/methods/table.py), timed."""
        module, _, name = TABLE.method(key).function.partition(":")
        fn = _resolve(module, name)
        if fn is None:
            return lambda: _missing(f"{module}.{name}")
        return lambda: timed(lambda a: fn(model, a[0], target=a[1], **options), args, paired)

    # per method: the inputs and options of its row (methods not listed: one image per call,
    # the function's defaults)
    batched = dict(args=batched_singles)
    setup = {
        "saliency": dict(paired=paired_floor), "guided_backprop": dict(paired=paired_floor),
        "gradcam": dict(paired=paired_floor), "guided_gradcam": dict(paired=paired_floor),
        "smoothgrad": dict(batched, n=20),
        "integrated_gradients": dict(batched, steps=32, batch_size=32),
        "occlusion": dict(batched, window=occlusion_window(size), stride=occlusion_window(size), batch_size=64),
    }
    out = {}
    for key in GENERIC:
        options = dict(setup.get(key, {}))
        out[key] = attribution(key, options.pop("args", singles), options.pop("paired", None), **options)
    eights = [(images[(8 * i + np.arange(8)) % len(images)], int(classes[(8 * i) % len(images)]))
              for i in range(batch_repeats + 1)]
    out["gradcam@8"] = attribution("gradcam", eights)

    rf = _resolve("nbviz.methods.receptive_field", "receptive_field")
    out["receptive_field"] = (
        (lambda: timed(lambda _: rf(model), [None] * (repeats + 1))) if rf is not None
        else lambda: _missing("nbviz.methods.receptive_field.receptive_field"))

    grf = _resolve("nbviz.methods.receptive_field", "gradient_rf")
    if grf is not None and rf is not None:
        def gradient_rf_row():
            cells = _cells(tuple(rf(model).output_shape), repeats + 1)
            args = [(cell, image) for cell, (image, _) in zip(cells, singles)]
            return timed(lambda a: grf(model, a[0], image=a[1]).map, args, paired_floor)
        def gradient_rf_effective_row():
            cells = _cells(tuple(rf(model).output_shape), repeats + 1)
            args = [(cell, image) for cell, (image, _) in zip(cells, singles)]
            return timed(lambda a: grf(model, a[0], image=a[1], mode="effective").map, args,
                         paired_floor)
        out["gradient_rf"] = gradient_rf_row
        out["gradient_rf_effective"] = gradient_rf_effective_row
    else:
        out["gradient_rf"] = out["gradient_rf_effective"] = \
            lambda: _missing("nbviz.methods.receptive_field.gradient_rf")

    if model_name in FEATVIS_MODELS:
        fv = _resolve("nbviz", "featvis")
        render = getattr(fv, "render", None) if fv is not None else None
        if render is None:
            out["featvis"] = lambda: _missing("nbviz.featvis.render")
        else:
            layer = FEATVIS_LAYER[model_name]
            channels = list(range(featvis_repeats + 1))
            out["featvis"] = lambda: timed(
                lambda c: render(model, fv.channel(layer, c), steps=featvis_steps), channels)

    from widget_rows import explorer_plans
    out.update(explorer_plans(model, model_name, images, repeats=repeats))
    return out


def measure_nbviz(model, model_name: str, images: np.ndarray, classes: np.ndarray, *,
                  repeats: int, batch_repeats: int, featvis_steps: int, featvis_repeats: int,
                  selected: Callable[[str], bool] = lambda method: True,
                  log: Callable[[str], None] = print) -> dict[str, dict]:
    """Measure every selected nbviz row of one model; method name -> record."""
    rows = {}
    for method, run in plans(model, model_name, images, classes, repeats=repeats,
                             batch_repeats=batch_repeats, featvis_steps=featvis_steps,
                             featvis_repeats=featvis_repeats).items():
        if not selected(method):
            continue
        record = guarded(run)
        record.setdefault("batch", METHODS[method].batch)
        if method == "featvis":
            record["steps"] = featvis_steps
            record["layer"] = FEATVIS_LAYER[model_name]
        rows[method] = record
        log(_summary(f"{model_name}/nbviz/{method}", record))
    return rows


def _summary(row_id: str, record: dict) -> str:
    if record.get("status") != "ok":
        return f"  {row_id}: {record.get('status')} {record.get('error', '')[:200]}"
    return (f"  {row_id}: cold {record['cold_s'] * 1000:.0f} ms, warm {record['warm_s'] * 1000:.1f} ms"
            f" (cpu {record['warm_cpu_s'] * 1000:.1f} ms), new traces when warm: "
            f"{record.get('traces_warm', '-')}")
