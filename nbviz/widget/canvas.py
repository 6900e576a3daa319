"""The Explorer's canvas: three stacked ipycanvas layers (image, overlay, top) kept as numpy RGBA
frames, repainted only when their pixels change."""

from __future__ import annotations

import threading
from collections import Counter

import numpy as np
from ipycanvas import MultiCanvas, hold_canvas

import ipywidgets as W

from nbviz import render

__all__ = ["LayeredCanvas", "put_rgba", "PAINT_LOCK"]

# ipycanvas' hold_canvas switches one global cache on and off: one painter at a time
PAINT_LOCK = threading.RLock()
LAYERS = ("image", "overlay", "top")


class LayeredCanvas:
    """A MultiCanvas of :data:`LAYERS` with their current frames; ``paints`` counts repaints."""

    def __init__(self, geometry):
        self.geometry = geometry
        g = geometry
        self.widget = MultiCanvas(3, width=g.W, height=g.H, layout=W.Layout(width=f"{g.W}px", height=f"{g.H}px"))
        self.widget.on_client_ready(self.repaint_all)
        self.frames: dict[str, np.ndarray] = {}
        self.paints: Counter = Counter()

    def resize(self, geometry) -> None:
        self.geometry = g = geometry
        self.widget.width, self.widget.height = g.W, g.H
        self.widget.layout.width, self.widget.layout.height = f"{g.W}px", f"{g.H}px"

    def paint(self, name: str, rgba: np.ndarray) -> None:
        """Send ``rgba`` to layer ``name`` unless it already shows exactly that."""
        with PAINT_LOCK:
            if name != "image" and name in self.frames and np.array_equal(self.frames[name], rgba):
                return
            self.frames[name] = rgba
            self.paints[name] += 1
            layer = self.widget[LAYERS.index(name)]
            with hold_canvas():
                layer.clear()
                put_rgba(layer, rgba)

    def repaint_all(self) -> None:
        """Send every layer again (a new page connected: Voila, a reload)."""
        # ipycanvas remembers the canvas it drew on last and would skip the "switch canvas"
        # command the new page needs
        manager = getattr(self.widget, "_canvas_manager", None)
        if manager is not None and hasattr(manager, "_current_canvas"):
            manager._current_canvas = None
        with PAINT_LOCK, hold_canvas():
            for i, name in enumerate(LAYERS):
                if name in self.frames:
                    self.widget[i].clear()
                    put_rgba(self.widget[i], self.frames[name])
                    self.paints[name] += 1

    def composed(self) -> np.ndarray:
        """What the browser shows: the layers composed, H×W×4 uint8."""
        with PAINT_LOCK:
            return render.composite(*(self.frames[k] for k in LAYERS))


def put_rgba(canvas, rgba: np.ndarray) -> None:
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
