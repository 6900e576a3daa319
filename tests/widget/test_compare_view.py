"""The compare view driven without a browser, on the demo model and one of its scenes (exact mask).

Every number a pane shows is checked against the plain functions: the maps against the method
functions, the scores against nbviz.metrics, the randomised pane's correlation against
nbviz.sanity. Curves use few steps to keep the tests short.
"""

import threading

import numpy as np
import pytest

from nbviz import demo, metrics, render, sanity
from nbviz.methods import table
from nbviz.session import Session
from nbviz.widget import compare_panes as cp
from nbviz.widget import frames
from nbviz.widget.compare_view import CompareView
from tests.conftest import unchanged

METHODS = ["gradcam", "saliency", "integrated_gradients", "occlusion"]
STEPS = 5
SCENE = 3


@pytest.fixture(scope="module")
def model():
    return demo.load_model()


@pytest.fixture(scope="module")
def image():
    return demo.image(SCENE)


@pytest.fixture(scope="module")
def session(model):
    s = Session(model)
    yield s
    s.close()


@pytest.fixture(scope="module")
def view(model, image, session):
    with unchanged(model):
        v = CompareView(session=session, image=image, methods=METHODS, steps=STEPS)
        v.wait()
    yield v
    v.close()


@pytest.fixture(scope="module")
def direct(model, image, view):
    """Each method called directly, as a user would call it."""
    out = {}
    for key in METHODS:
        row = table.method(key)
        kwargs = row.kwargs({})
        if "layer" in row.needs:
            kwargs["layer"] = view.layer
        out[key] = np.asarray(row.function_object()(model, image, **kwargs))
    return out


def _differs(a, b) -> float:
    """Percent of pixels that differ clearly (by more than 30 in a channel)."""
    return 100 * float((np.abs(a[..., :3].astype(int) - b[..., :3].astype(int)).max(-1) > 30).mean())


def test_four_panes_show_four_different_maps_equal_to_the_functions(view, image, direct):
    panes = view.panes
    assert [p.spec.method for p in panes] == METHODS
    plain = frames.image_layer(image, view.geometry)
    for p in panes:
        assert p.result is not None and p.result.final and p.error is None
        np.testing.assert_allclose(p.raw, direct[p.spec.method], rtol=1e-4, atol=1e-6 * np.abs(p.raw).max())
        assert p.frame.shape == (view.geometry.H, view.geometry.W, 4)
        assert _differs(p.frame, plain) > 2  # an overlay is painted
    for i in range(4):
        for j in range(i + 1, 4):
            assert _differs(panes[i].frame, panes[j].frame) > 2, (METHODS[i], METHODS[j])
    # the frame is the pure function of what the pane shows (testable without widgets)
    for p in panes:
        np.testing.assert_array_equal(p.frame, cp.pane_frame(
            image, p.result.display, p.result.data, view.geometry, scale=p.scale, alpha=view.alpha,
            region=view.region))


def test_scores_under_each_pane_equal_the_metrics(view, model, image, direct):
    _, mask = cp.demo_truth(image)
    assert mask is not None and np.array_equal(view.region, demo.load_images().masks[SCENE])
    for i, p in enumerate(view.panes):
        m = direct[p.spec.method]
        d = metrics.deletion(model, image, m, steps=STEPS).auc
        ins = metrics.insertion(model, image, m, steps=STEPS).auc
        assert p.scores["deletion"] == pytest.approx(d, rel=1e-5, abs=1e-6)
        assert p.scores["insertion"] == pytest.approx(ins, rel=1e-5, abs=1e-6)
        assert p.scores["pointing_game"] == metrics.pointing_game(m, mask)
        line = view.score_line(i)
        assert f"deletion {p.scores['deletion']:.3f}" in line and f"insertion {p.scores['insertion']:.3f}" in line
        assert ("pointing hit" if p.scores["pointing_game"] else "pointing miss") in line


def test_scores_come_after_the_map_and_show_dots_until_then(session, image, view):
    """Hold the shared worker: the maps come from the cache at once, the scores (new settings)
    wait behind the held job and read "…" until it is released."""
    release = threading.Event()
    session.worker.submit(lambda job: release.wait(30), lambda r: None, lambda e, t: None, channel="hold")
    v = CompareView(session=session, image=image, image_id=view.image_id, methods=METHODS[:2], steps=STEPS + 1)
    try:
        assert all(p.result is not None and p.result.final for p in v.panes)  # served from the cache
        assert all("deletion … ↓" in v.score_line(i) and "insertion … ↑" in v.score_line(i) for i in range(2))
        release.set()
        v.wait()
        for i, p in enumerate(v.panes):
            assert "…" not in v.score_line(i)
            assert p.scores["deletion"] == pytest.approx(
                metrics.deletion(session.model, image, p.raw, steps=STEPS + 1).auc, rel=1e-5, abs=1e-6)
    finally:
        release.set()
        v.close()


def test_a_click_on_any_pane_moves_the_crosshair_and_box_in_every_pane(view):
    g = view.geometry
    y, x = 20, 37
    panes = view.panes
    # what ipycanvas calls on a mouse-down on the third pane's canvas (canvas x, y)
    cy, cx = g.to_canvas_point((y, x))
    panes[2].canvas._mouse_down_callbacks(cx, cy)
    assert view.point == (y, x)
    rf = view.session.context.cached_rf(view.layer)
    assert rf is not None
    box = rf.box(rf.cell((y, x)))
    for p in panes:
        f = p.frame
        assert tuple(f[cy, cx + 5, :3]) == frames.CROSS_COLOR  # the crosshair's right arm
        assert tuple(f[cy - 5, cx, :3]) == frames.CROSS_COLOR
        expected = cp.pane_frame(view.image, p.result.display, p.result.data, g, scale=p.scale,
                                 alpha=view.alpha, point=(y, x), box=box, region=view.region)
        np.testing.assert_array_equal(f, expected)
    assert "point (y=20, x=37)" in view._readout.value
    view.click(40, 10)
    assert all(tuple(p.frame[g.to_canvas_point((40, 10))[0], g.to_canvas_point((40, 10))[1] + 5, :3])
               == frames.CROSS_COLOR for p in panes)


def test_sanity_toggle_adds_randomised_panes_with_the_sanity_correlation(view, model, image):
    with unchanged(model):
        view.set(sanity=True).wait()
    panes = view.panes
    assert len(panes) == 8 and [p.spec.randomised for p in panes] == [False] * 4 + [True] * 4
    assert view.random_layer == "predictions"  # the top weighted layer
    for k in (0, 1):  # Grad-CAM and saliency: compared with nbviz.sanity on that layer
        p = panes[4 + k]
        table_ = sanity.model_randomisation(METHODS[k], model, image, layers=[view.random_layer],
                                            **({"layer": view.layer} if k == 0 else {}))
        assert p.scores["spearman_abs"] == pytest.approx(table_[0]["spearman_abs"], abs=1e-6)
        np.testing.assert_allclose(p.raw, table_.maps[0], rtol=1e-4, atol=1e-6 * max(1e-12, np.abs(p.raw).max()))
        assert f"ρ(|map|) vs trained {p.scores['spearman_abs']:.2f}" in view.score_line(4 + k)
        assert _differs(p.frame, panes[k].frame) > 0.5
    view.set(sanity=False)
    assert len(view.panes) == 4


def test_a_randomised_pane_can_be_asked_for(session, image, view, direct):
    v = CompareView(session=session, image=image, image_id=view.image_id,
                    methods=["saliency", {"method": "saliency", "randomised": True}], steps=STEPS)
    try:
        v.wait()
        trained, rnd = v.panes
        assert rnd.spec.randomised and rnd.spec.title(None) == "saliency (randomised model)"
        assert rnd.scores["spearman_abs"] == pytest.approx(
            sanity.similarity(direct["saliency"], rnd.raw)["spearman_abs"], abs=1e-6)
        assert "deletion" not in rnd.scores and "deletion" in trained.scores
        v.set(sanity=True)  # the randomised saliency pane is there already: no second one
        assert len(v.panes) == 2
    finally:
        v.close()


def test_one_scale_is_the_shared_maximum(view):
    view.set(sanity=True)
    try:
        view.set(scale="max", share="all")
        panes = view.panes
        top = max(float(np.abs(p.result.data).max()) for p in panes)
        assert all(p.scale == pytest.approx(top) for p in panes)
        view.set(share="method")  # a method and its randomised-model map share a scale
        for k in range(4):
            a, b = view.panes[k], view.panes[4 + k]
            shared = max(float(np.abs(a.result.data).max()), float(np.abs(b.result.data).max()))
            assert a.scale == pytest.approx(shared) and b.scale == pytest.approx(shared)
        view.set(scale="p99.5")
        a, b = view.panes[1], view.panes[5]
        clip = render.one_scale([a.result.data, b.result.data], percentile=99.5)
        assert a.scale == pytest.approx(clip) and b.scale == pytest.approx(clip)
        assert clip < max(float(np.abs(a.result.data).max()), float(np.abs(b.result.data).max()))
        view.set(scale="own")
        for p in view.panes:
            assert p.scale == pytest.approx(float(np.abs(p.result.data).max()))
    finally:
        view.set(scale="own", share="method", sanity=False)


def test_colours_follow_the_display_kind():
    signed = cp.pane_rgba("signed", np.array([[-1.0, 0.0, 1.0]]), 1.0, alpha=1.0)
    assert tuple(signed[0, 1, :3]) == (255, 255, 255)  # zero is white
    assert signed[0, 0, 2] > signed[0, 0, 0] and signed[0, 2, 0] > signed[0, 2, 2]  # blue <0, red >0
    unsigned = cp.pane_rgba("unsigned", np.array([[0.0, 1.0]]), 1.0, alpha=1.0)
    np.testing.assert_array_equal(unsigned, render.heatmap(np.array([[0.0, 1.0]]), cmap="inferno", alpha=1.0))
    rgb = cp.pane_rgba("rgb", np.zeros((2, 2, 3)), 1.0)
    assert (rgb[..., :3] == 128).all()  # zero gradient is mid-grey


def test_bad_panes_and_settings_are_clear_errors(session, image, view):
    with pytest.raises(ValueError, match="unknown method 'nope'.*gradcam"):
        CompareView(session=session, image=image, methods=["gradcam", "nope"])
    with pytest.raises(ValueError, match="feature visualisation.*no attribution map"):
        CompareView(session=session, image=image, methods=["gradcam", "featvis"])
    with pytest.raises(ValueError, match="2 to 8 panes, got 1"):
        CompareView(session=session, image=image, methods=["gradcam"])
    with pytest.raises(ValueError, match="2 to 8 panes, got 9"):
        CompareView(session=session, image=image, methods=["saliency"] * 9)
    with pytest.raises(ValueError, match="reads no layer"):
        CompareView(session=session, image=image, methods=[("saliency", "block2_conv"), "gradcam"])
    with pytest.raises(ValueError, match="box"):
        CompareView(session=session, image=image, methods=METHODS[:2], box=(10, 10, 5, 20))
    with pytest.raises(ValueError, match="scale must be one of"):
        view.set(scale="huge")
    with pytest.raises(ValueError, match="unknown CompareView setting"):
        view.set(colour="red")
    assert view.scale == "own"


def test_explorer_opens_a_compare_view_on_its_session(model, image):
    from nbviz.widget import Explorer

    e = Explorer(model, image, compare=[("gradcam", "block2_conv"), "saliency"])
    try:
        c = e.compare_view
        assert c in e.children and c.session is e.session and c.image_id == e.image_id
        assert c.panes[0].layer == "block2_conv" and c.panes[0].spec.title(c.panes[0].layer) == "Grad-CAM @ block2_conv"
        e.wait()
        assert all(p.result is not None and "deletion" in p.scores for p in c.panes)
        other = demo.image(5)
        e.set_image(other)
        assert np.array_equal(c.image, other) and c.image_id == e.image_id
        assert np.array_equal(c.region, demo.load_images().masks[5])
        e.wait()
        np.testing.assert_allclose(c.panes[1].raw, np.asarray(
            table.method("saliency").function_object()(model, other)), rtol=1e-4, atol=1e-7)
    finally:
        e.close()
