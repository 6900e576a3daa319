"""Saving rendered images: one PNG (a batch tiled in a row or grid) and animated GIFs of a run."""

from __future__ import annotations

import math
import os
from typing import Sequence

import numpy as np
from PIL import Image

__all__ = ["to_uint8", "tile", "save_png", "save_gif"]


def to_uint8(images) -> np.ndarray:
    """Float images in [0, 1] (clipped) -> uint8, same shape."""
    a = np.asarray(images)
    if a.dtype == np.uint8:
        return a
    if not np.issubdtype(a.dtype, np.floating):
        raise TypeError(f"images must be float in [0, 1] or uint8, got dtype {a.dtype}")
    return np.round(np.clip(np.nan_to_num(a), 0.0, 1.0) * 255.0).astype(np.uint8)


def tile(images, columns: int | None = None, gap: int = 2) -> np.ndarray:
    """H×W×3 stays as is; N×H×W×3 becomes one grid (``columns`` wide, default all in one row),
    ``gap`` white pixels between images."""
    a = np.asarray(images)
    if a.ndim == 3:
        return a
    if a.ndim != 4 or a.shape[-1] not in (1, 3, 4) or a.shape[0] == 0:
        raise ValueError(f"images must be H×W×C or N×H×W×C with C in (1, 3, 4), got shape {a.shape}")
    n, h, w, c = a.shape
    columns = n if columns is None else max(1, min(int(columns), n))
    rows = math.ceil(n / columns)
    white = 255 if a.dtype == np.uint8 else 1.0
    grid = np.full((rows * h + (rows - 1) * gap, columns * w + (columns - 1) * gap, c), white,
                   dtype=a.dtype)
    for k in range(n):
        r, q = divmod(k, columns)
        grid[r * (h + gap):r * (h + gap) + h, q * (w + gap):q * (w + gap) + w] = a[k]
    return grid


def _pil(images, columns) -> Image.Image:
    a = to_uint8(tile(images, columns))
    if a.shape[-1] == 1:
        a = a[..., 0]
    return Image.fromarray(a)


def save_png(images, path: str | os.PathLike, *, columns: int | None = None) -> str:
    """Write one image (H×W×3) or a batch (tiled) as PNG; returns the path."""
    path = os.fspath(path)
    _pil(images, columns).save(path, format="PNG")
    return path


def save_gif(frames: Sequence, path: str | os.PathLike, *, duration: int = 100, loop: int = 0,
             columns: int | None = None) -> str:
    """Write frames (each an image or a batch, e.g. what a render ``callback`` received) as an
    animated GIF, ``duration`` ms per frame, looping forever (``loop=0``); returns the path."""
    frames = list(frames)
    if not frames:
        raise ValueError("save_gif needs at least one frame")
    pictures = [_pil(f, columns).convert("RGB") for f in frames]
    path = os.fspath(path)
    pictures[0].save(path, format="GIF", save_all=True, append_images=pictures[1:],
                     duration=int(duration), loop=int(loop))
    return path
