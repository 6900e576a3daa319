"""Run session work off the kernel's main thread: per channel the newest request wins, and
background work (prewarming) runs only when no request waits.

One thread runs one job at a time. Each *channel* (a view, or one pane of a compare view) holds
at most one waiting job: submitting to a channel replaces its waiting job (which never runs) and
asks that channel's running job to stop (its ``stop`` event is set; jobs that can stop early, such
as feature visualisation or a progressive method, do). Waiting jobs of different channels run in
the order they were submitted. A job's result is delivered only while it is its channel's
newest; otherwise it is dropped (``stale``). Background jobs (:meth:`Worker.background`) run when
no channel has a waiting job, in the order given; a new background list replaces the old one.
Errors are captured and handed to ``failed``.
"""

from __future__ import annotations

import threading
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

__all__ = ["Worker", "Job"]


@dataclass
class Job:
    """``run(job) -> result``; ``done(result)`` for a current result, ``failed(exc, tb)`` on error.
    ``current()`` tells a running job whether it is still its channel's newest."""

    run: Callable[["Job"], Any]
    done: Callable[[Any], None]
    failed: Callable[[BaseException, str], None]
    channel: str = ""
    name: str = ""
    stop: threading.Event = field(default_factory=threading.Event)
    generation: int = 0
    worker: "Worker | None" = None

    def current(self) -> bool:
        return self.worker is None or self.worker._is_current(self)


class Worker:
    """A single background thread; see the module docstring.

    Counters (tests, benchmarks): ``submitted``, ``started``, ``finished``, ``replaced`` (waiting
    jobs that never ran), ``stale`` (results dropped), ``errors``, ``background_done``, and
    ``max_waiting`` (the most jobs ever waiting in one channel: 1 by construction).
    """

    def __init__(self, name: str = "nbviz-session"):
        self._cond = threading.Condition()
        self._waiting: dict[str, Job] = {}  # channel -> job; dict order = submission order
        self._running: Job | None = None
        self._generation: dict[str, int] = {}
        self._background: list[Job] = []
        self._closed = False
        self.submitted = self.started = self.finished = 0
        self.replaced = self.stale = self.errors = self.max_waiting = self.background_done = 0
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    # ---------------------------------------------------------------- public

    def submit(self, run, done, failed, *, channel: str = "", name: str = "") -> Job:
        """Queue a job as ``channel``'s newest request; returns it."""
        with self._cond:
            if self._closed:
                raise RuntimeError("the session's worker is closed")
            gen = self._generation[channel] = self._generation.get(channel, 0) + 1
            job = Job(run, done, failed, channel, name, generation=gen, worker=self)
            old = self._waiting.pop(channel, None)
            if old is not None:
                self.replaced += 1
            self._waiting[channel] = job
            self.max_waiting = max(self.max_waiting, 1)
            if self._running is not None and self._running.channel == channel:
                self._running.stop.set()
            self.submitted += 1
            self._cond.notify_all()
            return job

    def background(self, jobs: list[tuple[Callable, str]]) -> None:
        """Replace the background list with ``[(run, name), ...]`` (results are not delivered)."""
        with self._cond:
            self._background = [Job(run, lambda r: None, lambda e, t: None, "background", name, worker=None)
                                for run, name in jobs]
            self._cond.notify_all()

    def cancel(self, channel: str = "") -> None:
        """Drop ``channel``'s waiting job and ask its running job to stop (its result is dropped)."""
        with self._cond:
            self._generation[channel] = self._generation.get(channel, 0) + 1
            if self._waiting.pop(channel, None) is not None:
                self.replaced += 1
            if self._running is not None and self._running.channel == channel:
                self._running.stop.set()
            self._cond.notify_all()

    def stop(self, channel: str = "") -> None:
        """Ask ``channel``'s running job to stop early; its (partial) result is still delivered."""
        with self._cond:
            if self._running is not None and self._running.channel == channel:
                self._running.stop.set()

    @property
    def waiting(self) -> int:
        with self._cond:
            return len(self._waiting)

    def wait(self, timeout: float | None = 60.0, *, background: bool = False) -> bool:
        """Block until no request runs or waits (and, with ``background``, no background job
        either); True when idle, False on timeout."""
        def idle():
            running = self._running is not None and (background or self._running.channel != "background")
            return not running and not self._waiting and not (background and self._background)
        with self._cond:
            return self._cond.wait_for(idle, timeout)

    def close(self) -> None:
        """Stop the thread after the running job (waiting and background jobs are dropped)."""
        with self._cond:
            self._closed = True
            self._waiting.clear()
            self._background.clear()
            if self._running is not None:
                self._running.stop.set()
            self._cond.notify_all()

    # ---------------------------------------------------------------- the thread

    def _is_current(self, job: Job) -> bool:
        with self._cond:
            return job.generation == self._generation.get(job.channel, 0)

    def _loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._waiting or self._background or self._closed)
                if self._closed:
                    return
                if self._waiting:
                    channel = next(iter(self._waiting))
                    job = self._waiting.pop(channel)
                else:
                    job = self._background.pop(0)
                self._running = job
                self.started += 1
            try:
                result = job.run(job)
                error = None
            except BaseException as exc:  # shown in the view, never lost in a thread
                result, error = None, (exc, traceback.format_exc())
            current = job.worker is None or self._is_current(job)
            try:
                if job.worker is None:
                    self.background_done += 1
                elif error is not None:
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
