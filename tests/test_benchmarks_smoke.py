"""Smoke run of the benchmark: tiny model and sizes, the same code path as `make bench`, no peers.

Checks the plumbing (every row measured or reported, ratios computed, files written), never
speed: timings on a shared machine assert nothing.
"""

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    sys.path.insert(0, str(BENCH))
    try:
        import run
        out = tmp_path_factory.mktemp("bench")
        results = run.main(["--models", "tiny", "--size", "32", "--repeats", "1",
                            "--batch-repeats", "1", "--featvis-steps", "2",
                            "--featvis-repeats", "1", "--no-peers", "--out", str(out)])
    finally:
        sys.path.remove(str(BENCH))
    return results, out


def test_every_row_is_measured_or_reported(smoke):
    results, _ = smoke
    model = results["models"]["tiny"]
    import catalog
    assert set(model["nbviz"]) == set(catalog.METHODS)
    for method, record in model["nbviz"].items():
        assert record["status"] in ("ok", "not available", "error"), method
        if record["status"] == "ok":
            assert record["warm_calls"] >= 1 and record["warm_s"] > 0 and record["cold_s"] > 0
            if method != "frame_512":  # every row but the pure-numpy frame counts traces
                assert isinstance(record["traces_warm"], int) and record["traces_warm"] >= 0
        else:
            assert record["error"], method
    for key, record in model["floors"].items():
        assert record["status"] == "ok", (key, record)
    # 32 px image, 4 px windows: 8 × 8 occluded copies
    assert model["floors"]["forward@64"]["batch"] == 64
    assert results["meta"]["load"]["max"] >= 0 and results["meta"]["machine"]["cores"] >= 1


def test_files_and_ratios(smoke):
    results, out = smoke
    md = next(out.glob("bench-*.md")).read_text()
    data = json.loads(next(out.glob("bench-*.json")).read_text())
    assert next(out.glob("bench-*.png")).stat().st_size > 1000
    assert "## tiny, 32×32" in md and "Load average" in md
    ratios = {r["method"]: r for r in data["rows"]}
    for method, row in ratios.items():
        if row["status"] == "ok" and row.get("floor_s"):
            assert row["ratio"] == pytest.approx(row["warm_s"] / row["floor_s"])
    # --no-peers: the peers' process was never started
    assert not (out / "peers-spec.json").exists()
    assert "peers" not in results["models"]["tiny"]
