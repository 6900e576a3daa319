"""The Explorer's static copies: a PNG output kept up to date for saved notebooks, and a
"Save PNG" link that downloads the current view in the browser.

In a live notebook the Explorer displays as the widget plus a PNG snapshot output (hidden while
the widget is live), updated through its display id after each result, so a notebook saved and
rendered without a kernel (nbconvert, GitHub) shows the last view. Under Voila nothing is
saved, and nbclient (which Voila runs) fails on display updates of outputs it no longer holds,
so there only the widget is displayed.
"""

from __future__ import annotations

import base64
import os
import threading

__all__ = ["Snapshot", "under_voila", "HIDE_SNAPSHOT_CSS"]

# hides the live notebook's copy of the static snapshot (the output right after the Explorer);
# static renderers (nbconvert, GitHub) do not run the widget, so there the snapshot shows
HIDE_SNAPSHOT_CSS = (
    "<style>.jp-OutputArea-child:has(.nbviz-explorer) + .jp-OutputArea-child,"
    ".output_area:has(.nbviz-explorer) + .output_area{display:none}</style>"
)


def under_voila() -> bool:
    """Whether this kernel was started by Voila (it sets ``VOILA_*`` in the kernel's environment)."""
    return any(k in os.environ for k in ("VOILA_BASE_URL", "VOILA_SERVER_URL", "VOILA_APP_PORT", "VOILA_PREHEAT"))


class Snapshot:
    """Keeps the snapshot output and the download link of one Explorer current (debounced)."""

    def __init__(self, png, link_widget, filename, delay: float = 0.25):
        self._png = png  # () -> PNG bytes of the current view
        self._link = link_widget
        self._filename = filename  # () -> a file name for the download
        self._delay = delay
        self._handle = None
        self._timer = None
        self._lock = threading.Lock()

    def bundle(self, data: bytes | None = None) -> dict:
        png = base64.b64encode(data if data is not None else self._png()).decode("ascii")
        return {"image/png": png, "text/plain": "nbviz Explorer snapshot"}

    def display(self, widget) -> None:
        """Display ``widget`` (and, outside Voila, the snapshot output with a display id)."""
        from IPython.display import display

        import ipywidgets as W

        data = dict(W.Widget._repr_mimebundle_(widget) or {})
        data["text/plain"] = repr(widget)
        display(data, raw=True)
        if not under_voila():
            self._handle = display(self.bundle(), raw=True, display_id=True)

    def schedule(self) -> None:
        """Refresh the link (and the snapshot output) a moment after the last change."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = threading.Timer(self._delay, self.update)
            self._timer.daemon = True
            self._timer.start()

    def update(self) -> None:
        data = self._png()
        b64 = base64.b64encode(data).decode("ascii")
        self._link.value = (f"<a class='nbviz-save' download='{self._filename()}' href='data:image/png;base64,{b64}' "
                            "style='display:inline-block;padding:4px 10px;border:1px solid #999;border-radius:3px;"
                            "text-decoration:none;color:inherit'>⬇ Save PNG</a>")
        if self._handle is not None:
            try:
                self._handle.update(self.bundle(data), raw=True)
            except Exception:
                pass  # no frontend (closed kernel): nothing to update

    def cancel(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
