"""XRAI (Kapishnikov et al. 2019): integrated-gradients attribution summed up over image regions.

1. Attribution: integrated gradients (:func:`nbviz.integrated_gradients`) averaged over a black
   and a white baseline (the image's minimum and maximum, as PAIR saliency), reduced over
   channels by the maximum: an H×W map ``a``.
2. Segments: scikit-image's Felzenszwalb graph segmentation of the image (rescaled to [-1, 1]
   and resized to ``segment_size``² for segmenting, as PAIR) at several ``scales`` (PAIR's
   50, 100, 150, 250, 500, 1200; ``sigma`` 0.8, ``min_size`` 150), each label map resized back
   (nearest) and every segment dilated by a disk of radius ``dilation`` (5): overlapping
   candidate masks.
3. Greedy ranking: starting from an empty selection, repeatedly take the candidate whose *new*
   pixels (not yet selected) have the highest mean attribution (gain / area, the attribution
   density); candidates adding fewer than ``min_pixel_diff`` (50) new pixels are dropped. The new
   pixels of each pick form a region; what no candidate covers is the last region.

The regions partition the image (every pixel in exactly one). They are returned sorted by their
attribution density, highest first (PAIR sorts the picks by gain too but always appends the
uncovered rest last; here it takes its place by density).
The map (``score="density"``, PAIR's convention) holds at every pixel the density of its region;
``score="rank"`` holds ``(K - k) / K`` for the k-th of K regions (1 for the best, in (0, 1]),
which reads like "top 10 %" maps on a sequential colormap.

``attribution`` (H×W or H×W×C; N×… for a batch) and ``segments`` (an H×W label map or a list of
H×W boolean masks, used as the candidates as given, undilated; one such per image for a batch)
replace steps 1 and 2.
"""

from __future__ import annotations

import numbers

import numpy as np

from nbviz.methods import core
from nbviz.methods.gradients import integrated_gradients

__all__ = ["xrai", "xrai_segments", "rank_regions"]

SCALES = (50, 100, 150, 250, 500, 1200)


def xrai_segments(image, *, scales=SCALES, sigma=0.8, min_size=150, segment_size=224,
                  dilation=5) -> list[np.ndarray]:
    """Candidate masks of one H×W×C image: Felzenszwalb segments at every scale, dilated."""
    from skimage.morphology import dilation as dilate, disk
    from skimage.segmentation import felzenszwalb
    from skimage.transform import resize

    image = np.asarray(image, np.float64)
    h, w = image.shape[:2]
    lo, hi = image.min(), image.max()
    scaled = (image - lo) / (hi - lo) * 2.0 - 1.0 if hi > lo else np.zeros_like(image)
    small = resize(scaled, (segment_size, segment_size), order=1, mode="reflect",
                   anti_aliasing=False) if segment_size else scaled
    footprint = disk(dilation) if dilation else None
    masks = []
    for scale in scales:
        labels = felzenszwalb(small, scale=scale, sigma=sigma, min_size=min_size, channel_axis=-1)
        if segment_size:
            labels = resize(labels, (h, w), order=0, mode="edge", preserve_range=True,
                            anti_aliasing=False).astype(np.int64)
        for label in np.unique(labels):
            mask = labels == label
            if footprint is not None:
                mask = dilate(mask, footprint)
            masks.append(mask)
    return masks


def rank_regions(attribution, masks, *, min_pixel_diff=50) -> tuple[list[np.ndarray], np.ndarray]:
    """XRAI's greedy ranking (step 3 of the module docstring) on an H×W ``attribution``.

    Returns the regions (H×W bool, a partition of the image) sorted by attribution density,
    highest first, and their densities."""
    attr = np.asarray(attribution, np.float64)
    flat = attr.reshape(-1)
    n = flat.size
    idx = np.concatenate([np.flatnonzero(np.asarray(m, bool)) for m in masks]) if masks else \
        np.zeros(0, np.int64)
    owner = np.concatenate([np.full(int(np.count_nonzero(m)), k) for k, m in enumerate(masks)]) \
        if masks else np.zeros(0, np.int64)
    covered = np.zeros(n, bool)
    alive = np.ones(len(masks), bool)
    regions, gains = [], []
    while not covered.all():
        count = np.bincount(owner, minlength=len(masks))
        alive &= count >= max(int(min_pixel_diff), 1)
        if not alive.any():
            break
        total = np.bincount(owner, weights=flat[idx], minlength=len(masks))
        density = np.where(alive, total / np.maximum(count, 1), -np.inf)
        best = int(np.argmax(density))
        new = idx[owner == best]
        region = np.zeros(n, bool)
        region[new] = True
        regions.append(region)
        gains.append(density[best])
        covered[new] = True
        alive[best] = False
        keep = ~covered[idx]
        idx, owner = idx[keep], owner[keep]
    if not covered.all():
        regions.append(~covered)
        gains.append(flat[~covered].mean())
    gains = np.asarray(gains)
    order = np.argsort(-gains, kind="stable")
    return [regions[k].reshape(attr.shape) for k in order], gains[order]


def _positive_int(name, value):
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return int(value)


def xrai(model, image, *, target=None, steps=32, batch_size=32, scales=SCALES, sigma=0.8,
         min_size=150, segment_size=224, dilation=5, min_pixel_diff=50, score="density",
         attribution=None, segments=None, return_regions=False, preprocess=None,
         extra_inputs=None):
    """XRAI: H×W float32 map of region scores (N×H×W for a batch); see the module docstring.

    ``steps``/``batch_size``: the integrated gradients'. ``return_regions=True`` returns
    ``(map, regions)`` with ``regions`` a K×H×W bool array sorted by density (a list of them
    for a batch)."""
    if score not in ("density", "rank"):
        raise ValueError(f"score must be 'density' or 'rank', got {score!r}")
    _positive_int("steps", steps)
    _positive_int("batch_size", batch_size)
    if not scales or not all(isinstance(s, numbers.Real) and s > 0 for s in scales):
        raise ValueError(f"scales must be a non-empty sequence of positive numbers, got {scales!r}")
    if not isinstance(dilation, numbers.Integral) or dilation < 0:
        raise ValueError(f"dilation must be an int >= 0 (pixels), got {dilation!r}")
    if not isinstance(min_pixel_diff, numbers.Integral) or min_pixel_diff < 0:
        raise ValueError(f"min_pixel_diff must be an int >= 0, got {min_pixel_diff!r}")
    p, images, single = core.prepare(model, image, preprocess)
    batch = images.numpy()
    n, h, w = batch.shape[:3]
    if attribution is None:
        lows = batch.reshape(n, -1).min(1)[:, None, None, None] * np.ones_like(batch)
        highs = batch.reshape(n, -1).max(1)[:, None, None, None] * np.ones_like(batch)
        attr = 0.5 * sum(
            integrated_gradients(p.model, batch, target=target, steps=steps, baseline=b,
                                 batch_size=batch_size, extra_inputs=extra_inputs,
                                 tolerance=None)  # ranks regions only: no completeness rerun
            for b in (lows, highs))
        attr = attr.max(-1)
    else:
        attr = np.asarray(attribution, np.float32)
        if single:
            attr = attr[None]
        if attr.ndim == 4:
            attr = attr.max(-1)
        if attr.shape != (n, h, w):
            raise ValueError(f"attribution must be H×W or H×W×C for each image ({h}×{w}), got shape "
                             f"{np.shape(attribution)}")
    maps, all_regions = [], []
    for i in range(n):
        if segments is None:
            masks = xrai_segments(batch[i], scales=scales, sigma=sigma, min_size=min_size,
                                  segment_size=segment_size, dilation=dilation)
        else:
            masks = _as_masks(segments[i] if not single else segments, (h, w))
        regions, densities = rank_regions(attr[i], masks, min_pixel_diff=min_pixel_diff)
        out = np.zeros((h, w), np.float32)
        k = len(regions)
        for rank, (region, density) in enumerate(zip(regions, densities)):
            out[region] = density if score == "density" else (k - rank) / k
        maps.append(out)
        all_regions.append(np.stack(regions))
    result = core.numpy_maps(np.stack(maps), single, "xrai")
    if return_regions:
        return result, (all_regions[0] if single else all_regions)
    return result


def _as_masks(segments, size):
    array = np.asarray(segments)
    if array.ndim == 2:  # a label map
        if array.shape != size:
            raise ValueError(f"segments as a label map must be {size[0]}×{size[1]}, got {array.shape}")
        return [array == label for label in np.unique(array)]
    masks = [np.asarray(m, bool) for m in segments]
    if not masks or any(m.shape != size for m in masks):
        raise ValueError(f"segments must be a label map or a list of {size[0]}×{size[1]} boolean masks")
    return masks
