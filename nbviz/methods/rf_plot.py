"""Matplotlib views of receptive fields, for use outside the widget.

Both functions draw on a new figure (or the given axes) and return the Figure; they never call
``plt.show`` and work with the Agg backend.
"""

from __future__ import annotations

import numpy as np

from nbviz.methods.receptive_field import gradient_rf, rf_grid

__all__ = ["plot_rf_grid", "plot_gradient_at"]

_COLOURS = {"top_left": "red", "center": "blue", "bottom_right": "green"}


def _axes(ax, figsize):
    if ax is not None:
        return ax.figure, ax
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    return fig, fig.add_subplot(1, 1, 1)


def _background(ax, image, shape):
    if image is None:
        ax.imshow(np.full((*shape, 3), 0.92), extent=(-0.5, shape[1] - 0.5, shape[0] - 0.5, -0.5))
        return
    image = np.asarray(image)
    if image.dtype != np.uint8:
        lo, hi = float(image.min()), float(image.max())
        image = (image - lo) / (hi - lo) if hi > lo else np.zeros_like(image, dtype=float)
    ax.imshow(image.squeeze(), cmap="gray" if image.ndim == 2 or image.shape[-1] == 1 else None)


def _rectangle(ax, box, colour, label=None):
    from matplotlib.patches import Rectangle

    top, left, bottom, right = box
    ax.add_patch(Rectangle((left - 0.5, top - 0.5), right - left, bottom - top, fill=False,
                           edgecolor=colour, linewidth=2, label=label))


def plot_rf_grid(model, layer=None, *, image=None, input_shape=None, ax=None, figsize=(6, 6)):
    """The receptive fields of the top-left (red), centre (blue) and bottom-right (green) cells of
    ``layer`` and the centres of all its cells (green dots), over ``image`` if given.

    Boxes are drawn unclipped, so the axes extend past the image where a field does.
    """
    if image is not None and input_shape is None:
        input_shape = np.asarray(image).shape[:2]
    grid = rf_grid(model, layer, input_shape=input_shape)
    fig, ax = _axes(ax, figsize)
    _background(ax, image, grid.rf.input_shape)
    for name, box in grid.boxes.items():
        _rectangle(ax, box, _COLOURS[name], f"{name} {grid.cells[name]}")
    centres = grid.centers.reshape(-1, 2)
    ax.scatter(centres[:, 1], centres[:, 0], s=6, c="green")
    boxes = np.array(list(grid.boxes.values()))
    ax.set_xlim(min(boxes[:, 1].min(), 0) - 1, max(boxes[:, 3].max(), grid.rf.input_shape[1]) + 1)
    ax.set_ylim(max(boxes[:, 2].max(), grid.rf.input_shape[0]) + 1, min(boxes[:, 0].min(), 0) - 1)
    rf = grid.rf
    ax.set_title(f"{rf.layer}: size {rf.size}, stride {rf.stride}, offset {rf.offset}",
                 fontsize=9)
    ax.legend(loc="lower right", fontsize=7)
    return fig


def plot_gradient_at(model, cell, *, layer=None, image=None, mode="theoretical", target=None,
                     input_shape=None, ax=None, figsize=(6, 6), cmap="magma"):
    """The input-gradient map of output ``cell`` (see :func:`gradient_rf`) with its box, and the
    analytic or numeric receptive-field box of the cell in dashed white when ``cell`` is (i, j)."""
    from nbviz.methods.receptive_field import receptive_field

    result = gradient_rf(model, cell, layer=layer, image=image, mode=mode, target=target,
                         input_shape=input_shape)
    fig, ax = _axes(ax, figsize)
    if image is not None:
        _background(ax, image, result.map.shape)
        ax.imshow(result.map, cmap=cmap, alpha=0.6)
    else:
        ax.imshow(result.map, cmap=cmap)
    if result.box is not None:
        _rectangle(ax, result.box, "cyan", "gradient support")
    if result.cell is not None:
        from matplotlib.patches import Rectangle

        rf = receptive_field(model, result.layer, input_shape=result.map.shape)
        top, left, bottom, right = rf.box(result.cell)
        ax.add_patch(Rectangle((left - 0.5, top - 0.5), right - left, bottom - top, fill=False,
                               edgecolor="white", linestyle="--", linewidth=1,
                               label=f"{rf.method} RF"))
        y, x = rf.center(result.cell)
        ax.plot([x], [y], "w+")
    ax.set_title(f"{result.layer} cell {result.cell if result.cell is not None else 'mask'} "
                 f"({result.mode})", fontsize=9)
    ax.legend(loc="lower right", fontsize=7)
    return fig
