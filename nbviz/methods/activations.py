"""Intermediate activations, and tiling a layer's channels into one image."""

from __future__ import annotations

import math

import numpy as np

from nbviz.methods import core

__all__ = ["activations", "tile_channels"]


def activations(model, image, layers, *, preprocess=None, extra_inputs=None):
    """Outputs of one or several layers for an image (h×w×c each) or a batch (N×h×w×c).

    ``layers``: one layer (name, path or object) -> that array; a list/tuple of layers -> a dict
    ``path -> array`` in the order given. One compiled forward pass per (layers, input shape);
    the part of the model after the last requested layer is pruned from it.
    """
    p, images, single = core.prepare(model, image, preprocess)
    one = not isinstance(layers, (list, tuple))
    specs = [layers] if one else list(layers)
    if not specs:
        raise ValueError("layers is empty: give a layer name, path or object, or a list of them")
    paths = tuple(dict.fromkeys(p.layer(s).path for s in specs))

    def forward(images, extra):
        with p.capture(*paths) as captured:
            p.forward(images, extra_inputs=extra)
        return {path: _first(captured[path]) for path in paths}

    f = core.compiled(p, ("activations", tuple(images.shape), paths), forward)
    found = f(images, core.extra_tensors(p, extra_inputs))
    result = {}
    for path in paths:
        array = found[path].numpy().astype(np.float32, copy=False)
        result[path] = array[0] if single else array
    return result[paths[0]] if one else result


def _first(out):
    return out[0] if isinstance(out, (list, tuple)) else out


def tile_channels(array, columns: int | None = None, *, normalize: bool = True,
                  padding: int = 1) -> np.ndarray:
    """Tile the channels of an h×w×c activation into one 2-D float32 image.

    Channel k goes to row ``k // columns``, column ``k % columns`` of the grid (``columns``
    defaults to ``ceil(sqrt(c))``); tiles are separated by ``padding`` pixels of 0. With
    ``normalize`` each channel is scaled to [0, 1] by its own min and max (a constant channel
    becomes 0); otherwise the values are kept and the gaps are 0.
    """
    values = np.asarray(array)
    if values.ndim != 3:
        raise ValueError(f"tile_channels takes one h×w×c activation, got shape {values.shape}")
    if not np.issubdtype(values.dtype, np.number):
        raise TypeError(f"tile_channels needs a numeric array, got dtype {values.dtype}")
    h, w, c = values.shape
    if values.size == 0:
        raise ValueError(f"tile_channels got an empty activation of shape {values.shape}: it needs "
                         f"at least one channel of at least 1×1")
    if columns is None:
        columns = max(1, math.ceil(math.sqrt(c)))
    if not isinstance(columns, (int, np.integer)) or columns < 1:
        raise ValueError(f"columns must be an int >= 1, got {columns!r}")
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding!r}")
    values = values.astype(np.float32)
    if normalize:
        low = values.min(axis=(0, 1), keepdims=True)
        span = values.max(axis=(0, 1), keepdims=True) - low
        values = np.divide(values - low, span, out=np.zeros_like(values), where=span > 0)
    rows = math.ceil(c / columns)
    out = np.zeros((rows * h + (rows - 1) * padding, columns * w + (columns - 1) * padding),
                   np.float32)
    for k in range(c):
        r, q = divmod(k, columns)
        y, x = r * (h + padding), q * (w + padding)
        out[y:y + h, x:x + w] = values[:, :, k]
    return out
