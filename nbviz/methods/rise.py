"""RISE: randomized input sampling (Petsiuk et al. 2018, "RISE: Randomized Input Sampling for
Explanation of Black-box Models", BMVC).

Masks (the paper's construction): a ``cells``×``cells`` grid of independent Bernoulli(``p``)
cells, upsampled bilinearly to ``(cells + 1) * ceil(H / cells)`` by ``(cells + 1) *
ceil(W / cells)`` pixels and cropped to H×W at a random shift of ``[0, ceil(H / cells))`` rows
and ``[0, ceil(W / cells))`` columns. Each mask ``M`` has values in [0, 1] and mean ``p``. The
grids and shifts come from ``numpy.random.default_rng(seed)`` (so a seed gives the same masks on
every machine); the upsampling and cropping run inside the compiled function, batch by batch.

The saliency of pixel ``λ`` is the Monte Carlo estimate of ``E[f(X ⊙ M) M(λ)] / p``:

    ``S(λ) = sum_i f(X ⊙ M_i) M_i(λ) / (n p)``

Conventions: ``f`` is the explained score of :mod:`nbviz.methods.targets` (the **logit** when the
model ends in a softmax; the paper uses the class probability); masked-out pixels take the value
0 in the model's input space (after ``preprocess``), as in the paper. The map is returned raw
(not normalised), H×W float32. xplique's ``Rise`` divides by the summed masks per pixel instead
of ``n p``, draws one crop offset per batch and its masks are not seeded.

Batches of ``batch_size`` masked copies run together with the image itself (whose top class is
explained when ``target`` is None); the weighted sum of the masks is accumulated in the graph.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import tensorflow as tf

from nbviz.methods import core
from nbviz.methods import targets as _targets
from nbviz.methods.cam_tools import count

__all__ = ["rise", "rise_grids", "upsample_masks"]


def rise_grids(n: int, cells: int, p: float, size: tuple[int, int], seed: int):
    """The random part of the masks: ``(grids (n, cells, cells) float32 of 0/1, shifts (n, 2)
    int32)``, from ``numpy.random.default_rng(seed)``."""
    rng = np.random.default_rng(seed)
    grids = (rng.random((n, cells, cells)) < p).astype(np.float32)
    cell_h, cell_w = math.ceil(size[0] / cells), math.ceil(size[1] / cells)
    shifts = np.stack([rng.integers(0, cell_h, n), rng.integers(0, cell_w, n)], 1).astype(np.int32)
    return grids, shifts


def upsample_masks(grids, shifts, size: tuple[int, int]) -> tf.Tensor:
    """Masks (B, H, W) from grids (B, s, s) and shifts (B, 2): bilinear upsampling to
    ``(s + 1) * ceil(H / s)`` × ``(s + 1) * ceil(W / s)``, then an H×W crop at each shift.

    Bilinear resizing is separable and linear, so each mask is ``R_y G R_x^T`` with ``R`` the
    rows of the 1-D interpolation matrices (those of ``tf.image.resize``, half-pixel centres)
    that the crop keeps: two small matrix products per mask, no full-size upsampled grid.
    """
    grids = tf.convert_to_tensor(grids, tf.float32)
    shifts = tf.convert_to_tensor(shifts, tf.int32)
    cells = int(grids.shape[1])
    height, width = size
    r_y = _interpolation(cells, (cells + 1) * math.ceil(height / cells))  # (big_h, s)
    r_x = _interpolation(cells, (cells + 1) * math.ceil(width / cells))  # (big_w, s)
    rows = tf.gather(r_y, shifts[:, :1] + tf.range(height)[None, :])  # (B, H, s)
    cols = tf.gather(r_x, shifts[:, 1:] + tf.range(width)[None, :])  # (B, W, s)
    return tf.matmul(tf.matmul(rows, grids), cols, transpose_b=True)


def _interpolation(cells: int, length: int) -> tf.Tensor:
    """(length, cells): weights of each cell in each output position of a 1-D bilinear
    resize from ``cells`` to ``length`` values (``tf.image.resize`` on the unit vectors)."""
    unit = tf.eye(cells)[:, :, None, None]  # a batch of ``cells`` one-hot columns
    return tf.transpose(tf.image.resize(unit, (length, 1), method="bilinear")[:, :, 0, 0])


def rise(model, image, *, target=None, n=4000, cells=8, p=0.5, batch_size=256, seed=0,
         preprocess=None, extra_inputs=None) -> np.ndarray:
    """RISE saliency, H×W float32 (N×H×W for a batch); see the module docstring.

    ``n``: number of masks; ``cells``: grid cells per side (1 <= cells <= min(H, W)); ``p``:
    probability that a cell is kept, in (0, 1]; ``batch_size``: masked copies per forward pass;
    ``seed``: an int >= 0 that fixes the masks (the same masks for every image of a batch).
    """
    n = count("n", n)
    cells = count("cells", cells)
    batch_size = count("batch_size", batch_size)
    seed = count("seed", seed, low=0)
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0 < p <= 1:
        raise ValueError(f"p (probability of keeping a cell) must be a number in (0, 1], got {p!r}")
    probe_, images, single = core.prepare(model, image, preprocess)
    height, width = (int(d) for d in images.shape[1:3])
    if cells > min(height, width):
        raise ValueError(f"cells must be <= the image's smaller side ({min(height, width)}), "
                         f"got {cells}")
    sel = core.selection(probe_, target, images, None)
    grids, shifts = rise_grids(n, cells, float(p), (height, width), seed)
    size = core.balanced(n, batch_size)
    fn = sel.fn

    def weighted(x, grids, shifts, weights, region, channels, top, extra):
        masks = upsample_masks(grids, shifts, (height, width))  # (B, H, W)
        out = core.explain(probe_, tf.concat([masks[..., None] * x, x], 0), None, extra)
        resolved = channels if fn is not None else _targets.resolve_channels(
            out[size:], region, channels, top)
        rows = size + 1
        score = _targets.scores(out, fn, tf.repeat(region, rows, axis=0),
                                tf.repeat(resolved, rows, axis=0), tf.zeros((rows,), tf.bool))
        return tf.tensordot(score[:size] * weights, masks, axes=1)  # (H, W)

    key = core.key_of("rise", images[:1], sel, cells, size)
    f = core.compiled(probe_, key, weighted)
    extra = core.extra_tensors(probe_, extra_inputs)
    maps = np.empty((int(images.shape[0]), height, width), np.float32)
    for i in range(int(images.shape[0])):
        x, sel_i = images[i:i + 1], sel.row(i)
        total = np.zeros((height, width), np.float64)
        for start in range(0, n, size):
            g, s = grids[start:start + size], shifts[start:start + size]
            w = np.ones(size, np.float32)
            if len(g) < size:  # pad the last batch (no retrace); padded rows weigh 0
                w[len(g):] = 0.0
                g = np.concatenate([g, np.repeat(g[-1:], size - len(g), axis=0)])
                s = np.concatenate([s, np.repeat(s[-1:], size - len(s), axis=0)])
            total += f(x, tf.constant(g), tf.constant(s), tf.constant(w), *sel_i.tensors,
                       extra).numpy()
        maps[i] = total / (n * float(p))
    return core.numpy_maps(maps, single, "rise")
