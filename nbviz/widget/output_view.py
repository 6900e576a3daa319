"""The Explorer's output panel for dense-output models (N×h×w×k maps: segmentation, edges, depth,
keypoint heatmaps): the output map beside the input, clicked to choose what is explained.

Shown only when the model's output is a dense map; a classifier gets no panel. What it does:

* **Map.** The model's output for the current image on a second canvas. Colours: with the
  channel selector on "top channel" and a softmax-like output (the model ends in a softmax, or
  every pixel's k values are >= 0 and sum to 1) and k > 1, each pixel takes the colour of its
  argmax class (matplotlib's ``tab10``/``tab20`` palette, class c -> colour c); otherwise one
  channel through the sequential ``viridis`` map scaled to that channel's min..max: the chosen
  channel, or for "top channel" the whole map's top channel (below).
* **Target.** A click on output cell (y, x) sets the target to
  :func:`nbviz.methods.targets.point` ``(y, x, channel)``; a drag from one cell to another sets
  :func:`~nbviz.methods.targets.box` over the cells between them (both inclusive, so the box's
  bottom/right are one past the last cell); "whole map" clears the region. ``channel`` is the
  Explorer's ``state.target`` (the channel selector here and the target dropdown both set it);
  None means the top channel inside the region, as in every method
  (:mod:`nbviz.methods.targets`): the channel with the highest total score there, scored on
  the logits when the model ends in a softmax. With no region the request's target is
  ``state.target`` itself: the whole map (None: the whole map's top channel).
* **On the input.** The input canvas shows the selected region's attribution with the current
  method (the request carries the region target) and, in :data:`RF_COLOR`, the receptive field
  of the region on the input: ``receptive_field(model, output layer).box(cell)`` for a point, the
  union of its corner cells' boxes for a box (nbviz.receptive_field of the output layer).
* **Text.** The selection in words ("output point (y, x), channel k", "output box (t, l)–(b, r),
  top channel (k)") under the map, and on the Explorer's target dropdown.

The panel owns only its region (output cells, (top, left, bottom, right), bottom/right
exclusive) and its widgets; everything else is the Explorer's state, so the session's requests
and cache work as for any target.
"""

from __future__ import annotations

import html

import numpy as np

import ipywidgets as W

from nbviz import render
from nbviz.methods import targets
from nbviz.session.dense import output_layer_path
from nbviz.widget import frames
from nbviz.widget.labels import class_names

__all__ = ["OutputView", "RF_COLOR", "SELECT_COLOR", "output_rgba"]

#: the receptive field of the selected output region, drawn on the input canvas
RF_COLOR = (255, 0, 255)
#: the selected region on the output canvas
SELECT_COLOR = (255, 255, 255)
TOP = -1  # the channel selector's "top channel" (state.target None), as the target dropdown


def softmax_like(probe, out: np.ndarray) -> bool:
    """Does the h×w×k output read as per-pixel class probabilities (see the module docstring)?"""
    if out.shape[-1] < 2:
        return False
    if probe.ends_in_softmax:
        return True
    return bool(out.min() >= 0 and np.allclose(out.sum(axis=-1), 1.0, atol=1e-3))


def output_rgba(out: np.ndarray, channel: int | None, *, classes: bool) -> np.ndarray:
    """The h×w×k output ``out`` as opaque RGBA: argmax class colours when ``classes`` (and no
    ``channel``), else channel ``channel`` (default 0) on viridis, scaled to its min..max."""
    if classes and channel is None:
        import matplotlib

        k = out.shape[-1]
        cmap = matplotlib.colormaps["tab10" if k <= 10 else "tab20"]
        lut = (np.asarray([cmap(i % cmap.N)[:3] for i in range(k)]) * 255).astype(np.uint8)
        return render.to_rgba(lut[np.argmax(out, axis=-1)])
    ch = np.asarray(out[..., 0 if channel is None else channel], np.float32)
    lo, hi = float(ch.min()), float(ch.max())
    norm = (ch - lo) / (hi - lo) if hi > lo else np.zeros_like(ch)
    return render.heatmap(norm, cmap="viridis", alpha=1.0)


class OutputView:
    """The output panel of one :class:`~nbviz.widget.view.Explorer` (see the module docstring).

    Build it with :meth:`attach` (None for a model whose output is not a dense map). Drive it
    from code with :meth:`click` / :meth:`drag` (output cells) and :meth:`clear`; read
    :meth:`target` (what the Explorer's requests carry), :meth:`rf_box`, :meth:`frame` and
    :attr:`text`.
    """

    def __init__(self, explorer, layer: str | None):
        from ipycanvas import Canvas

        self.explorer = e = explorer
        self.probe = e.probe
        #: path of the layer whose output is the model's output (for its receptive field)
        self.layer = layer
        #: the selected output cells (top, left, bottom, right), bottom/right exclusive, or None
        self.region: tuple[int, int, int, int] | None = None
        self._down: tuple[int, int] | None = None
        self._out: np.ndarray | None = None
        self._frame: np.ndarray | None = None
        self._refresh_output()
        h, w, k = self._out.shape
        self.geometry = frames.display_geometry(h, w, target=320)
        g = self.geometry
        self.canvas = Canvas(width=g.W, height=g.H, layout=W.Layout(width=f"{g.W}px", height=f"{g.H}px"))
        self.canvas.add_class("nbviz-output-canvas")
        self.canvas.on_client_ready(self._put)
        self.canvas.on_mouse_down(self._on_mouse_down)
        self.canvas.on_mouse_up(self._on_mouse_up)
        names = class_names(k, e._labels_given)
        self.channel = W.Dropdown(options=[("top channel", TOP)] + [(names[i], i) for i in range(k)],
                                  value=TOP, description="channel", layout=W.Layout(width="240px"),
                                  style={"description_width": "60px"})
        W.link((e.state, "target"), (self.channel, "value"),
               transform=(lambda t: TOP if t is None else t, lambda v: None if v == TOP else v))
        self.channel.layout.display = None if k > 1 else "none"
        self.whole = W.Button(description="whole map", layout=W.Layout(width="100px"),
                              tooltip="explain the whole output map (clear the clicked region)")
        self.whole.on_click(lambda _: self.clear())
        self.label = W.HTML(layout=W.Layout(min_height="22px", width=f"{max(g.W, 240)}px"))
        self.label.add_class("nbviz-output-target")
        self.widget = W.VBox([W.HTML("<b>model output</b> (click a pixel or drag a box)"), self.canvas,
                              W.HBox([self.channel, self.whole]), self.label],
                             layout=W.Layout(margin="0 0 0 12px"))
        e.state.observe(lambda _: self.paint(), names="target")
        self.paint()

    def beside(self, input_box) -> W.Widget:
        """The panel's widget, to sit beside ``input_box`` (the input canvas's box) in a row:
        neither shrinks (a fixed-size canvas in a shrunk box would overlap its neighbour)."""
        input_box.layout.flex = "0 0 auto"
        self.widget.layout.flex = "0 0 auto"
        return self.widget

    @classmethod
    def attach(cls, explorer) -> "OutputView | None":
        """The panel for ``explorer``'s model, or None when its output is not an N×h×w×k map."""
        p = explorer.probe
        if len(p.output_shape(tuple(explorer.image.shape[:2]))) != 4:
            return None
        return cls(explorer, output_layer_path(p))

    # ------------------------------------------------------------ selection

    def click(self, y: int, x: int) -> "OutputView":
        """Select output cell (y, x): the target becomes ``targets.point(y, x, channel)``."""
        y, x = self._check_cell(y, x)
        return self._select((y, x, y + 1, x + 1))

    def drag(self, start, end) -> "OutputView":
        """Select the output cells from ``start`` to ``end`` ((y, x) each, both inclusive):
        the target becomes ``targets.box(...)`` (a point when both are one cell)."""
        (y0, x0), (y1, x1) = self._check_cell(*start), self._check_cell(*end)
        return self._select((min(y0, y1), min(x0, x1), max(y0, y1) + 1, max(x0, x1) + 1))

    def clear(self) -> "OutputView":
        """Explain the whole output map again (no region)."""
        return self._select(None)

    def _check_cell(self, y, x) -> tuple[int, int]:
        h, w = self._out.shape[:2]
        if any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) for v in (y, x)):
            raise ValueError(f"output cell must be (y, x) integers, got {(y, x)!r}")
        if not (0 <= y < h and 0 <= x < w):
            raise ValueError(f"output cell ({y}, {x}) is outside the {h}×{w} output map")
        return int(y), int(x)

    def _select(self, region) -> "OutputView":
        self.region = None if region is None else tuple(int(v) for v in region)
        e = self.explorer
        self.paint()
        e._request()
        e._paint_top()
        e._update_targets()
        return self

    def _on_mouse_down(self, x, y):  # canvas (x, y), as ipycanvas sends it
        cell = self.geometry.to_image(y, x)
        self._down = cell
        self.click(*cell)  # a click works even when the mouse-up is lost

    def _on_mouse_up(self, x, y):
        start, self._down = self._down, None
        end = self.geometry.to_image(y, x)
        if start is not None and end != start:
            self.drag(start, end)

    def target(self):
        """What the Explorer's requests carry: ``targets.point``/``box`` of the region with the
        channel ``state.target`` (None: the top channel there), or ``state.target`` alone when
        no region is selected (the whole map)."""
        ch = self.explorer.state.target
        if self.region is None:
            return ch
        t, l, b, r = self.region
        if (b - t, r - l) == (1, 1):
            return targets.point(t, l, ch)
        return targets.box(t, l, b, r, ch)

    # ------------------------------------------------------------ receptive field

    def receptive_field(self):
        """The receptive field of the output layer at the image's size (None when unknown)."""
        if self.layer is None:
            return None
        from nbviz.methods.receptive_field import receptive_field

        e = self.explorer
        spec = self.probe.image_input
        size = None if spec.height and spec.width else tuple(e.image.shape[:2])
        try:
            return receptive_field(self.probe.model, self.layer, input_shape=size)
        except Exception:  # a layer whose field cannot be measured: the text says so
            return None

    def rf_box(self):
        """The input box (top, left, bottom, right) of the selected region: the receptive-field
        box of a point's cell, the union over a box's corner cells; None without a region."""
        rf = self.receptive_field() if self.region is not None else None
        if rf is None:
            return None
        t, l, b, r = self.region
        a, z = rf.box((t, l)), rf.box((b - 1, r - 1))
        return (min(a[0], z[0]), min(a[1], z[1]), max(a[2], z[2]), max(a[3], z[3]))

    def draw_on_input(self, top: np.ndarray, geometry) -> np.ndarray:
        """Draw :meth:`rf_box` onto the input canvas's ``top`` layer (in place; returned)."""
        box = self.rf_box()
        if box is not None:
            render.draw_box(top, geometry.to_canvas_box(box), RF_COLOR, width=2)
        return top

    # ------------------------------------------------------------ output map and text

    def _refresh_output(self) -> None:
        e = self.explorer
        out = np.asarray(e.session.context.predictions(e.image_id, e.image), np.float32)
        if out.ndim != 3:
            raise ValueError(f"the model's output for this image has shape {out.shape}; the output "
                             "panel needs an h×w×k map")
        self._out = out

    def refresh(self) -> None:
        """A new image: read its output, drop a region that no longer fits, repaint."""
        self._refresh_output()
        h, w = self._out.shape[:2]
        if (h, w) != (self.geometry.h, self.geometry.w):
            self.geometry = g = frames.display_geometry(h, w, target=320)
            self.canvas.width, self.canvas.height = g.W, g.H
            self.canvas.layout.width, self.canvas.layout.height = f"{g.W}px", f"{g.H}px"
        if self.region is not None and (self.region[2] > h or self.region[3] > w):
            self.region = None
        self.paint()

    @property
    def output(self) -> np.ndarray:
        """The model's h×w×k output for the current image (as predicted, after any softmax)."""
        return self._out

    def top_channel(self, region="selected") -> int:
        """The channel a target with channel None explains in ``region`` (default: the selected
        one; None: the whole map): the highest total score there, on the logits when the model
        ends in a softmax (as :func:`nbviz.methods.targets.scores` resolves it). The logits are
        not recomputed: ``log p_k`` differs from logit k by a per-pixel constant shared by every
        channel, so both sums over a region have the same argmax (probabilities that underflow to
        0 in float32 count as 1e-30)."""
        region = self.region if region == "selected" else region
        scores = np.log(np.maximum(self._out, 1e-30)) if self.probe.ends_in_softmax else self._out
        if region is not None:
            t, l, b, r = region
            scores = scores[t:b, l:r]
        return int(np.argmax(scores.reshape(-1, scores.shape[-1]).sum(axis=0)))

    @property
    def text(self) -> str:
        """The selection in words, e.g. "output point (3, 5), channel 2"."""
        ch = self.explorer.state.target
        k = self._out.shape[-1]
        which = (f"channel {ch}" if ch is not None else
                 (f"top channel ({self.top_channel()})" if k > 1 else "channel 0"))
        if self.region is None:
            return f"whole output map, {which}"
        t, l, b, r = self.region
        if (b - t, r - l) == (1, 1):
            return f"output point ({t}, {l}), {which}"
        return f"output box ({t}, {l})–({b - 1}, {r - 1}), {which}"

    def target_options(self, options: list) -> list:
        """The Explorer's target dropdown for a dense output, as many entries as ``options``:
        "top channel" and the channels by mean score over the map, each saying the region it
        explains."""
        where = self.text.rsplit(", ", 1)[0]
        k = self._out.shape[-1]
        names = class_names(k, self.explorer._labels_given)
        mean = self._out.reshape(-1, k).mean(axis=0)
        order = np.argsort(-mean, kind="stable")[:max(1, len(options) - 1)]
        return [(f"top channel, {where}", TOP)] + [(f"{names[i]} (mean {mean[i]:.3g}), {where}", int(i))
                                                   for i in order]

    def paint(self) -> None:
        """Repaint the map (for the selected channel) with the region, and the text."""
        ch = self.explorer.state.target
        classes = softmax_like(self.probe, self._out)
        shown = ch if (ch is not None or classes) else self.top_channel(None)
        small = output_rgba(self._out, shown, classes=classes)
        g = self.geometry
        rgba = render.resize_nearest(small, (g.H, g.W))
        if self.region is not None:
            render.draw_box(rgba, g.to_canvas_box(self.region), (0, 0, 0), width=3)
            render.draw_box(rgba, g.to_canvas_box(self.region), SELECT_COLOR, width=1)
        self._frame = rgba
        self._put()
        self.label.value = "<span style='font-family:monospace'>target: " + html.escape(self.text) + "</span>"

    def _put(self) -> None:
        if self._frame is None:
            return
        from ipycanvas import hold_canvas

        from nbviz.widget.canvas import PAINT_LOCK, put_rgba

        with PAINT_LOCK, hold_canvas():
            self.canvas.clear()
            put_rgba(self.canvas, self._frame)

    def frame(self) -> np.ndarray:
        """The output canvas as H×W×4 uint8 (what the browser shows)."""
        return self._frame
