"""How a table row is run: the generic call, and the special runners rows name with ``runner=``.

Every runner is ``runner(context, request, stop, progress) -> Result``: ``stop`` is a
``threading.Event`` (set when a newer request replaces this one), ``progress(result)`` hands a
refinement to the session (a :class:`Result` with ``fraction < 1``). Runners read only their
request and the context, never a view.

The generic path (:func:`generic`) serves any row without a runner:
``fn(model, image, target=, layer=, preprocess=, **row.kwargs(options))`` (``target``/``layer``
only when the row ``needs`` them; ``progress=`` when the row is progressive) -> a numpy map,
reduced to h×w by the row's ``reduce``.

A runner serving a row that is also in a one-pass group (:mod:`nbviz.session.one_pass`) carries
``runner.from_array(request, raw) -> Result`` to turn the group's raw array into its result.
"""

from __future__ import annotations

import time

import numpy as np

from nbviz.methods import table
from nbviz.session.context import Context
from nbviz.session.results import Request, Result, result_from_array

__all__ = ["run", "generic", "rf_click", "rf_score_map", "rf_max_cell", "activation_channel",
           "feature_visualisation"]


def run(ctx: Context, req: Request, stop, progress) -> Result:
    """Run ``req`` through its row's runner, or the generic call."""
    row = req.row
    runner = row.runner_object() or generic
    return runner(ctx, req, stop, progress)


def generic(ctx: Context, req: Request, stop, progress) -> Result:
    """Any row: call its function with the request's target/layer/options; see the module doc."""
    row = req.row
    kwargs = row.kwargs(dict(req.options))
    if "target" in row.needs:
        kwargs["target"] = req.target
    if "layer" in row.needs:
        kwargs["layer"] = req.layer
    if row.progressive:
        kwargs["progress"] = lambda partial, fraction: progress(
            result_from_array(row, partial, req, fraction=min(float(fraction), 0.999)))
    array = row.function_object()(ctx.model, req.image, preprocess=ctx.preprocess, **kwargs)
    return result_from_array(row, array, req)


# --------------------------------------------------------------------------- receptive fields


def rf_click(ctx: Context, req: Request, stop, progress) -> Result:
    """Gradient receptive field of the output cell under the clicked point."""
    from nbviz.methods.receptive_field import gradient_rf

    if req.point is None:
        return Result(note=f"{req.label}: click the image to see the receptive field of the cell under it",
                      request=req)
    rf = ctx.receptive_field(req.layer)
    cell = rf.cell(req.point)
    g = gradient_rf(ctx.model, cell, layer=req.layer, image=ctx.model_input(req.image),
                    mode=req.option("mode", "theoretical"))
    m = np.asarray(g.map, np.float32)
    return Result("field", m, values=m, box=tuple(rf.box(cell)), gradient_box=g.box, cell=tuple(int(v) for v in cell),
                  note=f"{req.label}: {g.mode} RF of cell {tuple(int(v) for v in cell)} at {req.layer}", request=req)


def _score_map_rf(ctx: Context, req: Request, *, whole: bool) -> Result:
    from nbviz.methods.receptive_field import gradient_rf

    if len(ctx.probe.output_shape(req.image.shape[:2])) == 4:  # a dense output is the score map
        from nbviz.session.dense import score_map_rf

        return score_map_rf(ctx, req, whole=whole)

    fcn = ctx.fully_convolutional()
    score_layer = fcn.layers[-1].name  # the class score map
    x = ctx.model_input(req.image)
    target = req.target if req.target is not None else ctx.top_class(req.image_id, req.image)
    mode = req.option("mode", "theoretical")
    if whole:
        scores = np.asarray(fcn(x[None], training=False))[0, ..., target]
        cell = np.ones(scores.shape, np.float32)
    else:
        cell = "max"
    g = gradient_rf(fcn, cell, layer=score_layer, image=x, mode=mode, target=target)
    m = np.asarray(g.map, np.float32)
    what = "" if whole else f" {tuple(int(v) for v in g.cell)}"
    return Result("field", m, values=m, gradient_box=None if whole else g.box,
                  cell=None if whole else tuple(int(v) for v in g.cell),
                  note=f"{req.label}{what}: {g.mode}, class {target}", request=req)


def rf_score_map(ctx: Context, req: Request, stop, progress) -> Result:
    """Gradient RF of the whole class score map of the fully convolutional copy."""
    return _score_map_rf(ctx, req, whole=True)


def rf_max_cell(ctx: Context, req: Request, stop, progress) -> Result:
    """Gradient RF of the most activated cell of the class score map."""
    return _score_map_rf(ctx, req, whole=False)


# --------------------------------------------------------------------------- features


def activation_result(req: Request, act: np.ndarray) -> Result:
    """The channel ``req.channel`` of an h×w×c activation (with all channels for the tiles)."""
    act = np.asarray(act, np.float32)
    if act.ndim != 3:
        raise ValueError(f"layer {req.layer!r} gives an activation of shape {act.shape}; "
                         "activations need a spatial h×w×c layer")
    c = act.shape[-1]
    if not 0 <= req.channel < c:
        raise ValueError(f"channel must be in [0, {c - 1}] for layer {req.layer!r}, got {req.channel}")
    ch = act[..., req.channel]
    return Result("unsigned", ch, values=ch, activation=act,
                  note=f"{req.label}: channel {req.channel} of {c} at {req.layer}", request=req)


def activation_channel(ctx: Context, req: Request, stop, progress) -> Result:
    """One channel of a layer's activation, shown as a map; all channels for the tiles."""
    from nbviz.methods.activations import activations

    return activation_result(req, activations(ctx.model, req.image, req.layer, preprocess=ctx.preprocess))


activation_channel.from_array = activation_result  # a one-pass group's raw activation -> the result


#: feature visualisation hands a picture to ``progress`` after its first step, then this often
FRAME_INTERVAL_S = 0.5


def feature_visualisation(ctx: Context, req: Request, stop, progress) -> Result:
    """Render the channel ``req.channel`` of ``req.layer`` (:func:`nbviz.featvis.render`), with a
    picture handed to ``progress`` after the first step and then every :data:`FRAME_INTERVAL_S`,
    and the current picture kept on stop (``Result.stopped``, ``step`` of ``steps``)."""
    import nbviz.featvis as fv

    row = table.method(req.method)
    o = row.kwargs(dict(req.options))
    h, w = req.image.shape[:2]
    spread = float(o.pop("scale"))
    steps = int(o["steps"]) * int(o["octaves"])
    last: dict = {"sent": 0.0}

    def callback(done, images, value):  # ``done``: steps done over all octaves
        last["value"], last["done"] = float(np.asarray(value).mean()), int(done)
        now = time.perf_counter()
        if done == 1 or now - last["sent"] >= FRAME_INTERVAL_S:  # the first step, then a frame per interval
            last["sent"] = now
            progress(Result("picture", np.asarray(images, np.float32)[0], step=int(done), steps=steps,
                            fraction=min(done / steps, 0.999), note=f"step {done} of {steps}", request=req))

    pictures = fv.render(
        ctx.model, fv.channel(req.layer, int(req.channel)), size=(h, w), scale=(1 - spread, 1 + spread),
        preprocess=ctx.featvis_preprocess(req.image), callback=callback,
        every=1, stop=stop, **o)
    done = last.get("done", 0)
    stopped = stop.is_set() and done < steps
    value = last.get("value")
    note = (f"{req.label} of channel {req.channel} at {req.layer}: "
            + (f"stopped at step {done} of {steps}" if stopped else f"{steps} steps")
            + ("" if value is None else f", objective {value:.4g}"))
    return Result("picture", np.asarray(pictures, np.float32)[0], step=done, steps=steps, stopped=stopped,
                  note=note, request=req)
