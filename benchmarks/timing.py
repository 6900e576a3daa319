"""Timing one call: cold (first call) and warm (median of several calls, each on new input).

Wall time and this process's CPU time (all threads, user + system) are recorded side by side:
the benchmark machines are shared, and CPU time moves less than wall time when other processes
compete for the cores. The 1-minute load average is read before and after each measurement.

Only the standard library: the peers' virtualenv imports this module too.
"""

from __future__ import annotations

import os
import statistics
import time
import traceback
from typing import Any, Callable, Sequence



# defaults for every measurement of the run (set by run.py and peers.py from the command line)
SETTINGS = {"budget_s": None, "min_calls": 2}


def configure(*, budget_s: float | None = None, min_calls: int = 2) -> None:
    """Set the warm-call time budget of every later :func:`measure` (None: no budget)."""
    SETTINGS.update(budget_s=budget_s, min_calls=min_calls)


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


def materialise(value: Any) -> Any:
    """Force a result to exist on the host (numpy conversion of tensors, recursively)."""
    if isinstance(value, (list, tuple)):
        return [materialise(v) for v in value]
    if isinstance(value, dict):
        return {k: materialise(v) for k, v in value.items()}
    if hasattr(value, "numpy"):
        return value.numpy()
    return value


def _timed(call: Callable, arg: Any) -> tuple[float, float, Any]:
    wall, cpu = time.perf_counter(), time.process_time()
    out = materialise(call(arg))
    return time.perf_counter() - wall, time.process_time() - cpu, out


def measure(call: Callable[[Any], Any], inputs: Sequence[Any], *,
            counter: Callable[[], int] | None = None,
            paired: tuple[Callable[[Any], Any], Sequence[Any]] | None = None) -> dict:
    """Time ``call(inputs[0])`` (cold) then ``call(x)`` for each later input (warm).

    ``counter`` returns a running trace count: the record then says how many traces the cold
    call made and how many new ones the warm calls made (0 means no retracing).
    The budget set by :func:`configure` bounds the warm calls' total wall time: once it is
    spent (and at least ``min_calls`` warm calls were made) the remaining inputs are skipped;
    ``warm_calls`` says how many were made.

    ``paired = (floor_call, floor_inputs)`` runs the floor right before each warm call (on
    ``floor_inputs[i]``, after one untimed warm-up call), so floor and method see the same load:
    its medians are ``paired_floor_s`` / ``paired_floor_cpu_s``.
    Returns a dict with ``cold_s``, ``cold_cpu_s``, ``warm_s`` / ``warm_cpu_s`` (medians),
    the raw ``warm_samples_s`` / ``warm_cpu_samples_s``, ``load_before`` / ``load_after`` and
    ``status`` ("ok"). Errors are not caught here (see :func:`guarded`).
    """
    if len(inputs) < 2:
        raise ValueError(f"need one cold and at least one warm input, got {len(inputs)}")
    record: dict = {"load_before": load_average()}
    traces0 = counter() if counter else None
    wall, cpu, _ = _timed(call, inputs[0])
    record.update(cold_s=wall, cold_cpu_s=cpu)
    traces1 = counter() if counter else None
    walls, cpus, floor_walls, floor_cpus = [], [], [], []
    if paired:
        materialise(paired[0](paired[1][0]))
    budget_s, min_calls = SETTINGS["budget_s"], SETTINGS["min_calls"]
    for i, arg in enumerate(inputs[1:], start=1):
        if budget_s is not None and len(walls) >= min_calls and sum(walls) > budget_s:
            break
        if paired:
            wall, cpu, _ = _timed(paired[0], paired[1][i % len(paired[1])])
            floor_walls.append(wall)
            floor_cpus.append(cpu)
        wall, cpu, _ = _timed(call, arg)
        walls.append(wall)
        cpus.append(cpu)
    record.update(
        warm_s=statistics.median(walls),
        warm_cpu_s=statistics.median(cpus),
        warm_samples_s=walls,
        warm_cpu_samples_s=cpus,
        warm_calls=len(walls),
        load_after=load_average(),
        status="ok",
    )
    if paired:
        record.update(paired_floor_s=statistics.median(floor_walls),
                      paired_floor_cpu_s=statistics.median(floor_cpus))
    if counter:
        record.update(traces_cold=traces1 - traces0, traces_warm=counter() - traces1)
    return record


def guarded(fn: Callable[[], dict]) -> dict:
    """Run a measurement; an exception becomes ``status="error"`` with its message, not a crash."""
    try:
        return fn()
    except Exception as exc:  # a row that fails is reported with its error
        return {
            "status": "error",
            "error": f"{type(exc).__name__}: {exc}".strip()[:600],
            "traceback": traceback.format_exc()[-3000:],
        }
