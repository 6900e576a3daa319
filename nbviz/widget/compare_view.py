"""The compare view: 2 to 8 attribution maps of one image side by side, each with the numbers
that say whether to trust it.

``CompareView(model, image, methods=["gradcam", "saliency", ...])`` or
``Explorer(..., compare=[...])`` (then it shares the Explorer's session). Each pane is a method of
:mod:`nbviz.methods.table` (a key), optionally at a layer (``("gradcam", "block2_conv")``) or on
the randomised model (``{"method": "gradcam", "randomised": True}``); see
:mod:`nbviz.widget.compare_panes` for what a pane accepts, its colours and its scale.

Computation never blocks the kernel. Every pane is a request to the shared
:class:`~nbviz.session.Session` (one cache, one set of compiled functions, one worker thread; one
channel per pane, so a newer request for a pane replaces its older one and panes do not cancel
each other); progressive methods repaint while they refine. When a pane's final map arrives, a
second background job measures it:

* trained panes: deletion and insertion AUC (:func:`nbviz.metrics.curves`: one batch for both
  curves; ``steps``, ``baseline``, ``score`` as there; the target is the one the map explains),
  shown as "…" until known;
* the pointing game (:func:`nbviz.metrics.pointing_game`) when the object's region is known:
  ``box=`` (top, left, bottom, right) or ``mask=`` (H×W), or found automatically when the image
  is one of :mod:`nbviz.demo`'s scenes; its outline is drawn in green;
* randomised panes: the Spearman rank correlation of ``|map|`` with the trained model's map of
  the same method (:func:`nbviz.sanity.similarity`, ``spearman_abs``; near 1: the map ignores
  what the top layer learned). The randomised model is a copy of the model whose top weighted
  layer is re-initialised (the first step of :func:`nbviz.sanity.model_randomisation`'s cascade,
  ``seed``); it explains the trained model's top class. The "sanity" toggle adds the randomised
  pane of every trained pane.

A click on any pane sets the point of all: every pane draws the crosshair and the theoretical
receptive-field box of the cell under it (of the pane's layer; the view's ``layer`` for methods
that read none). Drive it from code with :meth:`CompareView.set`, :meth:`CompareView.click`,
:meth:`CompareView.wait`; read it with :meth:`CompareView.frame` (numpy RGBA, what a pane's canvas
shows), :attr:`CompareView.panes` and :meth:`CompareView.score_line`.
"""

from __future__ import annotations

import html
import re
import threading
import warnings

import numpy as np

import ipywidgets as W
from ipycanvas import Canvas, hold_canvas

from nbviz.session import Result, Session, check_point, clean_error
from nbviz.widget import compare_panes as cp
from nbviz.widget import frames
from nbviz.widget.canvas import PAINT_LOCK, put_rgba
from nbviz.widget.images import for_model, load_image

__all__ = ["CompareView", "Pane"]

DEFAULT_METHODS = ("gradcam", "saliency", "integrated_gradients", "occlusion")


class Pane:
    """One pane's live state: ``spec``, ``layer`` (the layer its method reads, else None),
    ``result`` (the :class:`~nbviz.session.Result` shown), ``scores`` (``deletion``,
    ``insertion``, ``pointing_game``, ``spearman_abs``: the ones measured so far), ``scale``
    (its colour scale), ``error`` (one line, or None), ``frame`` (what its canvas shows)."""

    def __init__(self, spec: cp.PaneSpec, layer: str | None, index: int, owner: int):
        self.spec = spec
        self.layer = layer
        self.channel = f"compare-{owner}-{index}"
        self.result: Result | None = None
        self.scores: dict = {}
        self.scale: float | None = None
        self.error: str | None = None
        self.frame: np.ndarray | None = None
        self.generation = 0
        self.canvas = None
        self.title = W.HTML(f"<b>{html.escape(spec.title(layer))}</b>")
        self.text = W.HTML("", layout=W.Layout(min_height="1.4em"))
        self.text.add_class("nbviz-compare-scores")
        self.box = None

    @property
    def key(self) -> str:
        return self.spec.method

    @property
    def raw(self) -> np.ndarray | None:
        """The method's own output for the shown (final) map."""
        r = self.result
        return None if r is None or not r.final else r.raw

    def __repr__(self):
        return f"Pane({self.spec.title(self.layer)}, scores={self.scores})"


class CompareView(W.VBox):
    """See the module docstring.

    ``CompareView(model=None, image=None, *, methods=DEFAULT_METHODS, layer=None, target=None,
    preprocess=None, session=None, box=None, mask=None, sanity=False, scale="own",
    share="method", alpha=0.6, steps=20, baseline="blur", score="probability", seed=0)``.
    With no model (and no session) the bundled demo model and scene 0 are used. ``layer``: the
    layer of methods that read one (default: the last spatial layer); ``target`` None: the top
    prediction. ``scale``: "own", "max" or "p99.5" (one scale), ``share``: "method" or "all".
    """

    def __init__(self, model=None, image=None, *, methods=DEFAULT_METHODS, layer=None, target=None,
                 preprocess=None, session: Session | None = None, image_id: int | None = None, box=None,
                 mask=None, sanity: bool = False, scale: str = "own", share: str = "method",
                 alpha: float = 0.6, steps: int = 20, baseline="blur", score: str = "probability",
                 seed: int = 0):
        from nbviz import metrics as _metrics

        if model is None and session is None:
            from nbviz import demo

            model = demo.load_model()
            if image is None:
                image = demo.image(0)
        if session is not None and model is not None and session.model is not model:
            raise ValueError("model: the session belongs to another model; pass one of them")
        self._owns_session = session is None
        self.session = session if session is not None else Session(model, preprocess=preprocess)
        self.probe = self.session.probe
        if not self.probe.spatial_layers():
            raise ValueError(f"model {self.probe.model.name!r} has no layer with a spatial (h, w, c) output")
        self.layer = self.probe.spatial_layer(layer).path
        self.specs = cp.parse_panes(list(methods) if isinstance(methods, tuple) else methods,
                                    lambda spec: self.probe.spatial_layer(spec).path)
        for spec in self.specs:  # a layer the score does not flow through fails now, not in a pane
            row = spec.row
            lay = spec.layer or self.layer
            if "layer" in row.needs and row.layers == "differentiable" and lay not in self.session.layers(row.key):
                raise ValueError(f"methods: {row.label} cannot use layer {lay!r}")
        for name, value, allowed in (("scale", scale, cp.SCALES), ("share", share, cp.SHARES)):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {list(allowed)}, got {value!r}")
        if not isinstance(sanity, bool):
            raise ValueError(f"sanity must be True or False, got {sanity!r}")
        self._check_alpha(alpha)
        _metrics._steps(steps)
        _metrics._score_kind(score)
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise TypeError(f"seed must be an int, got {seed!r}")
        self.steps, self.baseline, self.score, self.seed = int(steps), baseline, score, int(seed)
        self.sanity, self.scale, self.share, self.alpha = sanity, scale, share, float(alpha)
        self._lock = threading.RLock()
        self._scores_cache: dict = {}
        self._random: tuple | None = None  # (top layer path, Session of the randomised copy)
        self.point: tuple[int, int] | None = None
        self._panes: dict[int, Pane] = {}
        self._set_image(image if image is not None else _grey(self.probe), image_id, box, mask)
        if target is not None:
            self.session.request(self.specs[0].method, self.image, image_id=self.image_id, target=target)
        self.target = target
        self._build_widgets()
        super().__init__(children=[self._controls, self._grid, self._readout])
        self.add_class("nbviz-compare")
        self._layout_panes()
        self._ensure_rf()
        self._request_all()

    # ================================================================ public API

    @property
    def panes(self) -> list[Pane]:
        """The panes shown, in order: the ``methods`` given, then (with sanity) the randomised
        pane of each trained one."""
        return [self._panes[i] for i in self._indices()]

    def set(self, **values) -> "CompareView":
        """Change ``sanity``, ``scale``, ``share`` or ``alpha``, all or nothing (every value is
        checked first; a ValueError names the first bad one)."""
        known = {"sanity", "scale", "share", "alpha"}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown CompareView setting(s) {unknown}; known: {sorted(known)}")
        if "sanity" in values and not isinstance(values["sanity"], bool):
            raise ValueError(f"sanity must be True or False, got {values['sanity']!r}")
        for name, allowed in (("scale", cp.SCALES), ("share", cp.SHARES)):
            if name in values and values[name] not in allowed:
                raise ValueError(f"{name} must be one of {list(allowed)}, got {values[name]!r}")
        if "alpha" in values:
            self._check_alpha(values["alpha"])
        with self._lock:
            for k, v in values.items():
                setattr(self, k, float(v) if k == "alpha" else v)
            self._sync_controls()
            if "sanity" in values:
                self._layout_panes()
                self._request_all(only_new=True)
            self._repaint()
        return self

    def click(self, y: int, x: int) -> "CompareView":
        """Set the point (image pixel y, x) of every pane: what a click on any pane does."""
        self.point = check_point((y, x), self.image.shape[:2])
        self._repaint()
        self._update_readout()
        return self

    def wait(self, timeout: float = 120.0) -> "CompareView":
        """Block until every pane's map and scores are computed and shown."""
        if not self.session.worker.wait(timeout):
            raise TimeoutError(f"the compare view was still busy after {timeout} s")
        return self

    def frame(self, i: int) -> np.ndarray:
        """Pane ``i``'s picture (H×W×4 uint8): what its canvas shows."""
        return self.panes[i].frame

    def score_line(self, i: int) -> str:
        """The text under pane ``i``."""
        return _strip_tags(self.panes[i].text.value)

    def set_image(self, image, *, image_id: int | None = None, box=None, mask=None) -> "CompareView":
        """Compare on another image (``box``/``mask``: its object, else found for demo scenes)."""
        before = self.geometry
        self._set_image(image, image_id, box, mask)
        with self._lock:
            self.point = None
            shown = set(self._indices()) if self.geometry == before else set()  # new size: new canvases
            for i in [i for i in self._panes if i not in shown]:  # rebuilt (and computed) when shown
                self._panes[i].generation += 1  # its work in flight is dropped
                del self._panes[i]
            for p in self._panes.values():
                p.result, p.scores, p.error = None, {}, None
            self._layout_panes()
            self._request_all()
            self._repaint()
        return self

    @property
    def random_layer(self) -> str | None:
        """The layer re-initialised in the randomised model (once it is built)."""
        return self._random[0] if self._random else None

    def close(self):
        for p in getattr(self, "_panes", {}).values():
            self.session.cancel(p.channel)
            self.session.cancel(p.channel + "-scores")
        if getattr(self, "_owns_session", False):
            self.session.close()
        super().close()

    # ================================================================ image and truth

    def _set_image(self, image, image_id, box, mask):
        try:
            raw = load_image(image)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"CompareView image: {exc}") from None
        img = for_model(raw, self.probe)
        from nbviz import metrics as _metrics

        if box is not None and mask is not None:
            raise ValueError("give box= or mask=, not both")
        given = box if box is not None else mask
        if given is not None:
            try:
                region = _metrics._region(given, img.shape[:2])
            except (TypeError, ValueError) as exc:
                raise type(exc)(f"{'box' if box is not None else 'mask'}: {exc}") from None
        else:
            found_box, found_mask = cp.demo_truth(img)
            region = found_mask
        self.image = img
        self.region = region
        self.image_id = self.session.image_id(img) if image_id is None else int(image_id)
        self.geometry = frames.display_geometry(*img.shape[:2], target=192, largest=256)

    # ================================================================ widgets

    def _build_widgets(self):
        self._sanity_w = W.ToggleButton(self.sanity, description="sanity", icon="random",
                                        tooltip="add the map of each method on the model with its top layer "
                                                "randomised, with the rank correlation")
        self._scale_w = W.ToggleButtons(options=[("own scale", "own"), ("one scale (max)", "max"),
                                                 ("one scale (p99.5)", "p99.5")], value=self.scale,
                                        style={"button_width": "125px"},
                                        tooltip="colour scale: each map its own maximum, or one scale shared")
        self._share_w = W.Checkbox(self.share == "all", description="one scale across methods", indent=False)
        self._alpha_w = W.FloatSlider(self.alpha, min=0.0, max=1.0, step=0.05, description="opacity")
        self._sanity_w.observe(lambda c: self._safely(lambda: self.set(sanity=c["new"])), names="value")
        self._scale_w.observe(lambda c: self._safely(lambda: self.set(scale=c["new"])), names="value")
        self._share_w.observe(lambda c: self._safely(lambda: self.set(share="all" if c["new"] else "method")),
                              names="value")
        self._alpha_w.observe(lambda c: self._safely(lambda: self.set(alpha=c["new"])), names="value")
        self._controls = W.HBox([self._sanity_w, self._scale_w, self._share_w, self._alpha_w])
        self._grid = W.GridBox([], layout=W.Layout(grid_gap="6px"))
        self._readout = W.HTML("")
        self._readout.add_class("nbviz-compare-readout")

    def _sync_controls(self):
        for w, v in ((self._sanity_w, self.sanity), (self._scale_w, self.scale),
                     (self._share_w, self.share == "all"), (self._alpha_w, self.alpha)):
            if w.value != v:
                w.value = v

    def _safely(self, fn):
        try:
            fn()
        except Exception as exc:
            self._readout.value = f"<span style='color:#b00020'>{html.escape(clean_error(exc))}</span>"

    def _indices(self) -> list[int]:
        n = len(self.specs)
        extra = [n + i for i, s in enumerate(self.specs) if self.sanity and not s.randomised
                 and not any(t.randomised and t.method == s.method and t.layer == s.layer for t in self.specs)]
        return list(range(n)) + extra

    def _spec(self, i: int) -> cp.PaneSpec:
        n = len(self.specs)
        if i < n:
            return self.specs[i]
        s = self.specs[i - n]
        return cp.PaneSpec(s.method, s.layer, True)

    def _layout_panes(self):
        g = self.geometry
        boxes = []
        for i in self._indices():
            if i not in self._panes:
                spec = self._spec(i)
                layer = (spec.layer or self.layer) if "layer" in spec.row.needs else None
                p = self._panes[i] = Pane(spec, layer, i, id(self))
                p.canvas = Canvas(width=g.W, height=g.H, layout=W.Layout(width=f"{g.W}px", height=f"{g.H}px"))
                p.canvas.on_mouse_down(lambda x, y: self._safely(lambda: self.click(*self.geometry.to_image(y, x))))
                p.canvas.on_client_ready(lambda p=p: self._put(p, force=True))
                p.box = W.VBox([p.title, p.canvas, p.text], layout=W.Layout(width=f"{g.W + 4}px"))
                p.box.add_class("nbviz-compare-pane")
                self._paint(p)
            boxes.append(self._panes[i].box)
        columns = min(4, len(boxes))
        self._grid.layout.grid_template_columns = f"repeat({columns}, {g.W + 4}px)"
        self._grid.children = boxes

    # ================================================================ computing

    def _request_all(self, only_new: bool = False):
        for i in self._indices():
            p = self._panes[i]
            if only_new and (p.result is not None or p.generation):
                continue
            self._submit(p)

    def _target_for_random(self) -> int | None:
        return self.target if self.target is not None else self.session.context.top_class(self.image_id, self.image)

    def _submit(self, p: Pane):
        with self._lock:
            p.generation += 1
            gen = p.generation
            p.error = None
        self._paint(p)

        def on_result(result: Result):
            with self._lock:
                if gen != p.generation:
                    return
                p.result = result
                if result.final and self.region is not None:
                    from nbviz import metrics as _metrics

                    p.scores["pointing_game"] = _metrics.pointing_game(result.raw, self.region)
            self._repaint()
            if result.final:
                self._measure(p, gen, result)

        def on_error(exc, tb=""):
            with self._lock:
                if gen != p.generation:
                    return
                p.result, p.error = None, clean_error(exc)
            self._repaint()

        if not p.spec.randomised:
            try:
                req = self.session.request(p.spec.method, self.image, image_id=self.image_id,
                                           layer=p.layer, target=self.target)
            except ValueError as exc:
                on_error(exc)
                return
            self.session.submit(req, on_result, on_error=on_error, channel=p.channel)
            return

        image, image_id = self.image, self.image_id

        def run(job):
            session = self._random_session()
            req = session.request(p.spec.method, image, image_id=image_id, layer=p.layer,
                                  target=self._target_for_random())
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # a zero map is a valid outcome
                return session.compute(req, stop=job.stop)

        self.session.worker.submit(run, on_result, on_error, channel=p.channel, name=p.spec.method)

    def _random_session(self) -> Session:
        """The session of the randomised copy (built once, on the worker thread); it shares this
        view's worker and its image ids."""
        if self._random is None:  # only the worker thread builds it: no lock held while cloning
            from nbviz import sanity

            path, copy = next(sanity._steps(self.session.model, "cascade", self.seed, None))
            rs = Session(copy, preprocess=self.session.context.preprocess)
            rs.worker.close()
            rs.worker = self.session.worker
            rs._ids = self.session._ids
            with self._lock:
                self._random = (path, rs)
        return self._random[1]

    def _measure(self, p: Pane, gen: int, result: Result):
        """Score pane ``p``'s final map in the background (cached per map and settings)."""
        session = self._random[1] if p.spec.randomised else self.session
        key = (p.spec.randomised, session.key(result.request), self.steps, str(self.baseline), self.score)
        with self._lock:
            hit = self._scores_cache.get(key)
            if hit is not None:
                p.scores.update(hit)
        if hit is not None:
            self._paint(p)
            return
        image, raw, target = self.image, result.raw, self.target

        def run(job):
            from nbviz import metrics as _metrics
            from nbviz import sanity as _sanity

            if p.spec.randomised:
                trained = self.session.compute(self.session.request(
                    p.spec.method, image, image_id=self.image_id, layer=p.layer, target=target))
                return {"spearman_abs": _sanity.similarity(trained.raw, raw)["spearman_abs"]}
            curves = _metrics.curves(self.session.model, image, raw, target=target, steps=self.steps,
                                     baseline=self.baseline, score=self.score,
                                     preprocess=self.session.context.preprocess)
            return {k: c.auc for k, c in curves.items()}

        def done(scores):
            with self._lock:
                self._scores_cache[key] = scores
                while len(self._scores_cache) > 128:
                    self._scores_cache.pop(next(iter(self._scores_cache)))
                if gen != p.generation:
                    return
                p.scores.update(scores)
            self._paint(p)

        def failed(exc, tb):
            with self._lock:
                if gen == p.generation:
                    p.error = f"scores: {clean_error(exc)}"
            self._paint(p)

        self.session.worker.submit(run, done, failed, channel=p.channel + "-scores", name="scores")

    def _ensure_rf(self):
        layers = sorted({self.layer, *(p.layer for p in self._panes.values() if p.layer)})

        def run(job):
            for layer in layers:
                try:
                    self.session.context.receptive_field(layer)
                except Exception:
                    pass  # a layer without a receptive field: no box is drawn
        self.session.worker.submit(run, lambda _: self._repaint(), lambda e, t: None,
                                   channel=f"compare-{id(self)}-rf", name="receptive fields")

    # ================================================================ painting

    def _repaint(self):
        with self._lock:
            panes = self.panes
            scales = cp.pane_scales([(p.key, p.result.display if p.result else None,
                                      p.result.data if p.result and p.result.display else None)
                                     for p in panes], self.scale, self.share)
            for p, s in zip(panes, scales):
                p.scale = s
        for p in panes:
            self._paint(p)

    def _paint(self, p: Pane):
        with self._lock:
            r = p.result
            rf = self.session.context.cached_rf(p.layer or self.layer)
            box = rf.box(rf.cell(self.point)) if (rf is not None and self.point is not None) else None
            frame = cp.pane_frame(self.image, r.display if r is not None else None,
                                  r.data if r is not None else None, self.geometry, scale=p.scale,
                                  alpha=self.alpha, point=self.point, box=box, region=self.region)
            text = cp.score_text(p.scores, randomised=p.spec.randomised, error=p.error,
                                 region=self.region is not None)
            if r is not None and not r.final and not p.error:
                text = f"<span style='color:#8a5a00'>refining {r.fraction * 100:.0f} %</span> " + text
            changed = p.frame is None or not np.array_equal(p.frame, frame)
            p.frame = frame
        if p.text.value != text:
            p.text.value = text
        if changed:
            self._put(p)

    def _put(self, p: Pane, force: bool = False):
        if p.canvas is None or p.frame is None:
            return
        if force:  # a new page connected: ipycanvas must switch to this canvas again
            manager = getattr(p.canvas, "_canvas_manager", None)
            if manager is not None and hasattr(manager, "_current_canvas"):
                manager._current_canvas = None
        with PAINT_LOCK, hold_canvas():
            put_rgba(p.canvas, p.frame)

    def _update_readout(self):
        if self.point is None:
            self._readout.value = ""
            return
        y, x = self.point
        parts = [f"point (y={y}, x={x})"]
        rf = self.session.context.cached_rf(self.layer)
        if rf is not None:
            parts.append(f"cell {tuple(int(v) for v in rf.cell(self.point))} at {self.layer}, "
                         f"RF {rf.box(rf.cell(self.point))}")
        self._readout.value = "<span style='font-family:monospace'>" + html.escape(" · ".join(parts)) + "</span>"

    @staticmethod
    def _check_alpha(alpha):
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
            raise ValueError(f"alpha must be a number in [0, 1], got {alpha!r}")

    def __repr__(self):
        return (f"nbviz CompareView: {self.probe.model.name}, "
                + ", ".join(p.spec.title(p.layer) for p in self.panes))


def _strip_tags(text: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", text))


def _grey(probe):
    h, w = probe.input_size()
    return np.full((h, w, 3), 128, np.uint8)
