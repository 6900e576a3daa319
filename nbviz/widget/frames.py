"""The Explorer's three canvas layers as numpy RGBA frames (no widgets).

``image`` (bottom) shows the picture, ``overlay`` the method's result, ``top`` the receptive-field
box, the crosshair and the cell grid. All three have the display size: the image scaled by a
nearest-neighbour factor so small inputs are readable, aspect kept (:func:`display_geometry`).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from nbviz import render

__all__ = ["Geometry", "display_geometry", "image_layer", "display_rgba", "overlay_layer", "top_layer",
           "channel_order", "channel_grid", "ChannelGrid"]

BOX_COLOR = (255, 230, 0)
GRADIENT_BOX_COLOR = (0, 255, 255)
CROSS_COLOR = (255, 255, 255)
CROSS_SHADOW = (0, 0, 0, 170)
GRID_COLOR = (255, 255, 255, 150)
GRID_SHADOW = (0, 0, 0, 110)


@dataclasses.dataclass(frozen=True)
class Geometry:
    """Image size (h, w), display size (H, W) and the factor between them (display / image)."""

    h: int
    w: int
    H: int
    W: int

    @property
    def scale(self) -> tuple[float, float]:
        return self.H / self.h, self.W / self.w

    def to_image(self, y: float, x: float) -> tuple[int, int]:
        """Canvas pixel -> image pixel (clipped to the image)."""
        sy, sx = self.scale
        return (int(min(max(y // sy, 0), self.h - 1)), int(min(max(x // sx, 0), self.w - 1)))

    def to_canvas_box(self, box) -> tuple[int, int, int, int]:
        """An image box (top, left, bottom, right; exclusive) in canvas pixels."""
        sy, sx = self.scale
        t, l, b, r = box
        return (int(round(t * sy)), int(round(l * sx)), int(round(b * sy)), int(round(r * sx)))

    def to_canvas_point(self, point) -> tuple[int, int]:
        """The canvas pixel at the centre of image pixel ``point`` (y, x)."""
        sy, sx = self.scale
        return int((point[0] + 0.5) * sy), int((point[1] + 0.5) * sx)


def display_geometry(h: int, w: int, *, target: int = 448, largest: int = 640) -> Geometry:
    """Display size for an ``h×w`` image: an integer upscale so the longer side reaches about
    ``target`` (small inputs), unchanged up to ``largest``, else shrunk to ``largest``."""
    side = max(h, w)
    if side < target:
        f = max(1, target // side)
        return Geometry(h, w, h * f, w * f)
    if side <= largest:
        return Geometry(h, w, h, w)
    f = largest / side
    return Geometry(h, w, max(1, round(h * f)), max(1, round(w * f)))


def image_layer(image, geometry: Geometry) -> np.ndarray:
    """The picture as opaque RGBA at display size."""
    return render.to_rgba(render.resize_nearest(render.to_rgb8(image), (geometry.H, geometry.W)))


def display_rgba(display: str | None, data, *, cmap: str = "auto", alpha: float = 0.6) -> np.ndarray | None:
    """A result's ``data`` as RGBA at its own size, by display kind (:data:`nbviz.methods.table.DISPLAYS`).

    "unsigned" / "field": divided by the maximum (0 stays 0) through a sequential colormap;
    "signed": ``v / (2 max|v|) + 1/2`` through a diverging colormap, so zero is its centre;
    "rgb" (signed H×W×3 gradients): each channel divided by twice its 99.5th percentile of
    ``|v|`` around mid-grey, drawn opaque (the map alone: over the photo it reads as a grey
    wash); "picture": opaque. ``cmap="auto"`` picks :data:`nbviz.methods.table.DEFAULT_CMAPS`
    by kind; another name wins. None: nothing to paint.
    """
    from nbviz.methods.table import DEFAULT_CMAPS

    if display is None or data is None:
        return None
    a = np.asarray(data, np.float32)
    if display in ("unsigned", "field", "signed"):
        name = DEFAULT_CMAPS[display] if cmap == "auto" else cmap
        a = np.nan_to_num(a)
        if display == "signed":
            m = float(np.abs(a).max()) if a.size else 0.0
            v = a / (2 * m) + 0.5 if m > 0 else np.full_like(a, 0.5)
        else:
            m = float(a.max()) if a.size else 0.0
            v = np.clip(a, 0, None) / m if m > 0 else np.zeros_like(a)
        return render.heatmap(v, cmap=name, alpha=alpha)
    if display == "rgb":
        scale = np.percentile(np.abs(a).reshape(-1, a.shape[-1]), 99.5, axis=0)
        v = np.clip(a / (2 * np.where(scale > 0, scale, 1)) + 0.5, 0, 1)
        return render.to_rgba(v)
    if display == "picture":
        return render.to_rgba(np.clip(a, 0, 1))
    raise ValueError(f"display must be one of unsigned, signed, field, rgb, picture or None, got {display!r}")


def overlay_layer(display: str | None, data, geometry: Geometry, *, cmap: str = "auto",
                  alpha: float = 0.6) -> np.ndarray:
    """:func:`display_rgba` at display size (transparent when there is nothing to paint)."""
    small = display_rgba(display, data, cmap=cmap, alpha=alpha)
    if small is None:
        return render.blank(geometry.H, geometry.W)
    return render.resize_nearest(small, (geometry.H, geometry.W))


def top_layer(geometry: Geometry, *, point=None, box=None, gradient_box=None, grid=None) -> np.ndarray:
    """Box, crosshair and cell grid on a transparent layer at display size.

    ``point`` (y, x) and boxes (top, left, bottom, right) in image pixels; ``grid`` =
    ``(stride, offset)`` of the layer's receptive field, in image pixels: lines are drawn
    between the output cells (half a stride from the cell centres ``offset + k·stride``).
    """
    out = render.blank(geometry.H, geometry.W)
    if grid is not None:
        (sy, sx), (oy, ox) = grid
        fy, fx = geometry.scale
        stride, offset = (sy * fy, sx * fx), ((oy + 0.5 + sy / 2) * fy, (ox + 0.5 + sx / 2) * fx)
        if min(stride) >= 3:  # finer lines would cover the picture
            render.draw_grid(out, stride, (offset[0] + 1, offset[1] + 1), GRID_SHADOW)  # seen on light parts
            render.draw_grid(out, stride, offset, GRID_COLOR)
    if gradient_box is not None:
        render.draw_box(out, geometry.to_canvas_box(gradient_box), GRADIENT_BOX_COLOR, width=1)
    if box is not None:
        render.draw_box(out, geometry.to_canvas_box(box), BOX_COLOR, width=2)
    if point is not None:
        centre = geometry.to_canvas_point(point)
        render.draw_crosshair(out, centre, CROSS_SHADOW, size=10, width=3, gap=1)  # dark outline
        render.draw_crosshair(out, centre, CROSS_COLOR, size=8, width=1, gap=2)
    return out


@dataclasses.dataclass(frozen=True)
class ChannelGrid:
    """A page of channel tiles: ``image`` (uint8 RGBA), tile size, columns, padding, and the
    channel shown in each tile (``order``, in tile order)."""

    image: np.ndarray
    tile: tuple[int, int]
    columns: int
    order: tuple[int, ...]
    pad: int

    @property
    def channels(self) -> int:
        return len(self.order)

    def channel_at(self, y: float, x: float) -> int | None:
        """The channel whose tile contains grid pixel (y, x), or None (padding, outside)."""
        th, tw = self.tile
        row, ry = divmod(int(y), th + self.pad)
        col, rx = divmod(int(x), tw + self.pad)
        if y < 0 or x < 0 or ry >= th or rx >= tw or col >= self.columns:
            return None
        k = row * self.columns + col
        return self.order[k] if k < len(self.order) else None


def channel_order(activation, sort: str = "index", point=None) -> np.ndarray:
    """Channels of an h×w×c activation in display order: "index"; "mean" (highest mean first);
    "at click" (highest value at the activation cell ``point`` = (row, col) first; the mean
    when no point is given)."""
    a = np.asarray(activation, np.float32)
    if sort == "index":
        return np.arange(a.shape[-1])
    if sort == "at click" and point is not None:
        key = a[int(point[0]), int(point[1])]
    elif sort in ("mean", "at click"):
        key = a.mean(axis=(0, 1))
    else:
        raise ValueError(f"sort must be 'index', 'mean' or 'at click', got {sort!r}")
    return np.argsort(-key, kind="stable")


def channel_grid(activation, channels=None, *, columns: int = 8, tile: int = 40, pad: int = 2,
                 selected: int | None = None, cmap: str = "viridis") -> ChannelGrid:
    """Tiles of the ``channels`` (default: all) of an ``h×w×c`` activation, ``columns`` per
    row, each tile about ``tile`` pixels (nearest upscale, at least the map's own size) and
    scaled to its own range; ``selected`` gets a red frame."""
    a = np.asarray(activation, np.float32)
    if a.ndim != 3:
        raise ValueError(f"activation must be h×w×c, got shape {a.shape}")
    h, w, c = a.shape
    order = tuple(int(k) for k in (range(c) if channels is None else channels))
    cols = max(1, min(columns, len(order)))
    rows = max(1, -(-len(order) // cols))
    f = max(1, tile // max(h, w))
    th, tw = h * f, w * f
    out = np.zeros((rows * th + (rows - 1) * pad, cols * tw + (cols - 1) * pad, 4), np.uint8)
    out[..., 3] = 255
    for i, k in enumerate(order):
        ch = a[..., k]
        lo, hi = float(ch.min()), float(ch.max())
        norm = (ch - lo) / (hi - lo) if hi > lo else np.zeros_like(ch)
        r, q = divmod(i, cols)
        y, x = r * (th + pad), q * (tw + pad)
        out[y:y + th, x:x + tw] = render.resize_nearest(render.heatmap(norm, cmap=cmap, alpha=1.0), (th, tw))
        if k == selected:
            render.draw_box(out, (y, x, y + th, x + tw), (255, 60, 60), width=2)
    return ChannelGrid(out, (th, tw), cols, order, pad)
