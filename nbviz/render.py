"""Pictures as numbers: heatmaps, boxes, crosshairs, grids and overlays as uint8 RGBA arrays.

Numpy in, ``H×W×4`` uint8 RGBA out; no widgets. Colours are ``(r, g, b)`` or ``(r, g, b, a)`` in
0..255. Boxes follow the project's convention ``(top, left, bottom, right)``, bottom/right
exclusive, and may reach outside the array (they are clipped when drawn).
"""

from __future__ import annotations

import functools
from typing import Sequence

import numpy as np

__all__ = [
    "normalize",
    "attribution_map",
    "to_rgb8",
    "to_rgba",
    "colormap_names",
    "heatmap",
    "resize_nearest",
    "blank",
    "draw_box",
    "draw_crosshair",
    "draw_grid",
    "composite",
    "encode_png",
    "to_png",
    "diverging",
    "one_scale",
    "scaled",
    "display_map",
]

Color = Sequence[int]


def normalize(values, *, symmetric: bool = False) -> np.ndarray:
    """Scale an array to [0, 1] (float32): min..max, or -m..m around 0.5 with ``symmetric``.

    A constant array maps to zeros (0.5 when symmetric); NaNs become the lowest value.
    """
    a = np.asarray(values, dtype=np.float32)
    a = np.nan_to_num(a, nan=np.nanmin(a) if np.isfinite(a).any() else 0.0, posinf=0.0, neginf=0.0)
    if symmetric:
        m = float(np.abs(a).max()) if a.size else 0.0
        return np.full_like(a, 0.5) if m == 0 else (a / (2 * m) + 0.5).astype(np.float32)
    lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
    if hi <= lo:
        return np.zeros_like(a)
    return ((a - lo) / (hi - lo)).astype(np.float32)


def attribution_map(attribution) -> np.ndarray:
    """An ``H×W×C`` attribution (gradients, SmoothGrad, IG) as an ``H×W`` map in [0, 1].

    The largest absolute value over channels, scaled by the maximum; an ``H×W`` map is scaled
    the same way.
    """
    a = np.abs(np.asarray(attribution, dtype=np.float32))
    if a.ndim == 3:
        a = a.max(axis=-1)
    if a.ndim != 2:
        raise ValueError(f"attribution must be H×W or H×W×C, got shape {a.shape}")
    m = float(a.max()) if a.size else 0.0
    return a / m if m > 0 else a


def to_rgb8(image) -> np.ndarray:
    """Any image (H×W, H×W×1, H×W×3, H×W×4; uint8, bool or float) as ``H×W×3`` uint8.

    uint8 is kept, floats within [0, 1] are multiplied by 255, floats within [0, 255] are rounded,
    other ranges are stretched min..max. Alpha is dropped, one channel is repeated.
    """
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[-1] in (1, 3, 4):
        a = a[..., :3] if a.shape[-1] != 1 else np.repeat(a, 3, axis=-1)
    elif a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=-1)
    else:
        raise ValueError(f"image must be H×W or H×W×{{1,3,4}}, got shape {a.shape}")
    if a.dtype == np.uint8:
        return np.ascontiguousarray(a)
    if a.dtype == bool:
        return a.astype(np.uint8) * 255
    f = np.nan_to_num(a.astype(np.float32))
    lo, hi = (float(f.min()), float(f.max())) if f.size else (0.0, 0.0)
    if lo >= 0 and hi <= 1:
        f = f * 255
    elif not (lo >= 0 and hi <= 255):
        f = normalize(f) * 255
    return np.clip(np.rint(f), 0, 255).astype(np.uint8)


def to_rgba(image, alpha: int = 255) -> np.ndarray:
    """An image (see :func:`to_rgb8`) as ``H×W×4`` uint8 with a constant alpha."""
    rgb = to_rgb8(image)
    out = np.empty(rgb.shape[:2] + (4,), np.uint8)
    out[..., :3] = rgb
    out[..., 3] = int(np.clip(alpha, 0, 255))
    return out


def colormap_names() -> list[str]:
    """Matplotlib colormaps offered for heatmaps (perceptual ones first)."""
    import matplotlib

    preferred = ["jet", "viridis", "inferno", "magma", "plasma", "turbo", "hot", "gray", "coolwarm", "RdBu_r", "bwr"]
    available = set(matplotlib.colormaps)
    return [n for n in preferred if n in available]


@functools.lru_cache(maxsize=32)
def _lut(cmap: str) -> np.ndarray:
    import matplotlib

    try:
        cm = matplotlib.colormaps[cmap]
    except KeyError:
        raise ValueError(f"unknown matplotlib colormap {cmap!r}; e.g. {', '.join(colormap_names())}") from None
    lut = (cm(np.linspace(0, 1, 256)) * 255).round().astype(np.uint8)
    lut.flags.writeable = False
    return lut


def heatmap(values, *, cmap: str = "jet", alpha: float = 0.5, normalized: bool = False,
            alpha_by_value: bool = False) -> np.ndarray:
    """An ``H×W`` map as RGBA through a matplotlib colormap.

    ``values`` in [0, 1] (with ``normalized=True`` they are scaled min..max first). ``alpha`` is
    the opacity in [0, 1]; with ``alpha_by_value`` each pixel's opacity is ``alpha × value`` so low
    values fade out.
    """
    v = np.asarray(values, dtype=np.float32)
    if v.ndim != 2:
        raise ValueError(f"heatmap needs an H×W map, got shape {v.shape}")
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if normalized:
        v = normalize(v)
    scaled = v * np.float32(255)
    scaled += np.float32(0.5)
    if not np.isfinite(scaled).all():
        scaled = np.nan_to_num(scaled)
    np.clip(scaled, 0, 255, out=scaled)
    idx = scaled.astype(np.uint8)
    out = np.take(_lut(cmap), idx, axis=0)  # a new array
    if alpha_by_value:
        out[..., 3] = (idx.astype(np.float32) * alpha).astype(np.uint8)
    else:
        out[..., 3] = int(round(alpha * 255))
    return out


def resize_nearest(array, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of the first two axes to ``shape`` (height, width)."""
    a = np.asarray(array)
    h, w = a.shape[:2]
    H, W = int(shape[0]), int(shape[1])
    if (H, W) == (h, w):
        return a
    if H % h == 0 and W % w == 0:  # integer upscale: repeat is faster than gathering
        return np.repeat(np.repeat(a, H // h, axis=0), W // w, axis=1)
    rows = np.minimum(((np.arange(H) + 0.5) * h / H).astype(np.intp), h - 1)
    cols = np.minimum(((np.arange(W) + 0.5) * w / W).astype(np.intp), w - 1)
    return a[rows[:, None], cols[None, :]]


def blank(height: int, width: int) -> np.ndarray:
    """A fully transparent ``height×width`` RGBA array."""
    return np.zeros((int(height), int(width), 4), np.uint8)


def _rgba(color: Color) -> np.ndarray:
    c = list(color)
    if len(c) == 3:
        c.append(255)
    if len(c) != 4:
        raise ValueError(f"colour must be (r, g, b) or (r, g, b, a), got {color!r}")
    return np.array(c, np.uint8)


def draw_box(rgba: np.ndarray, box, color: Color = (255, 255, 0), width: int = 2) -> np.ndarray:
    """Draw the outline of ``box`` (top, left, bottom, right; exclusive) into ``rgba`` in place.

    The outline lies inside the box; parts outside the array are clipped. Returns ``rgba``.
    """
    t, l, b, r = (int(round(v)) for v in box)
    H, W = rgba.shape[:2]
    c = _rgba(color)
    w = max(1, int(width))
    for y0, y1, x0, x1 in ((t, t + w, l, r), (b - w, b, l, r), (t, b, l, l + w), (t, b, r - w, r)):
        y0, y1, x0, x1 = max(y0, t, 0), min(y1, b, H), max(x0, l, 0), min(x1, r, W)
        if y0 < y1 and x0 < x1:
            rgba[y0:y1, x0:x1] = c
    return rgba


def draw_crosshair(rgba: np.ndarray, point, color: Color = (255, 255, 255), size: int = 9,
                   width: int = 1, gap: int = 2) -> np.ndarray:
    """Draw a crosshair centred on ``point`` (y, x) into ``rgba`` in place; returns it.

    Arms are ``size`` pixels long and leave ``gap`` pixels free around the centre pixel.
    """
    y, x = (int(v) for v in point)
    H, W = rgba.shape[:2]
    c = _rgba(color)
    h0 = width // 2
    ya, yb = max(y - h0, 0), min(y - h0 + width, H)
    xa, xb = max(x - h0, 0), min(x - h0 + width, W)
    for lo, hi in ((x - gap - size, x - gap), (x + gap + 1, x + gap + 1 + size)):
        lo, hi = max(lo, 0), min(hi, W)
        if lo < hi and ya < yb:
            rgba[ya:yb, lo:hi] = c
    for lo, hi in ((y - gap - size, y - gap), (y + gap + 1, y + gap + 1 + size)):
        lo, hi = max(lo, 0), min(hi, H)
        if lo < hi and xa < xb:
            rgba[lo:hi, xa:xb] = c
    return rgba


def draw_grid(rgba: np.ndarray, stride, offset, color: Color = (255, 255, 255, 90), width: int = 1) -> np.ndarray:
    """Draw grid lines in place at ``offset + k·stride`` (y for rows, x for columns), in
    ``rgba``'s pixels, ``width`` pixels wide; returns it.

    Used for the boundaries between the output cells of a layer (stride and offset of its
    receptive field, scaled to the canvas).
    """
    sy, sx = (float(v) for v in stride)
    oy, ox = (float(v) for v in offset)
    if sy <= 0 or sx <= 0:
        raise ValueError(f"grid stride must be positive, got {stride}")
    H, W = rgba.shape[:2]
    c = _rgba(color)
    w = max(1, int(width))
    first_y, first_x = oy - sy * np.floor(oy / sy), ox - sx * np.floor(ox / sx)
    for y in np.floor(np.arange(first_y, H, sy)).astype(np.intp):
        rgba[max(y, 0):min(y + w, H), :] = c
    for x in np.floor(np.arange(first_x, W, sx)).astype(np.intp):
        rgba[:, max(x, 0):min(x + w, W)] = c
    return rgba


def composite(*layers: np.ndarray) -> np.ndarray:
    """Stack RGBA layers (first at the bottom) with the "source over" rule; returns RGBA uint8.

    This is what a browser shows for stacked canvases. Each layer is blended only inside the
    bounding box of its visible pixels; over an opaque bottom layer in integer arithmetic.
    """
    if not layers:
        raise ValueError("composite needs at least one layer")
    shape = layers[0].shape
    for layer in layers:
        if layer.shape != shape or layer.shape[-1] != 4:
            raise ValueError(f"layers must all be H×W×4 of one size, got {[l.shape for l in layers]}")
    if (layers[0][..., 3] == 255).all():  # the usual case: a picture at the bottom
        out = layers[0].copy()
        for layer in layers[1:]:
            win = _visible(layer)
            if win is None:
                continue
            a = layer[win][..., 3:4].astype(np.uint16)
            dst = out[win][..., :3].astype(np.uint16)
            src = layer[win][..., :3].astype(np.uint16)
            # round(src * a / 255 + dst * (255 - a) / 255), exactly, in 16 bits
            t = src * a + dst * (255 - a) + 128
            out[win][..., :3] = ((t + (t >> 8)) >> 8).astype(np.uint8)
        return out
    out_rgb = np.zeros(shape[:2] + (3,), np.float32)
    out_a = np.zeros(shape[:2] + (1,), np.float32)
    for layer in layers:
        win = _visible(layer)
        if win is None:
            continue
        a = layer[win][..., 3:4].astype(np.float32) * np.float32(1 / 255)
        rgb = layer[win][..., :3].astype(np.float32)
        below_a = out_a[win]
        new_a = a + below_a * (1 - a)
        with np.errstate(invalid="ignore", divide="ignore"):
            blended = (rgb * a + out_rgb[win] * below_a * (1 - a)) / new_a
        out_rgb[win] = np.where(new_a > 0, blended, 0)
        out_a[win] = new_a
    out = np.empty(shape[:2] + (4,), np.uint8)
    out[..., :3] = np.clip(np.rint(out_rgb), 0, 255)
    out[..., 3] = np.clip(np.rint(out_a[..., 0] * 255), 0, 255)
    return out


def _visible(layer: np.ndarray):
    """The bounding box (as slices) of a layer's pixels with alpha > 0, or None."""
    alpha = layer[..., 3]
    rows, cols = np.flatnonzero(alpha.any(axis=1)), np.flatnonzero(alpha.any(axis=0))
    if rows.size == 0:
        return None
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


def encode_png(image: np.ndarray, *, level: int = 1) -> bytes:
    """PNG bytes of an ``H×W×4`` (or ``H×W×3``) uint8 image, built for speed.

    No per-row filter search (filter 0) and zlib at ``level`` 1: a 512×512 frame takes a few
    milliseconds, several times less than Pillow's encoder, at a somewhat larger size.
    """
    import struct
    import zlib

    a = np.ascontiguousarray(image)
    if a.dtype != np.uint8 or a.ndim != 3 or a.shape[-1] not in (3, 4):
        raise ValueError(f"encode_png needs H×W×3 or H×W×4 uint8, got {a.dtype} {a.shape}")
    h, w, c = a.shape
    rows = np.empty((h, 1 + w * c), np.uint8)
    rows[:, 0] = 0  # filter type 0 for every row
    rows[:, 1:] = a.reshape(h, w * c)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", w, h, 8, 6 if c == 4 else 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(rows.tobytes(), level)) + chunk(b"IEND", b""))


def to_png(rgba, path=None) -> bytes:
    """Encode an image as PNG; also write it to ``path`` when given. Returns the PNG bytes."""
    import io

    from PIL import Image

    a = np.asarray(rgba)
    if a.dtype != np.uint8:
        a = to_rgb8(a)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "PNG")
    data = buf.getvalue()
    if path is not None:
        with open(path, "wb") as f:
            f.write(data)
    return data


# --------------------------------------------------------------------------- signed maps, one scale


@functools.lru_cache(maxsize=32)
def _diverging_lut(cmap: str) -> np.ndarray:
    """255 colours sampled at ``linspace(0, 1, 255)``: entry 127 is the colormap's exact centre,
    and is drawn pure white (RdBu_r's own centre is #f7f7f7) so that zero is white."""
    import matplotlib

    try:
        cm = matplotlib.colormaps[cmap]
    except KeyError:
        raise ValueError(f"unknown matplotlib colormap {cmap!r}; e.g. RdBu_r, bwr, coolwarm") from None
    lut = (cm(np.linspace(0, 1, 255)) * 255).round().astype(np.uint8)
    lut[127] = (255, 255, 255, 255)
    lut.flags.writeable = False
    return lut


def diverging(values, *, scale: float | None = None, cmap: str = "RdBu_r", alpha: float = 0.6,
              alpha_by_value: bool = False) -> np.ndarray:
    """A signed ``H×W`` map as RGBA on a zero-centred diverging colormap (negative blue,
    positive red with the default "RdBu_r"; zero exactly white).

    ``v`` goes to colour index ``round(127 + 127 · clip(v / scale, -1, 1))`` of a 255-entry
    table, so ``±scale`` are the two ends and 0 the centre. ``scale`` None: the map's own
    ``max |v|`` (a shared one comes from :func:`one_scale`). ``alpha_by_value``: opacity
    ``alpha × |v| / scale`` (zero is transparent).
    """
    v = np.asarray(values, dtype=np.float32)
    if v.ndim != 2:
        raise ValueError(f"diverging needs an H×W map, got shape {v.shape}")
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    v = np.nan_to_num(v, nan=0.0, posinf=0.0, neginf=0.0)
    if scale is None:
        scale = float(np.abs(v).max()) if v.size else 0.0
    elif not (np.isfinite(scale) and scale >= 0):
        raise ValueError(f"scale must be a finite number >= 0, got {scale!r}")
    unit = np.zeros_like(v) if scale == 0 else np.clip(v / np.float32(scale), -1, 1)
    idx = np.rint(127 + 127 * unit).astype(np.uint8)
    out = np.take(_diverging_lut(cmap), idx, axis=0)
    if alpha_by_value:
        out[..., 3] = np.rint(np.abs(unit) * alpha * 255).astype(np.uint8)
    else:
        out[..., 3] = int(round(alpha * 255))
    return out


def one_scale(maps, *, percentile: float = 100.0) -> float:
    """One scale for several maps shown side by side: the ``percentile`` of ``|value|`` over all
    of them pooled (100: the shared maximum; e.g. 99.5 clips the brightest 0.5 %). Divide every
    map by it (:func:`scaled`) so equal values get equal colours. 0.0 when all maps are zero."""
    if not 0 < percentile <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {percentile!r}")
    arrays = [np.abs(np.nan_to_num(np.asarray(m, np.float32))).ravel() for m in maps]
    if not arrays:
        raise ValueError("maps is empty: give at least one map")
    pooled = np.concatenate(arrays)
    if pooled.size == 0:
        return 0.0
    return float(pooled.max() if percentile == 100 else np.percentile(pooled, percentile))


def scaled(values, scale: float, *, signed: bool) -> np.ndarray:
    """``values / scale`` clipped to [-1, 1] (``signed``) or [0, 1]; zeros when ``scale`` is 0."""
    v = np.nan_to_num(np.asarray(values, np.float32))
    if scale == 0:
        return np.zeros_like(v)
    return np.clip(v / np.float32(scale), -1.0 if signed else 0.0, 1.0)


def display_map(values, kind: str, *, scale: float | None = None, cmap: str | None = None,
                alpha: float = 0.6, alpha_by_value: bool = False) -> np.ndarray:
    """RGBA of an ``H×W`` map by the method table's display kind: "signed" on the diverging
    colormap (default "RdBu_r", zero white), "unsigned" on a sequential one (default "inferno",
    ``[0, scale]``). ``scale`` None: the map's own maximum of ``|v|``."""
    v = np.asarray(values, np.float32)
    if kind == "signed":
        return diverging(v, scale=scale, cmap=cmap or "RdBu_r", alpha=alpha,
                         alpha_by_value=alpha_by_value)
    if kind == "unsigned":
        s = float(np.abs(np.nan_to_num(v)).max()) if scale is None else float(scale)
        return heatmap(scaled(v, s, signed=False), cmap=cmap or "inferno", alpha=alpha,
                       alpha_by_value=alpha_by_value)
    raise ValueError(f"kind must be 'signed' or 'unsigned', got {kind!r}")
