"""The semantic dictionary at one cell of a layer (Olah et al., "The Building Blocks of
Interpretability", Distill 2018).

For an image, a spatial layer with activations ``A`` (h×w×c) and the explained score ``S`` of the
target (:mod:`nbviz.methods.targets`; the logit when the model ends in a softmax), the dictionary
at cell ``(y, x)`` lists the ``k`` channels that matter most there:

* ``by="activation"``: the largest ``A[y, x, c]``;
* ``by="attribution"``: the largest ``A[y, x, c] · ∂S/∂A[y, x, c]`` (activation times gradient:
  the first-order estimate of how much the score would drop if that unit were switched off),
  largest positive first.

Ties keep the lower channel first (a stable sort). One compiled forward and backward pass per
(layer, input shape, target kind) gives ``A`` and ``∂S/∂A`` at every cell, so a new image, cell or
class never retraces: the image and the target go in as tensors and the cell is read in numpy.
Each channel's picture comes from :func:`nbviz.featvis.icons`.
"""

from __future__ import annotations

import dataclasses
import numbers

import numpy as np
import tensorflow as tf

from nbviz.methods import core
from nbviz.methods import targets as _targets

__all__ = ["SemanticDictionary", "dictionary", "layer_attribution"]

_BY = ("activation", "attribution")


@dataclasses.dataclass(frozen=True, eq=False)
class SemanticDictionary:
    """What :func:`dictionary` returns; the arrays are read-only.

    ``channels`` (k,) int64: the top channels, best first; ``activations`` and ``attributions``
    (k,) float32: their ``A[y, x, c]`` and ``A[y, x, c] · ∂S/∂A[y, x, c]``, in the same order.
    ``activation_map`` (h, w, c) float32: the layer's whole activation ``A`` (overlay channel
    ``c`` with ``activation_map[..., c]``, see :meth:`channel_map`); ``attribution_map`` (h, w, c):
    ``A · ∂S/∂A`` at every cell (its sum over channels is the spatial attribution of the layer).
    ``target``: the explained class (or output channel), None for a callable target; ``score``:
    the explained score ``S``.
    """

    layer: str
    cell: tuple[int, int]
    by: str
    channels: np.ndarray
    activations: np.ndarray
    attributions: np.ndarray
    activation_map: np.ndarray
    attribution_map: np.ndarray
    target: int | None
    score: float

    @property
    def k(self) -> int:
        return int(self.channels.shape[0])

    @property
    def values(self) -> np.ndarray:
        """The ranked values: ``activations`` or ``attributions`` (whichever ``by`` names)."""
        return self.activations if self.by == "activation" else self.attributions

    def channel_map(self, channel: int) -> np.ndarray:
        """The h×w activation map of one channel of the layer."""
        c = self.activation_map.shape[-1]
        if not isinstance(channel, numbers.Integral) or isinstance(channel, bool) or not 0 <= channel < c:
            raise ValueError(f"channel must be an int in 0..{c - 1}, got {channel!r}")
        return self.activation_map[..., int(channel)]

    def spatial_attribution(self) -> np.ndarray:
        """h×w: ``sum_c A · ∂S/∂A`` at every cell of the layer."""
        return self.attribution_map.sum(axis=-1)


def dictionary(model, image, layer, cell, *, k: int = 8, target=None, by: str = "activation",
               preprocess=None, extra_inputs=None) -> SemanticDictionary:
    """The top ``k`` channels of ``layer`` at ``cell = (y, x)`` for one image (H×W×C).

    ``layer``: a spatial layer (name, path or object); ``cell``: a position on its h×w output map
    (e.g. ``nbviz.receptive_field(model, layer).cell((y, x))`` for a clicked pixel); ``k``: how many channels
    (at most the layer's ``c``); ``target``: what to explain (None: the top class); ``by``:
    ``"activation"`` or ``"attribution"`` (see the module docstring); ``preprocess``: raw image ->
    model input.
    """
    if by not in _BY:
        raise ValueError(f"by must be 'activation' or 'attribution', got {by!r}")
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
        raise ValueError(f"k must be an int >= 1 (how many channels), got {k!r}")
    found = layer_attribution(model, image, layer, target=target, preprocess=preprocess,
                              extra_inputs=extra_inputs)
    acts, attr = found.activation_map, found.attribution_map
    h, w, c = acts.shape
    y, x = _cell(cell, h, w, found.layer)
    ranked = acts[y, x] if by == "activation" else attr[y, x]
    order = np.argsort(-ranked, kind="stable")[:min(int(k), c)].astype(np.int64)
    return SemanticDictionary(
        layer=found.layer, cell=(y, x), by=by, channels=_frozen(order),
        activations=_frozen(acts[y, x, order]), attributions=_frozen(attr[y, x, order]),
        activation_map=acts, attribution_map=attr, target=found.target, score=found.score)


@dataclasses.dataclass(frozen=True, eq=False)
class LayerAttribution:
    """A layer's activation ``A`` and ``A · ∂S/∂A`` (h×w×c each, read-only), the gradient
    ``∂S/∂A``, the explained target and score: what the dictionary and the neuron groups read."""

    layer: str
    activation_map: np.ndarray
    gradient_map: np.ndarray
    attribution_map: np.ndarray
    target: int | None
    score: float


def layer_attribution(model, image, layer, *, target=None, preprocess=None,
                      extra_inputs=None) -> LayerAttribution:
    """One compiled forward/backward pass: ``A``, ``∂S/∂A`` and ``A · ∂S/∂A`` at a spatial layer
    for one image (see the module docstring)."""
    p, images, single = core.prepare(model, image, preprocess)
    if not single and images.shape[0] != 1:
        raise ValueError(f"image must be one H×W×C image (the dictionary is read at one image's "
                         f"cell), got a batch of shape {tuple(images.shape)}")
    if layer is None:
        raise ValueError("layer is required: give a spatial layer (name, path or object)")
    info = p.spatial_layer(layer)
    sel = core.selection(p, target, images, None)
    f = _function(p, images, sel, info.path)
    acts, grads, score, chosen = f(images, *sel.tensors, core.extra_tensors(p, extra_inputs))
    acts = acts.numpy()[0]
    grads = grads.numpy()[0]
    chosen = int(chosen.numpy()[0])
    return LayerAttribution(
        layer=info.path, activation_map=_frozen(acts), gradient_map=_frozen(grads),
        attribution_map=_frozen(acts * grads + np.float32(0.0)),  # + 0: no -0.0
        target=None if chosen < 0 else chosen,
        score=float(score.numpy()[0]))


def _function(p, images, sel, layer: str):
    """Compiled ``f(images, region, channels, top, extra) -> (A, ∂S/∂A, S, class)``."""
    fn = sel.fn

    def forward_backward(images, region, channels, top, extra):
        lp = core.layer_pass(p, images, layer, fn, region, channels, top, extra)
        if fn is None:
            weights = _targets.resolve_channels(lp.out, region, channels, top)
            chosen = tf.argmax(weights, axis=-1, output_type=tf.int32)
        else:
            chosen = -tf.ones(tf.shape(lp.score), tf.int32)
        return lp.acts, lp.grads, lp.score, chosen

    return core.compiled(p, core.key_of("dictionary", images, sel, layer), forward_backward)


def _cell(cell, h, w, layer):
    ok = (isinstance(cell, (tuple, list, np.ndarray)) and len(cell) == 2
          and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in cell))
    if not ok:
        raise TypeError(f"cell must be a (y, x) pair of ints on the layer's map, got {cell!r}")
    y, x = int(cell[0]), int(cell[1])
    if not (0 <= y < h and 0 <= x < w):
        raise ValueError(f"cell (y, x) = {(y, x)} is outside the {h}×{w} output map of layer "
                         f"{layer!r} (0 <= y < {h}, 0 <= x < {w})")
    return y, x


def _frozen(array: np.ndarray) -> np.ndarray:
    array = np.ascontiguousarray(array)
    array.setflags(write=False)
    return array
