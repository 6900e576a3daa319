"""What the Timeline (:mod:`nbviz.widget.timeline`) shows, as numpy frames and matplotlib figures
(no widgets): a recorded map over its probe image, the ERF / TRF plot across epochs, feature
visualisations as PNG.

Every function reads a :class:`nbviz.runstore.Run` (``nbviz.open_run(path)``); records are
addressed by their optimiser ``step`` (``run.steps``), which is unique even when records were
taken inside epochs (fractional ``run.epochs``).
"""

from __future__ import annotations

import io
import os

import numpy as np

from nbviz import render
from nbviz.runstore import Run, open_run
from nbviz.widget import frames

__all__ = ["read_run", "method_display", "map_data", "map_frame", "erf_series", "erf_figure", "mark_epoch",
           "figure_png", "picture_png"]

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


def map_frame(run: Run, step: int, method: str, image: int, geometry: frames.Geometry | None = None,
              *, alpha: float = 0.6, cmap: str = "auto") -> np.ndarray:
    """Probe image ``image`` with its ``method`` map recorded at ``step`` over it, H×W×4 uint8 at
    ``geometry``'s display size (default :func:`nbviz.widget.frames.display_geometry`).

    The same drawing as the Explorer's (:func:`nbviz.widget.frames.overlay_layer`): "unsigned"
    maps divided by their own maximum on a sequential colormap, "signed" ones as
    ``v / (2 max|v|) + 1/2`` on a diverging one (zero is its centre), "rgb" opaque around
    mid-grey; so each epoch's map is scaled by its own maximum."""
    picture = run.images[int(image)]
    g = geometry or frames.display_geometry(*picture.shape[:2])
    display, data = map_data(run, step, method, image)
    return render.composite(frames.image_layer(picture, g),
                            frames.overlay_layer(display, data, g, cmap=cmap, alpha=alpha))


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


def erf_figure(run: Run, epoch: float | None = None, *, size=(4.2, 2.6), dpi: int = 80):
    """A small matplotlib figure: ERF / TRF of every recorded layer across epochs (one line per
    layer, one point per record, gid ``"erf:<layer>"``), the current ``epoch`` marked by a
    vertical line (gid ``"current"``) and a red dot on each line (gid ``"current:<layer>"``;
    move them with :func:`mark_epoch`). Built on :class:`matplotlib.figure.Figure` (no pyplot
    state, safe off the main thread), fixed margins (a layout engine would cost most of the
    drawing time). None when the run has no ERF records."""
    from matplotlib.figure import Figure

    series = erf_series(run)
    if not series:
        return None
    fig = Figure(figsize=size, dpi=dpi)
    fig.subplots_adjust(left=0.14, right=0.97, bottom=0.17, top=0.9)
    ax = fig.add_subplot()
    for layer, (x, y) in series.items():
        ax.plot(x, y, marker="o", markersize=3, linewidth=1.2, label=layer, gid=f"erf:{layer}")
    ax.axvline(0.0, color=MARK_COLOR, linewidth=1, alpha=0.6, gid="current")
    for layer in series:
        ax.plot([], [], "o", color=MARK_COLOR, markersize=6, gid=f"current:{layer}")
    ax.set_xlabel("epoch", fontsize=8, labelpad=1)
    ax.set_ylabel("ERF / TRF", fontsize=8, labelpad=1)
    finite = [float(np.nanmax(y)) for _, y in series.values() if np.isfinite(y).any()]
    ax.set_ylim(0, max([1.05, *(v * 1.05 for v in finite)]))
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, loc="lower right", frameon=False)
    ax.set_title(f"effective / theoretical RF ({run.header.get('erf_mass', 0.95):g} of the mass)", fontsize=8)
    mark_epoch(fig, epoch)
    return fig


def mark_epoch(fig, epoch: float | None) -> None:
    """Move the current-epoch line and dots of an :func:`erf_figure` to ``epoch`` (None: hide
    them); a dot is placed where its layer has a point at that epoch."""
    ax = fig.axes[0]
    lines = {line.get_gid(): line for line in ax.lines}
    current = lines["current"]
    current.set_visible(epoch is not None)
    if epoch is None:
        return
    current.set_xdata([epoch, epoch])
    for gid, line in lines.items():
        if gid.startswith("erf:"):
            x, y = (np.asarray(v, float) for v in line.get_data())
            hit = np.flatnonzero(np.isclose(x, epoch))[-1:]
            lines["current:" + gid[4:]].set_data(x[hit], y[hit])


def figure_png(fig) -> bytes:
    """A matplotlib figure as PNG bytes (Agg canvas)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def picture_png(picture, *, size: int = 96) -> bytes:
    """A feature-visualisation picture (H×W×3 in [0, 1]) as PNG, nearest-upscaled to about
    ``size`` pixels."""
    a = render.to_rgb8(np.clip(np.asarray(picture, np.float32), 0, 1))
    h, w = a.shape[:2]
    f = max(1, size // max(h, w))
    return render.encode_png(render.resize_nearest(a, (h * f, w * f)))
