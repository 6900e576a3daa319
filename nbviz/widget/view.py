"""The Explorer: a thin ipywidgets/ipycanvas view over a :class:`nbviz.session.Session`.

Data flows one way: state (traitlets, generated from the method table) -> an immutable request
-> the session (cache, one-pass groups, worker thread, progressive refinements) -> a result ->
RGBA frames -> canvas. The view keeps controls, painting and text; it names no method: what a
method reads and which controls it shows come from its table row.
"""

from __future__ import annotations

import html
import re
import threading
import time

import numpy as np

import ipywidgets as W

from nbviz.methods import table
from nbviz.session import Result, Session, check_point, clean_error
from nbviz.widget import frames
from nbviz.widget.canvas import LayeredCanvas
from nbviz.widget.controls import TOP, Controls
from nbviz.widget.images import for_model, load_image
from nbviz.widget.labels import class_names, top_predictions
from nbviz.widget.output_view import OutputView
from nbviz.widget.snapshot import HIDE_SNAPSHOT_CSS, Snapshot
from nbviz.widget.state import METHOD_CONTROLS, TILE_SORTS, VIEW, ExplorerState

__all__ = ["Explorer"]

TILES_PER_PAGE = 32
_REQUEST_TRAITS = {"method", "layer", "target", "channel", "point", *METHOD_CONTROLS}


class Explorer(W.VBox):
    """Look inside a Keras image model by clicking on a picture.

    ``Explorer(model=None, image=None, *, labels=None, preprocess=None, session=None, timeline=None,
    compare=None, dictionary=False)``: with no
    model the bundled demo model and one of its images are used. ``image``: numpy array, PIL
    image, file path or a FileUpload value; kept at its size when the model runs at it (any-size
    and subclassed models), resized to the model's input when the model declares a fixed size in
    its Input layer or does not run at the image's size. ``preprocess`` maps the image into the model's input space (e.g.
    ``keras.applications.mobilenet_v2.preprocess_input``); ``labels`` names the classes;
    ``session``: an existing :class:`~nbviz.session.Session` of the same model to share its
    cache with other views. Panels shown below the Explorer: ``timeline``, the folder of a run
    recorded by :class:`nbviz.callbacks.Recorder` (:class:`nbviz.widget.timeline.Timeline`);
    ``compare``, a list of 2-8 method keys (or panes, see
    :class:`~nbviz.widget.compare_view.CompareView`) computed on this Explorer's session and
    following its image (:attr:`compare_view`);
    ``dictionary=True`` (or a dict of its keywords, e.g. ``{"k": 6}``), the semantic dictionary
    of the clicked cell (:mod:`nbviz.widget.dictionary_panel`, :attr:`dictionary_panel`).

    Drive it from code with :meth:`set`, :meth:`click`, :meth:`run`, :meth:`stop`,
    :meth:`wait`; read it with :meth:`frame`, :meth:`to_png`, :attr:`result`,
    :attr:`status_text`. Every method of :mod:`nbviz.methods.table` is offered.
    """

    def __init__(self, model=None, image=None, *, labels=None, preprocess=None, session: Session | None = None,
                 timeline=None, compare=None, dictionary: bool | dict = False):
        run = None
        if timeline is not None:  # a recorded training run, shown below (nbviz.widget.timeline)
            from nbviz.widget.timeline import read_timeline

            run = read_timeline(timeline)
        if model is None and session is None:
            from nbviz import demo

            model = demo.load_model()
            labels = demo.LABELS if labels is None else labels
            if image is None:
                image = demo.image(0)
        if preprocess is not None and not callable(preprocess):
            raise TypeError(f"preprocess must be a function image -> model input, got {type(preprocess).__name__}")
        self._owns_session = session is None
        self.session = session if session is not None else Session(model, preprocess=preprocess)
        self.probe = self.session.probe
        if not self.probe.spatial_layers():
            raise ValueError(f"model {self.probe.model.name!r} has no layer with a spatial (h, w, c) output to explore")
        self.state = ExplorerState(layer=self.probe.spatial_layer().path)
        self._labels_given = labels
        self._result: Result | None = None
        self._shown_key = None
        self._on_demand_results: dict = {}
        self._busy: dict | None = None
        self._busy_timer = None
        self._grid: frames.ChannelGrid | None = None
        self._lock = threading.RLock()
        self._set_image_array(self._read_image(image if image is not None else _grey(self.probe)))
        self.canvas_layers = LayeredCanvas(self.geometry)
        self.canvas = self.canvas_layers.widget
        self.controls = c = Controls(self.state, self.session.layers(self.state.method),
                                     self.session.channels(self.state.layer))
        self._wire()
        #: the dense-output panel (nbviz.widget.output_view), None for other models
        self.output_view = OutputView.attach(self)
        self.snapshot = Snapshot(self.to_png, c.save, self._filename)
        style = W.HTML(HIDE_SNAPSHOT_CSS, layout=W.Layout(display="none"))
        main = W.VBox([self.canvas, c.readout])
        out_panel = [self.output_view.beside(main)] if self.output_view is not None else []
        super().__init__(children=[style, c.top(), W.HBox([main, *out_panel, c.side()]),
                                   c.busy, c.status])
        self.add_class("nbviz-explorer")
        self.timeline = None
        if run is not None:
            from nbviz.widget.timeline import attach

            self.timeline = attach(self, run)
        self.compare_view = None
        if compare is not None:  # the compare view (nbviz/widget/compare_view.py) under the Explorer
            from nbviz.widget.compare_view import CompareView

            self.compare_view = CompareView(session=self.session, image=self.image, image_id=self.image_id,
                                            methods=compare, layer=self.state.layer)
            self.children = (*self.children, self.compare_view)
        self._show_controls()
        self._paint_all()
        self._request()
        self.dictionary_panel = None
        if dictionary:
            from nbviz.widget.dictionary_panel import DictionaryPanel

            self.dictionary_panel = DictionaryPanel(self, **(dictionary if isinstance(dictionary, dict) else {}))
            self.children = (*self.children, self.dictionary_panel)

    # ================================================================ public, synchronous API

    def set(self, **values) -> "Explorer":
        """Set several settings at once, all or nothing: every value is checked (against the
        table's limits, the layer's channels, the image's size, the model's classes) before
        any is applied; a ValueError names the first bad one and nothing changes."""
        s = self.state
        known = set(s.trait_names())
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown Explorer setting(s) {unknown}; known: {sorted(known)}")
        new = {}
        method = table.method(values.get("method", s.method))
        new["method"] = method.key
        layer = values.get("layer", s.layer)
        path = self.probe.spatial_layer(layer).path
        if "layer" in values:
            new["layer"] = path
        if "target" in values:
            t = values["target"]
            n = self.session._classes()
            if t is not None and (isinstance(t, bool) or not isinstance(t, (int, np.integer))
                                  or (n is not None and not 0 <= t < n)):
                raise ValueError(f"target must be None (the top prediction) or a class in [0, {(n or 1) - 1}], got {t!r}")
            new["target"] = None if t is None else int(t)
        channels = self.session.channels(path)
        if "channel" in values:
            ch = values["channel"]
            if isinstance(ch, bool) or not isinstance(ch, (int, np.integer)) or not 0 <= ch < channels:
                raise ValueError(f"channel must be an int in [0, {channels - 1}] for layer {path!r}, got {ch!r}")
            new["channel"] = int(ch)
        elif s.channel >= channels:
            new["channel"] = 0
        if "point" in values:
            new["point"] = None if values["point"] is None else check_point(values["point"], self.image.shape[:2])
        for name in set(values) & (set(METHOD_CONTROLS) | set(VIEW)):
            control = METHOD_CONTROLS.get(name) or VIEW[name]
            new[name] = control.check(values[name])
        if "tile_sort" in values:
            if values["tile_sort"] not in TILE_SORTS:
                raise ValueError(f"tile_sort must be one of {list(TILE_SORTS)}, got {values['tile_sort']!r}")
            new["tile_sort"] = values["tile_sort"]
        if "tile_page" in values:
            pages = max(1, -(-channels // TILES_PER_PAGE))
            p = values["tile_page"]
            if isinstance(p, bool) or not isinstance(p, (int, np.integer)) or not 0 <= p < pages:
                raise ValueError(f"tile_page must be an int in [0, {pages - 1}], got {p!r}")
            new["tile_page"] = int(p)
        if "layer" in new or "method" in new:  # the layer dropdown offers the method's layers
            self._set_layer_options(new["method"], new.get("layer", s.layer))
        with s.hold_trait_notifications():
            for k, v in new.items():
                setattr(s, k, v)
        return self

    def click(self, y: int, x: int) -> "Explorer":
        """Click image pixel (y, x) (what a mouse click on the canvas does)."""
        point = check_point((y, x), self.image.shape[:2])
        self.state.point = point
        self._update_readout(point)
        return self

    def run(self) -> "Explorer":
        """Start the current on-demand method (the Run button); a ValueError if the method
        runs on every change instead."""
        row = table.method(self.state.method)
        if not row.on_demand:
            raise ValueError(f"{row.label} runs on every change; only on-demand methods have Run")
        self._submit(self._make_request(row))
        return self

    def run_featvis(self) -> "Explorer":
        """Show feature visualisation and run it for the current layer and channel."""
        return self.set(method="featvis").run()

    def stop(self) -> None:
        """Stop the running computation; feature visualisation keeps (and shows) its current
        picture."""
        self.session.stop(self._channel)

    def wait(self, timeout: float = 120.0) -> "Explorer":
        """Block until the background work for this view is done (and its result painted)."""
        if not self.session.worker.wait(timeout):
            raise TimeoutError(f"the Explorer was still busy after {timeout} s")
        return self

    def prewarm(self) -> "Explorer":
        """Compute the other methods for the current image, layer and target in the background
        (done when the Explorer is displayed); requests made meanwhile go first."""
        row = table.method(self.state.method)
        self.session.prewarm(self._make_request(row if not row.on_demand else table.METHODS[0]))
        return self

    def set_image(self, image) -> "Explorer":
        """Show another image (any source :class:`Explorer` accepts)."""
        self._set_image_array(self._read_image(image))
        self.canvas_layers.resize(self.geometry)
        self._result = None
        self._shown_key = None
        self._on_demand_results.clear()
        if getattr(self, "compare_view", None) is not None:
            self.compare_view.set_image(self.image, image_id=self.image_id)
        self._paint_all()
        self._request()
        return self

    def frame(self) -> np.ndarray:
        """The composed view (image, overlay, top) as H×W×4 uint8: what the canvas shows."""
        return self.canvas_layers.composed()

    def to_png(self, path=None) -> bytes:
        """The current view as PNG bytes; written to ``path`` when given. (The Save PNG link
        downloads the same picture in the browser.)"""
        from nbviz import render

        return render.to_png(self.frame(), path)

    @property
    def result(self) -> Result | None:
        """The result shown now (display kind, data, values, boxes, note)."""
        return self._result

    @property
    def worker(self):
        return self.session.worker

    @property
    def paints(self):
        return self.canvas_layers.paints

    @property
    def readout_text(self) -> str:
        return _strip_tags(self.controls.readout.value)

    @property
    def status_text(self) -> str:
        return _strip_tags(self.controls.status.value)

    @property
    def busy_text(self) -> str:
        return _strip_tags(self.controls.busy.value)

    def close(self):
        if hasattr(self, "snapshot"):
            self.snapshot.cancel()
            self._stop_busy()
        if getattr(self, "compare_view", None) is not None:
            self.compare_view.close()
        if getattr(self, "dictionary_panel", None) is not None:
            self.dictionary_panel.close()
        if getattr(self, "_owns_session", False):
            self.session.close()
        super().close()

    # ================================================================ image

    def _read_image(self, source):
        try:
            raw = load_image(source)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"Explorer image: {exc}") from None
        return for_model(raw, self.probe)

    def _set_image_array(self, image):
        self.image = image
        self.image_id = self.session.image_id(image)
        self.geometry = frames.display_geometry(*image.shape[:2])
        if hasattr(self, "state") and self.state.point is not None:
            h, w = image.shape[:2]
            if not (self.state.point[0] < h and self.state.point[1] < w):
                self.state.point = None

    # ================================================================ wiring and events

    @property
    def _channel(self) -> str:
        return f"explorer-{id(self)}"

    def _wire(self):
        c = self.controls
        self.canvas.on_mouse_down(self._on_mouse_down)
        self.canvas.on_mouse_move(lambda x, y: self._update_readout(self.geometry.to_image(y, x)))
        c.tiles_canvas.on_mouse_down(self._on_tile_click)
        c.run.on_click(lambda _: self._safely(self.run))
        c.stop.on_click(lambda _: self.stop())
        c.prev_page.on_click(lambda _: self._page(-1))
        c.next_page.on_click(lambda _: self._page(+1))
        c.upload.observe(self._on_upload, names="value")
        self.state.observe(self._on_state)

    def _on_state(self, change):
        name = change["name"]
        if name == "method":
            self._set_layer_options(self.state.method, self.state.layer)
            self._show_controls()
        if name == "layer":
            self.controls.channel.max = max(0, self.session.channels(self.state.layer) - 1)
        if name in ("layer", "method") and self.state.tile_page:
            self.state.tile_page = 0
        if name in _REQUEST_TRAITS:  # first, so the worker starts while the top layer repaints
            self._request()
        if name in ("point", "layer", "grid", "method"):
            self._paint_top()
        if name in ("cmap", "alpha"):
            self._paint_overlay()
        if name in ("tile_sort", "tile_page") or (name == "point" and self.state.tile_sort == "at click"):
            self._paint_tiles()

    def _set_layer_options(self, method: str, layer: str):
        options = self.session.layers(method)
        if layer not in options:
            options = options + [layer]  # the current layer stays selectable; using it says why not
        if list(self.controls.layer.options) != options:
            with self.state.hold_trait_notifications():
                self.controls.layer.options = options
                self.controls.layer.value = layer

    def _show_controls(self):
        row = table.method(self.state.method)
        self.controls.show(row, tiles=self._result is not None and self._result.activation is not None)

    def _on_mouse_down(self, x, y):  # canvas (x, y), as ipycanvas sends it
        self.click(*self.geometry.to_image(y, x))

    def _on_tile_click(self, x, y):
        if self._grid is not None:
            k = self._grid.channel_at(y, x)
            if k is not None:
                self.state.channel = k

    def _page(self, step: int):
        result = self._result
        if result is None or result.activation is None:
            return
        pages = max(1, -(-result.activation.shape[-1] // TILES_PER_PAGE))
        self.state.tile_page = int(np.clip(self.state.tile_page + step, 0, pages - 1))

    def _on_upload(self, change):
        if change["new"]:
            self._safely(lambda: self.set_image(change["new"]))

    def _safely(self, fn):
        try:
            fn()
        except Exception as exc:  # shown, not raised into the void of a callback
            self._show_error(exc, "")

    # ================================================================ requests

    def _make_request(self, row: table.Method):
        s = self.state
        return self.session.request(
            row.key, self.image, image_id=self.image_id, layer=s.layer,
            target=s.target if getattr(self, "output_view", None) is None else self.output_view.target(),
            channel=min(s.channel, self.session.channels(s.layer) - 1), point=s.point,
            options={c.name: getattr(s, c.name) for c in row.controls})

    def _request(self):
        row = table.method(self.state.method)
        try:
            req = self._make_request(row)
        except ValueError as exc:
            self._show_error(exc, "")
            return
        key = self.session.key(req)
        if row.on_demand:  # runs on Run only; show its last result for these settings, if any
            shown = self._result.request if self._result is not None else None
            if shown is not None and self.session.key(shown)[:6] == key[:6]:
                return  # a click or a slider: the run (or its picture) stays
            self.session.cancel(self._channel)
            self._stop_busy()
            last = self._on_demand_results.get(key[:6])
            self._show(last or Result(note=f"{row.label}: press Run to start", request=req), key)
            return
        if key == self._shown_key:
            self.session.cancel(self._channel)  # what is shown is current: older work is stale
            self._stop_busy()
            return
        self._submit(req)

    def _submit(self, req):
        row = req.row
        started = time.perf_counter()

        def on_result(result: Result):
            key = self.session.key(req)  # again: a point counts by its cell once the RF is known
            if result.final and row.on_demand:
                self._on_demand_results[key[:6]] = result
            if self._current_key() != key and not row.on_demand:
                return  # the state moved on (its own request is on its way)
            if not result.final:
                self._busy_progress(result)
            else:
                self._stop_busy()
            self._update_targets()
            self._show(result, key)

        def on_error(exc, tb):
            self._stop_busy()
            self._update_targets()
            self._show_error(exc, tb)

        self._start_busy(row.label, started)
        job = self.session.submit(req, on_result, on_error=on_error, channel=self._channel)
        if job is None:  # served from the cache
            self._stop_busy()

    def _current_key(self):
        try:
            return self.session.key(self._make_request(table.method(self.state.method)))
        except ValueError:
            return None

    # ================================================================ busy indicator

    def _start_busy(self, label: str, started: float):
        with self._lock:
            self._busy = {"label": label, "started": started, "fraction": None, "step": None}
            if self._busy_timer is None:
                self._tick()

    def _busy_progress(self, partial: Result):
        with self._lock:
            if self._busy is not None:
                self._busy.update(fraction=partial.fraction, step=(partial.step, partial.steps))
        if partial.steps:
            c = self.controls
            c.progress.value = min(1.0, partial.step / partial.steps)
            c.progress_text.value = f"step {partial.step} of {partial.steps}"

    def _tick(self):
        with self._lock:
            b = self._busy
            if b is None:
                self._busy_timer = None
                self.controls.busy.value = ""
                return
            elapsed = time.perf_counter() - b["started"]
            parts = [f"computing {html.escape(b['label'])}…", f"{elapsed:.1f} s"]
            step = b["step"]
            if step and step[1]:
                parts.append(f"step {step[0]} of {step[1]}")
            elif b["fraction"] is not None:
                parts.append(f"{b['fraction'] * 100:.0f} %")
            self.controls.busy.value = ("<span style='color:#8a5a00'>⏳ " + " · ".join(parts) + "</span>")
            self._busy_timer = threading.Timer(0.2, self._tick)
            self._busy_timer.daemon = True
            self._busy_timer.start()

    def _stop_busy(self):
        with self._lock:
            self._busy = None
            if self._busy_timer is not None:
                self._busy_timer.cancel()
                self._busy_timer = None
            self.controls.busy.value = ""

    # ================================================================ showing

    def _show(self, result: Result, key):
        self._result = result
        self._shown_key = key if result.final else None
        self._paint_overlay()
        self._paint_tiles()
        self._show_controls()
        self._paint_top()
        if result.steps:  # the progress bar agrees with the status line
            c = self.controls
            c.progress.value = min(1.0, (result.step or 0) / result.steps)
            c.progress_text.value = (f"stopped at step {result.step} of {result.steps}" if result.stopped else
                                     f"step {result.step} of {result.steps}")
        if self.state.point is not None:
            self._update_readout(self.state.point)
        self._set_status(result)
        self.snapshot.schedule()

    def _paint_all(self):
        if getattr(self, "output_view", None) is not None:
            self.output_view.refresh()
        self.canvas_layers.paint("image", frames.image_layer(self.image, self.geometry))
        self._paint_overlay()
        self._paint_top()

    def _paint_overlay(self):
        r, s = self._result, self.state
        rgba = (frames.overlay_layer(r.display, r.data, self.geometry, cmap=s.cmap, alpha=s.alpha)
                if r is not None else frames.overlay_layer(None, None, self.geometry))
        self.canvas_layers.paint("overlay", rgba)

    def _paint_top(self):
        s, r = self.state, self._result
        rf = self.session.context.cached_rf(s.layer)
        on_image = r is None or r.display != "picture"  # marks mean nothing on a generated picture
        point = s.point if on_image else None
        box = rf.box(rf.cell(point)) if (rf is not None and point is not None) else None
        gradient_box = r.gradient_box if r is not None else None
        grid = (rf.stride, rf.offset) if (rf is not None and s.grid and on_image) else None
        top = frames.top_layer(self.geometry, point=point, box=box, gradient_box=gradient_box, grid=grid)
        if getattr(self, "output_view", None) is not None and on_image:
            self.output_view.draw_on_input(top, self.geometry)  # the clicked output region's RF
        self.canvas_layers.paint("top", top)

    def _paint_tiles(self):
        r, s, c = self._result, self.state, self.controls
        if r is None or r.activation is None:
            self._grid = None
            return
        act = r.activation
        cell = None
        rf = self.session.context.cached_rf(s.layer)
        if s.point is not None and rf is not None:
            cy, cx = (int(v) for v in rf.cell(s.point))
            cell = (min(max(cy, 0), act.shape[0] - 1), min(max(cx, 0), act.shape[1] - 1))
        order = frames.channel_order(act, s.tile_sort, cell)
        n = len(order)
        page = min(s.tile_page, max(0, (n - 1) // TILES_PER_PAGE))
        shown = order[page * TILES_PER_PAGE:(page + 1) * TILES_PER_PAGE]
        self._grid = frames.channel_grid(act, shown, selected=r.request.channel if r.request else s.channel)
        gh, gw = self._grid.image.shape[:2]
        c.tiles_canvas.width, c.tiles_canvas.height = gw, gh
        c.tiles_canvas.layout.width, c.tiles_canvas.layout.height = f"{gw}px", f"{gh}px"
        from nbviz.widget.canvas import PAINT_LOCK, put_rgba
        from ipycanvas import hold_canvas

        with PAINT_LOCK, hold_canvas():
            put_rgba(c.tiles_canvas, self._grid.image)
        sort = {"index": "by index", "mean": "by mean activation",
                "at click": "by activation at the clicked cell" if cell else "by mean (click for the cell)"}[s.tile_sort]
        c.page_text.value = f"{page * TILES_PER_PAGE + 1}–{min(n, (page + 1) * TILES_PER_PAGE)} of {n}, {sort}"

    # ================================================================ text

    def _update_readout(self, point):
        y, x = point
        s = self.state
        parts = [f"pointer (y={y}, x={x})"]
        rf = self.session.context.cached_rf(s.layer)
        if rf is not None:
            parts.append(f"cell {tuple(int(v) for v in rf.cell(point))}")
        r = self._result
        if r is not None and r.values is not None and np.ndim(r.values) == 2:
            vh, vw = r.values.shape
            h, w = self.image.shape[:2]
            parts.append(f"value {float(r.values[min(vh - 1, y * vh // h), min(vw - 1, x * vw // w)]):.4g}")
        if rf is not None:
            parts.append(f"RF size {_pair(rf.size)}, stride {_pair(rf.stride)}, offset {_pair(rf.offset)} at {s.layer}")
        else:
            parts.append(f"RF of {s.layer}: not known")
        self.controls.readout.value = "<span style='font-family:monospace'>" + html.escape(" · ".join(parts)) + "</span>"

    def _set_status(self, result: Result):
        """The status line describes what the canvas shows: the shown result's own note."""
        extra = []
        if not result.final:
            extra.append(f"refining, {result.fraction * 100:.0f} %")
        elif result.elapsed_ms is not None:
            extra.append(f"{result.elapsed_ms:.0f} ms" if result.elapsed_ms >= 1 else "from the cache")
        tail = f" <span style='color:#888'>· {' · '.join(extra)}</span>" if extra else ""
        self.controls.status.value = f"<span style='color:#444'>{html.escape(result.note)}</span>{tail}"

    def _show_error(self, exc, tb: str = ""):
        # the canvas shows the picture alone, so the status line only has the error to describe
        self._result = None
        self._shown_key = None
        self._paint_overlay()
        self._paint_top()
        msg = html.escape(clean_error(exc))
        details = f"<details><summary>traceback</summary><pre>{html.escape(tb)}</pre></details>" if tb else ""
        self.controls.status.value = f"<div style='color:#b00020'><b>error</b> {msg}{details}</div>"

    def _update_targets(self):
        scores = self.session.context.cached_predictions(self.image_id)
        if scores is None:
            try:
                scores = self.session.context.predictions(self.image_id, self.image)
            except Exception:
                return
        names = class_names(scores.shape[-1], self._labels_given)
        options = [("top prediction", TOP)] + [(f"{names[i]} ({v:.3g})", i) for i, v in top_predictions(scores, 5)]
        if getattr(self, "output_view", None) is not None:
            options = self.output_view.target_options(options)
        target = self.state.target
        if target is not None and target not in [o[1] for o in options]:
            options.append((names[target] if 0 <= target < len(names) else f"class {target}", target))
        w = self.controls.target
        if list(w.options) != options:
            with self.state.hold_trait_notifications():
                w.options = options
                w.value = TOP if target is None else target

    def _filename(self) -> str:
        row = table.method(self.state.method)
        return f"nbviz-{row.key}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', self.state.layer)}.png"

    # ================================================================ display

    def _ipython_display_(self):
        self.wait(10.0)  # the first result, so the saved snapshot shows it
        self.snapshot.display(self)
        self.prewarm()

    def __repr__(self):
        row = table.method(self.state.method)
        return (f"nbviz Explorer: {self.probe.model.name}, {row.label} at {self.state.layer} "
                "(live view needs a running kernel; snapshot below)")


def _pair(v) -> str:
    a, b = (float(t) for t in v)
    fmt = lambda t: f"{t:g}"  # noqa: E731
    return f"{fmt(a)}×{fmt(b)}" if a != b else fmt(a)


def _strip_tags(text: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", text))


def _grey(probe):
    h, w = probe.input_size()
    return np.full((h, w, 3), 128, np.uint8)
