"""Targets on a dense output map (segmentation, edges, depth, keypoint heatmaps) in a request.

A view that lets the user click the model's output asks for a region of it:
:func:`nbviz.methods.targets.point` / :func:`~nbviz.methods.targets.box` (frozen dataclasses,
hashable by their fields, so they serve as part of the session's cache key as they are).
:func:`check_region_target` validates one against the model's output for an image's size, so a
bad region fails when the request is made, naming what was wrong, not later inside a method.
"""

from __future__ import annotations

from nbviz.methods.targets import Box

__all__ = ["check_region_target"]


def check_region_target(probe, target: Box, image_shape) -> Box:
    """``target`` (a :class:`~nbviz.methods.targets.Box`) if it lies inside the model's dense
    output map for an image of ``image_shape`` (h, w, ...) and names one of its channels, else
    a ValueError saying what is accepted."""
    shape = tuple(probe.output_shape(tuple(image_shape[:2])))
    if len(shape) != 4:
        raise ValueError(f"target {target!r} is a region of a dense output map, but the model's output "
                         f"has shape {shape}; use None (the top prediction) or a class index")
    h, w, k = (int(v) for v in shape[1:])
    t, l, b, r = target.top, target.left, target.bottom, target.right
    if t < 0 or l < 0 or b > h or r > w:
        raise ValueError(f"target box (top, left, bottom, right) = {(t, l, b, r)} is outside the "
                         f"model's {h}×{w} output map")
    if target.channel is not None and not 0 <= target.channel < k:
        raise ValueError(f"target channel must be None (the top channel) or in [0, {k - 1}], "
                         f"got {target.channel}")
    return target
