"""The Explorer's controls, built from the method table's :class:`~nbviz.methods.table.Control`
rows (kind -> widget) and linked to the state's traits of the same name. No method is named here.
"""

from __future__ import annotations

import math

import ipywidgets as W

from nbviz.methods import table
from nbviz.widget.state import METHOD_CONTROLS, TILE_SORTS, VIEW

__all__ = ["widget_for", "Controls", "TOP"]

TOP = -1  # the target dropdown's value for "the top prediction" (state.target None)
_WIDE = {"description_width": "90px"}


def widget_for(control: table.Control) -> W.Widget:
    """The widget of one control: "int"/"float" sliders, "log" a log slider, "choice" a
    dropdown, "toggle" toggle buttons, "bool" a checkbox; labelled with the control's text."""
    kind, lim, text = control.kind, control.limits, control.text
    tip = control.help or text
    if kind == "int":
        return W.IntSlider(control.default, min=lim[0], max=lim[1], step=lim[2] if len(lim) > 2 else 1,
                           description=text, style=_WIDE, tooltip=tip)
    if kind == "float":
        return W.FloatSlider(control.default, min=lim[0], max=lim[1], step=lim[2] if len(lim) > 2 else 0.01,
                             description=text, style=_WIDE, tooltip=tip)
    if kind == "log":
        return W.FloatLogSlider(control.default, min=math.log10(lim[0]), max=math.log10(lim[1]),
                                step=lim[2] if len(lim) > 2 else 0.1, description=text, style=_WIDE, tooltip=tip)
    if kind == "choice":
        return W.Dropdown(options=list(lim), value=control.default, description=text, style=_WIDE,
                          layout=W.Layout(width="220px"), tooltip=tip)
    if kind == "toggle":
        return W.ToggleButtons(options=list(lim), value=control.default, description=text, tooltip=tip,
                               style={"button_width": "90px", **_WIDE})
    if kind == "bool":
        return W.Checkbox(control.default, description=text, indent=False, tooltip=tip)
    raise ValueError(f"control {control.name!r}: no widget for kind {kind!r}")


class Controls:
    """Every widget of the Explorer, linked to ``state``: the selectors (method, layer, target,
    channel), one widget per table control, the view controls, the on-demand run box, the
    channel tiles box, and the text areas. ``show(row)`` shows what a row uses."""

    def __init__(self, state, layers: list[str], channels: int):
        s = self.state = state
        self.method = W.Dropdown(options=[(m.label, m.key) for m in table.METHODS], value=s.method,
                                 description="method", style=_WIDE)
        self.layer = W.Dropdown(options=layers, value=s.layer, description="layer", style=_WIDE)
        # ipywidgets reads a Dropdown value of None as "nothing selected": the top prediction is -1
        self.target = W.Dropdown(options=[("top prediction", TOP)], value=TOP, description="target", style=_WIDE)
        self.channel = W.BoundedIntText(s.channel, min=0, max=max(0, channels - 1), description="channel",
                                        style=_WIDE, layout=W.Layout(width="180px"))
        W.link((s, "target"), (self.target, "value"),
               transform=(lambda t: TOP if t is None else t, lambda v: None if v == TOP else v))
        for name in ("method", "layer", "channel"):
            W.link((s, name), (getattr(self, name), "value"))
        #: one widget per control name (method controls and view controls)
        self.widgets: dict[str, W.Widget] = {}
        for name, control in {**METHOD_CONTROLS, **VIEW}.items():
            w = self.widgets[name] = widget_for(control)
            w.value = getattr(s, name)
            W.link((s, name), (w, "value"))
        # a box per method holding its own controls (shared controls appear in each)
        self.method_boxes = {m.key: W.VBox([self.widgets[c.name] for c in m.controls]) for m in table.METHODS}
        self.run = W.Button(description="Run", icon="play", button_style="success", layout=W.Layout(width="90px"))
        self.stop = W.Button(description="Stop", icon="stop", button_style="danger", layout=W.Layout(width="90px"))
        self.progress = W.FloatProgress(min=0, max=1, value=0, layout=W.Layout(width="180px"))
        self.progress_text = W.Label("")
        self.on_demand = W.VBox([W.HBox([self.run, self.stop]), W.HBox([self.progress, self.progress_text])])
        # channel tiles: a page of tiles, sorted, with paging buttons
        self.tile_sort = W.ToggleButtons(options=list(TILE_SORTS), value=s.tile_sort, description="sort",
                                         style={"button_width": "70px", "description_width": "40px"})
        W.link((s, "tile_sort"), (self.tile_sort, "value"))
        self.prev_page = W.Button(icon="chevron-left", layout=W.Layout(width="40px"), tooltip="previous channels")
        self.next_page = W.Button(icon="chevron-right", layout=W.Layout(width="40px"), tooltip="next channels")
        self.page_text = W.Label("")
        from ipycanvas import Canvas

        self.tiles_canvas = Canvas(width=1, height=1)
        self.tiles = W.VBox([W.Label("channels (click one)"), self.tile_sort,
                             W.HBox([self.prev_page, self.page_text, self.next_page]), self.tiles_canvas])
        self.upload = W.FileUpload(accept="image/*", multiple=False, description="image")
        self.save = W.HTML("")  # a download link, refreshed after each paint (see the snapshot)
        self.readout = W.HTML(layout=W.Layout(min_height="22px"))
        self.readout.add_class("nbviz-readout")
        self.busy = W.HTML("", layout=W.Layout(min_height="22px"))
        self.busy.add_class("nbviz-busy")
        self.status = W.HTML(layout=W.Layout(min_height="22px"))
        self.status.add_class("nbviz-status")

    def side(self) -> W.Widget:
        v = self.widgets
        return W.VBox([W.HBox([v["cmap"], v["grid"]]), v["alpha"], *self.method_boxes.values(), self.on_demand,
                       self.tiles, W.HBox([self.upload, self.save])], layout=W.Layout(margin="0 0 0 12px"))

    def top(self) -> W.Widget:
        return W.HBox([self.method, self.layer, self.target, self.channel], layout=W.Layout(flex_flow="row wrap"))

    def show(self, row: table.Method, *, tiles: bool) -> None:
        """Show the controls ``row`` uses; disable the selectors it does not read."""
        for key, box in self.method_boxes.items():
            box.layout.display = None if key == row.key and row.controls else "none"
        self.on_demand.layout.display = None if row.on_demand else "none"
        self.tiles.layout.display = None if tiles else "none"
        self.layer.disabled = not ({"layer", "channel"} & row.needs)
        self.target.disabled = "target" not in row.needs
        self.channel.disabled = "channel" not in row.needs
