"""The Explorer widget: state (traitlets), frames (numpy RGBA), a worker thread, the view.

``from nbviz.widget import Explorer`` imports ipywidgets and ipycanvas; the other modules here
(state, frames, worker, images, methods, labels) do not.
"""

__all__ = ["Explorer"]


def __getattr__(name):
    if name == "Explorer":
        from nbviz.widget.view import Explorer

        return Explorer
    raise AttributeError(f"module 'nbviz.widget' has no attribute {name!r}")
