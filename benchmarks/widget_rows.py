"""The Explorer rows: a click turned into a frame, and a 512×512 RGBA frame built and sent.

* ``explorer_click``: ``Explorer(model, image)`` on the "receptive field (click)" method, then per
  call ``explorer.click(y, x).wait().frame()``: the gradient RF of the clicked cell computed off
  the main thread, painted, and the composed frame read back. Each warm call clicks a new cell.
  The Explorer is built and idle before the first (cold) click; its session's ``timings`` (queue,
  compute, total ms; medians of the warm clicks) are recorded too.
* ``frame_512``: an Explorer showing a 512×512 image (a small model with a 512×512 input) with
  its Grad-CAM overlay; each call changes the overlay opacity, ``explorer.set(alpha=a)``, which
  rebuilds the 512×512 RGBA overlay layer and sends it to its canvas layer, synchronously (no
  browser attached: "send" is the PNG encoding and the comm message). The Explorer's public
  ``paints`` counter checks that every call repainted the overlay once.

Only public API is used; where it does not exist in this checkout the rows are reported as not
available.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from timing import measure


def _missing(what: str) -> Callable[[], dict]:
    return lambda: {"status": "not available", "error": f"{what} is not in this checkout"}


def _points(size: int, count: int) -> list[tuple[int, int]]:
    """``count`` click points in different 32-pixel cells of a ``size``² image."""
    cells = max(1, size // 32)
    step = size / cells
    out = []
    for i in range(count):
        cy, cx = (3 * i + cells // 2) % cells, (5 * i + cells // 2) % cells
        out.append((int((cy + 0.5) * step), int((cx + 0.5) * step)))
    return out


def explorer_plans(model, model_name: str, images: np.ndarray, *, repeats: int
                   ) -> dict[str, Callable[[], dict]]:
    try:
        from nbviz.widget import Explorer
    except (ImportError, AttributeError) as exc:
        return {"explorer_click": _missing(f"nbviz.widget.Explorer ({exc})"),
                "frame_512": _missing(f"nbviz.widget.Explorer ({exc})")}
    missing = [n for n in ("click", "wait", "frame") if not callable(getattr(Explorer, n, None))]
    if missing:
        gone = _missing("Explorer." + "/".join(missing))
        return {"explorer_click": gone, "frame_512": gone}

    def click_row() -> dict:
        from nbviz.probe import clear_cache, probe
        clear_cache()
        image = images[0]
        explorer = Explorer(model, image)
        try:
            explorer.set(method="rf").wait()
            timings = []

            def click(point):
                explorer.click(*point).wait()
                frame = explorer.frame()
                timings.append(dict(explorer.session.timings.get("rf", {})))
                return frame

            points = _points(image.shape[0], repeats + 1)
            record = measure(click, points, counter=lambda: probe(model).trace_count())
            warm = timings[1:]
            record["explorer_timings_ms_median"] = {
                k: float(np.median([t[k] for t in warm if k in t]))
                for k in ("queue_ms", "compute_ms", "total_ms")
                if any(k in t for t in warm)}
            record["what"] = "Explorer.click(y, x).wait().frame(), method 'rf' (gradient RF)"
            return record
        finally:
            explorer.close()

    def frame_row() -> dict:
        import models
        small = models.build("tiny", 512)
        picture = models.images(1, 512, seed=7)[0]
        explorer = Explorer(small, picture)
        try:
            if (explorer.geometry.H, explorer.geometry.W) != (512, 512):
                raise RuntimeError(f"a 512×512 image is shown at {explorer.geometry}, not 512×512")
            explorer.set(method="gradcam").wait()
            before = explorer.paints["overlay"]
            alphas = [0.30 + 0.05 * i for i in range(repeats + 1)]
            record = measure(lambda a: explorer.set(alpha=a), alphas)
            record["overlay_repaints"] = explorer.paints["overlay"] - before
            if record["overlay_repaints"] != 1 + record["warm_calls"]:
                raise RuntimeError(f"expected one overlay repaint per call, got "
                                   f"{record['overlay_repaints']}")
            record["what"] = ("Explorer.set(alpha=...) on a 512×512 Grad-CAM view: overlay RGBA "
                              "built and sent to its canvas layer")
            return record
        finally:
            explorer.close()

    return {"explorer_click": click_row, "frame_512": frame_row}
