"""Several attribution methods side by side, each with the numbers that say whether to trust it.

(``nbviz.compare`` is the function :func:`compare`; this module is ``nbviz.comparison`` so that
importing it never shadows the function.)

:func:`compare_scores` is the widget-free computation (the Explorer's compare view reuses it):
for every method one *pane*, a dict with its map, its display kind and colour scale, and its
scores. :func:`compare` draws the panes as a static matplotlib figure.

Per pane:

* the map of the method for ``target`` (None: the top class of the image, fixed once so every
  pane, and the randomised model, explains the same class), at ``layer`` for methods that take
  one;
* ``deletion`` / ``insertion`` AUC (:mod:`nbviz.metrics`; lower / higher is better),
  optionally ``mufidelity``;
* with ``box`` (a ``(top, left, bottom, right)`` box or an H×W mask of the object): the pointing
  game and the energy in the box;
* with ``sanity=True``: the map of the same method on a copy of the model whose top weighted
  layer is re-initialised (:mod:`nbviz.sanity`), and the Spearman rank correlation of the two
  magnitudes (near 1: the map ignores what that layer learned).

Colour: "signed" maps (saliency, integrated gradients, occlusion, ...) on a diverging colormap
centred on zero (RdBu_r, zero white), "unsigned" maps (the Grad-CAM family) on a sequential one
(inferno), "rgb" maps (guided backprop) as a picture around mid-grey. With ``one_scale=True`` a
method's map and its randomised-model map share one scale, the 99.5th percentile of their pooled
``|values|`` (:func:`nbviz.render.one_scale`), so a weaker map looks weaker; maps of different
methods have different units (logit per pixel, probability, a CAM in [0, 1]) and are each
scaled by the same rule. With ``one_scale=False`` every map is scaled by its own maximum.
"""

from __future__ import annotations

import inspect
import warnings
from typing import Sequence

import numpy as np

from nbviz import render

__all__ = ["compare", "compare_scores", "METRICS"]

#: the curve metrics a pane can show
METRICS = ("deletion", "insertion", "mufidelity")
_PERCENTILE = 99.5


def _row_of(method):
    """(key, label, display, reduce, function, kwargs, needs) for a table key or a function."""
    from nbviz.methods import table

    if isinstance(method, str):
        row = table.method(method)
        if row.display not in ("signed", "unsigned", "rgb") or row.runner is not None:
            usable = [m.key for m in table.METHODS
                      if m.display in ("signed", "unsigned", "rgb") and m.runner is None]
            raise ValueError(f"methods: {method!r} does not give an attribution map of the "
                             f"image; choose among {usable} or pass a function")
        return (row.key, row.label, row.display, row.reduce, row.function_object(),
                row.kwargs({}), set(row.needs))
    if callable(method):
        name = getattr(method, "__name__", "method")
        params = inspect.signature(method).parameters
        needs = {n for n in ("target", "layer") if n in params}
        return name, name, None, None, method, {}, needs
    raise TypeError(f"methods must hold keys of nbviz.methods.table or functions, got {method!r}")


def _display(raw: np.ndarray, display, reduce) -> tuple[str, np.ndarray]:
    """(display kind, H×W map used for colour) of a method's output."""
    if raw.ndim == 3 and display == "rgb":
        return "rgb", raw.sum(-1)
    if raw.ndim == 3:
        if reduce in (None, "sum"):
            plane = raw.sum(-1)
        elif reduce == "abs_max":
            plane = np.abs(raw).max(-1)
        else:
            plane = raw.mean(-1)
    else:
        plane = raw
    if display in ("signed", "unsigned"):
        return display, plane
    return ("signed" if (plane < 0).any() else "unsigned"), plane


def compare_scores(model, image, methods: Sequence, *, target=None, layer=None,
                   metrics: Sequence[str] = ("deletion", "insertion"), one_scale: bool = True,
                   sanity: bool = False, box=None, steps: int = 20, baseline="blur",
                   score: str = "probability", seed: int = 0, preprocess=None) -> list[dict]:
    """One dict per method: ``key``, ``label``, ``display`` ("signed" / "unsigned" / "rgb"),
    ``raw`` (the method's output), ``map`` (H×W, what is coloured), ``scale`` (the colour scale;
    for "rgb" panes, of the channels of ``raw``),
    ``target`` (the class explained), ``scores`` ({"deletion": AUC, "insertion": AUC,
    "mufidelity": r, "pointing_game": bool, "energy_in_box": share}, the ones asked for),
    ``curves`` (the :class:`nbviz.metrics.Curve` objects) and, with ``sanity``, ``sanity``:
    {"layer", "raw", "map", "spearman_abs"}. See the module doc."""
    from nbviz import metrics as _metrics
    from nbviz import sanity as _sanity

    if isinstance(methods, (str, bytes)) or not isinstance(methods, Sequence) or not methods:
        raise ValueError(f"methods must be a non-empty list of method keys or functions, got "
                         f"{methods!r}")
    metrics = tuple(metrics)
    for m in metrics:
        if m not in METRICS:
            raise ValueError(f"metrics: unknown metric {m!r}; choose among {METRICS}")
    rows = [_row_of(m) for m in methods]
    if target is None:
        target = _sanity._top_class(model, image, preprocess, None)
    random_copy = None
    if sanity:
        top_path, random_copy = next(_sanity._steps(model, "cascade", seed, None))
    panes = []
    for key, label, display, reduce, fn, kwargs, needs in rows:
        call = dict(kwargs)
        if "target" in needs or "target" in inspect.signature(fn).parameters:
            call["target"] = target
        if layer is not None and "layer" in needs:
            call["layer"] = layer
        if preprocess is not None:
            call["preprocess"] = preprocess
        raw = np.asarray(fn(model, image, **call))
        kind, plane = _display(raw, display, reduce)
        pane = {"key": key, "label": label, "display": kind, "raw": raw, "map": plane,
                "target": target, "scores": {}, "curves": {}}
        common = dict(target=target, preprocess=preprocess)
        kinds = tuple(m for m in metrics if m != "mufidelity")
        if kinds:  # deletion and insertion share one batch
            found = _metrics._curves(kinds, model, image, raw, target, steps, baseline, score,
                                     64, preprocess, None)
            for m, curve in found.items():
                pane["curves"][m] = curve
                pane["scores"][m] = curve.auc
        if "mufidelity" in metrics:
            pane["scores"]["mufidelity"] = _metrics.mufidelity(
                model, image, raw, seed=seed, score=score, **common).correlation
        if box is not None:
            pane["scores"]["pointing_game"] = _metrics.pointing_game(raw, box)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                pane["scores"]["energy_in_box"] = _metrics.energy_in_box(raw, box)
        maps = [raw if kind == "rgb" else plane]  # an rgb picture is scaled on its channels
        if random_copy is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # a zero map is a valid outcome
                other = np.asarray(fn(random_copy, image, **call))
            _, other_plane = _display(other, display, reduce)
            pane["sanity"] = {"layer": top_path, "raw": other, "map": other_plane,
                              "spearman_abs": _sanity.similarity(raw, other)["spearman_abs"]}
            maps.append(other if kind == "rgb" else other_plane)
        if one_scale:
            pane["scale"] = render.one_scale(maps, percentile=_PERCENTILE)
        else:
            pane["scale"] = render.one_scale(maps[:1])
            if "sanity" in pane:
                pane["sanity"]["scale"] = render.one_scale(maps[1:])
        if "sanity" in pane:
            pane["sanity"].setdefault("scale", pane["scale"])
        panes.append(pane)
    return panes


def _picture(image, pane_raw, kind, plane, scale) -> np.ndarray:
    base = render.to_rgba(image)
    if kind == "rgb":
        s = render.one_scale([pane_raw], percentile=_PERCENTILE) if scale is None else scale
        rgb = render.scaled(pane_raw, s, signed=True) * 0.5 + 0.5
        return render.to_rgba(np.clip(rgb, 0, 1))
    # opacity grows with |value|: zero is transparent, the image shows through
    overlay = render.display_map(plane, kind, scale=scale, alpha=0.75, alpha_by_value=True)
    return render.composite(base, overlay)


def _caption(scores: dict) -> str:
    parts = []
    if "deletion" in scores:
        parts.append(f"deletion {scores['deletion']:.3f} ↓")
    if "insertion" in scores:
        parts.append(f"insertion {scores['insertion']:.3f} ↑")
    if "mufidelity" in scores:
        parts.append(f"µ-fidelity {scores['mufidelity']:.2f}")
    line2 = []
    if "pointing_game" in scores:
        line2.append(f"pointing {'hit' if scores['pointing_game'] else 'miss'}")
    if "energy_in_box" in scores:
        line2.append(f"energy in box {scores['energy_in_box']:.2f}")
    text = "\n".join(" · ".join(parts[i:i + 2]) for i in range(0, len(parts), 2))
    return text + ("\n" + " · ".join(line2) if line2 else "")


def compare(model, image, methods: Sequence = ("saliency", "integrated_gradients", "gradcam",
                                               "occlusion"), *, target=None, layer=None,
            metrics: Sequence[str] = ("deletion", "insertion"), one_scale: bool = True,
            sanity: bool = False, box=None, steps: int = 20, baseline="blur",
            score: str = "probability", seed: int = 0, preprocess=None, panes=None):
    """A static matplotlib Figure: one column per method, its map over the image with the colour
    of its display kind, the scores under it and, with ``sanity``, the randomised model's map
    below with its rank correlation. ``panes``: reuse :func:`compare_scores`' result (the other
    options are then ignored but ``image`` and ``box``). See the module doc."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    if panes is None:
        panes = compare_scores(model, image, methods, target=target, layer=layer, metrics=metrics,
                               one_scale=one_scale, sanity=sanity, box=box, steps=steps,
                               baseline=baseline, score=score, seed=seed, preprocess=preprocess)
    rows = 2 if any("sanity" in p for p in panes) else 1
    cols = len(panes)
    fig = Figure(figsize=(2.6 * cols, 3.3 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    region = None if box is None else np.asarray(box)
    for j, pane in enumerate(panes):
        ax = axes[0, j]
        ax.imshow(_picture(image, pane["raw"], pane["display"], pane["map"], pane["scale"]),
                  interpolation="nearest")
        ax.set_title(f"{pane['label']}\n({pane['display']}, class {pane['target']})", fontsize=9)
        ax.set_xlabel(_caption(pane["scores"]), fontsize=8)
        if region is not None and region.shape == (4,):
            t, l, b, r = (int(v) for v in region)
            ax.add_patch(Rectangle((l - 0.5, t - 0.5), r - l, b - t, fill=False, ec="lime", lw=1))
        if region is not None and region.ndim == 2:
            ax.contour(region.astype(float), levels=[0.5], colors="lime", linewidths=0.8)
        ax.set_xticks([]), ax.set_yticks([])
        if rows == 2:
            ax2 = axes[1, j]
            ax2.set_xticks([]), ax2.set_yticks([])
            if "sanity" in pane:
                s = pane["sanity"]
                ax2.imshow(_picture(image, s["raw"], pane["display"], s["map"], s["scale"]),
                           interpolation="nearest")
                ax2.set_title(f"{s['layer']} randomised", fontsize=8)
                ax2.set_xlabel(f"Spearman |map| {s['spearman_abs']:.2f}", fontsize=8)
            else:
                ax2.axis("off")
    return fig
