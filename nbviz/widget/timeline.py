"""The Timeline: scrub through a training run recorded by :class:`nbviz.callbacks.Recorder`.

``nbviz.Timeline(path)`` shows, for one record of the run store at ``path`` (an epoch), the
recorded map of the chosen method and probe image over that image, a small plot of ERF / TRF per
layer across epochs with the current epoch marked, and the epoch's feature visualisations when
they were recorded. An epoch slider with a play button moves through the records.
``Explorer(model, image, timeline=path)`` shows the same panel below the live Explorer (whose
methods run on the model as it is now, e.g. the final one).

The drawing is in :mod:`nbviz.widget.timeline_frames` (numpy / matplotlib, no widgets).
"""

from __future__ import annotations

import html

import numpy as np

import ipywidgets as W

from nbviz.runstore import Run
from nbviz.widget import frames
from nbviz.widget import timeline_frames as tf
from nbviz.widget.canvas import LayeredCanvas

__all__ = ["Timeline", "attach", "SCALES"]

#: the colour scales of the maps: each record by its own maximum, or one for the whole run
SCALES = {"epoch": "each epoch", "run": "whole run"}


class Timeline(W.VBox):
    """An epoch slider over a recorded run.

    ``Timeline(path, model=None, image_index=0, *, method=None, scale="epoch", size=320,
    alpha=0.6, interval=800)``: ``path`` is the ``out=`` folder of a :class:`~nbviz.callbacks.Recorder`
    (or an open :func:`nbviz.open_run` run); ``model``, when given, must take the run's probe
    images (same height and width), else a ValueError names ``model``; ``image_index`` picks the
    probe image and ``method`` the recorded method shown first (default: the first recorded);
    ``scale``: "epoch" (each record's map by its own maximum, as the Explorer draws a map: the
    shape of the map) or "run" (one maximum for all records of the method and image,
    :func:`~nbviz.widget.timeline_frames.run_scale`: how strong the map grows);
    ``size``: the canvas' longer side, about (nearest-neighbour upscale); ``alpha``: the map's
    opacity; ``interval``: milliseconds per epoch while playing.

    The slider moves over the records in order (``run.steps``; an epoch value can be fractional
    when the Recorder recorded every N batches); the play button (an ipywidgets ``Play`` linked
    to it) advances it. The store is read again (:meth:`refresh`, also the ↻ button and every
    time the slider reaches the last record), so a run that is still training shows its new
    epochs. Maps are drawn as in the Explorer by the method table's display kind ("signed" on a
    diverging colormap centred on zero, "unsigned" on a sequential one).

    Drive it from code with :meth:`set` and :meth:`refresh`; read it with :meth:`frame`,
    :attr:`epoch`, :attr:`step`, :attr:`erf` (the ERF plot: its matplotlib ``figure`` and the
    marked pictures).
    """

    def __init__(self, path, model=None, image_index: int = 0, *, method: str | None = None,
                 scale: str = "epoch", size: int = 320, alpha: float = 0.6, interval: int = 800,
                 _argument: str = "path"):
        self.run = tf.read_run(path, argument=_argument)
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 16:
            raise ValueError(f"size must be an int >= 16 (pixels), got {size!r}")
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
            raise ValueError(f"alpha must be a number in [0, 1], got {alpha!r}")
        if scale not in SCALES:
            raise ValueError(f"scale must be one of {list(SCALES)}, got {scale!r}")
        if not self.run.methods:
            raise ValueError(f"{_argument}={str(self.run.path)!r}: the run recorded no maps (methods=())")
        n_images = len(self.run.images)
        if isinstance(image_index, bool) or not isinstance(image_index, (int, np.integer)) \
                or not 0 <= image_index < n_images:
            raise ValueError(f"image_index must be an int in [0, {n_images - 1}] (the run has "
                             f"{n_images} probe images), got {image_index!r}")
        method = self.run.methods[0] if method is None else method
        if method not in self.run.methods:
            raise ValueError(f"method {method!r} was not recorded; recorded: {self.run.methods}")
        self.model = model
        note = _check_model(self.run, model)
        self.alpha = float(alpha)
        self.geometry = frames.display_geometry(*self.run.images.shape[1:3], target=int(size), largest=int(size))
        self.canvas_layers = LayeredCanvas(self.geometry)
        self.canvas = self.canvas_layers.widget
        self.erf_figure = None
        self.erf: tf.ErfPlot | None = None

        n = max(1, len(self.run))
        self.slider = W.IntSlider(0, min=0, max=n - 1, description="epoch", readout=False,
                                  continuous_update=True, layout=W.Layout(width="260px"))
        self.play = W.Play(0, min=0, max=n - 1, step=1, interval=int(interval), description="play",
                           tooltip="play the epochs")
        self._link = W.link((self.play, "value"), (self.slider, "value"))
        self.epoch_label = W.HTML(layout=W.Layout(min_width="220px"))
        self.refresh_button = W.Button(description="↻", tooltip="read new records of the run",
                                       layout=W.Layout(width="40px"))
        self.method = W.Dropdown(options=list(self.run.methods), value=method, description="method",
                                 layout=W.Layout(width="240px"))
        self.image = W.Dropdown(options=[(f"probe image {i}", i) for i in range(n_images)],
                                value=int(image_index), description="image", layout=W.Layout(width="240px"))
        self.scale = W.ToggleButtons(options=[(text, key) for key, text in SCALES.items()], value=scale,
                                     tooltip="colour scale of the maps", style={"button_width": "90px"})
        self._scales: dict = {}
        self.erf_plot = W.Image(format="png", layout=W.Layout(max_width="340px"))
        self.featvis_box = W.HBox(layout=W.Layout(flex_flow="row wrap"))
        self.status = W.HTML()
        self._note = note
        self.slider.observe(lambda _: self._on_epoch(), names="value")
        self.method.observe(lambda _: self._paint(), names="value")
        self.image.observe(lambda _: self._paint(), names="value")
        self.scale.observe(lambda _: self._paint(), names="value")
        self.refresh_button.on_click(lambda _: self.refresh())
        title = W.HTML(f"<b>training run</b> <code>{html.escape(str(self.run.path))}</code>")
        side = W.VBox([self.erf_plot, self.featvis_box])
        super().__init__(children=[
            title,
            W.HBox([self.play, self.slider, self.epoch_label, self.refresh_button]),
            W.HBox([self.method, self.image, self.scale]),
            W.HBox([self.canvas, side]),
            self.status])
        self.add_class("nbviz-timeline")
        self._sync_range()
        self._on_epoch()

    # ---------------------------------------------------------------- public

    @property
    def index(self) -> int:
        """The position of the shown record in ``run.steps``."""
        return int(self.slider.value)

    @property
    def step(self) -> int | None:
        """The optimiser step of the shown record (None while the run has no records)."""
        return int(self.run.steps[self.index]) if len(self.run) else None

    @property
    def epoch(self) -> float | None:
        """The epoch of the shown record (epochs done; 0 is before training)."""
        return float(self.run.epochs[self.index]) if len(self.run) else None

    def set(self, *, epoch=None, method=None, image=None, index=None, scale=None) -> "Timeline":
        """Show another record (``epoch``: a value of ``run.epochs``, or ``index`` into them),
        ``method`` (a recorded one), probe ``image`` (an index) or colour ``scale`` ("epoch",
        "run"); all checked before any is applied, a ValueError names the bad one."""
        if epoch is not None and index is not None:
            raise ValueError("give epoch= or index=, not both")
        if epoch is not None:
            hits = np.flatnonzero(np.isclose(self.run.epochs, float(epoch), rtol=0, atol=1e-9))
            if not hits.size:
                self.refresh()
                hits = np.flatnonzero(np.isclose(self.run.epochs, float(epoch), rtol=0, atol=1e-9))
            if not hits.size:
                raise ValueError(f"epoch {epoch!r} has no record; recorded epochs: {self.run.epochs.tolist()}")
            index = int(hits[-1])
        if index is not None and (isinstance(index, bool) or not isinstance(index, (int, np.integer))
                                  or not 0 <= index < len(self.run)):
            raise ValueError(f"index must be an int in [0, {len(self.run) - 1}], got {index!r}")
        if method is not None and method not in self.run.methods:
            raise ValueError(f"method {method!r} was not recorded; recorded: {self.run.methods}")
        if image is not None and (isinstance(image, bool) or not isinstance(image, (int, np.integer))
                                  or not 0 <= image < len(self.run.images)):
            raise ValueError(f"image must be an int in [0, {len(self.run.images) - 1}], got {image!r}")
        if scale is not None and scale not in SCALES:
            raise ValueError(f"scale must be one of {list(SCALES)}, got {scale!r}")
        with self.hold_trait_notifications():
            if scale is not None:
                self.scale.value = scale
            if method is not None:
                self.method.value = method
            if image is not None:
                self.image.value = int(image)
            if index is not None:
                self.slider.value = int(index)
        return self

    def refresh(self) -> "Timeline":
        """Read the run store again: records written since (a run still training) become
        reachable on the slider; the ERF plot gets their points."""
        before = len(self.run)
        self.run.refresh()
        if len(self.run) != before:
            self._sync_range()
            self._on_epoch()
        return self

    def frame(self) -> np.ndarray:
        """What the canvas shows, H×W×4 uint8 (equal to
        :func:`nbviz.widget.timeline_frames.map_frame` of the shown record)."""
        return self.canvas_layers.composed()

    def to_png(self, path=None) -> bytes:
        from nbviz import render

        return render.to_png(self.frame(), path)

    # ---------------------------------------------------------------- internals

    def _sync_range(self):
        n = len(self.run)
        top = max(0, n - 1)
        with self.hold_trait_notifications():
            # widen first so the value never leaves the range
            self.play.max = self.slider.max = max(top, 0)
        self.slider.disabled = self.play.disabled = n <= 1

    def _on_epoch(self):
        if len(self.run) and self.index == len(self.run) - 1:
            before = len(self.run)
            self.run.refresh()  # at the end: a run still training may have more
            if len(self.run) != before:
                self._sync_range()
        self._paint()
        self._plot()
        self._featvis()

    def _paint(self):
        g = self.geometry
        picture = self.run.images[int(self.image.value)]
        self.canvas_layers.paint("image", frames.image_layer(picture, g))
        if not len(self.run):
            self.canvas_layers.paint("overlay", frames.overlay_layer(None, None, g))
            self.canvas_layers.paint("top", frames.top_layer(g))
            self.epoch_label.value = "no records yet (press ↻ when the run has written one)"
            self._set_status("")
            return
        display, data = tf.map_data(self.run, self.step, self.method.value, int(self.image.value))
        self.canvas_layers.paint("overlay", tf.overlay(display, data, g, scale=self._scale(), alpha=self.alpha))
        self.canvas_layers.paint("top", frames.top_layer(g))
        meta = self.run.meta(step=self.step)
        loss = meta.get("logs", {}).get("loss")
        parts = [f"<b>epoch {self.epoch:g}</b>", f"step {self.step}"]
        if loss is not None:
            parts.append(f"loss {loss:.4g}")
        self.epoch_label.value = " · ".join(parts)
        dead = " (all zero at this epoch)" if self.method.value in meta.get("dead", ()) else ""
        scale = self._scale()
        how = "its own maximum" if scale is None else f"the run's maximum {scale:.3g}"
        self._set_status(f"{self.method.value}: {display} map of probe image {int(self.image.value)} "
                         f"(colours by {how}), record {self.index + 1} of {len(self.run)}{dead}")

    def _scale(self) -> float | None:
        """None (each record by its own maximum) or the run's maximum for the shown method and
        image, computed once per record count."""
        if self.scale.value != "run":
            return None
        key = (self.method.value, int(self.image.value), len(self.run))
        if key not in self._scales:
            self._scales[key] = tf.run_scale(self.run, *key[:2])
        return self._scales[key]

    def _plot(self):
        """The ERF plot: drawn again when the record count changed; moving the epoch only
        repaints its marker (:class:`~nbviz.widget.timeline_frames.ErfPlot`)."""
        if self.erf is None or self.erf.records != len(self.run):
            self.erf = tf.ErfPlot(self.run)
            self.erf_figure = self.erf.figure
        if self.erf_figure is None:
            self.erf_plot.layout.display = "none"
            return
        self.erf_plot.layout.display = None
        self.erf_plot.value = self.erf.png(self.epoch)

    def _featvis(self):
        if not self.run.featvis_pairs or not len(self.run):
            self.featvis_box.children = ()
            return
        pictures = self.run.featvis(step=self.step)
        tiles = []
        for (layer, channel), picture in pictures.items():
            tiles.append(W.VBox([W.Image(value=tf.picture_png(picture), format="png"),
                                 W.HTML(f"<small>{html.escape(str(layer))} #{channel}</small>")]))
        self.featvis_box.children = tiles

    def _set_status(self, text: str):
        note = f" <span style='color:#8a5a00'>{html.escape(self._note)}</span>" if self._note else ""
        self.status.value = f"<span style='color:#444'>{html.escape(text)}</span>{note}"

    def __repr__(self):
        return (f"nbviz Timeline: {str(self.run.path)!r}, {len(self.run)} records, "
                f"methods {self.run.methods}")


def _check_model(run: Run, model) -> str:
    """A ValueError naming ``model`` when it cannot take the run's probe images; a note when the
    run was recorded on a model of another name."""
    if model is None:
        return ""
    from nbviz.probe import probe

    try:
        spec = probe(model).image_input
    except Exception as exc:  # not a Keras image model
        raise ValueError(f"model: {exc}") from None
    h, w = run.images.shape[1:3]
    if (spec.height and spec.height != h) or (spec.width and spec.width != w):
        raise ValueError(f"model takes {spec.height}×{spec.width} images but the run's probe images are "
                         f"{h}×{w}: the run was recorded on another model")
    recorded = run.header.get("model")
    name = getattr(model, "name", None)
    if recorded and name and recorded != name:
        return f"(recorded on model {recorded!r}, the live model is {name!r})"
    return ""


def read_timeline(source) -> Run:
    """The Explorer's ``timeline=`` argument as an open run (errors name ``timeline``)."""
    return tf.read_run(source, argument="timeline")


def attach(explorer, run: Run) -> "Timeline":
    """Add the Timeline of ``run`` below ``explorer`` (``Explorer(..., timeline=PATH)``); the
    Explorer's own methods keep running on its model. Returns the Timeline."""
    try:
        timeline = Timeline(run, explorer.probe.model, _argument="timeline")
    except ValueError as exc:
        explorer.close()  # its session's worker would outlive the failed constructor
        raise ValueError(f"timeline: {exc}") from None
    explorer.children = (*explorer.children, timeline)
    return timeline
