"""Matplotlib helpers: figures with the right boxes, Agg-safe, the model untouched."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

import nbviz
from nbviz.methods.receptive_field import gradient_rf, rf_grid
from nbviz.methods.rf_plot import plot_gradient_at, plot_rf_grid
from tests.conftest import unchanged


def rectangles(fig):
    return [p for p in fig.axes[0].patches if isinstance(p, Rectangle)]


def as_box(rect):
    x, y = rect.get_xy()
    return (int(y + 0.5), int(x + 0.5), int(y + 0.5 + rect.get_height()),
            int(x + 0.5 + rect.get_width()))


def test_plot_rf_grid_draws_the_three_boxes_and_all_centres(small, tmp_path):
    image = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    with unchanged(small):
        fig = plot_rf_grid(small, image=image)
    assert isinstance(fig, Figure) and nbviz.plot_rf_grid is plot_rf_grid
    grid = rf_grid(small)
    drawn = {to_rgba(r.get_edgecolor()): as_box(r) for r in rectangles(fig)}
    assert drawn == {to_rgba("red"): grid.boxes["top_left"], to_rgba("blue"): grid.boxes["center"],
                     to_rgba("green"): grid.boxes["bottom_right"]}
    dots = fig.axes[0].collections[0].get_offsets()
    assert len(dots) == 64  # one per cell of the 8×8 map
    fig.savefig(tmp_path / "grid.png")
    assert (tmp_path / "grid.png").stat().st_size > 1000


def test_plot_gradient_at_shows_the_map_and_both_boxes(small, tmp_path):
    with unchanged(small):
        fig = plot_gradient_at(small, (2, 5))
    result = gradient_rf(small, (2, 5))
    np.testing.assert_array_equal(fig.axes[0].images[0].get_array(), result.map)
    boxes = {r.get_label(): as_box(r) for r in rectangles(fig)}
    assert boxes["gradient support"] == result.box
    assert boxes["analytic RF"] == (2 * 4 + 1.5 - 8.5, 5 * 4 + 1.5 - 8.5, 2 * 4 + 1.5 + 9.5,
                                    5 * 4 + 1.5 + 9.5)
    fig.savefig(tmp_path / "gradient.png")


def test_plot_gradient_at_effective_mode_over_an_image(small):
    image = np.random.default_rng(1).uniform(0, 1, (32, 32, 3)).astype(np.float32)
    fig = plot_gradient_at(small, "max", image=image, mode="effective", target=1)
    assert len(fig.axes[0].images) == 2  # the image, then the map over it
    assert "effective" in fig.axes[0].get_title()
