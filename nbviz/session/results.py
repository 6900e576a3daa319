"""Requests and results: what a view asks the session for, and what it gets back.

A :class:`Request` is immutable and carries everything its computation reads (the image, the
layer, the target, the point, the control values): a job never reads live view state. A
:class:`Result` says what to paint and how (``display``, one of the table's display kinds) and
what to read under the pointer (``values``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from nbviz.methods import table

__all__ = ["Request", "Result", "reduce_map", "result_from_array"]


@dataclasses.dataclass(frozen=True, eq=False)
class Request:
    """One computation. Build it with :meth:`nbviz.session.Session.request` (which validates).

    ``image_id`` names the image (the session's counter): two requests with equal fields and
    image ids ask for the same result. ``options``: sorted (control name, value) pairs of the
    method's own controls. ``layer`` is None when the method reads no layer; ``target`` None is
    the top prediction; ``point`` (y, x) in image pixels or None.
    """

    method: str
    image: np.ndarray
    image_id: int
    layer: str | None = None
    target: int | None = None
    channel: int = 0
    point: tuple[int, int] | None = None
    options: tuple = ()

    @property
    def row(self) -> table.Method:
        return table.method(self.method)

    @property
    def label(self) -> str:
        return self.row.label

    def option(self, name: str, default: Any = None) -> Any:
        return dict(self.options).get(name, default)

    def replace(self, **changes) -> "Request":
        return dataclasses.replace(self, **changes)


@dataclasses.dataclass(frozen=True, eq=False)
class Result:
    """What a method gives a view.

    ``display``: a table display kind ("unsigned", "signed", "rgb", "picture", "field") or None
    (nothing to paint, e.g. "click the image" before a click). ``data``: what is painted: an
    h×w map (unsigned, signed, field) or an H×W×3 array (rgb: signed, around 0; picture: in
    [0, 1]). ``values``: an h×w map read under the pointer (any size, mapped onto the image).
    ``box``: the theoretical receptive-field box, ``gradient_box``: the tight box of a gradient
    map (image pixels, top/left/bottom/right exclusive); ``cell``: the output cell;
    ``activation``: an h×w×c activation (the channel tiles); ``note``: one line describing it.
    ``fraction``: 1.0 for a final result, less for a progressive refinement; ``step`` /
    ``steps``: progress in the method's own unit when it has one (feature-visualisation steps);
    ``elapsed_ms``: time from submission; ``request``: what was asked. ``raw``: the method's
    own output as its function returns it (float32; e.g. H×W×3 saliency before ``reduce``), for
    metrics that must see what the function gives (set by the generic conversion).
    """

    display: str | None = None
    data: np.ndarray | None = None
    values: np.ndarray | None = None
    box: tuple | None = None
    gradient_box: tuple | None = None
    cell: Any = None
    activation: np.ndarray | None = None
    note: str = ""
    fraction: float = 1.0
    step: int | None = None
    steps: int | None = None
    stopped: bool = False
    elapsed_ms: float | None = None
    request: Request | None = None
    raw: np.ndarray | None = None

    @property
    def final(self) -> bool:
        return self.fraction >= 1.0

    def replace(self, **changes) -> "Result":
        return dataclasses.replace(self, **changes)


def reduce_map(array: np.ndarray, how: str | None) -> np.ndarray:
    """An H×W×C result as the H×W map read under the pointer (table ``reduce``)."""
    a = np.asarray(array, np.float32)
    if a.ndim == 2 or how is None:
        return a if a.ndim == 2 else a.sum(axis=-1)
    if how == "sum":
        return a.sum(axis=-1)
    if how == "mean":
        return a.mean(axis=-1)
    if how == "abs_max":
        return np.abs(a).max(axis=-1)
    raise ValueError(f"unknown reduction {how!r}")


def result_from_array(row: table.Method, array, request: Request, *, fraction: float = 1.0) -> Result:
    """The :class:`Result` of a method returning one numpy map (the generic path)."""
    a = np.asarray(array, np.float32)
    if a.ndim not in (2, 3):
        raise ValueError(f"{row.label} returned an array of shape {a.shape}; a map must be H×W or H×W×C")
    values = reduce_map(a, row.reduce)
    if row.display in ("rgb", "picture"):
        data = a if a.ndim == 3 else np.repeat(a[..., None], 3, axis=-1)
    else:
        data = values
    where = f" at {request.layer}" if request.layer else ""
    return Result(row.display, data, values=values, note=f"{row.label}{where}", fraction=fraction,
                  request=request, raw=a)
