"""The benchmark driver's interleaving and statistics, on fake timings (no TensorFlow)."""

import sys
import textwrap
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))
import interleave as il  # noqa: E402

sys.path.remove(str(BENCH))


class Clock:
    """A machine whose load changes every round: every call made in round r is slowed by
    LOAD[r % len(LOAD)]. Rounds are counted in calls: one round = one call of every row."""

    LOAD = [1.0, 3.0, 1.5, 6.0, 1.0, 2.5, 4.0, 1.2, 8.0]

    def __init__(self, rows: int):
        self.rows, self.calls, self.order = rows, 0, []

    def factory(self, spec):
        def call(i):
            load = self.LOAD[(self.calls // self.rows) % len(self.LOAD)]
            self.calls += 1
            self.order.append(spec["name"])
            return {"wall": spec["cost"] * load, "cpu": spec["cost"], "traces": 0}
        return call


def test_spread_quartiles_and_ratio():
    s = il.spread([5, 1, 4, 2, 3])
    assert (s.median, s.q1, s.q3, s.n) == (3, 2, 4, 5)
    assert il.spread([7]) == il.Spread(7, 7, 7, 1)
    r = il.ratio([2, 4, 6], [1, 2, 3])
    assert (r.median, r.q1, r.q3) == (2, 2, 2)
    with pytest.raises(ValueError):
        il.spread([])


def test_verdict_uses_quartiles():
    assert il.verdict(il.Spread(1.0, 0.9, 1.04, 7), 1.05) == "met"
    assert il.verdict(il.Spread(1.0, 0.9, 1.10, 7), 1.05) == "within noise"
    assert il.verdict(il.Spread(1.2, 1.1, 1.3, 7), 1.05) == "missed"


def test_interleaved_ratio_is_exact_under_changing_load():
    clock = Clock(rows=3)
    worker = il.LocalWorker(clock.factory)
    rows = [il.Row("floor", "w", {"name": "floor", "cost": 0.010}),
            il.Row("nbviz", "w", {"name": "nbviz", "cost": 0.011}),
            il.Row("peer", "w", {"name": "peer", "cost": 0.050})]
    records = il.interleave(rows, {"w": worker}, samples=7)
    # each row alone spreads widely with the load ...
    wall = il.Spread(**records["nbviz"]["wall_spread"])
    assert wall.q3 / wall.q1 > 1.5
    # ... but paired round by round the ratio is exact
    r = il.paired(records, "nbviz", "floor")
    assert r.median == pytest.approx(1.1) and r.q1 == pytest.approx(1.1) and r.q3 == pytest.approx(1.1)
    assert il.paired(records, "nbviz", "peer").median == pytest.approx(0.22)
    assert all(len(rec["wall"]) == 7 and not rec["short"] for rec in records.values())
    assert records["nbviz"]["traces"] == [0] * 7


def test_order_rotates_every_round():
    clock = Clock(rows=3)
    rows = [il.Row(n, "w", {"name": n, "cost": 1.0}) for n in "abc"]
    il.interleave(rows, {"w": il.LocalWorker(clock.factory)}, samples=4)
    rounds = [clock.order[3 + 3 * k: 6 + 3 * k] for k in range(4)]  # after the 3 cold calls
    assert rounds == [list("abc"), list("bca"), list("cab"), list("abc")]


def test_budget_stops_after_min_samples_and_marks_short():
    clock = Clock(rows=2)
    rows = [il.Row(n, "w", {"name": n, "cost": 1.0}) for n in "ab"]
    records = il.interleave(rows, {"w": il.LocalWorker(clock.factory)}, samples=7,
                            min_samples=3, budget_s=0.5)
    assert [len(r["wall"]) for r in records.values()] == [3, 3]
    assert all(r["short"] for r in records.values())


def test_a_failing_row_is_reported_and_the_others_go_on():
    def factory(spec):
        if spec["name"] == "bad":
            raise RuntimeError("no such method")
        return lambda i: {"wall": 1.0}
    rows = [il.Row("good", "w", {"name": "good"}), il.Row("bad", "w", {"name": "bad"})]
    records = il.interleave(rows, {"w": il.LocalWorker(factory)}, samples=3)
    assert records["bad"]["status"] == "error" and "no such method" in records["bad"]["error"]
    assert len(records["good"]["wall"]) == 3


def test_process_worker_protocol(tmp_path):
    script = tmp_path / "fake_worker.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(BENCH)!r})
        from interleave import serve

        def factory(spec):
            if spec.get("fail"):
                raise ValueError("cannot prepare " + spec["name"])
            def call(i):
                print("a library talking on stdout")  # must not break the protocol
                return {{"wall": 0.5 * (i + 1), "cpu": 0.25}}
            return call

        serve(factory, lambda: {{"env": "fake"}})
    """))
    worker = il.ProcessWorker([sys.executable, str(script)], "fake")
    try:
        assert worker.info() == {"env": "fake"}
        records = il.interleave([il.Row("x", "fake", {"name": "x"}),
                                 il.Row("y", "fake", {"name": "y", "fail": True})],
                                {"fake": worker}, samples=3)
        assert records["x"]["cold"]["wall"] == 0.5
        assert records["x"]["wall"] == [1.0, 1.5, 2.0]
        assert records["y"]["status"] == "error" and "cannot prepare y" in records["y"]["error"]
    finally:
        worker.close()


def test_a_variant_and_a_steady_state_clock_are_paired_with_the_floor():
    """A group judged on an extra (``after_startup``) with a variant row: every ratio is taken
    per round from the same rounds, the verdict uses the extra, and the report shows both."""
    sys.path.insert(0, str(BENCH))
    try:
        import catalog
        import report
    finally:
        sys.path.remove(str(BENCH))
    group = catalog.Group("ray", "Ray, 1 actor", {"kind": "dataset"}, "dataset_local@32",
                          max_ratio=1.15, clock="after_startup", variants=(("actors2", {"actors": 2}),))
    rounds = [0, 1, 2, 3]
    load = [1.0, 2.0, 1.5, 3.0]
    row = lambda wall, steady: {"status": "ok", "rounds": rounds,  # noqa: E731
                                "wall": [wall * l for l in load], "cpu": [wall] * 4,
                                "after_startup": [steady * l for l in load]}
    records = {"ray/floor": row(4.0, 3.5), "ray/nbviz": row(20.0, 3.85), "ray/actors2": row(16.0, 2.8)}
    out = report.summarise(group, records)
    assert out["ratios"]["floor_wall"]["median"] == pytest.approx(5.0)
    assert out["ratios"]["floor_after_startup"]["median"] == pytest.approx(1.1)
    assert out["ratios"]["actors2/floor_after_startup"]["median"] == pytest.approx(0.8)
    assert out["ratios"]["actors2_wall"]["median"] == pytest.approx(1.25)
    assert out["ratios"]["actors2_after_startup"]["median"] == pytest.approx(3.85 / 2.8)
    assert out["verdict"] == "met"  # 1.1 <= 1.15 on the steady state, though 5x on the wall
    md = report.markdown({"meta": {"started": "now", "machine": {"cpu": "x", "cores": 2, "load": [0, 0, 0]},
                                   "samples": 4, "budget_s": 30, "command": "test"},
                          "models": {"m": {"size": 8, "groups": {"ray": out}}}})
    line = next(l for l in md.splitlines() if l.startswith("| Ray, 1 actor"))
    assert "after_startup ×floor 1.1×" in line and "actors2" in line and "≤ 1.15× floor (after_startup)" in line
    assert "nbviz / actors2 (after_startup) 1.38×" in line
