"""Layer-CAM (Jiang et al. 2021, "LayerCAM: Exploring Hierarchical Class Activation Maps for
Localization", IEEE TIP).

With ``A`` the output of a spatial layer (default: the last one larger than 1×1) and ``G`` the
gradient of the explained score with respect to ``A``, every activation gets its own weight,
the positive part of its gradient:

    ``M_ij = relu( sum_c relu(G_ijc) * A_ijc )``

(Grad-CAM instead weights each channel by its mean gradient; where the gradients are spatially
constant and positive the two maps are the same). Because the weights are local, the map stays
sharp at shallow layers, where Grad-CAM's channel means wash out.

The map is upsampled bilinearly to the input size and divided by its maximum, exactly as
Grad-CAM's (:func:`nbviz.methods.cam_tools.finish`). pytorch-grad-cam's ``LayerCAM`` scales by
``(M - min) / (max - min)`` instead; the two agree whenever the map touches zero somewhere.
Only the part of the model after the layer is differentiated.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from nbviz.methods import core
from nbviz.methods.cam_tools import finish

__all__ = ["layercam"]


def layercam(model, image, *, target=None, layer=None, preprocess=None,
             extra_inputs=None) -> np.ndarray:
    """Layer-CAM heatmap at ``layer``, H×W float32 in [0, 1] (N×H×W for a batch).

    ``target``: see :mod:`nbviz.methods.targets` (default: the top class, explained by its
    logit); ``layer``: a layer with an h×w×c output (name, path or object; default: the last
    spatial layer larger than 1×1); ``extra_inputs``: values of a multi-input model's other
    inputs.
    """
    p, images, single = core.prepare(model, image, preprocess)
    info = p.spatial_layer(layer)
    sel = core.selection(p, target, images, None)
    path = info.path
    fn = sel.fn
    size = tuple(images.shape[1:3])

    def cam(images, region, channels, top, extra):
        lp = core.layer_pass(p, images, path, fn, region, channels, top, extra)
        return finish(tf.reduce_sum(tf.nn.relu(lp.grads) * lp.acts, axis=-1), size)

    f = core.compiled(p, core.key_of("layercam", images, sel, path), cam)
    maps = f(images, *sel.tensors, core.extra_tensors(p, extra_inputs))
    return core.numpy_maps(maps, single, "layercam")
