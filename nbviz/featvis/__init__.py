"""Feature visualisation for Keras 3 models: ``from nbviz import featvis as fv``.

Objectives (immutable, composable with ``+ - *``): :func:`neuron`, :func:`channel`, :func:`layer`,
:func:`logit`, :func:`direction`, :func:`directions`, and the regularisers :func:`total_variation`, :func:`l1`,
:func:`l2`, :func:`diversity`. :func:`render` optimises images for them (FFT or pixel
parametrisation, random transforms, octaves, Adam or SGD), streams progress to a callback and
stops on a :class:`Stop`. :func:`save_png` and :func:`save_gif` export the results.
:func:`icons` renders one small picture per channel (or direction) of a layer, batched, and keeps
them in a bounded disk cache shared safely between processes (:class:`IconCache`).
"""

from nbviz.featvis import objectives, params, transforms
from nbviz.featvis.export import save_gif, save_png, tile
from nbviz.featvis.objectives import (
    Objective,
    channel,
    direction,
    directions,
    diversity,
    l1,
    l2,
    layer,
    logit,
    neuron,
    total_variation,
)
from nbviz.featvis.render import Stop, octave_sizes, render
from nbviz.featvis.icon_cache import IconCache
from nbviz.featvis.icons import IconPreview, IconsStopped, icons, weights_digest

__all__ = [
    "Objective",
    "Stop",
    "channel",
    "direction",
    "directions",
    "diversity",
    "IconCache",
    "IconPreview",
    "IconsStopped",
    "icons",
    "weights_digest",
    "l1",
    "l2",
    "layer",
    "logit",
    "neuron",
    "octave_sizes",
    "objectives",
    "params",
    "render",
    "save_gif",
    "save_png",
    "tile",
    "total_variation",
    "transforms",
]
