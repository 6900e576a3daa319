"""What the Explorer shows, as traitlets (no ipywidgets), generated from the method table.

One trait per control of :mod:`nbviz.methods.table` (every row's controls and the view's
:data:`~nbviz.methods.table.VIEW_CONTROLS`, defaults from there), plus what every method reads:
``method``, ``layer``, ``target``, ``channel``, ``point``, and the activation tiles' ``tile_sort``
and ``tile_page``. Changing a trait is all it takes to drive the Explorer.
"""

from __future__ import annotations

import traitlets as T

from nbviz.methods import table

__all__ = ["ExplorerState", "METHOD_CONTROLS", "VIEW", "TILE_SORTS"]

#: every method control by name (shared names are one setting)
METHOD_CONTROLS = table.controls()
#: the view's own controls by name
VIEW = {c.name: c for c in table.VIEW_CONTROLS}
TILE_SORTS = ("index", "mean", "at click")

_TRAIT = {"int": T.Int, "float": T.Float, "log": T.Float, "choice": T.Any, "toggle": T.Unicode, "bool": T.Bool}


def _traits() -> dict:
    traits = {
        "method": T.Unicode(table.METHODS[0].key, help="key of the method shown (nbviz.methods.table)"),
        "layer": T.Unicode("", help="layer path the method looks at"),
        "target": T.Int(None, allow_none=True, help="class explained; None = the top prediction"),
        "channel": T.Int(0, help="channel of the layer (activations, feature visualisation)"),
        "point": T.Tuple(None, allow_none=True, help="(y, x) clicked, in image pixels"),
        "tile_sort": T.Unicode("index", help="order of the channel tiles: " + ", ".join(TILE_SORTS)),
        "tile_page": T.Int(0, help="page of channel tiles shown"),
    }
    for c in (*METHOD_CONTROLS.values(), *VIEW.values()):
        kind = _TRAIT[c.kind] if c.kind != "choice" or all(isinstance(v, str) for v in c.limits) else T.Any
        traits[c.name] = kind(c.default, help=c.help or c.text)  # T.Any: choices like (None, 16, 32)
    return traits


ExplorerState = type("ExplorerState", (T.HasTraits,), {
    "__doc__": "The Explorer's state; one trait per table control (see the module docstring).",
    "__module__": __name__, **_traits()})
