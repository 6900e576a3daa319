"""The table of methods the Explorer offers: name -> the pure function it calls, and its controls.

No method logic lives here: each entry calls a function of :mod:`nbviz.methods` or
:mod:`nbviz.featvis` and turns its numpy result into something the canvas shows (a heatmap, an
RGB picture, a box). Functions are imported when first used.
"""

from __future__ import annotations

import dataclasses
import importlib
import threading
from typing import Any, Callable

import numpy as np

from nbviz import render
from nbviz.probe import probe as get_probe

__all__ = ["Context", "Request", "Result", "Method", "METHODS", "method_options"]


@dataclasses.dataclass
class Context:
    """What stays fixed while the user explores: the model, its preprocessing, cached helpers."""

    model: Any
    preprocess: Callable | None = None
    _rf: dict = dataclasses.field(default_factory=dict)
    _fcn: list = dataclasses.field(default_factory=list)
    _fv_preprocess: dict = dataclasses.field(default_factory=dict)
    _lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    @property
    def probe(self):
        return get_probe(self.model)

    def receptive_field(self, layer: str):
        """The (cached) receptive field of ``layer``; an exception is cached too."""
        with self._lock:
            if layer not in self._rf:
                try:
                    self._rf[layer] = _fn("nbviz.methods.receptive_field", "receptive_field")(self.model, layer)
                except Exception as exc:  # e.g. a layer after global pooling
                    self._rf[layer] = exc
            value = self._rf[layer]
        if isinstance(value, Exception):
            raise value
        return value

    def cached_rf(self, layer: str):
        """The receptive field of ``layer`` if already computed (and valid), else None."""
        value = self._rf.get(layer)
        return None if isinstance(value, Exception) else value

    def fully_convolutional(self):
        """The model with its classifier turned into 1×1 convolutions (built once)."""
        with self._lock:
            if not self._fcn:
                self._fcn.append(_fn("nbviz.methods.receptive_field", "fully_convolutional")(self.model))
            return self._fcn[0]

    def model_input(self, image):
        """``image`` in the model's input space (``preprocess`` applied)."""
        x = self.preprocess(image) if self.preprocess is not None else image
        return np.asarray(x, np.float32)


@dataclasses.dataclass(frozen=True)
class Request:
    """One computation: the method's inputs, read from the Explorer's state."""

    method: str
    image: np.ndarray
    layer: str
    target: int | None = None
    point: tuple[int, int] | None = None
    channel: int = 0
    options: tuple = ()

    def option(self, name, default=None):
        return dict(self.options).get(name, default)


@dataclasses.dataclass
class Result:
    """What a method gives the canvas.

    ``kind``/``data``: the overlay (see :func:`nbviz.widget.frames.overlay_layer`);
    ``values``: an h×w map read under the pointer (any size, mapped onto the image);
    ``box``: the theoretical RF box, ``gradient_box``: the tight box of a gradient map;
    ``cell``: the output cell; ``activation``: h×w×c for the channel grid; ``note``: one line.
    """

    kind: str | None = None
    data: np.ndarray | None = None
    values: np.ndarray | None = None
    box: tuple | None = None
    gradient_box: tuple | None = None
    cell: Any = None
    activation: np.ndarray | None = None
    note: str = ""


@dataclasses.dataclass(frozen=True)
class Method:
    """A row of the table: label, the controls it reads, whether it needs a click, its runner.

    ``run(context, request, stop, progress) -> Result``. ``progress(step, picture, value)`` is
    called by long methods (feature visualisation) with intermediate pictures.
    """

    key: str
    label: str
    controls: frozenset
    run: Callable
    needs_point: bool = False
    on_demand: bool = False  # runs only when asked (Run button), not on every change


def _fn(module: str, name: str):
    return getattr(importlib.import_module(module), name)


# --------------------------------------------------------------------------- runners


def _rf_click(ctx: Context, req: Request, stop, progress) -> Result:
    if req.point is None:
        return Result(note="click the image to see the receptive field of the output cell under it")
    rf = ctx.receptive_field(req.layer)
    cell = rf.cell(req.point)
    g = _fn("nbviz.methods.receptive_field", "gradient_rf")(
        ctx.model, cell, layer=req.layer, image=ctx.model_input(req.image), mode=req.option("mode", "theoretical"))
    return Result("heat", np.asarray(g.map, np.float32), values=np.asarray(g.map, np.float32),
                  box=tuple(rf.box(cell)), gradient_box=g.box, cell=tuple(cell),
                  note=f"{g.mode} gradient RF of cell {tuple(cell)} at {req.layer}")


def _rf_score_map(ctx: Context, req: Request, stop, progress, *, whole: bool) -> Result:
    fcn = ctx.fully_convolutional()
    score_layer = fcn.layers[-1].name  # the class score map
    x = ctx.model_input(req.image)
    target = req.target if req.target is not None else _top_class(ctx, req.image)
    gradient_rf = _fn("nbviz.methods.receptive_field", "gradient_rf")
    mode = req.option("mode", "theoretical")
    if whole:
        scores = np.asarray(fcn(x[None], training=False))[0, ..., target]
        cell = np.ones(scores.shape, np.float32)
    else:
        cell = "max"
    g = gradient_rf(fcn, cell, layer=score_layer, image=x, mode=mode, target=target)
    what = "the whole class score map" if whole else f"its most activated cell {tuple(g.cell)}"
    return Result("heat", np.asarray(g.map, np.float32), values=np.asarray(g.map, np.float32),
                  gradient_box=g.box, cell=None if whole else tuple(g.cell),
                  note=f"{g.mode} RF of {what} (class {target}, fully convolutional copy)")


def _top_class(ctx: Context, image) -> int:
    p = ctx.probe
    out = np.asarray(p.forward(p.prepare(ctx.model_input(image))[0]))
    out = out.reshape(out.shape[0], -1, out.shape[-1]).max(axis=1) if out.ndim > 2 else out
    return int(np.argmax(out[0]))


def _attribution(name: str, module: str, **fixed):
    def run(ctx: Context, req: Request, stop, progress) -> Result:
        kwargs = dict(fixed)
        if name in ("smoothgrad",):
            kwargs.update(n=req.option("samples", 16), noise=req.option("noise", 0.15))
        if name == "integrated_gradients":
            kwargs.update(steps=req.option("ig_steps", 32))
        a = _fn(module, name)(ctx.model, req.image, target=req.target, preprocess=ctx.preprocess, **kwargs)
        m = render.attribution_map(a)
        return Result("heat", m, values=np.asarray(a, np.float32).sum(axis=-1), note=name.replace("_", " "))
    return run


def _layered_attribution(name: str, *, rgb: bool):
    def run(ctx: Context, req: Request, stop, progress) -> Result:
        a = _fn("nbviz.methods.gradcam" if "gradcam" in name else "nbviz.methods.guided", name)(
            ctx.model, req.image, target=req.target, layer=req.layer or None, preprocess=ctx.preprocess)
        a = np.asarray(a, np.float32)
        note = name.replace("_", " ") + (f" at {req.layer}" if req.layer else "")
        if rgb:  # signed gradients as a picture around mid-grey
            return Result("rgb", render.normalize(a, symmetric=True), values=a.sum(axis=-1), note=note)
        return Result("heat", np.clip(a, 0, 1), values=a, note=note)
    return run


def _occlusion(ctx: Context, req: Request, stop, progress) -> Result:
    window, stride = req.option("window", 16), req.option("stride", 8)
    m = np.asarray(_fn("nbviz.methods.occlusion", "occlusion")(
        ctx.model, req.image, target=req.target, window=window, stride=stride, preprocess=ctx.preprocess), np.float32)
    return Result("heat", render.normalize(m), values=m, note=f"occlusion, window {window}, stride {stride}")


def _activations(ctx: Context, req: Request, stop, progress) -> Result:
    act = np.asarray(_fn("nbviz.methods.activations", "activations")(
        ctx.model, req.image, req.layer, preprocess=ctx.preprocess), np.float32)
    if act.ndim != 3:
        raise ValueError(f"layer {req.layer!r} gives an activation of shape {act.shape}; "
                         "activations need a spatial h×w×c layer")
    c = int(np.clip(req.channel, 0, act.shape[-1] - 1))
    ch = act[..., c]
    return Result("heat", render.normalize(ch), values=ch, activation=act,
                  note=f"{req.layer}: channel {c} of {act.shape[-1]} (click a tile to choose)")


def featvis_preprocess(ctx: Context, image) -> Callable:
    """Map feature-visualisation pictures in [0, 1] to the model's input: scaled to 0..255 when
    the Explorer's image is in that range (uint8 or values above 1), then ``preprocess``.

    One function object per context and range, so repeated runs reuse the compiled step.
    """
    raw255 = np.asarray(image).dtype == np.uint8 or float(np.max(image)) > 1.0
    with ctx._lock:
        if raw255 not in ctx._fv_preprocess:
            pre = ctx.preprocess

            def fn(x):
                y = x * 255.0 if raw255 else x
                return pre(y) if pre is not None else y
            ctx._fv_preprocess[raw255] = fn
        return ctx._fv_preprocess[raw255]


def _featvis(ctx: Context, req: Request, stop, progress) -> Result:
    fv = importlib.import_module("nbviz.featvis")
    o = dict(req.options)
    h, w = req.image.shape[:2]
    spread = float(o.get("scale", 0.1))
    objective = fv.channel(req.layer, int(req.channel))
    last = {}

    def callback(step, images, value):
        last["value"] = float(np.asarray(value).mean())
        progress(step, np.asarray(images)[0], last["value"])

    pictures = fv.render(
        ctx.model, objective, steps=int(o.get("steps", 64)), size=(h, w), param=o.get("param", "fft"),
        lr=float(o.get("lr", 0.05)), jitter=int(o.get("jitter", 8)), scale=(1 - spread, 1 + spread),
        rotate=float(o.get("rotate", 10.0)), blur=float(o.get("blur", 0.0)), octaves=int(o.get("octaves", 1)),
        octave_scale=float(o.get("octave_scale", 1.3)), preprocess=featvis_preprocess(ctx, req.image),
        callback=callback, every=max(1, int(o.get("every", 4))), stop=stop)
    picture = np.asarray(pictures, np.float32)[0]
    value = last.get("value")
    return Result("picture", picture, note=f"channel {req.channel} of {req.layer}"
                  + ("" if value is None else f", objective {value:.4g}")
                  + (" (stopped)" if stop.is_set() else ""))


# --------------------------------------------------------------------------- the table

_ATTR = frozenset({"target"})
METHODS: dict[str, Method] = {m.key: m for m in [
    Method("rf", "receptive field (click)", frozenset({"layer", "mode"}), _rf_click, needs_point=True),
    Method("rf_map", "RF of the class score map", frozenset({"target", "mode"}),
           lambda c, r, s, p: _rf_score_map(c, r, s, p, whole=True)),
    Method("rf_max", "RF of the most activated cell", frozenset({"target", "mode"}),
           lambda c, r, s, p: _rf_score_map(c, r, s, p, whole=False)),
    Method("gradcam", "Grad-CAM", frozenset({"layer", "target"}), _layered_attribution("gradcam", rgb=False)),
    Method("gradcam_pp", "Grad-CAM++", frozenset({"layer", "target"}),
           _layered_attribution("gradcam_plus_plus", rgb=False)),
    Method("guided_gradcam", "guided Grad-CAM", frozenset({"layer", "target"}),
           _layered_attribution("guided_gradcam", rgb=True)),
    Method("guided_backprop", "guided backprop", _ATTR, _layered_attribution("guided_backprop", rgb=True)),
    Method("saliency", "saliency", _ATTR, _attribution("saliency", "nbviz.methods.gradients")),
    Method("smoothgrad", "SmoothGrad", frozenset({"target", "smoothgrad"}),
           _attribution("smoothgrad", "nbviz.methods.gradients")),
    Method("integrated_gradients", "integrated gradients", frozenset({"target", "ig"}),
           _attribution("integrated_gradients", "nbviz.methods.gradients")),
    Method("occlusion", "occlusion", frozenset({"target", "occlusion"}), _occlusion),
    Method("activations", "activations", frozenset({"layer", "channel"}), _activations),
    Method("featvis", "feature visualisation", frozenset({"layer", "channel", "ascent"}), _featvis,
           on_demand=True),
]}

#: state traits each control group reads into ``Request.options``
_OPTION_TRAITS = {
    "mode": ("mode",),
    "smoothgrad": ("samples", "noise"),
    "ig": ("ig_steps",),
    "occlusion": ("window", "stride"),
    "ascent": ("steps", "lr", "blur", "jitter", "scale", "rotate", "octaves", "octave_scale", "param"),
}


def method_options(method: Method, state) -> tuple:
    """The options ``method`` reads from ``state``, as a sorted tuple of (name, value)."""
    names = [n for group in method.controls for n in _OPTION_TRAITS.get(group, ())]
    return tuple(sorted((n, getattr(state, n)) for n in names))
