"""The compare view's panes without widgets: what a pane shows, its colour scale, its frame
(numpy RGBA) and the text under it. :mod:`nbviz.widget.compare_view` is the widget around them.

A pane is a :class:`PaneSpec`: a method of :mod:`nbviz.methods.table` that gives an attribution
map of the image ("signed", "unsigned" or "rgb" display, no runner, not on demand), optionally at
a ``layer`` (methods that read one), optionally on the ``randomised`` model (the same method on a
copy whose top weighted layer is re-initialised, :mod:`nbviz.sanity`).

**Colour** (:func:`pane_rgba`): "signed" maps on a diverging colormap centred on zero (RdBu_r,
zero white and transparent, opacity ``alpha·|v|/scale``, ``±scale`` the ends), "unsigned" maps on a sequential one (inferno, ``[0, scale]``),
"rgb" maps (guided backprop, H×W×3) as a picture ``v / (2·scale) + 1/2`` around mid-grey.

**Scale** (:func:`pane_scales`): ``scale="own"``: every pane by its own maximum of ``|v|`` (rgb
panes: the 99.5th percentile of their channels' ``|v|``, as :func:`nbviz.compare` does);
``scale="max"`` / ``"p99.5"``: *one scale*: the maximum / the 99.5th percentile of the pooled
``|v|`` of the panes that share it (:func:`nbviz.render.one_scale`), so equal values get equal
colours and a weaker map looks weaker. ``share="method"`` (default): panes of the same method share
(its layers, its randomised-model map): their values have one unit. ``share="all"``: every pane
shares one scale; values of different methods then have different units (logit per pixel,
probability drop, a CAM in the activation's unit), which the picture does not hide.
"""

from __future__ import annotations

import dataclasses
import html
from typing import Sequence

import numpy as np

from nbviz import render
from nbviz.methods import table
from nbviz.widget import frames

__all__ = ["PaneSpec", "parse_panes", "comparable", "pane_scales", "pane_rgba", "pane_frame",
           "outline_layer", "score_text", "demo_truth", "SCALES", "SHARES", "REGION_COLOR",
           "MIN_PANES", "MAX_PANES"]

SCALES = ("own", "max", "p99.5")
SHARES = ("method", "all")
MIN_PANES, MAX_PANES = 2, 8
REGION_COLOR = (60, 255, 60)


@dataclasses.dataclass(frozen=True)
class PaneSpec:
    """One pane: ``method`` (a table key), ``layer`` (a layer path for a method that reads one;
    None: the view's layer), ``randomised`` (the method on the randomised copy)."""

    method: str
    layer: str | None = None
    randomised: bool = False

    @property
    def row(self) -> table.Method:
        return table.method(self.method)

    def title(self, layer: str | None) -> str:
        """The pane's heading: label, the layer it reads, "randomised model" when so."""
        parts = [self.row.label]
        if "layer" in self.row.needs and layer:
            parts.append(f"@ {layer}")
        if self.randomised:
            parts.append("(randomised model)")
        return " ".join(parts)


def comparable() -> list[str]:
    """Table keys a pane can show: methods giving an attribution map of the image."""
    return [m.key for m in table.METHODS if _usable(m)]


def _usable(row: table.Method) -> bool:
    return (row.display in ("signed", "unsigned", "rgb") and row.runner is None and not row.on_demand
            and "point" not in row.needs)


def parse_panes(methods, layer_of=None) -> list[PaneSpec]:
    """``methods`` as pane specs; each item is a table key (``"gradcam"``), a ``(key, layer)``
    pair, a dict ``{"method": key, "layer": ..., "randomised": bool}`` or a :class:`PaneSpec`.
    ``layer_of(layer) -> path`` resolves (and checks) a layer. Between :data:`MIN_PANES` and
    :data:`MAX_PANES` panes; a ValueError/TypeError names what was wrong."""
    if isinstance(methods, (str, bytes, dict, PaneSpec)) or not isinstance(methods, Sequence):
        raise TypeError(f"methods must be a list of {MIN_PANES}-{MAX_PANES} method keys, (key, layer) "
                        f"pairs or dicts, got {methods!r}")
    if not MIN_PANES <= len(methods) <= MAX_PANES:
        raise ValueError(f"methods: a comparison shows {MIN_PANES} to {MAX_PANES} panes, got {len(methods)}")
    specs = []
    for item in methods:
        if isinstance(item, PaneSpec):
            spec = item
        elif isinstance(item, str):
            spec = PaneSpec(item)
        elif isinstance(item, tuple) and len(item) == 2:
            spec = PaneSpec(item[0], item[1])
        elif isinstance(item, dict):
            unknown = set(item) - {"method", "layer", "randomised"}
            if "method" not in item or unknown:
                raise ValueError(f"methods: a pane dict has the keys method, layer, randomised; got {sorted(item)}")
            spec = PaneSpec(item["method"], item.get("layer"), bool(item.get("randomised", False)))
        else:
            raise TypeError(f"methods: each pane is a method key, a (key, layer) pair or a dict, got {item!r}")
        if not isinstance(spec.method, str):
            raise TypeError(f"methods: a method key is a str, got {spec.method!r}")
        try:
            row = table.method(spec.method)
        except ValueError:
            raise ValueError(f"methods: unknown method {spec.method!r}; a pane can show one of "
                             f"{comparable()}") from None
        if not _usable(row):
            raise ValueError(f"methods: {row.label!r} ({spec.method!r}) gives no attribution map of the image "
                             f"to compare; a pane can show one of {comparable()}")
        if spec.layer is not None:
            if "layer" not in row.needs:
                raise ValueError(f"methods: {row.label!r} reads no layer, but layer {spec.layer!r} was given")
            if layer_of is not None:
                spec = dataclasses.replace(spec, layer=layer_of(spec.layer))
        specs.append(spec)
    return specs


# --------------------------------------------------------------------------- colour


def _magnitudes(display: str, data) -> np.ndarray:
    return np.abs(np.nan_to_num(np.asarray(data, np.float32)))


def pane_scales(panes: Sequence[tuple[str, str | None, np.ndarray | None]], scale: str = "own",
                share: str = "method") -> list[float | None]:
    """The colour scale of each pane from ``(group, display, data)`` triples (``group``: the
    method key; ``data`` None: nothing shown yet, scale None). See the module doc."""
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {list(SCALES)}, got {scale!r}")
    if share not in SHARES:
        raise ValueError(f"share must be one of {list(SHARES)}, got {share!r}")
    out: list[float | None] = []
    if scale == "own":
        for _, display, data in panes:
            if data is None:
                out.append(None)
            else:
                pct = 99.5 if display == "rgb" else 100.0
                out.append(render.one_scale([_magnitudes(display, data)], percentile=pct))
        return out
    pct = 100.0 if scale == "max" else 99.5
    pools: dict = {}
    for group, display, data in panes:
        if data is not None:
            pools.setdefault(group if share == "method" else "all", []).append(_magnitudes(display, data))
    shared = {g: render.one_scale(maps, percentile=pct) for g, maps in pools.items()}
    return [None if data is None else shared[group if share == "method" else "all"]
            for group, display, data in panes]


def pane_rgba(display: str | None, data, scale: float | None, *, alpha: float = 0.6) -> np.ndarray | None:
    """The map as RGBA at its own size (module doc); None when there is nothing to paint."""
    if display is None or data is None:
        return None
    if display in ("signed", "unsigned"):  # signed: opacity grows with |v|, zero shows the image
        return render.display_map(np.asarray(data, np.float32), display, scale=scale, alpha=alpha,
                                  alpha_by_value=display == "signed")
    if display == "rgb":
        a = np.asarray(data, np.float32)
        s = render.one_scale([a], percentile=99.5) if scale is None else scale
        return render.to_rgba(np.clip(render.scaled(a, s, signed=True) * 0.5 + 0.5, 0, 1))
    raise ValueError(f"a pane shows signed, unsigned or rgb maps, got display {display!r}")


def outline_layer(region: np.ndarray | None, geometry: frames.Geometry, color=REGION_COLOR) -> np.ndarray:
    """The boundary of a boolean H×W ``region`` (an object's mask or box) at display size."""
    out = render.blank(geometry.H, geometry.W)
    if region is None:
        return out
    big = render.resize_nearest(np.asarray(region, bool).astype(np.uint8), (geometry.H, geometry.W)) > 0
    inner = big.copy()
    inner[1:, :] &= big[:-1, :]
    inner[:-1, :] &= big[1:, :]
    inner[:, 1:] &= big[:, :-1]
    inner[:, :-1] &= big[:, 1:]
    edge = big & ~inner
    out[edge] = (*color, 255)
    return out


def pane_frame(image, display: str | None, data, geometry: frames.Geometry, *, scale: float | None,
               alpha: float = 0.6, point=None, box=None, region=None) -> np.ndarray:
    """One pane's picture, H×W×4 uint8 at display size: the image, the map over it
    (:func:`pane_rgba`), the object's outline (``region``), the receptive-field ``box`` of the
    cell under ``point`` and the crosshair at ``point`` (image pixels)."""
    base = frames.image_layer(image, geometry)
    small = pane_rgba(display, data, scale, alpha=alpha)
    overlay = (render.blank(geometry.H, geometry.W) if small is None
               else render.resize_nearest(small, (geometry.H, geometry.W)))
    top = frames.top_layer(geometry, point=point, box=box)
    return render.composite(base, overlay, outline_layer(region, geometry), top)


# --------------------------------------------------------------------------- text


def score_text(scores: dict | None, *, randomised: bool = False, error: str | None = None,
               region: bool = False) -> str:
    """The line under a pane (HTML): deletion ↓ and insertion ↑ AUC ("…" while computing), the
    pointing game when the object's region is known; for a randomised pane the rank correlation
    with the trained model's map."""
    if error:
        return f"<span style='color:#b00020'>{html.escape(error)}</span>"
    s = scores or {}

    def num(key, fmt="{:.3f}"):
        return "…" if s.get(key) is None else fmt.format(s[key])

    if randomised:
        parts = [f"ρ(|map|) vs trained {num('spearman_abs', '{:.2f}')}"]
    else:
        parts = [f"deletion {num('deletion')} ↓", f"insertion {num('insertion')} ↑"]
    if region:
        pg = s.get("pointing_game")
        parts.append("pointing …" if pg is None else f"pointing {'hit' if pg else 'miss'}")
    return "<span style='font-family:monospace;font-size:11px'>" + " · ".join(html.escape(p) for p in parts) + "</span>"


# --------------------------------------------------------------------------- ground truth


def demo_truth(image) -> tuple[tuple | None, np.ndarray | None]:
    """``(box, mask)`` of ``image`` when it is one of :mod:`nbviz.demo`'s shipped scenes
    (pixel for pixel), else ``(None, None)``."""
    a = np.asarray(image)
    try:
        from nbviz import demo

        s = demo._samples()
    except Exception:
        return None, None
    if a.shape != s.images.shape[1:]:
        return None, None
    same = np.flatnonzero((s.images == a[None]).reshape(len(s.images), -1).all(axis=1))
    if not len(same):
        return None, None
    i = int(same[0])
    return tuple(int(v) for v in s.boxes[i]), np.asarray(s.masks[i], bool)
