"""The Explorer's dictionary panel: what the network sees at the clicked cell (Olah et al., "The
Building Blocks of Interpretability", Distill 2018).

``Explorer(model, image, dictionary=True)`` shows it under the Explorer (``explorer.dictionary_panel``);
``DictionaryPanel(explorer)`` builds one for an existing Explorer (display it yourself).

Two modes, at the Explorer's current layer and target:

* **channels**: a click on the Explorer's canvas at pixel ``(y, x)`` gives the layer's cell
  ``receptive_field.cell((y, x))`` (the session's context caches the receptive fields) and
  :func:`nbviz.dictionary` there: the top ``k`` channels, ranked ``by`` activation ``A[y, x, c]``
  or attribution ``A · ∂S/∂A``, each shown as its feature-visualisation icon
  (:func:`nbviz.featvis.icons`) with a bar of its value. Clicking an icon sets the Explorer to the
  "activations" method and that channel: its overlay becomes that channel's activation map.
* **groups**: :func:`nbviz.neuron_groups` of the layer for the whole image: the image coloured by
  group (:func:`nbviz.color_groups`) in the panel, each group's icon (the feature visualisation
  of its loading direction) with a bar of its attribution in the group's colour. Clicking a group
  shows that group alone on the coloured image.

Work runs on the panel's own background thread (a :class:`nbviz.session.worker.Worker`, so
minutes of icon rendering never hold up the Explorer's requests): the dictionary first, shown at
once with placeholder tiles, then the icons, each slot showing its latest preview and then its
final picture (icons already in the disk cache appear at once). A newer click (or mode, ranking,
layer, target, image) stops the running job within one ascent step and drops whatever it still
delivers: the newest request wins.

The pictures are built in numpy by :mod:`nbviz.widget.dictionary_frames`.
"""

from __future__ import annotations

import html
import numbers
import threading

import numpy as np

import ipywidgets as W
from ipycanvas import Canvas, hold_canvas

from nbviz.session import clean_error
from nbviz.session.worker import Worker
from nbviz.widget import dictionary_frames as df
from nbviz.widget.canvas import PAINT_LOCK, put_rgba
from nbviz.widget.frames import display_geometry

__all__ = ["DictionaryPanel"]

MODES = ("channels", "groups")
BY = ("activation", "attribution")


class DictionaryPanel(W.VBox):
    """See the module docstring.

    ``k``: channels shown; ``groups``: neuron groups (both capped by the layer's size); ``size``
    (px) and ``steps``: the icons' render settings (small, so a first preview comes soon);
    ``columns``: slots per row; ``cache``: the icons' disk cache (see :func:`nbviz.featvis.icons`).

    Drive it from code with :meth:`set_mode`, :meth:`set_by`, :meth:`select` (an icon click) and
    :meth:`wait`; read :attr:`channels`, :attr:`values`, :attr:`pictures`, :attr:`finished`,
    :attr:`dictionary`, :attr:`groups`, :meth:`frame` (the slots as RGBA) and
    :meth:`groups_frame`.
    """

    def __init__(self, explorer, *, k: int = 8, groups: int = 6, size: int = 64, steps: int = 48,
                 columns: int = 4, cache=True):
        for name, value, low in (("k", k, 1), ("groups", groups, 1), ("size", size, 16),
                                 ("steps", steps, 1), ("columns", columns, 1)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        self.explorer = explorer
        self.k, self.n_groups, self.size = int(k), int(groups), int(size)
        self.steps, self.columns = int(steps), int(columns)
        self.cache = cache
        self.worker = Worker("nbviz-dictionary")
        self._lock = threading.RLock()
        self._kind = None  # what the slots show: "channels", "groups" or None
        self._items = np.zeros(0, np.int64)
        self._values = np.zeros(0, np.float32)
        self._pictures: list = []
        self._final = np.zeros(0, bool)
        self._colors = None
        self._selected: int | None = None
        self._strip: df.Strip | None = None
        self._image_id = explorer.image_id
        self.dictionary = None  #: the shown :class:`~nbviz.methods.dictionary.SemanticDictionary`
        self.groups = None  #: the shown :class:`~nbviz.methods.neuron_groups.NeuronGroups`
        #: counters (tests): jobs started, updates painted, updates dropped as stale
        self.counts = {"jobs": 0, "painted": 0, "dropped": 0}
        self.history: list[tuple[int, str]] = []  #: (job number, "placeholders" | "preview" | "final")

        self.mode = W.ToggleButtons(options=list(MODES), value="channels", description="dictionary",
                                    style={"button_width": "80px", "description_width": "70px"})
        self.by = W.ToggleButtons(options=list(BY), value="activation", description="rank by",
                                  style={"button_width": "80px", "description_width": "70px"})
        self.strip_canvas = Canvas(width=1, height=1)
        self.groups_canvas = Canvas(width=1, height=1)
        self.groups_canvas.layout.display = "none"
        self.labels = W.HTML("")
        self.labels.add_class("nbviz-dictionary-labels")
        self.status = W.HTML("<span style='color:#888'>click the picture for the top channels there</span>")
        self.status.add_class("nbviz-dictionary-status")
        super().__init__(children=[W.HBox([self.mode, self.by]), W.HBox([self.groups_canvas, self.strip_canvas]),
                                   self.labels, self.status], layout=W.Layout(margin="8px 0 0 0"))
        self.add_class("nbviz-dictionary")
        self.mode.observe(lambda _: self._refresh(), names="value")
        self.by.observe(lambda _: self._refresh(), names="value")
        self.strip_canvas.on_mouse_down(self._on_strip_click)
        explorer.state.observe(self._on_explorer, names=["point", "layer", "target"])
        self._unsubscribe = explorer.session.subscribe(self._on_session)
        if explorer.state.point is not None:
            self._refresh()

    # ================================================================ public

    def set_mode(self, mode: str) -> "DictionaryPanel":
        """"channels" (the dictionary at the clicked cell) or "groups" (neuron groups)."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {list(MODES)}, got {mode!r}")
        self.mode.value = mode
        return self

    def set_by(self, by: str) -> "DictionaryPanel":
        """Rank the channels by "activation" or "attribution"."""
        if by not in BY:
            raise ValueError(f"by must be one of {list(BY)}, got {by!r}")
        self.by.value = by
        return self

    def select(self, i: int) -> "DictionaryPanel":
        """Click slot ``i``: in channels mode the Explorer shows that channel's activation map;
        in groups mode the coloured image shows group ``i`` alone (again: all groups)."""
        with self._lock:
            n = len(self._items)
            if isinstance(i, bool) or not isinstance(i, numbers.Integral) or not 0 <= i < n:
                raise ValueError(f"slot must be an int in [0, {n - 1}], got {i!r}" if n else
                                 "the panel shows no slots yet: click the picture first")
            kind = self._kind
            channel = int(self._items[i])
            layer = self.dictionary.layer if kind == "channels" else self.groups.layer
            self._selected = None if (kind == "groups" and self._selected == i) else int(i)
        if kind == "channels":
            self.explorer.set(method="activations", layer=layer, channel=channel)
        else:
            self._paint_groups()
        self._paint()
        return self

    def refresh(self) -> "DictionaryPanel":
        """Recompute for the Explorer's current image, layer, target and click."""
        self._refresh()
        return self

    def wait(self, timeout: float = 120.0) -> "DictionaryPanel":
        """Block until the panel's background work (dictionary and icons) is done."""
        if not self.worker.wait(timeout):
            raise TimeoutError(f"the dictionary panel was still busy after {timeout} s")
        return self

    @property
    def channels(self) -> np.ndarray:
        """The shown channels (channels mode) or group indices (groups mode), in slot order."""
        with self._lock:
            return self._items.copy()

    @property
    def values(self) -> np.ndarray:
        """Each slot's bar value: activation or attribution (channels), attribution (groups)."""
        with self._lock:
            return self._values.copy()

    @property
    def pictures(self) -> list:
        """Each slot's picture (H×W×3 float in [0, 1]) or None while it is a placeholder."""
        with self._lock:
            return [None if p is None else p.copy() for p in self._pictures]

    @property
    def finished(self) -> np.ndarray:
        """Per slot: whether its icon is final (not a placeholder or a preview)."""
        with self._lock:
            return self._final.copy()

    @property
    def kind(self) -> str | None:
        return self._kind

    @property
    def strip(self) -> df.Strip | None:
        """The slot layout last painted (:meth:`~nbviz.widget.dictionary_frames.Strip.slot_at`)."""
        return self._strip

    def frame(self) -> np.ndarray | None:
        """The slots as painted (RGBA uint8), None before the first click."""
        s = self._strip
        return None if s is None else s.image

    def groups_frame(self) -> np.ndarray | None:
        """The image coloured by neuron group as painted, None outside groups mode."""
        return getattr(self, "_groups_rgba", None) if self._kind == "groups" else None

    def close(self):
        if hasattr(self, "_unsubscribe"):
            self.worker.close()
            try:
                self.explorer.state.unobserve(self._on_explorer, names=["point", "layer", "target"])
            except ValueError:
                pass
            self._unsubscribe()
        super().close()

    # ================================================================ events

    def _on_explorer(self, change):
        if change["name"] == "point" and self.mode.value == "groups":
            return  # groups are of the whole image
        self._refresh()

    def _on_session(self, event, request, payload):
        # the Explorer asks its session for every new image: a new id is a new picture
        if event in ("start", "cached") and self.explorer.image_id != self._image_id:
            self._image_id = self.explorer.image_id
            self._refresh()

    def _on_strip_click(self, x, y):  # canvas (x, y), as ipycanvas sends it
        s = self._strip
        i = s.slot_at(y, x) if s is not None else None
        if i is not None:
            try:
                self.select(i)
            except Exception as exc:
                self._error(exc)

    # ================================================================ background work

    def _refresh(self):
        ex, mode, by = self.explorer, self.mode.value, self.by.value
        self.by.layout.display = None if mode == "channels" else "none"
        self.groups_canvas.layout.display = None if mode == "groups" else "none"
        s = ex.state
        if mode == "channels" and s.point is None:
            self.worker.cancel("dictionary")
            return
        snapshot = dict(image=ex.image, image_id=ex.image_id, layer=s.layer, target=s.target, point=s.point)
        self.counts["jobs"] += 1
        number = self.counts["jobs"]
        run = self._run_channels if mode == "channels" else self._run_groups
        self._set_status(f"computing the {'dictionary' if mode == 'channels' else 'neuron groups'}…")
        self.worker.submit(lambda job: run(job, number, by=by, **snapshot), lambda note: self._done(note),
                           lambda exc, tb: self._error(exc), channel="dictionary", name=mode)

    def _run_channels(self, job, number, *, image, image_id, layer, target, point, by):
        from nbviz.methods.dictionary import dictionary

        ctx = self.explorer.session.context
        rf = ctx.receptive_field(layer)
        shape = self.explorer.probe.layer(layer).output_shape
        h, w, c = (int(v) for v in shape[-3:])
        cy, cx = (int(v) for v in rf.cell(point))
        cell = (min(max(cy, 0), h - 1), min(max(cx, 0), w - 1))
        d = dictionary(ctx.model, image, layer, cell, k=min(self.k, c), target=target, by=by,
                       preprocess=ctx.preprocess)
        if not self._begin(job, number, "channels", d.channels, d.values, None, d):
            return None
        what = "activation" if by == "activation" else "activation × gradient"
        self._set_status(f"top {d.k} channels of {html.escape(layer)} at cell {cell} by {what}; rendering icons…")
        done = self._render_icons(job, number, layer, [int(v) for v in d.channels], image)
        return (f"top {d.k} channels of {html.escape(layer)} at cell {cell} by {what}"
                f"{'' if target is None else f', class {target}'} (click an icon for its map)") if done else None

    def _run_groups(self, job, number, *, image, image_id, layer, target, point, by):
        from nbviz.methods.neuron_groups import neuron_groups

        ctx = self.explorer.session.context
        shape = self.explorer.probe.layer(layer).output_shape
        h, w, c = (int(v) for v in shape[-3:])
        g = neuron_groups(ctx.model, image, layer, n=min(self.n_groups, h * w, c), seed=0, target=target,
                          preprocess=ctx.preprocess)
        if not self._begin(job, number, "groups", np.arange(g.n), g.attributions, g.colors, g):
            return None
        self._paint_groups()
        self._set_status(f"{g.n} neuron groups of {html.escape(layer)} (NMF error {g.error:.2f}); rendering icons…")
        done = self._render_icons(job, number, layer, np.asarray(g.loadings), image)
        return (f"{g.n} neuron groups of {html.escape(layer)} (NMF error {g.error:.2f}), bars: attribution "
                "to the target (click a group to show it alone)") if done else None

    def _render_icons(self, job, number, layer, channels, image) -> bool:
        from nbviz.featvis.icons import IconsStopped, icons

        ctx = self.explorer.session.context

        def callback(preview):
            if not job.current():
                self.counts["dropped"] += 1
                return
            with self._lock:
                for pos, picture in zip(preview.positions, preview.images):
                    self._pictures[pos] = np.asarray(picture, np.float32)
                    self._final[pos] = preview.final
                self.history.append((number, "final" if preview.final else "preview"))
            self._paint()

        try:
            icons(ctx.model, layer, channels, size=self.size, steps=self.steps,
                  preprocess=ctx.featvis_preprocess(image), cache=self.cache, callback=callback, stop=job.stop)
        except IconsStopped:
            return False
        return job.current()

    def _begin(self, job, number, kind, items, values, colors, found) -> bool:
        """Show the slots of ``found`` (a dictionary or neuron groups) with placeholders, only
        while ``job`` is the newest."""
        if not job.current():
            self.counts["dropped"] += 1
            return False
        with self._lock:
            self._kind = kind
            self._items = np.asarray(items, np.int64).copy()
            self._values = np.asarray(values, np.float32).copy()
            self._pictures = [None] * len(self._items)
            self._final = np.zeros(len(self._items), bool)
            self._colors = None if colors is None else np.asarray(colors)
            self._selected = None
            self.dictionary, self.groups = (found, None) if kind == "channels" else (None, found)
            self.history.append((number, "placeholders"))
        self._paint()
        return True

    def _done(self, note):
        if note:
            self._set_status(note)

    # ================================================================ painting

    def _paint(self):
        with self._lock:
            strip = df.slot_strip(self._pictures, self._values, icon=self.size, columns=self.columns,
                                  colors=self._colors, selected=self._selected)
            self._strip = strip
            kind, items, values = self._kind, self._items.copy(), self._values.copy()
            by = self.dictionary.by if kind == "channels" and self.dictionary is not None else "attribution"
            self.counts["painted"] += 1
        _put(self.strip_canvas, strip.image)
        name = "channel" if kind == "channels" else "group"
        cells = " · ".join(f"{name} {int(i)}: {v:.3g}" for i, v in zip(items, values))
        self.labels.value = (f"<span style='font-family:monospace;font-size:11px'>{html.escape(cells)} "
                             f"<span style='color:#888'>(bars: {by})</span></span>")

    def _paint_groups(self):
        g, ex = self.groups, self.explorer
        if g is None:
            return
        geo = display_geometry(*ex.image.shape[:2], target=192, largest=256)
        self._groups_rgba = df.groups_picture(ex.image, g, (geo.H, geo.W), only=self._selected)
        _put(self.groups_canvas, self._groups_rgba)

    def _set_status(self, text: str):
        self.status.value = f"<span style='color:#444'>{text}</span>"

    def _error(self, exc):
        self.status.value = f"<span style='color:#b00020'><b>error</b> {html.escape(clean_error(exc))}</span>"


def _put(canvas, rgba: np.ndarray) -> None:
    h, w = rgba.shape[:2]
    with PAINT_LOCK:
        if (canvas.width, canvas.height) != (w, h):
            canvas.width, canvas.height = w, h
            canvas.layout.width, canvas.layout.height = f"{w}px", f"{h}px"
        with hold_canvas():
            canvas.clear()
            put_rgba(canvas, rgba)
