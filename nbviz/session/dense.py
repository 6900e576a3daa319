"""Targets on a dense output map (segmentation, edges, depth, keypoint heatmaps) in a request.

A view that lets the user click the model's output asks for a region of it:
:func:`nbviz.methods.targets.point` / :func:`~nbviz.methods.targets.box` (frozen dataclasses,
hashable by their fields, so they serve as part of the session's cache key as they are).
:func:`check_region_target` validates one against the model's output for an image's size, so a
bad region fails when the request is made, naming what was wrong, not later inside a method.
:func:`score_map_rf` serves the "RF of the class score map" rows on such models (their output
already is the score map).
"""

from __future__ import annotations

import numpy as np

from nbviz.methods.targets import Box

__all__ = ["check_region_target", "output_layer_path", "score_logits", "region_and_channel", "score_map_rf"]


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


def output_layer_path(probe) -> str | None:
    """Path of the spatial layer whose output is the model's output (for its receptive field),
    else the last spatial layer, or None."""
    out = probe.output_layer
    infos = probe.spatial_layers()
    hit = next((i.path for i in infos if out is not None and i.layer is out), None)
    return hit if hit is not None else (infos[-1].path if infos else None)


def score_logits(probe, image_id, model_input) -> np.ndarray:
    """The model's h×w×k output map for one image with a final softmax dropped (what targets
    score, :func:`nbviz.methods.targets.scores`); the last image's map is kept on the probe."""
    cache = probe.cache("dense_logits")
    if image_id not in cache:
        x, _ = probe.prepare(model_input)
        with probe.logits():
            out = probe.forward(x, extra_inputs=probe.zero_extra_inputs())
        cache.clear()
        cache[image_id] = np.asarray(out, np.float32)[0]
    return cache[image_id]


def region_and_channel(scores: np.ndarray, target) -> tuple[np.ndarray, int]:
    """The (h, w) weights and the channel a dense ``target`` (None, a channel, a Box) explains on
    the h×w×k ``scores``: a channel None becomes the top channel (highest total in the region)."""
    region = np.ones(scores.shape[:2], np.float32)
    channel = target
    if isinstance(target, Box):
        region = np.zeros(scores.shape[:2], np.float32)
        region[target.top:target.bottom, target.left:target.right] = 1.0
        channel = target.channel
    if channel is None:
        channel = int(np.argmax((scores * region[..., None]).reshape(-1, scores.shape[-1]).sum(axis=0)))
    return region, int(channel)


def score_map_rf(ctx, req, *, whole: bool):
    """The "RF of the class score map" rows for a dense-output model: its own output map is the
    score map (no fully convolutional copy is needed). ``whole``: the gradient receptive field of
    the target's region (the whole map without one) of the target's channel; else of the most
    activated cell (highest logit of that channel) inside the region."""
    from nbviz.methods.receptive_field import gradient_rf
    from nbviz.session.results import Result

    p = ctx.probe
    layer = output_layer_path(p)
    x = ctx.model_input(req.image)
    scores = score_logits(p, req.image_id, x)
    region, channel = region_and_channel(scores, req.target)
    mode = req.option("mode", "theoretical")
    if whole:
        cell = region
    else:
        masked = np.where(region > 0, scores[..., channel], -np.inf)
        cell = tuple(int(v) for v in np.unravel_index(int(np.argmax(masked)), masked.shape))
    g = gradient_rf(ctx.model, cell, layer=layer, image=x, mode=mode, target=channel)
    m = np.asarray(g.map, np.float32)
    what = "" if whole else f" {cell}"
    return Result("field", m, values=m, gradient_box=None if whole else g.box,
                  cell=None if whole else cell, note=f"{req.label}{what}: {g.mode}, channel {channel}",
                  request=req)
