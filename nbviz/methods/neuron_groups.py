"""Neuron groups: a non-negative matrix factorisation of a layer's activations (Olah et al.,
"The Building Blocks of Interpretability", Distill 2018).

The activations ``A`` of one image at a spatial layer, flattened to ``hw×c`` (cells × channels,
all >= 0, e.g. after a ReLU), are factorised with scikit-learn's NMF as ``A ≈ W H`` with ``W``
(hw×n) >= 0 and ``H`` (n×c) >= 0: ``n`` groups of channels (the rows of ``H``, the *loadings*)
and where each group is present (the columns of ``W``, the *spatial maps*). Each loading row is
scaled to unit length (its scale moves into ``W``), and the groups are sorted by total presence
``sum_p W[p, j]``, largest first.

Attribution to the explained score ``S`` (:mod:`nbviz.methods.targets`) with ``G = ∂S/∂A``:
group ``j`` at cell ``p`` contributes ``W[p, j] · (H[j] · G[p])`` (its part of the factorised
activation times the gradient), so the groups' attributions add up to ``sum (W H) ⊙ G``, the
activation × gradient of the whole layer up to the factorisation's error. A group's picture is the
feature visualisation of its loading direction: ``nbviz.featvis.icons(model, groups.layer,
groups.loadings)``. :func:`color_groups` paints the image by group.
"""

from __future__ import annotations

import dataclasses
import numbers

import numpy as np

from nbviz.methods.dictionary import _frozen, layer_attribution

__all__ = ["NeuronGroups", "neuron_groups", "color_groups", "group_palette"]


@dataclasses.dataclass(frozen=True, eq=False)
class NeuronGroups:
    """What :func:`neuron_groups` returns; the arrays are read-only.

    ``spatial`` (h, w, n): ``W`` as maps; ``loadings`` (n, c): ``H``, rows of unit length;
    ``attributions`` (n,): each group's total attribution, ``spatial_attribution`` (h, w, n) the
    same per cell; ``activation_map`` (h, w, c): ``A``; ``error``: relative reconstruction error
    ``||A - W H||_F / ||A||_F``; ``colors`` (n, 3) uint8: each group's colour in
    :func:`color_groups`; ``target``/``score``: the explained class (None for a callable) and
    score.
    """

    layer: str
    spatial: np.ndarray
    loadings: np.ndarray
    attributions: np.ndarray
    spatial_attribution: np.ndarray
    activation_map: np.ndarray
    error: float
    colors: np.ndarray
    target: int | None
    score: float

    @property
    def n(self) -> int:
        return int(self.loadings.shape[0])

    def reconstruction(self) -> np.ndarray:
        """``W H`` as an h×w×c array."""
        return np.einsum("hwn,nc->hwc", self.spatial, self.loadings)

    def overlay(self, size=None, *, opacity: float = 0.85, smooth: bool = True) -> np.ndarray:
        """:func:`color_groups` of these groups."""
        return color_groups(self, size, opacity=opacity, smooth=smooth)


def neuron_groups(model, image, layer, n: int = 6, seed: int = 0, *, target=None,
                  preprocess=None, extra_inputs=None, max_iter: int = 200) -> NeuronGroups:
    """Factorise ``layer``'s h×w×c activations of one image into ``n`` neuron groups (see the
    module docstring); ``seed`` seeds NMF's initialisation (NNDSVD with small random values in
    place of its zeros), ``max_iter`` caps its coordinate-descent iterations (scikit-learn warns
    when the cap stops a fit; :attr:`NeuronGroups.error` says how good it is)."""
    from sklearn.decomposition import NMF  # imported on use: scikit-learn is slow to import

    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"n must be an int >= 1 (how many groups), got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    found = layer_attribution(model, image, layer, target=target, preprocess=preprocess,
                              extra_inputs=extra_inputs)
    acts = found.activation_map
    h, w, c = acts.shape
    if n > min(h * w, c):
        raise ValueError(f"n={n} groups is more than layer {found.layer!r} allows: at most "
                         f"min(h·w, c) = min({h * w}, {c}) = {min(h * w, c)}")
    flat = acts.reshape(h * w, c).astype(np.float64)
    low = float(flat.min())
    if low < 0:
        raise ValueError(f"layer {found.layer!r} has negative activations (min {low:.3g}); NMF "
                         f"needs non-negative ones: choose a layer after a ReLU")
    if not flat.any():
        raise ValueError(f"layer {found.layer!r} is zero everywhere for this image; there is "
                         f"nothing to factorise")
    nmf = NMF(n_components=int(n), init="nndsvdar", random_state=int(seed), max_iter=int(max_iter))
    # float32 in: scikit-learn keeps the dtype, about twice as fast as float64 for the same fit
    spatial = nmf.fit_transform(flat.astype(np.float32)).astype(np.float64)  # (hw, n)
    loadings = nmf.components_.astype(np.float64)  # (n, c)
    scale = np.linalg.norm(loadings, axis=1)
    scale[scale == 0] = 1.0
    loadings = loadings / scale[:, None]
    spatial = spatial * scale[None, :]
    order = np.argsort(-spatial.sum(axis=0), kind="stable")
    spatial, loadings = spatial[:, order], loadings[order]
    error = float(np.linalg.norm(flat - spatial @ loadings) / np.linalg.norm(flat))
    grads = found.gradient_map.reshape(h * w, c).astype(np.float64)
    per_cell = spatial * (grads @ loadings.T)  # (hw, n): W[p, j] (H[j] · G[p])
    return NeuronGroups(
        layer=found.layer,
        spatial=_frozen(spatial.reshape(h, w, n).astype(np.float32)),
        loadings=_frozen(loadings.astype(np.float32)),
        attributions=_frozen(per_cell.sum(axis=0).astype(np.float32)),
        spatial_attribution=_frozen(per_cell.reshape(h, w, n).astype(np.float32)),
        activation_map=found.activation_map, error=error, colors=_frozen(group_palette(n)),
        target=found.target, score=found.score)


def group_palette(n: int) -> np.ndarray:
    """``n`` distinct colours, (n, 3) uint8: matplotlib's tab10 (tab20 beyond 10, then hues)."""
    import matplotlib

    if n <= 10:
        rgb = matplotlib.colormaps["tab10"](np.arange(n))[:, :3]
    elif n <= 20:
        rgb = matplotlib.colormaps["tab20"](np.arange(n))[:, :3]
    else:
        rgb = matplotlib.colormaps["hsv"](np.arange(n) / n)[:, :3]
    return np.round(np.asarray(rgb) * 255).astype(np.uint8)


def color_groups(groups, size=None, *, colors=None, opacity: float = 0.85,
                 smooth: bool = True) -> np.ndarray:
    """Paint the groups as an RGBA uint8 overlay (H, W, 4) to lay over the image.

    ``groups``: a :class:`NeuronGroups` or an (h, w, n) array of non-negative maps. Each pixel's
    colour is the mix of the group colours weighted by the maps there, ``sum_j W_j colour_j /
    sum_j W_j``, and its opacity ``opacity × sum_j W_j / max`` (strong where the groups are
    present, clear where none is). ``size`` (H, W): resize the maps first, bilinearly with
    ``smooth`` (else nearest, showing the layer's cells); ``colors`` (n, 3) uint8: default
    :func:`group_palette`. Lay it over the picture with
    ``nbviz.render.composite(nbviz.render.to_rgba(image), overlay)``.
    """
    maps = np.asarray(groups.spatial if isinstance(groups, NeuronGroups) else groups, np.float32)
    if maps.ndim != 3 or maps.shape[-1] < 1:
        raise ValueError(f"groups must be NeuronGroups or an (h, w, n) array, got shape {maps.shape}")
    if not np.isfinite(maps).all() or (maps < 0).any():
        raise ValueError("group maps must be finite and non-negative")
    if not 0 <= opacity <= 1:
        raise ValueError(f"opacity must be in [0, 1], got {opacity!r}")
    n = maps.shape[-1]
    if colors is None:
        colors = groups.colors if isinstance(groups, NeuronGroups) else group_palette(n)
    colors = np.asarray(colors)
    if colors.shape != (n, 3):
        raise ValueError(f"colors must have shape ({n}, 3), one RGB per group, got {colors.shape}")
    if size is not None:
        height, width = (int(size), int(size)) if isinstance(size, numbers.Integral) else map(int, size)
        if smooth:
            from skimage.transform import resize

            maps = resize(maps, (height, width, n), order=1, mode="edge", anti_aliasing=False)
            maps = np.maximum(maps, 0).astype(np.float32)
        else:
            from nbviz.render import resize_nearest

            maps = resize_nearest(maps, (height, width))
    total = maps.sum(axis=-1)
    mix = np.divide(maps @ colors.astype(np.float32), total[..., None],
                    out=np.zeros(maps.shape[:2] + (3,), np.float32), where=total[..., None] > 0)
    peak = float(total.max())
    strength = total / peak if peak > 0 else total
    out = np.empty(maps.shape[:2] + (4,), np.uint8)
    out[..., :3] = np.clip(np.rint(mix), 0, 255)
    out[..., 3] = np.clip(np.rint(strength * opacity * 255), 0, 255)
    return out
