"""The Explorer's three canvas layers as numpy RGBA frames (no widgets).

``image`` (bottom) shows the picture, ``overlay`` the method's result, ``top`` the receptive-field
box, the crosshair and the cell grid. All three have the display size: the image scaled by a
nearest-neighbour factor so small inputs are readable, aspect kept (:func:`display_geometry`).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from nbviz import render

__all__ = ["Geometry", "display_geometry", "image_layer", "overlay_layer", "top_layer",
           "channel_grid", "ChannelGrid"]

BOX_COLOR = (255, 230, 0)
GRADIENT_BOX_COLOR = (0, 255, 255)
CROSS_COLOR = (255, 255, 255)
CROSS_SHADOW = (0, 0, 0, 170)
GRID_COLOR = (255, 255, 255, 110)


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


def overlay_layer(kind: str | None, data, geometry: Geometry, *, cmap: str = "jet",
                  alpha: float = 0.5) -> np.ndarray:
    """A method's result as RGBA at display size.

    ``kind``: ``"heat"`` (H×W in [0, 1] through ``cmap``), ``"rgb"`` (H×W×3 in [0, 1], e.g.
    guided backprop) drawn with opacity ``alpha``; ``"picture"`` (a feature visualisation) drawn
    opaque; ``None``: transparent.
    """
    if kind is None or data is None:
        return render.blank(geometry.H, geometry.W)
    if kind == "heat":
        small = render.heatmap(data, cmap=cmap, alpha=alpha)
    elif kind == "rgb":
        small = render.to_rgba(np.clip(data, 0, 1), alpha=round(alpha * 255))
    elif kind == "picture":
        small = render.to_rgba(np.clip(data, 0, 1))
    else:
        raise ValueError(f"overlay kind must be 'heat', 'rgb', 'picture' or None, got {kind!r}")
    return render.resize_nearest(small, (geometry.H, geometry.W))


def top_layer(geometry: Geometry, *, point=None, box=None, gradient_box=None, grid=None) -> np.ndarray:
    """Box, crosshair and grid on a transparent layer at display size.

    ``point`` (y, x) and boxes (top, left, bottom, right) in image pixels; ``grid`` =
    ``(stride, offset)`` of the layer's receptive field, in image pixels.
    """
    out = render.blank(geometry.H, geometry.W)
    if grid is not None:
        (sy, sx), (oy, ox) = grid
        fy, fx = geometry.scale
        render.draw_grid(out, (sy * fy, sx * fx), ((oy + 0.5) * fy, (ox + 0.5) * fx), GRID_COLOR)
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
    """Tiles of an h×w×c activation: ``image`` (uint8 RGBA), tile size, columns, padding."""

    image: np.ndarray
    tile: tuple[int, int]
    columns: int
    channels: int
    pad: int

    def channel_at(self, y: float, x: float) -> int | None:
        """The channel whose tile contains grid pixel (y, x), or None (padding, outside)."""
        th, tw = self.tile
        row, ry = divmod(int(y), th + self.pad)
        col, rx = divmod(int(x), tw + self.pad)
        if y < 0 or x < 0 or ry >= th or rx >= tw or col >= self.columns:
            return None
        k = row * self.columns + col
        return k if k < self.channels else None


def channel_grid(activation, *, width: int = 256, columns: int | None = None, pad: int = 1,
                 selected: int | None = None, cmap: str = "viridis") -> ChannelGrid:
    """Every channel of an ``h×w×c`` activation as a tile (each scaled to its own range),
    nearest-upscaled so the grid is about ``width`` pixels wide; ``selected`` gets a frame."""
    a = np.asarray(activation, np.float32)
    if a.ndim != 3:
        raise ValueError(f"activation must be h×w×c, got shape {a.shape}")
    h, w, c = a.shape
    cols = columns or int(np.ceil(np.sqrt(c)))
    rows = int(np.ceil(c / cols))
    f = max(1, (width - pad * (cols - 1)) // (cols * w))
    th, tw = h * f, w * f
    out = np.zeros((rows * th + (rows - 1) * pad, cols * tw + (cols - 1) * pad, 4), np.uint8)
    out[..., 3] = 255
    lo, hi = a.min(axis=(0, 1)), a.max(axis=(0, 1))
    span = np.where(hi > lo, hi - lo, 1)
    norm = (a - lo) / span
    for k in range(c):
        r, q = divmod(k, cols)
        y, x = r * (th + pad), q * (tw + pad)
        out[y:y + th, x:x + tw] = render.resize_nearest(render.heatmap(norm[..., k], cmap=cmap, alpha=1.0), (th, tw))
        if k == selected:
            render.draw_box(out, (y, x, y + th, x + tw), (255, 60, 60), width=max(1, min(2, th // 4)))
    return ChannelGrid(out, (th, tw), cols, c, pad)
