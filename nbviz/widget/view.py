"""The Explorer: ipywidgets controls and an ipycanvas MultiCanvas over the method functions.

Data flows one way: state (traitlets) -> request -> method function (off the main thread) ->
numpy result -> RGBA frames -> canvas. Only the layers whose inputs changed are repainted.
"""

from __future__ import annotations

import base64
import html
import threading
import time
from collections import Counter, OrderedDict

import numpy as np

import ipywidgets as W
from ipycanvas import Canvas, MultiCanvas, hold_canvas

from nbviz import render
from nbviz.probe import probe as get_probe
from nbviz.widget import frames
from nbviz.widget.images import fit_image, load_image
from nbviz.widget.labels import class_names, top_predictions
from nbviz.widget.methods import METHODS, Context, Request, Result, method_options
from nbviz.widget.state import COMPUTE_TRAITS, OVERLAY_TRAITS, TOP_TRAITS, ExplorerState
from nbviz.widget.worker import Worker

__all__ = ["Explorer"]

# ipycanvas' hold_canvas switches one global cache on and off: one painter at a time
_PAINT_LOCK = threading.RLock()
_LAYERS = ("image", "overlay", "top")
_TOP = -1  # the target dropdown's value for "the top prediction" (state.target None)
_CACHE_SIZE = 24
# hides the live notebook's copy of the static snapshot (the output right after the Explorer);
# static renderers (nbconvert, GitHub) do not run the widget, so there the snapshot shows
_HIDE_SNAPSHOT_CSS = (
    "<style>.jp-OutputArea-child:has(.nbviz-explorer) + .jp-OutputArea-child,"
    ".output_area:has(.nbviz-explorer) + .output_area{display:none}</style>"
)


class Explorer(W.VBox):
    """Look inside a Keras image model by clicking on a picture.

    ``Explorer(model=None, image=None, *, labels=None, preprocess=None)``: with no model the
    bundled demo model and one of its images are used. ``image``: numpy array, PIL image, file
    path or a FileUpload value; resized to the model's input when it has a fixed size.
    ``preprocess`` maps the image into the model's input space (e.g.
    ``keras.applications.mobilenet_v2.preprocess_input``); ``labels`` names the classes.

    Drive it from code with :meth:`set`, :meth:`click`, :meth:`run_featvis`, :meth:`wait`;
    read it with :meth:`frame` and :meth:`to_png`.
    """

    def __init__(self, model=None, image=None, *, labels=None, preprocess=None):
        if model is None:
            from nbviz import demo

            model = demo.load_model()
            labels = demo.LABELS if labels is None else labels
            if image is None:
                image = demo.image(0)
        if preprocess is not None and not callable(preprocess):
            raise TypeError(f"preprocess must be a function image -> model input, got {type(preprocess).__name__}")
        self.ctx = Context(model, preprocess)
        self.probe = get_probe(model)
        spatial = self.probe.spatial_layers()
        if not spatial:
            raise ValueError(f"model {model.name!r} has no layer with a spatial (h, w, c) output to explore")
        self.state = ExplorerState(layer=self.probe.spatial_layer().path)
        self.worker = Worker()
        self.paints: Counter = Counter()  # repaints per canvas layer (tests, benchmarks)
        self.timings: dict = {}
        self._labels_given = labels
        self._cache: OrderedDict = OrderedDict()
        self._predictions: dict = {}
        self._image_version = 0
        self._job = None
        self._shown_key = None
        self._result: Result | None = None
        self._layers: dict[str, np.ndarray] = {}
        self._grid: frames.ChannelGrid | None = None
        self._display_handle = None
        self._snapshot_timer = None
        self._featvis_results: dict = {}
        self._set_image_array(self._read_image(image if image is not None else _grey(self.probe)))
        self._build_controls(spatial)
        super().__init__(children=self._children())
        self.add_class("nbviz-explorer")
        self.state.observe(self._on_state, names=sorted(set(COMPUTE_TRAITS + OVERLAY_TRAITS + TOP_TRAITS)))
        self._repaint_all()
        self._request()

    # ================================================================ public, synchronous API

    def set(self, **values) -> "Explorer":
        """Set state traits (method, layer, target, channel, mode, cmap, alpha, grid, steps, ...)."""
        unknown = sorted(set(values) - set(self.state.trait_names()))
        if unknown:
            raise ValueError(f"unknown Explorer setting(s) {unknown}; known: {sorted(self.state.trait_names())}")
        if "method" in values and values["method"] not in METHODS:
            raise ValueError(f"unknown method {values['method']!r}; choose one of {sorted(METHODS)}")
        if "layer" in values:
            values["layer"] = self.probe.spatial_layer(values["layer"]).path
        with self.state.hold_trait_notifications():
            for k, v in values.items():
                setattr(self.state, k, v)
        return self

    def click(self, y: int, x: int) -> "Explorer":
        """Click image pixel (y, x) (what a mouse click on the canvas does)."""
        h, w = self.image.shape[:2]
        if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in (y, x)):
            raise TypeError(f"click(y, x) takes integer pixel coordinates, got ({y!r}, {x!r})")
        if not (0 <= y < h and 0 <= x < w):
            raise ValueError(f"click ({y}, {x}) is outside the {h}×{w} image")
        self.state.point = (int(y), int(x))
        self._update_readout((int(y), int(x)))
        return self

    def wait(self, timeout: float = 120.0) -> "Explorer":
        """Block until the background work is done (and its result painted)."""
        if not self.worker.wait(timeout):
            raise TimeoutError(f"the Explorer was still busy after {timeout} s")
        return self

    def run_featvis(self) -> "Explorer":
        """Start a feature visualisation of the current layer and channel (the Run button)."""
        self.state.method = "featvis"
        self._submit(self._make_request(METHODS["featvis"]), force=True)
        return self

    def stop(self) -> None:
        """Stop a running feature visualisation; it keeps its current picture (the Stop button)."""
        if self._job is not None:
            self._job.stop.set()

    def set_image(self, image) -> "Explorer":
        """Show another image (any source :class:`Explorer` accepts)."""
        self._set_image_array(self._read_image(image))
        self._cache.clear()
        self._shown_key = None
        self._result = None
        self._paint("image", frames.image_layer(self.image, self.geometry))
        self._paint("overlay", self._overlay_rgba())
        self._paint_top()
        self._request()
        return self

    def frame(self) -> np.ndarray:
        """The composed view (image, overlay, top) as H×W×4 uint8: what the canvas shows."""
        with _PAINT_LOCK:
            return render.composite(*(self._layers[k] for k in _LAYERS))

    def to_png(self, path=None) -> bytes:
        """The current view as PNG bytes; written to ``path`` when given."""
        return render.to_png(self.frame(), path)

    @property
    def result(self) -> Result | None:
        """The result shown now (overlay data, values, boxes, note)."""
        return self._result

    @property
    def readout_text(self) -> str:
        return _strip_tags(self.readout.value)

    @property
    def status_text(self) -> str:
        return _strip_tags(self.status.value)

    def close(self):
        if hasattr(self, "worker"):
            self.worker.close()
        timer = getattr(self, "_snapshot_timer", None)
        if timer is not None:
            timer.cancel()
        super().close()

    # ================================================================ image

    def _read_image(self, source):
        try:
            raw = load_image(source)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"Explorer image: {exc}") from None
        spec = self.probe.image_input
        size = (spec.height, spec.width) if spec.height and spec.width else None
        return fit_image(raw, size, spec.channels)

    def _set_image_array(self, image):
        self.image = image
        self._image_version += 1
        self.geometry = frames.display_geometry(*image.shape[:2])
        if hasattr(self, "canvas"):
            g = self.geometry
            self.canvas.width, self.canvas.height = g.W, g.H
            self.canvas.layout.width, self.canvas.layout.height = f"{g.W}px", f"{g.H}px"

    # ================================================================ controls

    def _build_controls(self, spatial):
        s, g = self.state, self.geometry
        self.canvas = MultiCanvas(3, width=g.W, height=g.H, layout=W.Layout(width=f"{g.W}px", height=f"{g.H}px"))
        self.canvas.on_mouse_down(self._on_mouse_down)
        self.canvas.on_mouse_move(self._on_mouse_move)
        self.canvas.on_client_ready(self._on_client_ready)
        wide = {"description_width": "70px"}
        self.method_w = W.Dropdown(options=[(m.label, k) for k, m in METHODS.items()], description="method", style=wide)
        self.layer_w = W.Dropdown(options=[i.path for i in spatial], description="layer", style=wide)
        # ipywidgets reads a Dropdown value of None as "nothing selected": the top prediction is -1
        self.target_w = W.Dropdown(options=[("top prediction", _TOP)], value=_TOP, description="target", style=wide)
        self.channel_w = W.BoundedIntText(0, min=0, max=max(0, self._channels() - 1), description="channel",
                                          style=wide, layout=W.Layout(width="160px"))
        self.mode_w = W.ToggleButtons(options=["theoretical", "effective"], description="gradient",
                                      style={"button_width": "90px"})
        self.cmap_w = W.Dropdown(options=render.colormap_names(), description="colormap", style=wide,
                                 layout=W.Layout(width="200px"))
        self.alpha_w = W.FloatSlider(min=0, max=1, step=0.05, description="opacity", style=wide)
        self.grid_w = W.Checkbox(description="cell grid", indent=False)
        self.samples_w = W.IntSlider(min=2, max=64, description="samples", style=wide)
        self.noise_w = W.FloatSlider(min=0, max=0.5, step=0.01, description="noise", style=wide)
        self.ig_steps_w = W.IntSlider(min=4, max=128, description="IG steps", style=wide)
        self.window_w = W.IntSlider(min=2, max=64, description="window", style=wide)
        self.stride_w = W.IntSlider(min=1, max=32, description="stride", style=wide)
        self.steps_w = W.IntSlider(min=4, max=512, description="steps", style=wide)
        self.lr_w = W.FloatLogSlider(min=-3, max=0, step=0.1, description="learning rate", style={"description_width": "90px"})
        self.blur_w = W.FloatSlider(min=0, max=3, step=0.1, description="blur", style=wide)
        self.jitter_w = W.IntSlider(min=0, max=32, description="jitter", style=wide)
        self.scale_w = W.FloatSlider(min=0, max=0.5, step=0.01, description="scale ±", style=wide)
        self.rotate_w = W.FloatSlider(min=0, max=45, step=1, description="rotation ±", style=wide)
        self.octaves_w = W.IntSlider(min=1, max=5, description="octaves", style=wide)
        self.octave_scale_w = W.FloatSlider(min=1.0, max=2.0, step=0.05, description="octave ×", style=wide)
        self.param_w = W.ToggleButtons(options=["fft", "pixel"], description="param", style={"button_width": "60px"})
        W.link((s, "target"), (self.target_w, "value"),
               transform=(lambda t: _TOP if t is None else t, lambda v: None if v == _TOP else v))
        for name in ("method", "layer", "channel", "mode", "cmap", "alpha", "grid", "samples", "noise",
                     "ig_steps", "window", "stride", "steps", "lr", "blur", "jitter", "scale", "rotate", "octaves",
                     "octave_scale", "param"):
            widget = getattr(self, f"{name}_w")
            widget.value = getattr(s, name)
            W.link((s, name), (widget, "value"))
        self.run_w = W.Button(description="Run", icon="play", button_style="success", layout=W.Layout(width="90px"))
        self.stop_w = W.Button(description="Stop", icon="stop", button_style="danger", layout=W.Layout(width="90px"))
        self.run_w.on_click(lambda _: self.run_featvis())
        self.stop_w.on_click(lambda _: self.stop())
        self.progress_w = W.FloatProgress(min=0, max=1, value=0, layout=W.Layout(width="180px"))
        self.progress_text = W.Label("")
        self.upload_w = W.FileUpload(accept="image/*", multiple=False, description="image")
        self.upload_w.observe(self._on_upload, names="value")
        self.save_w = W.Button(description="Save PNG", icon="download", layout=W.Layout(width="110px"))
        self.save_w.on_click(self._on_save)
        self.grid_canvas = Canvas(width=1, height=1)
        self.grid_canvas.on_mouse_down(self._on_grid_click)
        self.readout = W.HTML(layout=W.Layout(min_height="22px"))
        self.readout.add_class("nbviz-readout")
        self.status = W.HTML(layout=W.Layout(min_height="22px"))
        self.status.add_class("nbviz-status")
        self._style = W.HTML(_HIDE_SNAPSHOT_CSS, layout=W.Layout(display="none"))
        box = lambda *c: W.VBox(list(c))  # noqa: E731
        self.groups = {
            "mode": box(self.mode_w),
            "smoothgrad": box(self.samples_w, self.noise_w),
            "ig": box(self.ig_steps_w),
            "occlusion": box(self.window_w, self.stride_w),
            "ascent": box(self.steps_w, self.lr_w, self.blur_w, self.jitter_w, self.scale_w, self.rotate_w,
                          self.octaves_w, self.octave_scale_w, self.param_w,
                          W.HBox([self.run_w, self.stop_w]), W.HBox([self.progress_w, self.progress_text])),
            "channels": box(W.Label("channels (click one)"), self.grid_canvas),
        }
        self._show_groups()

    def _children(self):
        top = W.HBox([self.method_w, self.layer_w, self.target_w, self.channel_w], layout=W.Layout(flex_flow="row wrap"))
        side = W.VBox([W.HBox([self.cmap_w, self.grid_w]), self.alpha_w, *self.groups.values(),
                       W.HBox([self.upload_w, self.save_w])], layout=W.Layout(margin="0 0 0 12px"))
        return [self._style, top, W.HBox([W.VBox([self.canvas, self.readout]), side]), self.status]

    def _show_groups(self):
        m = METHODS[self.state.method]
        controls = m.controls | ({"channels"} if m.key == "activations" else set())
        for name, group in self.groups.items():
            group.layout.display = None if name in controls else "none"
        self.layer_w.disabled = "layer" not in m.controls
        self.target_w.disabled = "target" not in m.controls
        self.channel_w.disabled = "channel" not in m.controls

    def _channels(self) -> int:
        shape = self.probe.layer(self.state.layer).output_shape
        return int(shape[-1]) if shape else 1

    # ================================================================ events

    def _on_state(self, change):
        name = change["name"]
        if name == "method":
            self._show_groups()
        if name == "layer":
            self.channel_w.max = max(0, self._channels() - 1)
            if self.state.channel > self.channel_w.max:
                self.state.channel = 0
        if name in COMPUTE_TRAITS:  # first, so the worker starts while the top layer repaints
            self._request()
        if name in TOP_TRAITS:
            self._paint_top()
        if name in OVERLAY_TRAITS:
            self._paint("overlay", self._overlay_rgba())

    def _on_mouse_down(self, x, y):
        self.click(*self.geometry.to_image(y, x))

    def _on_mouse_move(self, x, y):
        self._update_readout(self.geometry.to_image(y, x))

    def _on_grid_click(self, x, y):
        if self._grid is not None:
            k = self._grid.channel_at(y, x)
            if k is not None:
                self.state.channel = k

    def _on_upload(self, change):
        if change["new"]:
            try:
                self.set_image(change["new"])
            except Exception as exc:  # shown, not raised into the void of a callback
                self._show_error(exc)

    def _on_save(self, _):
        path = "nbviz-explorer.png"
        try:
            self.to_png(path)
            self._set_status(f"saved the view to {html.escape(path)}")
        except Exception as exc:
            self._show_error(exc)

    def _on_client_ready(self):
        # a new page connected (Voila, reload): its canvases are blank. ipycanvas remembers the
        # canvas it drew on last and would skip the "switch canvas" command the new page needs
        manager = getattr(self.canvas, "_canvas_manager", None)
        if manager is not None and hasattr(manager, "_current_canvas"):
            manager._current_canvas = None
        self._repaint_all()

    # ================================================================ computing

    def _make_request(self, method) -> Request:
        s = self.state
        return Request(
            method=method.key, image=self.image,
            layer=s.layer if ("layer" in method.controls or method.needs_point) else "",
            target=s.target if "target" in method.controls else None,
            point=s.point if method.needs_point else None,
            channel=s.channel if "channel" in method.controls else 0,
            options=method_options(method, s))

    def _key(self, req: Request):
        point = req.point
        if point is not None:  # one result per output cell
            rf = self.ctx.cached_rf(req.layer)
            point = ("cell", tuple(rf.cell(point))) if rf is not None else point
        return (self._image_version, req.method, req.layer, req.target, point, req.channel, req.options)

    def _current_key(self):
        method = METHODS[self.state.method]
        if method.on_demand:
            return ("featvis", (self.state.layer, self.state.channel))
        return self._key(self._make_request(method))

    def _request(self):
        method = METHODS[self.state.method]
        if method.on_demand:  # feature visualisation runs on Run only; show the last one if any
            key = (self.state.layer, self.state.channel)
            self._show(self._featvis_results.get(key, Result(note="press Run to start")), ("featvis", key))
            return
        req = self._make_request(method)
        key = self._key(req)
        rf_pending = self.state.layer not in self.ctx._rf  # the box and readout need the layer's RF
        if key == self._shown_key and not rf_pending:
            self.worker.cancel()  # what is shown is current: older work is stale
            return
        if key in self._cache and self._image_version in self._predictions and not rf_pending:
            self.worker.cancel()
            self._cache.move_to_end(key)
            self._show(self._cache[key], key)
            return
        self._submit(req)

    def _submit(self, req: Request, force: bool = False):
        method = METHODS[req.method]
        version = self._image_version
        key = ("featvis", (req.layer, req.channel)) if method.on_demand else self._key(req)
        submitted = time.perf_counter()
        job_box = {}

        def run(stop):
            t0 = time.perf_counter()
            if version not in self._predictions:
                self._predictions[version] = self._predict(req.image)
            try:
                self.ctx.receptive_field(self.state.layer)
            except Exception:
                pass  # no RF for this layer: readout and box say so
            t1 = time.perf_counter()
            progress = self._progress_fn(job_box, req) if method.on_demand else (lambda *a: None)
            result = method.run(self.ctx, req, stop, progress)
            t2 = time.perf_counter()
            self.timings = {"method": req.method, "queue_ms": (t0 - submitted) * 1e3,
                            "prepare_ms": (t1 - t0) * 1e3, "method_ms": (t2 - t1) * 1e3}
            return result

        def done(result):
            t0 = time.perf_counter()
            key = ("featvis", (req.layer, req.channel)) if method.on_demand else self._key(req)  # RF known now
            if method.on_demand:
                self._featvis_results[key[1]] = result
                self.progress_w.value = 1.0 if not job_box["job"].stop.is_set() else self.progress_w.value
            else:
                self._cache[key] = result
                while len(self._cache) > _CACHE_SIZE:
                    self._cache.popitem(last=False)
            self._update_targets()
            if self._current_key() == key:  # the state may have moved on to a cached result
                self._show(result, key)
            self.timings["paint_ms"] = (time.perf_counter() - t0) * 1e3
            self.timings["total_ms"] = (time.perf_counter() - submitted) * 1e3
            self._set_status(f"{html.escape(result.note)} <span style='color:#888'>· "
                             f"{self.timings['method_ms']:.0f} ms</span>")

        def failed(exc, tb):
            self._update_targets()
            self._show_error(exc, tb)

        self._set_status(f"computing {html.escape(method.label)}…")
        job = self.worker.submit(run, done, failed, name=req.method)
        job_box["job"] = job
        self._job = job

    def _progress_fn(self, job_box, req: Request):
        steps = max(1, int(dict(req.options).get("steps", 64)))
        octaves = max(1, int(dict(req.options).get("octaves", 1)))

        def progress(step, picture, value):
            job = job_box.get("job")
            if job is None or job.stop.is_set() or job is not self._job:
                return
            self.progress_w.value = min(1.0, (step + 1) / (steps * octaves))
            self.progress_text.value = f"step {step + 1} · objective {value:.4g}"
            if self.state.method == "featvis":
                self._result = Result("picture", np.asarray(picture, np.float32), note="optimising")
                self._paint("overlay", self._overlay_rgba())
        return progress

    def _predict(self, image):
        p = self.probe
        out = np.asarray(p.forward(p.prepare(self.ctx.model_input(image))[0]))[0]
        return out

    def _update_targets(self):
        scores = self._predictions.get(self._image_version)
        if scores is None:
            return
        names = class_names(scores.shape[-1], self._labels_given)
        options = [("top prediction", _TOP)] + [
            (f"{names[i]} ({v:.3g})", i) for i, v in top_predictions(scores, 5)]
        target = self.state.target
        if target is not None and target not in [o[1] for o in options]:
            options.append((names[target] if 0 <= target < len(names) else f"class {target}", target))
        if list(self.target_w.options) != options:
            with self.state.hold_trait_notifications():
                self.target_w.options = options
                self.target_w.value = _TOP if target is None else target

    # ================================================================ painting

    def _show(self, result: Result, key):
        self._result = result
        self._shown_key = key
        self._paint("overlay", self._overlay_rgba())
        if result.activation is not None:
            self._grid = frames.channel_grid(result.activation, selected=self.state.channel)
            gh, gw = self._grid.image.shape[:2]
            self.grid_canvas.width, self.grid_canvas.height = gw, gh
            self.grid_canvas.layout.width, self.grid_canvas.layout.height = f"{gw}px", f"{gh}px"
            with _PAINT_LOCK, hold_canvas():
                _put_rgba(self.grid_canvas, self._grid.image)
        self._paint_top()
        if self.state.point is not None:
            self._update_readout(self.state.point)
        self._schedule_snapshot()

    def _overlay_rgba(self) -> np.ndarray:
        r = self._result
        if r is None:
            return render.blank(self.geometry.H, self.geometry.W)
        return frames.overlay_layer(r.kind, r.data, self.geometry, cmap=self.state.cmap, alpha=self.state.alpha)

    def _top_rgba(self) -> np.ndarray:
        s = self.state
        rf = self.ctx.cached_rf(s.layer)
        box = rf.box(rf.cell(s.point)) if (rf is not None and s.point is not None) else None
        r = self._result
        gradient_box = r.gradient_box if r is not None and s.method in ("rf", "rf_max") else None
        grid = (rf.stride, rf.offset) if (rf is not None and s.grid) else None
        return frames.top_layer(self.geometry, point=s.point, box=box, gradient_box=gradient_box, grid=grid)

    def _paint_top(self):
        self._paint("top", self._top_rgba())

    def _paint(self, name: str, rgba: np.ndarray):
        with _PAINT_LOCK:
            if name != "image" and name in self._layers and np.array_equal(self._layers[name], rgba):
                return
            self._layers[name] = rgba
            self.paints[name] += 1
            layer = self.canvas[_LAYERS.index(name)]
            with hold_canvas():
                layer.clear()
                _put_rgba(layer, rgba)

    def _repaint_all(self):
        with _PAINT_LOCK:
            if "image" not in self._layers:
                self._layers["image"] = frames.image_layer(self.image, self.geometry)
                self._layers["overlay"] = self._overlay_rgba()
                self._layers["top"] = self._top_rgba()
            with hold_canvas():
                for i, name in enumerate(_LAYERS):
                    self.canvas[i].clear()
                    _put_rgba(self.canvas[i], self._layers[name])
                    self.paints[name] += 1

    # ================================================================ text

    def _update_readout(self, point):
        y, x = point
        s = self.state
        parts = [f"pointer (y={y}, x={x})"]
        rf = self.ctx.cached_rf(s.layer)
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
            parts.append(f"RF of {s.layer}: not known yet")
        self.readout.value = "<span style='font-family:monospace'>" + html.escape(" · ".join(parts)) + "</span>"

    def _set_status(self, text_html: str):
        self.status.value = f"<span style='color:#444'>{text_html}</span>"

    def _show_error(self, exc, tb: str = ""):
        msg = html.escape(f"{type(exc).__name__}: {exc}")
        details = f"<details><summary>traceback</summary><pre>{html.escape(tb)}</pre></details>" if tb else ""
        self.status.value = f"<div style='color:#b00020'><b>error</b> {msg}{details}</div>"

    # ================================================================ static snapshot

    def _snapshot_bundle(self) -> dict:
        png = base64.b64encode(self.to_png()).decode("ascii")
        return {"image/png": png, "text/plain": "nbviz Explorer snapshot"}

    def _ipython_display_(self):
        from IPython.display import display

        self.worker.wait(10.0)  # the first result, so the saved snapshot shows it
        data = W.Widget._repr_mimebundle_(self) or {}
        data = dict(data)
        data["text/plain"] = repr(self)
        display(data, raw=True)
        self._display_handle = display(self._snapshot_bundle(), raw=True, display_id=True)

    def _schedule_snapshot(self, delay: float = 0.5):
        if self._display_handle is None:
            return
        if self._snapshot_timer is not None:
            self._snapshot_timer.cancel()
        self._snapshot_timer = threading.Timer(delay, self._update_snapshot)
        self._snapshot_timer.daemon = True
        self._snapshot_timer.start()

    def _update_snapshot(self):
        try:
            self._display_handle.update(self._snapshot_bundle(), raw=True)
        except Exception:
            pass  # no frontend (closed kernel): nothing to update

    def __repr__(self):
        return (f"nbviz Explorer: {self.probe.model.name}, {METHODS[self.state.method].label} "
                f"at {self.state.layer} (live view needs a running kernel; snapshot below)")


def _put_rgba(canvas, rgba: np.ndarray) -> None:
    """``canvas.put_image_data(rgba, 0, 0)`` with a faster PNG encoding (zlib level 1).

    ipycanvas encodes with Pillow's default level, several times slower for a 512×512 frame; its
    draw-command channel is used directly when present (ipycanvas 0.13-0.14), else the public call.
    """
    from ipycanvas import canvas as ipc

    manager = getattr(canvas, "_canvas_manager", None)
    commands = getattr(ipc, "COMMANDS", None)
    if manager is None or not commands or "putImageData" not in commands:
        canvas.put_image_data(rgba, 0, 0)
        return
    manager.send_draw_command(canvas, commands["putImageData"], [0, 0], [render.encode_png(rgba)])


def _pair(v) -> str:
    a, b = (float(t) for t in v)
    fmt = lambda t: f"{t:g}"  # noqa: E731
    return f"{fmt(a)}×{fmt(b)}" if a != b else fmt(a)


def _strip_tags(text: str) -> str:
    import re

    return html.unescape(re.sub(r"<[^>]+>", "", text))


def _grey(probe):
    h, w = probe.input_size()
    return np.full((h, w, 3), 128, np.uint8)
