"""The Explorer rows: a click turned into a frame, and a 512×512 RGBA frame built and sent.

* ``explorer_click``: ``Explorer(model, image)`` on the "receptive field (click)" method, then per
  call ``explorer.click(y, x).wait().frame()``: the gradient RF of the clicked cell computed off
  the main thread, painted, and the composed frame read back. Each warm call clicks a new cell.
  The Explorer is built and idle before the first (cold) click; its own ``timings`` (queue, method,
  paint, total ms; medians of the warm clicks) are recorded too.
* ``frame_512``: the widget's frame builders (``nbviz.widget.frames``) turn a 512×512 heat map,
  a box and a crosshair into overlay and top RGBA layers, and both are sent to an ipycanvas
  ``Canvas`` with ``put_image_data`` inside ``hold_canvas`` (no browser attached: "send" is the
  serialisation, which in ipycanvas is a PNG encoding by Pillow, and the comm message). The heat
  maps are smooth (a moving Gaussian blob), as attribution overlays are.

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
                timings.append(dict(explorer.timings))
                return frame

            points = _points(image.shape[0], repeats + 1)
            record = measure(click, points, counter=lambda: probe(model).trace_count())
            warm = timings[1:]
            record["explorer_timings_ms_median"] = {
                k: float(np.median([t[k] for t in warm if k in t]))
                for k in ("queue_ms", "prepare_ms", "method_ms", "paint_ms", "total_ms")
                if any(k in t for t in warm)}
            record["what"] = "Explorer.click(y, x).wait().frame(), method 'rf' (gradient RF)"
            return record
        finally:
            explorer.close()

    def frame_row() -> dict:
        from ipycanvas import Canvas, hold_canvas
        from nbviz.widget import frames

        geometry = frames.display_geometry(512, 512)
        if (geometry.H, geometry.W) != (512, 512):
            raise RuntimeError(f"frames.display_geometry(512, 512) gave {geometry}")
        canvas = Canvas(width=512, height=512)
        # smooth heat maps (a Gaussian blob moving over the image), like an attribution overlay:
        # PNG encoding in the send costs more for noise than for smooth pictures
        yy, xx = np.mgrid[0:512, 0:512]
        heats = [np.exp(-((yy - 100 - 40 * i) ** 2 + (xx - 400 + 50 * i) ** 2) / (2 * 80.0 ** 2))
                 .astype(np.float32) for i in range(repeats + 1)]

        def build_and_send(heat):
            overlay = frames.overlay_layer("heat", heat, geometry, cmap="jet", alpha=0.5)
            top = frames.top_layer(geometry, point=(200, 300), box=(100, 150, 300, 400))
            with hold_canvas():
                canvas.clear()
                canvas.put_image_data(overlay, 0, 0)
                canvas.put_image_data(top, 0, 0)
            return overlay

        record = measure(build_and_send, heats)
        record["what"] = ("frames.overlay_layer (512² heat map) + frames.top_layer, "
                          "2 × Canvas.put_image_data in hold_canvas")
        canvas.close()
        return record

    return {"explorer_click": click_row, "frame_512": frame_row}
