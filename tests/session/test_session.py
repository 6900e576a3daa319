"""The widget-free session on the shipped demo model: every table row through the session,
one-pass groups served from the cache, prewarming, progressive refinements, newest wins.

No ipywidgets here: the session is what tests, benchmarks and every view build on.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import nbviz
from nbviz import demo
from nbviz.methods import table
from nbviz.session import Result, Session, clean_error

LAYER = "block2_conv"
FAST = {"samples": 4, "ig_steps": 8, "steps": 4, "window": 16, "stride": 8}


@pytest.fixture(scope="module")
def model():
    return demo.load_model()


@pytest.fixture(scope="module")
def image():
    return demo.image(0)


@pytest.fixture(scope="module")
def session(model):
    s = Session(model)
    yield s
    s.close()


def _request(s, key, image, iid, **kw):
    row = table.method(key)
    options = {c.name: FAST[c.name] for c in row.controls if c.name in FAST}
    return s.request(key, image, image_id=iid, layer=kw.pop("layer", LAYER), point=kw.pop("point", (40, 40)),
                     options=options, **kw)


def test_session_imports_no_widget_library():
    import ast
    from pathlib import Path

    import nbviz.session

    for path in Path(nbviz.session.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n.split(".")[0] in ("ipywidgets", "ipycanvas", "IPython") or n.startswith("nbviz.widget")
                           for n in names), f"{path.name} imports {names}"


@pytest.mark.parametrize("row", [m for m in table.METHODS if not m.on_demand], ids=lambda m: m.key)
def test_every_table_row_runs_through_the_session(row, session, model, image, assert_unchanged):
    """New rows are tested here automatically: the generic path serves any row without a runner."""
    iid = session.image_id(image)
    with assert_unchanged(model):
        r = session.compute(_request(session, row.key, image, iid))
    assert r.final and r.display == row.display and r.request.method == row.key
    assert row.label.lower() in r.note.lower()
    assert r.data is not None and np.isfinite(r.data).all() and np.abs(r.data).max() > 0
    assert r.values is not None and r.values.ndim == 2
    if row.display in ("rgb", "picture"):
        assert r.data.shape == (64, 64, 3)
    if row.runner is None:  # the generic call: the row's function, reduced by the table's rule
        kw = row.kwargs({c.name: FAST[c.name] for c in row.controls if c.name in FAST})
        kw.update({"target": None} if "target" in row.needs else {})
        kw.update({"layer": LAYER} if "layer" in row.needs else {})
        want = np.asarray(row.function_object()(model, image, **kw), np.float32)
        np.testing.assert_allclose(r.values, want if want.ndim == 2 else _reduce(want, row.reduce),
                                   rtol=1e-4, atol=1e-6 * float(np.abs(want).max()))
    assert session.cached(r.request) is r


def _reduce(a, how):
    return {"sum": a.sum(-1), "mean": a.mean(-1), "abs_max": np.abs(a).max(-1), None: a.sum(-1)}[how]


def test_one_pass_methods_are_served_together_from_the_cache(model, image):
    s = Session(model)
    iid = s.image_id(image)
    members = [m.key for m in table.METHODS if m.one_pass == "gradients"]
    assert {"saliency", "gradcam", "gradcam_pp", "activations"} <= set(members)
    first = s.compute(_request(s, "gradcam", image, iid))
    traces = s.probe.trace_count()
    assert s.counts["one_pass"] == 1
    for key in members:  # every other member: no new pass, no trace, no call of its function
        r = s.compute(_request(s, key, image, iid))
        assert r.final and r.display == table.method(key).display
    assert s.counts["one_pass"] == 1 and s.probe.trace_count() == traces
    # and each map equals its own function's result
    np.testing.assert_allclose(first.data, nbviz.gradcam(model, image, layer=LAYER), atol=1e-6)
    pp = s.compute(_request(s, "gradcam_pp", image, iid)).data
    np.testing.assert_allclose(pp, nbviz.gradcam_plus_plus(model, image, layer=LAYER), atol=1e-5)
    sal = s.compute(_request(s, "saliency", image, iid)).values
    want = nbviz.saliency(model, image).sum(-1)
    np.testing.assert_allclose(sal, want, atol=1e-5 * np.abs(want).max())
    act = s.compute(_request(s, "activations", image, iid, channel=5)).activation
    np.testing.assert_allclose(act, nbviz.activations(model, image, LAYER), atol=1e-5)
    s.close()


def test_after_prewarm_no_method_traces_on_its_first_switch(model, image):
    s = Session(model)
    iid = s.image_id(image)
    start = _request(s, "rf", image, iid)
    s.compute(start)
    queued = s.prewarm(start)
    assert {r.method for r in queued} == {m.key for m in table.METHODS if not m.on_demand} - {"rf"}
    assert s.wait(600, background=True)
    traces = s.probe.trace_count()
    other = demo.image(1)  # even a new image: compiled functions are keyed by shape, not content
    jid = s.image_id(other)
    for r in queued:
        req = s.request(r.method, other, image_id=jid, layer=r.layer, target=r.target, channel=r.channel,
                        point=r.point, options=dict(r.options))
        s.compute(req)
        assert s.probe.trace_count() == traces, f"{r.method} traced on its first switch"
    # the prewarmed results themselves are cache hits: a switch shows at once
    hits = s.counts["cached"]
    for r in queued:
        assert s.cached(r) is not None
    s.compute(queued[0])
    assert s.counts["cached"] == hits + 1
    s.close()


@pytest.mark.parametrize("key", [m.key for m in table.METHODS if m.progressive])
def test_progressive_refinements_arrive_in_order_and_the_last_equals_the_one_shot(key, session, model, image):
    iid = session.image_id(image)
    req = _request(session, key, image, iid)
    got = []
    done = threading.Event()
    session.submit(req, lambda r: (got.append(r), r.final and done.set()), channel="progressive")
    assert done.wait(300)
    partial, final = got[:-1], got[-1]
    assert len(partial) >= 1 and all(not r.final for r in partial) and final.final
    fractions = [r.fraction for r in partial]
    assert fractions == sorted(fractions) and 0 < fractions[0] < 1
    row = table.method(key)
    kw = row.kwargs(dict(req.options))
    one_shot = np.asarray(row.function_object()(model, image, **kw), np.float32)  # no progress=
    want = one_shot if one_shot.ndim == 2 else _reduce(one_shot, row.reduce)
    np.testing.assert_allclose(final.values, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())
    np.testing.assert_allclose(partial[-1].values, final.values, rtol=1e-5, atol=1e-7 * np.abs(want).max())
    assert partial[0].display == row.display


def test_stale_results_and_refinements_are_dropped(model, image):
    s = Session(model)
    iid = s.image_id(image)
    slow = _request(s, "integrated_gradients", image, iid).replace(options=(("ig_steps", 128),))
    seen = []
    s.submit(slow, seen.append, channel="view")
    deadline = time.monotonic() + 120
    while s.worker.started < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    newer = _request(s, "saliency", image, iid)
    s.submit(newer, seen.append, channel="view")  # the newest request of the channel wins
    assert s.wait(300)
    assert seen and seen[-1].request is newer and seen[-1].final
    assert all(r.request is not slow or not r.final for r in seen)  # the old final never arrives
    assert s.worker.stale + s.counts["dropped"] >= 1
    # another channel (a compare pane) is not cancelled by this one
    a, b = [], []
    s.submit(_request(s, "gradcam", image, iid), a.append, channel="pane-1")
    s.submit(_request(s, "gradcam_pp", image, iid), b.append, channel="pane-2")
    assert s.wait(300) and a[-1].final and b[-1].final
    s.close()


def test_requests_are_validated_and_errors_are_one_line(session, model, image):
    iid = session.image_id(image)
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        session.request("nope", image)
    with pytest.raises(ValueError, match=r"channel must be an int in \[0, 63\]"):
        session.request("activations", image, image_id=iid, layer=LAYER, channel=999)
    with pytest.raises(ValueError, match="outside the 64×64 image"):
        session.request("rf", image, image_id=iid, layer=LAYER, point=(64, 0))
    with pytest.raises(ValueError, match=r"samples must be in \[2, 64\]"):
        session.request("smoothgrad", image, options={"samples": 1000})
    # a request keeps only what its method reads: saliency has no layer, no point
    r = session.request("saliency", image, image_id=iid, layer=LAYER, point=(3, 3), channel=0)
    assert r.layer is None and r.point is None
    # a layer the score is not differentiable through: one line, not an autograph traceback
    with pytest.raises(ValueError) as info:
        nbviz.gradcam(model, image, layer="rescale")
    line = clean_error(info.value)
    assert "\n" not in line and "not differentiable" in line and "rescale" in line and "user code" not in line


def test_listeners_see_every_request(model, image):
    s = Session(model)
    iid = s.image_id(image)
    events = []
    unsubscribe = s.subscribe(lambda event, req, payload: events.append((event, req.method)))
    req = _request(s, "occlusion", image, iid)
    s.submit(req, lambda r: None)
    s.wait(300)
    s.submit(req, lambda r: None)  # now cached
    names = [e for e, _ in events]
    assert names[0] == "start" and "partial" in names and names[-2:] == ["result", "cached"]
    unsubscribe()
    s.submit(req, lambda r: None)
    assert len(events) == len(names)
    assert isinstance(s.cached(req), Result)
    s.close()


def test_feature_visualisation_first_frame_at_step_one_and_stop_within_a_step(session, image):
    iid = session.image_id(image)
    req = session.request("featvis", image, image_id=iid, layer=LAYER, channel=3,
                          options={"steps": 400, "jitter": 2, "rotate": 0.0, "scale": 0.0})
    got, done = [], threading.Event()

    def on_result(r):
        got.append(r)
        if len(got) == 1:
            session.stop("featvis")  # the Stop button, at the first frame
        if r.final:
            done.set()

    session.submit(req, on_result, channel="featvis")
    assert done.wait(300)
    first, final = got[0], got[-1]
    assert first.step == 1 and first.steps == 400 and not first.final and first.data.shape == (64, 64, 3)
    assert final.final and final.stopped and 1 <= final.step <= 2  # the step running at Stop, no more
    assert f"stopped at step {final.step} of 400" in final.note
    assert session.cached(req) is None  # a stopped picture is not the requested result
