"""Run method work off the kernel's main thread: the newest request wins.

One background thread runs one job at a time. At most one job waits: submitting a new job
replaces the waiting one (it never runs) and asks the running one to stop (its ``stop`` event is
set; jobs that can stop early, such as feature visualisation, do). When a job finishes after a
newer one was submitted its result is dropped. Errors are captured and handed to ``on_error``.
"""

from __future__ import annotations

import threading
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

__all__ = ["Worker", "Job"]


@dataclass
class Job:
    """``run(stop) -> result``; ``done(result)`` for a current result, ``failed(exc, tb)`` on error."""

    run: Callable[[threading.Event], Any]
    done: Callable[[Any], None]
    failed: Callable[[BaseException, str], None]
    name: str = ""
    stop: threading.Event = field(default_factory=threading.Event)
    generation: int = 0


class Worker:
    """A single background thread with a one-slot queue; see the module docstring.

    Counters (for tests and benchmarks): ``submitted``, ``started``, ``finished``, ``replaced``
    (waiting jobs that never ran), ``stale`` (results dropped), ``errors``, and ``max_waiting``
    (the most jobs ever waiting at once: 1 by construction).
    """

    def __init__(self, name: str = "nbviz-explorer"):
        self._cond = threading.Condition()
        self._waiting: Job | None = None
        self._running: Job | None = None
        self._generation = 0
        self._closed = False
        self.submitted = self.started = self.finished = 0
        self.replaced = self.stale = self.errors = self.max_waiting = 0
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    # ---------------------------------------------------------------- public

    def submit(self, run, done, failed, name: str = "") -> Job:
        """Queue a job as the newest request; returns it (its ``stop`` event can be set)."""
        with self._cond:
            if self._closed:
                raise RuntimeError("the worker is closed")
            self._generation += 1
            job = Job(run, done, failed, name, generation=self._generation)
            if self._waiting is not None:
                self.replaced += 1
            self._waiting = job
            self.max_waiting = max(self.max_waiting, 1)
            if self._running is not None:
                self._running.stop.set()
            self.submitted += 1
            self._cond.notify_all()
            return job

    def cancel(self) -> None:
        """Drop the waiting job and ask the running one to stop (its result is dropped)."""
        with self._cond:
            self._generation += 1
            if self._waiting is not None:
                self.replaced += 1
                self._waiting = None
            if self._running is not None:
                self._running.stop.set()
            self._cond.notify_all()

    @property
    def busy(self) -> bool:
        with self._cond:
            return self._running is not None or self._waiting is not None

    @property
    def waiting(self) -> int:
        """Jobs waiting to run (0 or 1)."""
        with self._cond:
            return int(self._waiting is not None)

    def wait(self, timeout: float | None = 60.0) -> bool:
        """Block until no job runs or waits; True when idle, False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._running is None and self._waiting is None, timeout)

    def close(self) -> None:
        """Stop the thread after the running job (the waiting one is dropped)."""
        with self._cond:
            self._closed = True
            self._waiting = None
            if self._running is not None:
                self._running.stop.set()
            self._cond.notify_all()

    # ---------------------------------------------------------------- the thread

    def _loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._waiting is not None or self._closed)
                if self._closed:
                    return
                job, self._waiting = self._waiting, None
                self._running = job
                self.started += 1
            try:
                result = job.run(job.stop)
                error = None
            except BaseException as exc:  # shown in the widget, never lost in a thread
                result, error = None, (exc, traceback.format_exc())
            with self._cond:
                current = job.generation == self._generation
            try:
                if error is not None:
                    self.errors += 1
                    if current:
                        job.failed(*error)
                elif current:
                    job.done(result)
                else:
                    self.stale += 1
            except BaseException as exc:  # a failing callback must not kill the thread
                self.errors += 1
                try:
                    job.failed(exc, traceback.format_exc())
                except BaseException:
                    pass
            finally:
                with self._cond:
                    self.finished += 1
                    self._running = None
                    self._cond.notify_all()
