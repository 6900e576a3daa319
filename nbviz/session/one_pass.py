"""Several maps from one compiled forward/backward pass.

Rows with the same ``one_pass`` value in the method table are served together: the session runs
the group's function once per (image, layer, target) and caches every member's result, so a
switch among them is a cache hit. A group is a function here named like the value:
``group(context, request) -> {method key: raw array}``; the session turns each raw array into
that row's result (the generic conversion, or the row's runner given the array).

``gradients``: :func:`nbviz.methods.gradient_pass.gradient_pass` (saliency, Grad-CAM, Grad-CAM++
and the activation at the request's layer, from one tape); every map equals its function's own
result.
"""

from __future__ import annotations

from nbviz.methods.gradient_pass import MEMBERS, gradient_pass

__all__ = ["gradients"]


def gradients(ctx, req) -> dict:
    """Saliency, Grad-CAM, Grad-CAM++ and the activation at ``req.layer`` for ``req.target``."""
    return gradient_pass(ctx.model, req.image, members=MEMBERS, target=req.target, layer=req.layer,
                         preprocess=ctx.preprocess)
