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
