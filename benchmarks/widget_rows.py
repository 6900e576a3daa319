"""The Explorer rows, through the Explorer's public API (no browser attached).

* ``explorer_click``: ``Explorer(model, image)`` on "receptive field (click)", then per sample
  ``explorer.click(y, x).wait().frame()``: the gradient RF of a new cell computed off the main
  thread, painted, and the composed frame read back.
* ``frame_512``: an Explorer showing a 512×512 image (the small "tiny" model at 512²) with its
  Grad-CAM overlay; each sample changes the overlay opacity, ``explorer.set(alpha=a)``, which
  rebuilds the 512×512 RGBA overlay and sends it to its canvas layer (no browser: "send" is the
  PNG encoding and the comm message).
"""

from __future__ import annotations

from typing import Callable


def _points(size: int, i: int) -> tuple[int, int]:
    """Click ``i``: a point in a different 32-pixel cell of a ``size``² image each time."""
    cells = max(1, size // 32)
    step = size / cells
    cy, cx = (3 * i + cells // 2) % cells, (5 * i + cells // 2) % cells
    return int((cy + 0.5) * step), int((cx + 0.5) * step)


def explorer_click(model, spec: dict, get) -> Callable[[int], dict]:
    from nbviz.probe import probe
    from nbviz.widget import Explorer

    image, _ = get(0)
    explorer = Explorer(model, image)
    explorer.set(method="rf").wait()
    count = lambda: probe(model).trace_count()  # noqa: E731

    def call(i: int) -> dict:
        before = count()
        explorer.click(*_points(image.shape[0], i)).wait()
        explorer.frame()
        return {"extras": {"traces": count() - before}}
    return call


def frame_512(model, spec: dict, get) -> Callable[[int], dict]:
    import models
    from nbviz.widget import Explorer

    small = models.build("tiny", 512)
    explorer = Explorer(small, models.images(1, 512, seed=7)[0])
    if (explorer.geometry.H, explorer.geometry.W) != (512, 512):
        raise RuntimeError(f"a 512×512 image is shown at {explorer.geometry}, not 512×512")
    explorer.set(method="gradcam").wait()

    def call(i: int) -> dict:
        before = explorer.paints["overlay"]
        explorer.set(alpha=0.3 + 0.05 * (i % 10))
        return {"extras": {"repaints": explorer.paints["overlay"] - before}}
    return call


# ----------------------------------------------------------------------------- the session

CHEAP = ("saliency", "gradcam", "gradcam_pp", "guided_backprop", "activations", "rf")
#: a new image opens on Grad-CAM, then every other cheap method is chosen in turn
CHEAP_WALK = ("gradcam",) + tuple(m for m in CHEAP if m != "gradcam")


def session_switch(model, spec: dict, get) -> Callable[[int], dict]:
    """Method switch → result through :class:`nbviz.session.Session`: sample ``i`` shows a new
    image with Grad-CAM, then switches through the cheap methods (saliency, Grad-CAM++, guided
    backprop, activations, receptive field of a clicked cell); the sample is the mean time per
    step, the slowest step an extra. The first (cold) sample runs in a fresh session on a model
    nothing was compiled for (the factory cleared every cache): each step traces. Later samples
    are what a prewarmed Explorer gives on a new image (every function compiled, nothing
    cached). The extra ``cached`` is the mean switch back to a method already shown for that
    image (a cache hit)."""
    import time

    from nbviz.session import Session

    session = Session(model)
    layer = session.probe.spatial_layer().path

    def show(method: str, image, iid):
        point = (image.shape[0] // 2, image.shape[1] // 2) if method == "rf" else None
        req = session.request(method, image, image_id=iid, layer=layer, point=point)
        return session.compute(req)

    def call(i: int) -> dict:
        image, _ = get(i)
        iid = session.image_id(image)
        walls, cpu0 = [], time.process_time()
        for method in CHEAP_WALK:
            t0 = time.perf_counter()
            show(method, image, iid)
            walls.append(time.perf_counter() - t0)
        cpu = (time.process_time() - cpu0) / len(walls)
        t0 = time.perf_counter()
        for method in CHEAP_WALK:
            show(method, image, iid)
        cached = (time.perf_counter() - t0) / len(CHEAP_WALK)
        return {"wall": sum(walls) / len(walls), "cpu": cpu, "slowest": max(walls), "cached": cached}
    return call


def session_first_partial(model, spec: dict, get) -> Callable[[int], dict]:
    """A progressive method (SmoothGrad, integrated gradients, occlusion, feature visualisation)
    through the session, warm, on a new image: time to its first refinement (the first overlay
    a user sees); the time to the final result is an extra."""
    import time

    from nbviz.session import Session

    session = Session(model)
    method = spec["options"]["method"]
    options = dict(spec["options"].get("controls", {}))
    layer = session.probe.spatial_layer().path

    def run(image, channel=0):
        first = {}
        t0, c0 = time.perf_counter(), time.process_time()

        def progress(partial):
            first.setdefault("wall", time.perf_counter() - t0)
            first.setdefault("cpu", time.process_time() - c0)

        req = session.request(method, image, image_id=session.image_id(image), layer=layer,
                              channel=channel, options=options)
        session.compute(req, progress=progress)
        total = time.perf_counter() - t0
        return {"wall": first.get("wall", total), "cpu": first.get("cpu", time.process_time() - c0),
                "final": total}

    run(get(0)[0])  # warm: compiled once
    return lambda i: run(get(i + 1)[0], channel=i + 1)


def compare4(model, spec: dict, get) -> Callable[[int], dict]:
    """A 4-pane comparison (saliency, integrated gradients, Grad-CAM, occlusion) with deletion
    and insertion AUC under each pane, widget-free (:func:`nbviz.comparison.compare_scores`,
    what the compare view computes), on a new image."""
    from nbviz.comparison import compare_scores

    methods = ("saliency", "integrated_gradients", "gradcam", "occlusion")
    return lambda i: compare_scores(model, get(i + 1)[0], methods)  # the cold sample compiles
