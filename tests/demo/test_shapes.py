"""The scene generator: deterministic, exact masks and boxes, true shape geometry."""

import numpy as np
import pytest

from nbviz.demo.shapes import LABELS, Samples, _shape_mask, scene, scenes


def test_same_seed_same_scenes_other_seed_other_scenes():
    a, b, c = scenes(6, seed=5), scenes(6, seed=5), scenes(6, seed=6)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.images, c.images)


def test_types_shapes_and_balanced_labels():
    s = scenes(25, seed=2)
    assert isinstance(s, Samples)
    assert s.images.shape == (25, 64, 64, 3) and s.images.dtype == np.uint8
    assert s.labels.shape == (25,) and s.labels.dtype == np.int64
    assert s.boxes.shape == (25, 4) and s.boxes.dtype == np.int64
    assert s.masks.shape == (25, 64, 64) and s.masks.dtype == bool
    np.testing.assert_array_equal(np.bincount(s.labels, minlength=len(LABELS)), [5] * len(LABELS))
    assert scenes(3, seed=0, size=96).images.shape == (3, 96, 96, 3)


def test_boxes_are_the_tight_boxes_of_the_masks_and_the_object_is_painted_on_its_mask():
    s = scenes(60, seed=1)
    for img, box, mask in zip(s.images, s.boxes, s.masks):
        top, left, bottom, right = (int(v) for v in box)
        assert 0 <= top < bottom <= 64 and 0 <= left < right <= 64
        inside = np.zeros_like(mask)
        inside[top:bottom, left:right] = True
        assert not (mask & ~inside).any()  # the box contains the mask
        # tight: every border row and column of the box touches the mask
        assert mask[top].any() and mask[bottom - 1].any() and mask[:, left].any() and mask[:, right - 1].any()
        # 16..32 px across (a cross or triangle may be a little narrower along one axis)
        assert 12 <= max(bottom - top, right - left) <= 33
        # solid colour exactly on the mask: clutter and noise never cover the object
        colours = np.unique(img[mask].reshape(-1, 3), axis=0)
        assert len(colours) == 1


@pytest.mark.parametrize(
    "label, area",
    [
        ("circle", np.pi * 0.85**2),
        ("ring", np.pi * (1 - 0.55**2)),
        ("square", 2.0),
        ("triangle", 3 * np.sqrt(3) / 4),
        ("cross", 2 * (4 * 0.3 * np.sqrt(1 - 0.09)) - (2 * 0.3) ** 2),
    ],
)
def test_shape_areas_match_geometry(label, area):
    """Area of each shape of circumradius r (as a fraction of r^2), at several rotations."""
    r = 200.0
    v, u = np.mgrid[-220:221, -220:221].astype(float)
    for angle in (0.0, 0.4, 1.3):
        mask = _shape_mask(LABELS.index(label), v, u, r, angle)
        assert mask.sum() / r**2 == pytest.approx(area, rel=0.01)
        assert (u[mask] ** 2 + v[mask] ** 2).max() <= (r + 1) ** 2  # inside the circumcircle


def test_scene_with_a_given_label():
    img, label, box, mask = scene(np.random.default_rng(0), 64, label=LABELS.index("ring"))
    assert label == LABELS.index("ring")
    top, left, bottom, right = box
    # a ring has a hole: its centre pixel is not on the mask
    assert not mask[(top + bottom - 1) // 2, (left + right - 1) // 2]


@pytest.mark.parametrize(
    "kwargs, error, text",
    [
        ({"rng": 0}, TypeError, "numpy.random.Generator"),
        ({"size": 16}, ValueError, "size must be an int >= 32"),
        ({"label": 5}, ValueError, "label must be an int in 0..4"),
        ({"label": "ring"}, ValueError, "label must be an int"),
    ],
)
def test_scene_bad_input(kwargs, error, text):
    args = {"rng": np.random.default_rng(0), "size": 64, "label": None, **kwargs}
    with pytest.raises(error, match=text):
        scene(**args)


def test_scenes_bad_count():
    with pytest.raises(ValueError, match="n must be a positive int, got 0"):
        scenes(0, seed=0)


def test_augment_gives_label_preserving_variants_of_each_scene():
    from nbviz.demo.train import augment

    s = scenes(12, seed=4)
    out = augment(s.images, np.random.default_rng(0))
    assert out.shape == s.images.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(augment(s.images, np.random.default_rng(0)), out)  # seeded

    def variants(img):
        for k in range(4):
            for flip in (False, True):
                v = np.rot90(img, k)
                v = v[:, ::-1] if flip else v
                for order in ([0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]):
                    yield v[..., order]
                    yield 255 - v[..., order]

    for img, new in zip(s.images, out):
        assert any(np.array_equal(new, v) for v in variants(img))
    assert not np.array_equal(out, s.images)
