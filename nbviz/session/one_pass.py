"""Several maps from one compiled forward/backward pass.

Rows with the same ``one_pass`` value in the method table are served together: the session runs
the group's function once per (image, layer, target) and caches every member's result, so a
switch among them is a cache hit. A group is a function here named like the value:
``group(context, request) -> {method key: raw array}``; the session turns each raw array into
that row's result (the generic conversion, or the row's runner given the array).

``gradients``: one pass through the model with layer ``A`` captured gives the score ``S``, then
``dS/dx`` (saliency) and ``dS/dA`` (Grad-CAM, Grad-CAM++ weights, :func:`nbviz.methods.gradcam.cam_from`)
from one tape, and ``A`` itself (activations). The target is resolved once, as each function
alone resolves it (:mod:`nbviz.methods.targets`), so every map equals its function's own result.
"""

from __future__ import annotations

import tensorflow as tf

from nbviz.methods import core
from nbviz.methods import targets as _targets
from nbviz.methods.gradcam import cam_from

__all__ = ["gradients"]


def gradients(ctx, req) -> dict:
    """Saliency, Grad-CAM, Grad-CAM++ and the activation at ``req.layer`` for ``req.target``."""
    p, images, single = core.prepare(ctx.model, req.image, ctx.preprocess)
    layer = p.spatial_layer(req.layer).path
    sel = core.selection(p, req.target, images, None)
    fn = sel.fn
    size = tuple(images.shape[1:3])

    def one_pass(images, region, channels, top, extra):
        with tf.GradientTape() as tape:
            tape.watch(images)
            with p.capture(layer) as captured, p.logits():
                out = p.forward(images, extra_inputs=extra)
            acts = captured[layer]
            acts = acts[0] if isinstance(acts, (list, tuple)) else acts
            score = _targets.scores(out, fn, region, channels, top)
        d_images, d_acts = tape.gradient(score, [images, acts])
        if d_acts is None:
            raise ValueError(f"the explained score is not differentiable with respect to layer {layer!r}; "
                             "choose a later layer")
        cam, _, _ = cam_from(acts, d_acts, size, False)
        cam_pp, _, _ = cam_from(acts, d_acts, size, True)
        return d_images, cam, cam_pp, tf.cast(acts, tf.float32)

    f = core.compiled(p, core.key_of("one_pass.gradients", images, sel, layer), one_pass)
    d_images, cam, cam_pp, acts = f(images, *sel.tensors, core.extra_tensors(p, None))
    return {"saliency": d_images.numpy()[0], "gradcam": cam.numpy()[0], "gradcam_pp": cam_pp.numpy()[0],
            "activations": acts.numpy()[0]}
