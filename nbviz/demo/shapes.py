"""Procedural scenes for the demo model: one filled shape on a cluttered background.

Every scene is drawn with numpy from a seed, so the object's class, its mask and its box are known
exactly. A pixel belongs to the object when its centre lies inside the shape (pixel ``k`` has its
centre at coordinate ``k``); the object is painted last and exactly over its mask, so clutter never
covers it. Boxes are the tight boxes of the masks: ``(top, left, bottom, right)``, bottom and right
exclusive.

Clutter: a two-colour gradient, smooth low-frequency noise, thin straight lines, small soft
elliptical blobs and per-pixel noise. Objects are solid, 16 to 32 pixels across (at 64 x 64),
randomly rotated and coloured to stand out from the background under them.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["LABELS", "Samples", "scene", "scenes"]

LABELS: tuple[str, ...] = ("circle", "square", "triangle", "cross", "ring")


class Samples(NamedTuple):
    """Scenes with their ground truth.

    images: uint8 ``(N, H, W, 3)``; labels: int64 ``(N,)`` indices into :data:`LABELS`;
    boxes: int64 ``(N, 4)`` ``(top, left, bottom, right)``, bottom/right exclusive;
    masks: bool ``(N, H, W)``, True on the object's pixels.
    """

    images: np.ndarray
    labels: np.ndarray
    boxes: np.ndarray
    masks: np.ndarray


# --------------------------------------------------------------------------- shapes

# An object of "radius" r fits inside the disc of radius r around its centre.


def _shape_mask(label: int, v: np.ndarray, u: np.ndarray, r: float, angle: float) -> np.ndarray:
    """Which points ``(v, u)`` (rows, columns relative to the centre) lie inside the shape."""
    c, s = np.cos(angle), np.sin(angle)
    a = c * u + s * v  # rotated coordinates
    b = -s * u + c * v
    name = LABELS[label]
    if name == "circle":
        return u * u + v * v <= (0.85 * r) ** 2
    if name == "ring":
        d2 = u * u + v * v
        return (d2 <= r * r) & (d2 >= (0.55 * r) ** 2)
    if name == "square":
        half = r / np.sqrt(2.0)
        return (np.abs(a) <= half) & (np.abs(b) <= half)
    if name == "triangle":  # equilateral, circumradius r: inside all three edges at distance r/2
        inside = np.ones(u.shape, bool)
        for k in range(3):
            phi = angle + np.pi / 2 + 2 * np.pi * k / 3 + np.pi  # outward normal of an edge
            inside &= (u * np.cos(phi) - v * np.sin(phi)) <= r / 2
        return inside
    if name == "cross":  # two bars whose corners touch the circle of radius r
        w = 0.3 * r
        length = np.sqrt(r * r - w * w)
        return ((np.abs(a) <= length) & (np.abs(b) <= w)) | ((np.abs(a) <= w) & (np.abs(b) <= length))
    raise ValueError(f"unknown label {label!r}; accepted: 0..{len(LABELS) - 1}")


# --------------------------------------------------------------------------- background


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Bilinearly upsampled ``cells x cells`` noise in [-1, 1], shape ``(size, size)``."""
    grid = rng.uniform(-1.0, 1.0, (cells + 1, cells + 1))
    t = np.linspace(0.0, cells, size)
    i = np.minimum(t.astype(int), cells - 1)
    f = t - i
    rows = grid[i] * (1 - f)[:, None] + grid[i + 1] * f[:, None]
    return rows[:, i] * (1 - f)[None, :] + rows[:, i + 1] * f[None, :]


def _background(rng: np.random.Generator, size: int, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    theta = rng.uniform(0, 2 * np.pi)
    t = ((np.cos(theta) * xx + np.sin(theta) * yy) / size + 1.0) / 2.0
    img = c0 + (c1 - c0) * t[..., None]
    img += 40.0 * _smooth_noise(rng, size, int(rng.integers(3, 7)))[..., None] * rng.uniform(0.3, 1, 3)
    for _ in range(int(rng.integers(3, 9))):  # thin straight lines
        p = rng.uniform(0, size, 2)
        phi = rng.uniform(0, np.pi)
        dist = np.abs((yy - p[0]) * np.cos(phi) - (xx - p[1]) * np.sin(phi))
        img[dist <= rng.uniform(0.4, 1.1)] = rng.uniform(0, 255, 3)
    for _ in range(int(rng.integers(2, 7))):  # small soft elliptical blobs
        cy, cx = rng.uniform(0, size, 2)
        sy, sx = rng.uniform(1.0, 3.5, 2)
        weight = np.exp(-0.5 * (((yy - cy) / sy) ** 2 + ((xx - cx) / sx) ** 2))[..., None]
        img = img * (1 - weight) + rng.uniform(0, 255, 3) * weight
    return img


def _object_colour(rng: np.random.Generator, under: np.ndarray) -> np.ndarray:
    """A colour at least 90 (RGB distance) from the mean background under the object."""
    mean = under.mean(axis=0)
    for _ in range(100):
        colour = rng.uniform(0, 255, 3)
        if np.linalg.norm(colour - mean) >= 90.0:
            return colour
    return np.where(mean > 127.5, 0.0, 255.0)  # the opposite corner of the RGB cube


# --------------------------------------------------------------------------- scenes


def scene(rng: np.random.Generator, size: int = 64, label: int | None = None):
    """Draw one scene; returns ``(image uint8 HxWx3, label, box, mask bool HxW)``.

    ``rng`` is a :class:`numpy.random.Generator`; ``label`` None picks a random class.
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    if not isinstance(size, (int, np.integer)) or size < 32:
        raise ValueError(f"size must be an int >= 32, got {size!r}")
    if label is None:
        label = int(rng.integers(len(LABELS)))
    elif not isinstance(label, (int, np.integer)) or not 0 <= label < len(LABELS):
        raise ValueError(f"label must be an int in 0..{len(LABELS) - 1} or None, got {label!r}")
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    img = _background(rng, size, yy, xx)

    r = rng.uniform(0.125, 0.25) * size  # 16..32 px across at 64 x 64
    cy, cx = rng.uniform(r, size - 1 - r, 2)
    angle = rng.uniform(0, 2 * np.pi)
    mask = _shape_mask(int(label), yy - cy, xx - cx, r, angle)
    img[mask] = _object_colour(rng, img[mask])
    img += rng.normal(0.0, 6.0, img.shape) * (~mask)[..., None]  # sensor noise on the clutter only

    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    box = np.array([rows[0], cols[0], rows[-1] + 1, cols[-1] + 1], np.int64)
    image = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return image, int(label), box, mask


def scenes(n: int, *, seed: int, size: int = 64, balanced: bool = True) -> Samples:
    """``n`` scenes from ``seed`` (same seed, same scenes).

    ``balanced``: labels cycle through the classes in a seeded random order, so every class gets
    ``n // len(LABELS)`` or one more scenes; otherwise each label is drawn at random.
    """
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % len(LABELS)) if balanced else rng.integers(len(LABELS), size=n)
    labels = rng.permutation(labels)
    images = np.empty((n, size, size, 3), np.uint8)
    masks = np.empty((n, size, size), bool)
    boxes = np.empty((n, 4), np.int64)
    for k in range(n):
        images[k], _, boxes[k], masks[k] = scene(rng, size, int(labels[k]))
    return Samples(images, labels.astype(np.int64), boxes, masks)
