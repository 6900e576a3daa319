"""Smoke run of the benchmark driver: tiny model, 32 px, --quick, no peers.

The same code path as `make bench` (worker processes, interleaved groups, report); it checks the
plumbing — every group measured or reported with its error, ratios computed from paired rounds,
files written — never speed: timings on a shared machine assert nothing.
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
        results = run.main(["--models", "tiny", "--size", "32", "--quick", "--samples", "2",
                            "--rise-masks", "64", "--no-peers", "--out", str(out)])
        import catalog
        expected = [g.key for g in catalog.groups("tiny", 32, rise_masks=64, quick=True)]
        full = [g.key for g in catalog.groups("tiny", 32, rise_masks=64)]
        skipped = set(catalog.QUICK_SKIP)
    finally:
        sys.path.remove(str(BENCH))
    return results, out, expected, full, skipped


def test_every_method_of_the_table_is_a_group(smoke):
    from nbviz.methods import table
    results, _, expected, full, skipped = smoke
    groups = results["models"]["tiny"]["groups"]
    assert list(groups) == expected  # --quick: the groups that take seconds
    plain = {m.key for m in table.METHODS if m.runner is None}
    assert plain <= set(full)  # a full run has every plain method of the table
    assert plain - skipped <= set(groups)


def test_every_group_measured_with_paired_ratios(smoke):
    results, _, _, _, _ = smoke
    for key, g in results["models"]["tiny"]["groups"].items():
        nb = g["rows"][f"{key}/nbviz"]
        assert nb["status"] == "ok", (key, nb.get("error"))
        assert len(nb["wall"]) == 2 and nb["cold"]["wall"] > 0
        if g["floor"] is not None:
            floor = g["rows"][f"{key}/floor"]
            assert floor["status"] == "ok", (key, floor.get("error"))
            ratios = [a / b for a, b in zip(nb["wall"], floor["wall"])]
            assert g["ratios"]["floor_wall"]["median"] == pytest.approx(
                sorted(ratios)[0] / 2 + sorted(ratios)[1] / 2) if g["floor_times"] == 1 else True
        if g["rows"][f"{key}/nbviz"].get("traces") is not None or key in plain_methods(results):
            assert g["traces_warm"] == 0, key  # no retracing on new images / cells / targets


def plain_methods(results) -> set:
    from nbviz.methods import table
    return {m.key for m in table.METHODS if m.runner is None}


def test_files(smoke):
    results, out, _, _, _ = smoke
    md = next(out.glob("bench-*.md")).read_text()
    data = json.loads(next(out.glob("bench-*.json")).read_text())
    assert "## tiny, 32×32" in md and "interquartile" in md and "cores" in md
    assert data["meta"]["machine"]["cores"] >= 1
    assert set(data["meta"]["workers"]) == {"nbviz"}
