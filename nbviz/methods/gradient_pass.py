"""Several gradient maps, and the model's outputs, from one compiled forward/backward pass.

The method table's rows with ``one_pass="gradients"`` (saliency, Grad-CAM, Grad-CAM++,
activations) need the same forward pass with a layer ``A`` captured and the same score ``S``:
``dS/dx`` is saliency, ``dS/dA`` gives Grad-CAM and Grad-CAM++ (:func:`nbviz.methods.gradcam.cam_from`),
``A`` is the activation. :func:`gradient_pass` computes only the members asked for (the input
gradient, the costly part, only for saliency; no layer is captured for saliency alone) and, with
``outputs=True``, the model's own output from the same forward pass (the softmax put back, on
its own axis, when the score was read on the logits), so a dataset run stores its predictions
without a second forward pass. Each map equals its own function's result: the target is resolved
as each function resolves it (:mod:`nbviz.methods.targets`).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from nbviz.methods import core
from nbviz.methods.gradcam import cam_from

__all__ = ["MEMBERS", "gradient_pass"]

#: what one pass can give, in order
MEMBERS = ("saliency", "gradcam", "gradcam_pp", "activations")


def gradient_pass(model, image, *, members=MEMBERS, target=None, layer=None, preprocess=None,
                  outputs: bool = False, extra_inputs=None) -> dict[str, np.ndarray]:
    """``{member: map}`` (and ``"outputs"`` when asked) for an image (H×W×C) or a batch.

    ``members``: some of :data:`MEMBERS`; ``layer``: the spatial layer of Grad-CAM, Grad-CAM++
    and the activations (default: the last spatial layer); ``target``, ``preprocess``,
    ``extra_inputs``: as for :func:`nbviz.methods.gradcam.gradcam`. Shapes are the functions'
    own: saliency H×W×C, the CAMs H×W, activations h×w×c, outputs the model's (a leading N for a
    batch).
    """
    members = tuple(members)
    unknown = [m for m in members if m not in MEMBERS]
    if unknown or not members:
        raise ValueError(f"members must be some of {MEMBERS}, got {members!r}")
    p, images, single = core.prepare(model, image, preprocess)
    # saliency alone needs no layer (a model without a spatial layer has saliency too)
    path = p.spatial_layer(layer).path if set(members) - {"saliency"} else None
    sel = core.selection(p, target, images, None)
    fn = sel.fn
    size = tuple(images.shape[1:3])
    wanted = [m for m in MEMBERS if m in members] + (["outputs"] if outputs else [])

    def one_pass(images, region, channels, top, extra):
        lp = core.layer_pass(p, images, path, fn, region, channels, top, extra,
                             wrt_images="saliency" in members)
        values = {"saliency": lp.d_images, "activations": lp.acts}
        for key, plus in (("gradcam", False), ("gradcam_pp", True)):
            if key in members:
                values[key] = cam_from(lp.acts, lp.grads, size, plus)[0]
        if outputs:
            values["outputs"] = keras.ops.softmax(lp.out, axis=p.softmax_axis) if lp.softmax else lp.out
        return [tf.cast(values[k], tf.float32) for k in wanted]

    f = core.compiled(p, core.key_of("gradient_pass", images, sel, path, tuple(wanted)), one_pass)
    got = f(images, *sel.tensors, core.extra_tensors(p, extra_inputs))
    out = {}
    for k, v in zip(wanted, got):
        if k in ("activations", "outputs"):  # values, not maps: zeros are no cause for a warning
            out[k] = v.numpy()[0] if single else v.numpy()
        else:
            out[k] = core.numpy_maps(v, single, k)
    return out
