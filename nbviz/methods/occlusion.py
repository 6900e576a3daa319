"""Occlusion sensitivity (Zeiler & Fergus 2014), batched.

A ``window`` slides over the image with ``stride`` (the last row/column of windows is moved
inward so every pixel is covered; a stride larger than the window widens the window to the
stride, with a warning, so no pixel is left without a value); each window is replaced by ``baseline`` and the drop of the
explained score, ``score(image) - score(occluded)``, is recorded. Each pixel gets the mean drop of
the windows covering it. The occluded copies are built inside one compiled function and run in
batches of at most ``batch_size`` (together with the image itself, whose top class is explained when
``target`` is None): never one forward pass per window.

Conventions. Overlapping windows are **averaged** (each pixel: the mean drop of the windows that
cover it), so the map keeps the unit of the score whatever the stride; xplique's Occlusion
**sums** them (a pixel covered by k windows gets k drops), which scales the map by the coverage.

The default fill, ``baseline="mean"`` (the image's per-channel mean), was chosen by measurement
on the demo model's 32 held-out scenes (window 16, stride 8, logits, the top class; mean ± s.e.,
and the paired difference). Pointing game (every tied maximum inside the object's box): 6/32
scenes with a black fill (0.0), 22/32 with the mean, 21/32 with a blur (counting only the first
maximum in row-major order: 11/32 black, 26/32 mean). Share of the positive map inside the box:
0.16 ± 0.03 black, 0.46 ± 0.03 mean, 0.46 ± 0.03 blur. Mean − black: +0.50 ± 0.10 pointing,
+0.31 ± 0.03 energy; mean − blur: +0.03 ± 0.08 and +0.002 ± 0.009 (no difference), and the mean
needs no blur width. A likely reason (not measured): on these scenes a black square is itself a
conspicuous dark patch, so its drop mixes the lost evidence with the patch's own effect.
"""

from __future__ import annotations

import numbers
import warnings

import numpy as np
import tensorflow as tf

from nbviz.methods import baselines as _baselines
from nbviz.methods import core
from nbviz.methods import targets as _targets

__all__ = ["occlusion", "window_positions"]


def window_positions(length: int, window: int, stride: int) -> np.ndarray:
    """Start offsets of the windows along one axis; the last one ends at ``length``."""
    starts = list(range(0, length - window + 1, stride))
    if starts[-1] != length - window:
        starts.append(length - window)
    return np.asarray(starts, np.int32)


def occlusion(model, image, *, target=None, window=16, stride=8, baseline="mean", batch_size=64,
              preprocess=None, extra_inputs=None, progress=None) -> np.ndarray:
    """Occlusion sensitivity map, H×W float32 (N×H×W for a batch): the mean drop of the
    explained score when the pixel is hidden. ``window``/``stride``: int or (height, width);
    ``baseline``: the fill, a number, "mean" (the image's per-channel mean), "blur" (a blurred
    copy) or an array broadcastable to the image (:mod:`nbviz.methods.baselines`).

    ``progress``: ``progress(partial, fraction)`` (one image only) is called after each batch of
    windows; the windows then run coarse first (those that tile the image without overlap,
    then the rest) in about four batches or more, and each partial is the map of the windows
    done so far (pixels no window has covered yet are 0); the last call gets the returned map."""
    p, images, single = core.prepare(model, image, preprocess)
    n, height, width = (int(d) for d in images.shape[:3])
    wh, ww = _pair(window, "window")
    sh, sw = _pair(stride, "stride")
    if sh > wh or sw > ww:
        # windows further apart than their size would leave pixels that no window hides
        # (and no value): widen them to the stride so that every pixel is covered
        warnings.warn(f"occlusion: stride {sh}×{sw} is larger than window {wh}×{ww}, which would "
                      f"leave pixels uncovered; the windows are widened to "
                      f"{max(wh, sh)}×{max(ww, sw)}", UserWarning, stacklevel=2)
        wh, ww = min(max(wh, sh), height), min(max(ww, sw), width)
    if wh > height or ww > width:
        raise ValueError(f"window {wh}×{ww} is larger than the image ({height}×{width})")
    if not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    base = _baselines.reference(baseline, images)
    sel = core.selection(p, target, images, None)
    tops, lefts = window_positions(height, wh, sh), window_positions(width, ww, sw)
    grid_t, grid_l = (a.ravel() for a in np.meshgrid(tops, lefts, indexing="ij"))
    count = len(grid_t)
    if progress is not None:
        if n != 1:
            raise ValueError("occlusion(progress=...) takes one image")
        step_t, step_l = -(-wh // sh), -(-ww // sw)  # windows k·step apart tile without overlap
        rank_t = np.searchsorted(tops, grid_t) % step_t != 0
        rank_l = np.searchsorted(lefts, grid_l) % step_l != 0
        order = np.argsort(rank_t | rank_l, kind="stable")
        grid_t, grid_l = grid_t[order], grid_l[order]
        batch_size = min(batch_size, max(4, -(-count // 4)))
    size = core.balanced(count, batch_size)
    fn = sel.fn

    def drops(x, base, top_rows, left_cols, region, channels, top, extra):
        rows = tf.range(height)[None, :]
        cols = tf.range(width)[None, :]
        in_rows = (rows >= top_rows[:, None]) & (rows < top_rows[:, None] + wh)
        in_cols = (cols >= left_cols[:, None]) & (cols < left_cols[:, None] + ww)
        hidden = in_rows[:, :, None, None] & in_cols[:, None, :, None]  # (B, H, W, 1)
        occluded = tf.where(hidden, base, x)  # one pass over the copies
        out = core.explain(p, tf.concat([occluded, x], 0), None, extra)
        resolved = channels if fn is not None else _targets.resolve_channels(
            out[size:], region, channels, top)
        rows_all = size + 1
        score = _targets.scores(out, fn, tf.repeat(region, rows_all, axis=0),
                                tf.repeat(resolved, rows_all, axis=0),
                                tf.zeros((rows_all,), tf.bool))
        return score[size] - score[:size]

    f = core.compiled(p, core.key_of("occlusion", images[:1], sel, (wh, ww), size), drops)
    extra = core.extra_tensors(p, extra_inputs)
    row_masks = _cover(grid_t, wh, height)  # (P, H)
    col_masks = _cover(grid_l, ww, width)  # (P, W)
    coverage = row_masks.T @ col_masks
    if not (coverage > 0).all():  # cannot happen with stride <= window; never return NaN
        raise RuntimeError(f"occlusion windows leave {int((coverage == 0).sum())} pixels uncovered")
    maps = np.empty((n, height, width), np.float32)
    for i in range(n):
        x, b, sel_i = images[i:i + 1], base[i:i + 1], sel.row(i)
        found = np.empty(count, np.float32)
        for start in range(0, count, size):
            t, l = grid_t[start:start + size], grid_l[start:start + size]
            m = len(t)
            if m < size:  # pad the last batch to the same shape (no retrace); results dropped
                t = np.concatenate([t, np.repeat(t[-1:], size - m)])
                l = np.concatenate([l, np.repeat(l[-1:], size - m)])
            d = f(x, b, tf.constant(t), tf.constant(l), *sel_i.tensors, extra)
            found[start:start + m] = d.numpy()[:m]
            if progress is not None and start + m < count:
                done = slice(0, start + m)
                cover = row_masks[done].T @ col_masks[done]
                part = (row_masks[done].T * found[done]) @ col_masks[done]
                progress(np.divide(part, cover, out=np.zeros_like(part), where=cover > 0), (start + m) / count)
        maps[i] = (row_masks.T * found) @ col_masks / coverage
    result = core.numpy_maps(maps, single, "occlusion")
    if progress is not None:
        progress(result, 1.0)
    return result


def _cover(starts: np.ndarray, window: int, length: int) -> np.ndarray:
    """(P, length) float32: 1 where window p covers the position."""
    pos = np.arange(length)[None, :]
    return ((pos >= starts[:, None]) & (pos < starts[:, None] + window)).astype(np.float32)


def _pair(value, name):
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = (value, value)
    if (not isinstance(value, (tuple, list)) or len(value) != 2
            or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in value)):
        raise TypeError(f"{name} must be an int or (height, width) ints, got {value!r}")
    if min(value) < 1:
        raise ValueError(f"{name} must be >= 1, got {value!r}")
    return int(value[0]), int(value[1])
