"""Interleaved measurement: every ratio from samples taken in the same minutes.

A *group* is a list of rows that do comparable work: a floor (the bare compiled TensorFlow work),
the nbviz method, and each peer's version of it. Each row lives in a long-lived worker process
(one per environment: nbviz's virtualenv, the peers' virtualenv), where it was prepared once (model
loaded, explainer built). The driver then asks for one sample of each row in turn, A, B, C, A, B,
C, ... rotating the order every round so that no row always runs right after another, until every
row has ``samples`` warm samples or the group's time budget is spent (never fewer than
``min_samples``; a row cut short is marked). The first call of each row in a fresh process is its
*cold* sample and is kept apart.

Statistics are medians with interquartile ranges. A ratio between two rows is computed per round
(row A's sample over row B's sample of the same round) and summarised the same way, so a load
change during the run moves both sides of each ratio together. A speed target is *met* only when
the upper quartile of the ratio meets it, *missed* when the lower quartile misses it, and
*within noise* otherwise.

Standard library only: the peers' virtualenv imports this module too.
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any, Callable, Iterable, Sequence

__all__ = ["Spread", "spread", "ratio", "verdict", "Row", "LocalWorker", "ProcessWorker",
           "interleave", "serve"]


# --------------------------------------------------------------------------- statistics


@dataclasses.dataclass(frozen=True)
class Spread:
    """Median and interquartile range of some samples (``n`` of them)."""

    median: float
    q1: float
    q3: float
    n: int

    def text(self, unit: str = "", scale: float = 1.0, digits: int = 3) -> str:
        f = lambda v: f"{v * scale:.{digits}g}"  # noqa: E731
        return f"{f(self.median)}{unit} [{f(self.q1)}–{f(self.q3)}]"

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def spread(samples: Sequence[float]) -> Spread:
    """Median and quartiles (inclusive method: the quartiles of 1 sample are that sample)."""
    values = sorted(float(v) for v in samples)
    if not values:
        raise ValueError("spread of no samples")
    if len(values) == 1:
        return Spread(values[0], values[0], values[0], 1)
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return Spread(statistics.median(values), q1, q3, len(values))


def ratio(numerator: Sequence[float], denominator: Sequence[float]) -> Spread:
    """Spread of the per-round ratios ``numerator[i] / denominator[i]`` (same rounds)."""
    pairs = [(a, b) for a, b in zip(numerator, denominator) if b > 0]
    if not pairs:
        raise ValueError("no paired samples to take a ratio of")
    return spread([a / b for a, b in pairs])


def verdict(value: Spread, target: float) -> str:
    """'met' when the upper quartile is within ``target``, 'missed' when the lower quartile is
    above it, else 'within noise'."""
    if value.q3 <= target:
        return "met"
    if value.q1 > target:
        return "missed"
    return "within noise"


# --------------------------------------------------------------------------- workers


@dataclasses.dataclass(frozen=True)
class Row:
    """One measured row: its id, the worker that runs it, and what that worker prepares."""

    id: str
    worker: str
    spec: dict


class LocalWorker:
    """A worker in this process: ``prepare(spec) -> sample()`` callables given by ``factory``.

    Used by the smoke test (fake timings) and for rows that need no other process.
    ``factory(spec)`` returns ``call(i)``; a sample times one call with the wall clock and this
    process's CPU clock, unless the call returns its own ``{"wall": .., "cpu": ..}`` (fakes). A
    call that returns ``{"extras": {...}}`` adds those values to its sample (e.g. new traces).
    """

    def __init__(self, factory: Callable[[dict], Callable[[int], Any]], name: str = "local"):
        self.name = name
        self._factory = factory
        self._calls: dict[str, Callable[[int], Any]] = {}
        self._counts: dict[str, int] = {}

    def prepare(self, row_id: str, spec: dict) -> None:
        self._calls[row_id] = self._factory(spec)
        self._counts[row_id] = 0

    def sample(self, row_id: str) -> dict:
        i = self._counts[row_id]
        self._counts[row_id] = i + 1
        return timed(self._calls[row_id], i)

    def info(self) -> dict:
        return {}

    def close(self) -> None:
        self._calls.clear()


def timed(call: Callable[[int], Any], i: int) -> dict:
    wall, cpu = time.perf_counter(), time.process_time()
    out = call(i)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if isinstance(out, dict) and "wall" in out:  # a fake or a row that times itself
        return {"wall": float(out["wall"]), "cpu": float(out.get("cpu", out["wall"])),
                **{k: v for k, v in out.items() if k not in ("wall", "cpu")}}
    extras = out.get("extras", {}) if isinstance(out, dict) else {}
    return {"wall": wall, "cpu": cpu, **extras}


class ProcessWorker:
    """A long-lived worker process speaking JSON lines (see :func:`serve`).

    ``command``: the process to start, e.g. ``[python, "benchmarks/worker.py", "nbviz"]``.
    """

    def __init__(self, command: Sequence[str], name: str, env: dict | None = None, cwd=None):
        self.name = name
        self._start = dict(args=list(command), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                           stderr=sys.stderr, text=True, bufsize=1, env=env, cwd=cwd)
        self.restarts = 0
        self._proc = subprocess.Popen(**self._start)
        self._info = self._ask({"op": "info"})

    @property
    def alive(self) -> bool:
        return self._proc.poll() is None

    def restart(self) -> None:
        """A fresh process after this one died (e.g. killed for memory): the next groups run,
        the dead group keeps its error. Rows prepared before are gone with the process."""
        self.close()
        self.restarts += 1
        self._proc = subprocess.Popen(**self._start)
        self._info = self._ask({"op": "info"})

    def _ask(self, message: dict) -> dict:
        if self._proc.poll() is not None:
            raise RuntimeError(f"worker {self.name!r} exited with {self._proc.returncode}")
        self._proc.stdin.write(json.dumps(message) + "\n")
        self._proc.stdin.flush()
        while True:
            line = self._proc.stdout.readline()
            if not line:
                raise RuntimeError(f"worker {self.name!r} closed its output "
                                   f"(exit code {self._proc.poll()})")
            if line.startswith("{"):  # anything else is a library printing to stdout
                reply = json.loads(line)
                break
        if reply.get("error"):
            raise RuntimeError(reply["error"])
        return reply

    def prepare(self, row_id: str, spec: dict) -> None:
        self._ask({"op": "prepare", "row": row_id, "spec": spec})

    def sample(self, row_id: str) -> dict:
        return self._ask({"op": "sample", "row": row_id})

    def info(self) -> dict:
        return dict(self._info.get("info", {}))

    def close(self) -> None:
        if self._proc.poll() is None:
            try:
                self._ask({"op": "close"})
            except (RuntimeError, OSError, ValueError):
                pass
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()


def serve(factory: Callable[[dict], Callable[[int], Any]], info: Callable[[], dict],
          stdin=None, stdout=None) -> None:
    """The worker side of :class:`ProcessWorker`: answer JSON-line requests until 'close'.

    ``prepare`` builds a row's call with ``factory(spec)`` (an exception is the row's error);
    ``sample`` times the row's next call. Replies go to the real stdout; anything a library
    prints goes to stderr instead, so it cannot break the protocol.
    """
    stdin = stdin or sys.stdin
    out = stdout or sys.stdout
    if stdout is None:
        sys.stdout = sys.stderr
    worker = LocalWorker(factory)

    def reply(message: dict) -> None:
        out.write(json.dumps(message) + "\n")
        out.flush()

    for line in stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        op = request.get("op")
        try:
            if op == "info":
                reply({"info": info()})
            elif op == "prepare":
                worker.prepare(request["row"], request.get("spec", {}))
                reply({"ok": True})
            elif op == "sample":
                reply(worker.sample(request["row"]))
            elif op == "close":
                reply({"ok": True})
                return
            else:
                reply({"error": f"unknown op {op!r}"})
        except Exception as exc:  # the row's error goes back to the driver
            reply({"error": f"{type(exc).__name__}: {exc}"[:800]})


# --------------------------------------------------------------------------- the driver


def interleave(rows: Sequence[Row], workers: dict, *, samples: int = 7, min_samples: int = 3,
               budget_s: float | None = None, log: Callable[[str], None] = lambda s: None) -> dict:
    """Measure a group of comparable rows, interleaved; returns {row id: record}.

    Each row is prepared in its worker, sampled once cold, then sampled in rounds (the order
    rotates by one row each round) until it has ``samples`` warm samples, or the group's warm
    samples have taken ``budget_s`` of wall time and every row has ``min_samples``. A row that
    fails to prepare or to sample is reported with its error and leaves the rounds.
    Records: ``cold`` (one sample), ``wall``/``cpu`` (lists of warm samples, index = round),
    ``wall_spread``/``cpu_spread``, ``short`` (fewer than ``samples``), ``status``, extra keys a
    row returns with its samples (e.g. ``traces``) as lists.
    """
    records: dict[str, dict] = {}
    live: list[Row] = []
    for row in rows:
        record = records[row.id] = {"worker": row.worker, "status": "ok", "wall": [], "cpu": [],
                                    "rounds": []}
        try:
            workers[row.worker].prepare(row.id, row.spec)
            record["cold"] = workers[row.worker].sample(row.id)
            live.append(row)
        except Exception as exc:
            record.update(status="error", error=str(exc)[:800])
            log(f"  {row.id}: {record['error']}")
    spent = 0.0
    for round_no in range(samples):
        if not live:
            break
        if budget_s is not None and round_no >= min_samples and spent > budget_s:
            break
        shift = round_no % len(live)
        for row in live[shift:] + live[:shift]:
            record = records[row.id]
            try:
                got = workers[row.worker].sample(row.id)
            except Exception as exc:
                record.update(status="error", error=str(exc)[:800])
                log(f"  {row.id}: {record['error']}")
                continue
            spent += got["wall"]
            record["wall"].append(got["wall"])
            record["cpu"].append(got["cpu"])
            record["rounds"].append(round_no)
            for key, value in got.items():
                if key not in ("wall", "cpu"):
                    record.setdefault(key, []).append(value)
        live = [r for r in live if records[r.id]["status"] == "ok"]
    for record in records.values():
        if record["wall"]:
            record["wall_spread"] = spread(record["wall"]).as_dict()
            record["cpu_spread"] = spread(record["cpu"]).as_dict()
        record["short"] = len(record["wall"]) < samples
    return records


def paired(records: dict, a: str, b: str, clock: str = "wall") -> Spread | None:
    """Ratio spread of row ``a`` over row ``b`` from the rounds both sampled; None if none."""
    ra, rb = records.get(a), records.get(b)
    if not ra or not rb or not ra.get(clock) or not rb.get(clock):
        return None
    by_round = dict(zip(rb["rounds"], rb[clock]))
    pairs = [(v, by_round[r]) for r, v in zip(ra["rounds"], ra[clock]) if r in by_round]
    if not pairs:
        return None
    return ratio([p[0] for p in pairs], [p[1] for p in pairs])


def machine_info() -> dict:
    """CPU model, cores, load average and thread settings of this process's machine."""
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    threads = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS",
                                               "TF_NUM_INTEROP_THREADS", "OPENBLAS_CORETYPE")}
    return {"cpu": cpu, "cores": os.cpu_count(), "load": os.getloadavg(),
            "threads": {k: v for k, v in threads.items() if v is not None}}


def groups_of(rows: Iterable[Row], key: Callable[[Row], str]) -> dict[str, list[Row]]:
    out: dict[str, list[Row]] = {}
    for row in rows:
        out.setdefault(key(row), []).append(row)
    return out
