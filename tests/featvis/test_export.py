"""PNG and GIF export: exact pixels back, tiling, frames."""

import numpy as np
import pytest
from PIL import Image

from nbviz import featvis as fv
from nbviz.featvis.export import tile, to_uint8


def test_to_uint8_rounds_and_clips():
    a = np.array([-0.5, 0.0, 0.5, 1.0, 2.0, np.nan], np.float32)
    np.testing.assert_array_equal(to_uint8(a), [0, 0, 128, 255, 255, 0])
    with pytest.raises(TypeError, match="dtype"):
        to_uint8(np.array([1, 2], np.int64))


def test_tile_lays_out_a_grid_with_gaps():
    batch = np.stack([np.full((2, 3, 3), k / 10, np.float32) for k in range(5)])
    grid = tile(batch, columns=2, gap=1)
    assert grid.shape == (3 * 2 + 2, 2 * 3 + 1, 3)
    np.testing.assert_allclose(grid[0:2, 0:3], 0.0)
    np.testing.assert_allclose(grid[0:2, 4:7], 0.1)
    np.testing.assert_allclose(grid[6:8, 0:3], 0.4)
    np.testing.assert_allclose(grid[2, :], 1.0)  # gap row is white
    np.testing.assert_allclose(grid[6:8, 4:7], 1.0)  # empty cell
    one = batch[0]
    assert tile(one) is one
    with pytest.raises(ValueError, match="shape"):
        tile(np.zeros((2, 2)))


def test_save_png_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(2, 5, 4, 3)).astype(np.float32)
    path = fv.save_png(images, tmp_path / "two.png")
    back = np.asarray(Image.open(path))
    np.testing.assert_array_equal(back, to_uint8(tile(images)))
    path = fv.save_png(images[0], tmp_path / "one.png")
    np.testing.assert_array_equal(np.asarray(Image.open(path)), to_uint8(images[0]))


def test_save_gif_writes_every_frame(tmp_path):
    frames = [np.full((1, 6, 6, 3), k / 4, np.float32) for k in range(4)]
    path = fv.save_gif(frames, tmp_path / "run.gif", duration=50)
    with Image.open(path) as gif:
        assert gif.n_frames == 4 and gif.size == (6, 6)
        gif.seek(3)
        assert np.asarray(gif.convert("RGB"))[0, 0, 0] == 191
    with pytest.raises(ValueError, match="at least one frame"):
        fv.save_gif([], tmp_path / "none.gif")


def test_frames_recorded_from_a_render_callback(small, tmp_path):
    frames = []
    images = fv.render(small, fv.channel("conv3", [0, 1]), steps=6, size=16, every=2,
                       param="pixel", jitter=0, scale=None, rotate=0, pad=0,
                       callback=lambda step, im, value: frames.append(im))
    assert len(frames) == 3
    path = fv.save_gif(frames, tmp_path / "live.gif")
    with Image.open(path) as gif:
        assert gif.n_frames == 3 and gif.size == (16 * 2 + 2, 16)
    fv.save_png(images, tmp_path / "final.png")
    assert Image.open(tmp_path / "final.png").size == (34, 16)
