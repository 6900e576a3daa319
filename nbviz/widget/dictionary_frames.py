"""The dictionary panel's pictures as numpy RGBA (no widgets): a strip of icon slots with bars,
and the image coloured by neuron group.

A *slot* is one entry of a semantic dictionary (a channel) or one neuron group: its picture (a
feature-visualisation icon, or a placeholder while the icon renders) with a bar under it. The
bar's length is ``|v| / max |v|`` of the slot's value over the shown slots (so the largest fills
the slot's width); its colour says the sign (:data:`POSITIVE` / :data:`NEGATIVE`) unless the slot
has its own colour (a group's palette colour).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from nbviz import render

__all__ = ["Strip", "placeholder", "slot_strip", "groups_picture", "POSITIVE", "NEGATIVE"]

POSITIVE = (46, 125, 220)
NEGATIVE = (214, 69, 65)
BACKGROUND = (255, 255, 255, 255)
BAR_TRACK = (230, 230, 230, 255)
SELECTED = (255, 160, 0)


def placeholder(size: int) -> np.ndarray:
    """A ``size×size`` RGB uint8 tile shown while an icon renders: light grey with darker
    diagonal stripes (never mistaken for a picture)."""
    yy, xx = np.mgrid[:size, :size]
    tile = np.full((size, size, 3), 214, np.uint8)
    tile[((yy + xx) // 6) % 2 == 0] = 196
    return tile


@dataclasses.dataclass(frozen=True)
class Strip:
    """A strip of slots: ``image`` (uint8 RGBA), the slot size (``icon`` px square plus a bar of
    ``bar`` px under it), ``columns``, ``pad`` and the number of slots ``n``."""

    image: np.ndarray
    icon: int
    bar: int
    columns: int
    pad: int
    n: int

    def origin(self, i: int) -> tuple[int, int]:
        """Top-left pixel (y, x) of slot ``i``'s picture."""
        row, col = divmod(int(i), self.columns)
        return self.pad + row * (self.icon + self.bar + 2 * self.pad), self.pad + col * (self.icon + self.pad)

    def slot_at(self, y: float, x: float) -> int | None:
        """The slot whose picture or bar contains strip pixel (y, x), or None."""
        for i in range(self.n):
            top, left = self.origin(i)
            if top <= y < top + self.icon + self.bar + self.pad and left <= x < left + self.icon:
                return i
        return None


def slot_strip(pictures, values, *, icon: int = 64, columns: int = 4, bar: int = 8, pad: int = 4,
               colors=None, selected: int | None = None) -> Strip:
    """Slots in rows of ``columns``: picture ``i`` (H×W×3 floats in [0, 1] or uint8, resized to
    ``icon`` px, or None for :func:`placeholder`) with the bar of ``values[i]`` under it.

    ``colors``: (n, 3) uint8, one bar colour per slot (default: by sign); ``selected``: the slot
    framed in orange.
    """
    values = np.asarray(values, np.float64).reshape(-1)
    n = len(values)
    if len(pictures) != n:
        raise ValueError(f"pictures and values must have the same length, got {len(pictures)} and {n}")
    cols = max(1, min(int(columns), n)) if n else 1
    rows = max(1, -(-n // cols))
    width = pad + cols * (icon + pad)
    height = pad + rows * (icon + bar + 2 * pad)
    out = np.empty((height, width, 4), np.uint8)
    out[:] = BACKGROUND
    strip = Strip(out, icon, bar, cols, pad, n)
    peak = float(np.abs(values).max()) if n else 0.0
    empty = placeholder(icon)
    for i in range(n):
        top, left = strip.origin(i)
        pic = empty if pictures[i] is None else _rgb8(pictures[i], icon)
        out[top:top + icon, left:left + icon, :3] = pic
        out[top:top + icon, left:left + icon, 3] = 255
        by = top + icon + pad // 2
        out[by:by + bar, left:left + icon] = BAR_TRACK
        length = int(round(icon * abs(values[i]) / peak)) if peak > 0 else 0
        if colors is not None:
            color = tuple(int(c) for c in np.asarray(colors)[i])
        else:
            color = POSITIVE if values[i] >= 0 else NEGATIVE
        out[by:by + bar, left:left + length, :3] = color
        out[by:by + bar, left:left + length, 3] = 255
        if selected is not None and i == selected:
            render.draw_box(out, (max(0, top - 2), max(0, left - 2), top + icon + 2, left + icon + 2),
                            SELECTED, width=2)
    return strip


def groups_picture(image, groups, size: tuple[int, int], *, only: int | None = None,
                   opacity: float = 0.85) -> np.ndarray:
    """The image (nearest-resized to ``size`` = (H, W)) with :func:`nbviz.color_groups` of
    ``groups`` (a :class:`~nbviz.methods.neuron_groups.NeuronGroups`) laid over it, opaque RGBA
    uint8; ``only``: paint that group alone (the others' maps set to zero, colours kept)."""
    from nbviz.methods.neuron_groups import color_groups

    spatial = np.asarray(groups.spatial, np.float32)
    if only is not None:
        spatial = np.where(np.arange(spatial.shape[-1]) == int(only), spatial, 0.0).astype(np.float32)
    base = render.to_rgba(render.resize_nearest(render.to_rgb8(image), tuple(size)))
    return render.composite(base, color_groups(spatial, tuple(size), colors=groups.colors, opacity=opacity))


def _rgb8(picture, icon: int) -> np.ndarray:
    a = np.asarray(picture)
    if a.dtype != np.uint8:
        a = np.clip(np.rint(np.asarray(a, np.float32) * 255.0), 0, 255).astype(np.uint8)
    a = a[..., :3]
    if a.shape[:2] != (icon, icon):
        a = render.resize_nearest(a, (icon, icon))
    return a
