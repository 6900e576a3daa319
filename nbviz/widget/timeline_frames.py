"""What the Timeline (:mod:`nbviz.widget.timeline`) shows, as numpy frames and matplotlib figures
(no widgets): a recorded map over its probe image, the ERF / TRF plot across epochs, feature
visualisations as PNG.

Every function reads a :class:`nbviz.runstore.Run` (``nbviz.open_run(path)``); records are
addressed by their optimiser ``step`` (``run.steps``), which is unique even when records were
taken inside epochs (fractional ``run.epochs``).
"""

from __future__ import annotations

import os

import numpy as np

from nbviz import render
from nbviz.runstore import Run, open_run
from nbviz.widget import frames

__all__ = ["read_run", "method_display", "map_data", "run_scale", "overlay", "map_frame", "erf_series", "erf_figure", "ErfPlot",
           "picture_png"]

#: the colour of the current-epoch line and markers in the ERF plot
MARK_COLOR = "#d62728"


def read_run(source, *, argument: str = "path") -> Run:
    """``source`` (a folder written by :class:`nbviz.callbacks.Recorder`, or an open
    :class:`~nbviz.runstore.Run`) as a Run; a TypeError / ValueError names ``argument``."""
    if isinstance(source, Run):
        return source
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"{argument} must be the folder of a run store (str or path) written by "
                        f"nbviz.Recorder(out=...), or an nbviz.open_run(...) run; got {type(source).__name__}")
    if not os.path.isdir(source):
        raise ValueError(f"{argument}={os.fspath(source)!r} is not a folder; give the out= folder of "
                         "an nbviz.Recorder run")
    try:
        return open_run(source)
    except (ValueError, OSError, KeyError) as exc:
        raise ValueError(f"{argument}={os.fspath(source)!r} cannot be read as a run store: {exc}") from None


def method_display(run: Run, method: str, sample=None) -> str:
    """How ``method``'s recorded maps are painted: the method table's display kind of a table
    key (:func:`nbviz.methods.table.method`), else the kind stored in ``run.json``; for a
    function the Recorder stored as "auto": "signed" when ``sample`` has negative values, else
    "unsigned"."""
    from nbviz.methods import table

    try:
        return table.method(method).display
    except ValueError:
        pass
    stored = next((m.get("display") for m in run.header["methods"] if m["name"] == method), None)
    if stored in ("unsigned", "signed", "rgb"):
        return stored
    if sample is not None and np.nanmin(np.asarray(sample, np.float32)) < 0:
        return "signed"
    return "unsigned"


def map_data(run: Run, step: int, method: str, image: int) -> tuple[str, np.ndarray]:
    """(display kind, what is painted) of probe image ``image``'s ``method`` map at ``step``:
    an H×W map, or H×W×3 for "rgb" (an H×W×C map shown as a map is reduced as the method
    table's ``reduce`` says; a channel sum for other functions)."""
    from nbviz.methods import table
    from nbviz.session.results import reduce_map

    a = np.asarray(run.maps(step=int(step), method=method, image=int(image)), np.float32)
    display = method_display(run, method, a)
    if display == "rgb":
        return display, (a if a.ndim == 3 else np.repeat(a[..., None], 3, axis=-1))
    try:
        how = table.method(method).reduce
    except ValueError:
        how = "sum"
    return display, reduce_map(a, how)


def run_scale(run: Run, method: str, image: int) -> float:
    """One scale for all records of ``method`` on probe image ``image``: the largest value its
    maps reach over the run (``max |v|`` for "signed" maps, ``max v`` for "unsigned" ones; 0.0
    for other display kinds or an all-zero run)."""
    top = 0.0
    for step in run.steps:
        display, data = map_data(run, step, method, image)
        a = np.nan_to_num(np.asarray(data, np.float32))
        if display == "signed":
            top = max(top, float(np.abs(a).max()))
        elif display == "unsigned":
            top = max(top, float(a.max()))
    return top


def overlay(display: str, data, geometry: frames.Geometry, *, scale: float | None = None,
            alpha: float = 0.6, cmap: str = "auto") -> np.ndarray:
    """A map as the overlay layer at display size. ``scale`` None: the Explorer's drawing
    (:func:`nbviz.widget.frames.overlay_layer`: each map by its own maximum). A number (e.g.
    :func:`run_scale`): the same formulas with that maximum instead, clipped, so the records of
    a run share one colour scale: "unsigned" ``clip(v, 0) / scale``, "signed"
    ``v / (2 scale) + 1/2`` (zero stays the colormap's centre). "rgb" maps keep their own
    per-channel scale."""
    from nbviz.methods.table import DEFAULT_CMAPS

    if scale is None or display not in ("unsigned", "signed"):
        return frames.overlay_layer(display, data, geometry, cmap=cmap, alpha=alpha)
    a = np.nan_to_num(np.asarray(data, np.float32))
    name = DEFAULT_CMAPS[display] if cmap == "auto" else cmap
    m = float(scale)
    if display == "signed":
        v = a / (2 * m) + 0.5 if m > 0 else np.full_like(a, 0.5)
    else:
        v = np.clip(a, 0, None) / m if m > 0 else np.zeros_like(a)
    small = render.heatmap(np.clip(v, 0, 1), cmap=name, alpha=alpha)
    return render.resize_nearest(small, (geometry.H, geometry.W))


def map_frame(run: Run, step: int, method: str, image: int, geometry: frames.Geometry | None = None,
              *, alpha: float = 0.6, cmap: str = "auto", scale: float | None = None) -> np.ndarray:
    """Probe image ``image`` with its ``method`` map recorded at ``step`` over it, H×W×4 uint8 at
    ``geometry``'s display size (default :func:`nbviz.widget.frames.display_geometry`).

    The same drawing as the Explorer's (:func:`nbviz.widget.frames.overlay_layer`): "unsigned"
    maps divided by their maximum on a sequential colormap, "signed" ones as
    ``v / (2 max|v|) + 1/2`` on a diverging one (zero is its centre), "rgb" opaque around
    mid-grey. Each record is scaled by its own maximum unless ``scale`` gives one for the whole
    run (:func:`run_scale`, :func:`overlay`)."""
    picture = run.images[int(image)]
    g = geometry or frames.display_geometry(*picture.shape[:2])
    display, data = map_data(run, step, method, image)
    return render.composite(frames.image_layer(picture, g),
                            overlay(display, data, g, scale=scale, cmap=cmap, alpha=alpha))


def erf_series(run: Run) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{layer: (epochs, ERF / TRF ratio)} from :meth:`~nbviz.runstore.Run.erf_table`, one point per
    record (NaN where the ERF could not be measured), layers in the recorded order."""
    t = run.erf_table()
    out = {}
    for layer in run.layers:
        sel = t["layer"] == layer
        if sel.any():
            out[layer] = (t["epoch"][sel].astype(float), t["ratio"][sel].astype(float))
    return out


def erf_figure(run: Run, *, size=(4.2, 2.6), dpi: int = 80):
    """A small matplotlib figure: ERF / TRF of every recorded layer across epochs, one line per
    layer (gid ``"erf:<layer>"``), one point per record. Built on
    :class:`matplotlib.figure.Figure` (no pyplot state, safe off the main thread), fixed margins
    (a layout engine would cost most of the drawing time). None when the run has no ERF
    records. :class:`ErfPlot` adds the current-epoch marker."""
    from matplotlib.figure import Figure

    series = erf_series(run)
    if not series:
        return None
    fig = Figure(figsize=size, dpi=dpi)
    fig.subplots_adjust(left=0.14, right=0.97, bottom=0.17, top=0.9)
    ax = fig.add_subplot()
    for layer, (x, y) in series.items():
        ax.plot(x, y, marker="o", markersize=3, linewidth=1.2, label=layer, gid=f"erf:{layer}")
    ax.set_xlabel("epoch", fontsize=8, labelpad=1)
    ax.set_ylabel("ERF / TRF", fontsize=8, labelpad=1)
    finite = [float(np.nanmax(y)) for _, y in series.values() if np.isfinite(y).any()]
    ax.set_ylim(0, max([1.05, *(v * 1.05 for v in finite)]))
    epochs = run.epochs
    pad = max(0.05, 0.03 * float(epochs.max() - epochs.min())) if epochs.size else 0.05
    ax.set_xlim(float(epochs.min()) - pad, float(epochs.max()) + pad)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, loc="lower right", frameon=False)
    ax.set_title(f"effective / theoretical RF ({run.header.get('erf_mass', 0.95):g} of the mass)", fontsize=8)
    return fig


class ErfPlot:
    """The ERF plot of a run as pictures: :func:`erf_figure` drawn once (Agg), and for each
    epoch a copy with the current epoch marked in numpy (a vertical line and a dot on each
    layer's point at that epoch, :data:`MARK_COLOR`), so moving the slider costs a copy and a
    PNG encoding instead of a matplotlib draw. ``figure`` is None when the run has no ERF."""

    def __init__(self, run: Run, **figure_options):
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        self.records = len(run)
        self.series = erf_series(run)
        self.figure = erf_figure(run, **figure_options)
        self.base = None
        if self.figure is not None:
            canvas = FigureCanvasAgg(self.figure)
            canvas.draw()
            self.base = np.asarray(canvas.buffer_rgba()).copy()
            self._ax = self.figure.axes[0]

    def pixel(self, epoch: float, value: float) -> tuple[int, int]:
        """The (row, column) of data point (epoch, value) in :meth:`rgba`'s picture."""
        x, y = self._ax.transData.transform((float(epoch), float(value)))
        return int(round(self.base.shape[0] - y)), int(round(x))

    def rgba(self, epoch: float | None) -> np.ndarray:
        """The plot with ``epoch`` marked (None: unmarked), H×W×4 uint8."""
        out = self.base.copy()
        if epoch is None:
            return out
        h, w = out.shape[:2]
        colour = np.array([int(MARK_COLOR[i:i + 2], 16) for i in (1, 3, 5)], np.float32)
        box = self._ax.bbox
        top, bottom = int(round(h - box.y1)), int(round(h - box.y0))
        _, col = self.pixel(epoch, 0.0)
        if 0 <= col < w:  # the line, 60 % opaque
            seg = out[max(0, top):min(h, bottom), col, :3].astype(np.float32)
            out[max(0, top):min(h, bottom), col, :3] = np.rint(0.4 * seg + 0.6 * colour).astype(np.uint8)
        yy, xx = np.mgrid[-4:5, -4:5]
        disk = yy ** 2 + xx ** 2 <= 16
        for x, y in self.series.values():
            hit = np.flatnonzero(np.isclose(x, epoch))[-1:]
            if not hit.size or not np.isfinite(y[hit[0]]):
                continue
            r, c = self.pixel(x[hit[0]], y[hit[0]])
            rows, cols = yy[disk] + r, xx[disk] + c
            keep = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
            out[rows[keep], cols[keep], :3] = colour.astype(np.uint8)
            out[rows[keep], cols[keep], 3] = 255
        return out

    def png(self, epoch: float | None) -> bytes:
        return render.encode_png(self.rgba(epoch))


def picture_png(picture, *, size: int = 96) -> bytes:
    """A feature-visualisation picture (H×W×3 in [0, 1]) as PNG, nearest-upscaled to about
    ``size`` pixels."""
    a = render.to_rgb8(np.clip(np.asarray(picture, np.float32), 0, 1))
    h, w = a.shape[:2]
    f = max(1, size // max(h, w))
    return render.encode_png(render.resize_nearest(a, (h * f, w * f)))
