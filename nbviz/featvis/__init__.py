"""Feature visualisation for Keras 3 models: ``from nbviz import featvis as fv``.

Objectives (immutable, composable with ``+ - *``): :func:`neuron`, :func:`channel`, :func:`layer`,
:func:`logit`, :func:`direction`, and the regularisers :func:`total_variation`, :func:`l1`,
:func:`l2`, :func:`diversity`. :func:`render` optimises images for them (FFT or pixel
parametrisation, random transforms, octaves, Adam or SGD), streams progress to a callback and
stops on a :class:`Stop`. :func:`save_png` and :func:`save_gif` export the results.
"""

from nbviz.featvis import objectives, params, transforms
from nbviz.featvis.export import save_gif, save_png, tile
from nbviz.featvis.objectives import (
    Objective,
    channel,
    direction,
    diversity,
    l1,
    l2,
    layer,
    logit,
    neuron,
    total_variation,
)
from nbviz.featvis.render import Stop, octave_sizes, render

__all__ = [
    "Objective",
    "Stop",
    "channel",
    "direction",
    "diversity",
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
