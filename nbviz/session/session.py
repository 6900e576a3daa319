"""The widget-free session: requests in, results out, for one model.

A :class:`Session` owns what every view of one model shares: the model context (preprocess,
receptive fields, the fully convolutional copy, predictions), an LRU cache of results, the
background worker, prewarming and timings. It imports no widget library; the Explorer is a thin
view over it, and tests and benchmarks drive it directly.

Extension point (a compare view, a dictionary panel, a gallery, a timeline)::

    s = Session(model, preprocess=pre)               # or explorer.session: share its cache
    iid = s.image_id(image)                          # one id per image (cache key)
    req = s.request("gradcam", image, image_id=iid, layer="block3_conv", target=None)
    result = s.compute(req)                          # synchronous, cached: a Result
    s.submit(req, on_result, channel="pane-2")       # asynchronous, newest wins per channel
    unsubscribe = s.subscribe(listener)              # listener(event, request, payload)

``submit(request, on_result, *, on_error=None, channel="main")``: ``on_result(result)`` is called
on the worker thread for each progressive refinement (``result.final`` False) and for the final
result, or at once (on the caller's thread) when the result is cached; only while the request
is its channel's newest (older ones are stopped and their results dropped). Each pane of a
compare view uses its own channel, so panes do not cancel each other but share the cache and the
one-pass groups. ``subscribe`` sees every request of every channel: events ``"start"`` (payload
None), ``"partial"`` / ``"result"`` (a :class:`Result`), ``"error"`` (the exception),
``"cached"`` (a :class:`Result` served from the cache).

One worker thread per session runs every channel's jobs one at a time (waiting jobs of different
channels in submission order; prewarming only when none waits). Other calls: ``stop(channel)``
(end the running job early, its result still arrives: a stopped feature visualisation),
``cancel(channel)`` (drop it), ``prewarm(request)``, ``wait(timeout, background=False)``,
``cached(request)``, ``key(request)``, ``layers(method)`` (the layers a method can use),
``channels(layer)``, ``clear()`` (after the model's weights changed), ``timings`` and
``counts``; ``context`` holds the model helpers (``receptive_field(layer)``,
``cached_rf(layer)``, ``predictions(image_id, image)``, ``fully_convolutional()``). A view built
on an existing session (``Explorer(session=s)``) shares its cache and worker.

Methods come from :mod:`nbviz.methods.table`: a row with ``runner`` runs that function; any other
row runs through :func:`nbviz.session.runners.generic`; rows with the same ``one_pass`` group are
computed together by :mod:`nbviz.session.one_pass` and cached together.
"""

from __future__ import annotations

import itertools
import re
import threading
import time
from collections import OrderedDict
from typing import Any, Callable

import numpy as np

from nbviz.methods import table
from nbviz.methods.targets import Box
from nbviz.session import one_pass as _one_pass
from nbviz.session import runners
from nbviz.session.context import Context
from nbviz.session.dense import check_region_target
from nbviz.session.results import Request, Result, result_from_array
from nbviz.session.worker import Worker

__all__ = ["Session", "clean_error"]


class Session:
    """See the module docstring. ``cache_size``: results kept (least recently used dropped)."""

    def __init__(self, model, *, preprocess: Callable | None = None, cache_size: int = 64):
        self.context = Context(model, preprocess)
        self.model = model
        self.probe = self.context.probe
        self.worker = Worker()
        self.cache_size = int(cache_size)
        self._cache: OrderedDict = OrderedDict()
        self._groups: OrderedDict = OrderedDict()  # one-pass raw arrays
        self._lock = threading.RLock()
        self._ids = itertools.count(1)
        self._listeners: list[Callable] = []
        self._bad_layers: dict[str, set] = {}
        #: per method key: the last timings (ms): queue, compute, total, cached
        self.timings: dict[str, dict] = {}
        #: counters: computed, cached (hits), one_pass (group passes), dropped (stale partials)
        self.counts = {"computed": 0, "cached": 0, "one_pass": 0, "dropped": 0}

    # ------------------------------------------------------------ requests

    def image_id(self, image=None) -> int:
        """A new image id (the cache keys results by it): call once per new image."""
        return next(self._ids)

    def layers(self, method: str) -> list[str]:
        """The layer paths ``method`` can use: every spatial layer, less those a
        ``layers="differentiable"`` method has failed on (learned on first failure)."""
        row = table.method(method)
        paths = [i.path for i in self.probe.spatial_layers()]
        if row.layers == "differentiable":
            bad = self._bad_layers.get(method, set())
            paths = [p for p in paths if p not in bad]
        return paths

    def channels(self, layer: str) -> int:
        """Number of channels of ``layer``'s output."""
        shape = self.probe.layer(layer).output_shape
        return int(shape[-1]) if shape else 1

    def request(self, method: str, image, *, image_id: int | None = None, layer=None, target=None,
                channel: int = 0, point=None, options: dict | None = None) -> Request:
        """A validated :class:`Request` for ``method`` (a table key). Only what the row reads is
        kept (a method without ``"layer"`` in its needs gets ``layer=None``, ...), so requests
        that differ only in what a method ignores share a cache entry. Errors name the argument."""
        row = table.method(method)
        image = np.asarray(image)
        if image_id is None:
            image_id = self.image_id(image)
        needs = row.needs
        path = None
        if "layer" in needs or "channel" in needs:
            path = self.probe.spatial_layer(layer).path
        if "target" in needs and isinstance(target, Box):  # a region of a dense output map
            target = check_region_target(self.probe, target, image.shape)
        elif "target" in needs and target is not None:
            n = self._classes()
            if isinstance(target, bool) or not isinstance(target, (int, np.integer)) or not (n is None or 0 <= target < n):
                raise ValueError(f"target must be None (the top prediction) or a class in [0, {(n or 1) - 1}], got {target!r}")
            target = int(target)
        else:
            target = None if "target" not in needs else target
        ch = 0
        if "channel" in needs:
            c = self.channels(path)
            if isinstance(channel, bool) or not isinstance(channel, (int, np.integer)) or not 0 <= channel < c:
                raise ValueError(f"channel must be an int in [0, {c - 1}] for layer {path!r}, got {channel!r}")
            ch = int(channel)
        pt = None
        if "point" in needs and point is not None:
            pt = check_point(point, image.shape[:2])
        given = dict(options or {})
        own = {c.name for c in row.controls}
        values = row.kwargs({k: v for k, v in given.items() if k in own})  # checks every value
        opts = tuple(sorted((c.name, values[c.keyword]) for c in row.controls))
        return Request(method=row.key, image=image, image_id=int(image_id), layer=path, target=target,
                       channel=ch, point=pt, options=opts)

    def _classes(self) -> int | None:
        out = self.probe.model.outputs[0].shape if getattr(self.probe.model, "outputs", None) else None
        return int(out[-1]) if out is not None and out[-1] is not None else None

    def key(self, req: Request) -> tuple:
        """The cache key of ``req``: a clicked point counts by its output cell when the layer's
        receptive field is known (every point of one cell gives one result)."""
        point = req.point
        if point is not None:
            rf = self.context.cached_rf(req.layer)
            if rf is not None:
                point = ("cell", tuple(int(v) for v in rf.cell(point)))
        return (req.image_id, req.method, req.layer, req.target, point, req.channel, req.options)

    def cached(self, req: Request) -> Result | None:
        """The cached final result of ``req``, or None."""
        with self._lock:
            r = self._cache.get(self.key(req))
            if r is not None:
                self._cache.move_to_end(self.key(req))
            return r

    # ------------------------------------------------------------ computing

    def compute(self, req: Request, *, stop: threading.Event | None = None,
                progress: Callable[[Result], None] | None = None) -> Result:
        """The result of ``req``, computed on this thread (cached; a one-pass group fills the
        cache for all its members). ``progress(result)`` receives refinements of progressive
        methods; ``stop`` ends a method that can stop early."""
        hit = self.cached(req)
        if hit is not None:
            self.counts["cached"] += 1
            return hit
        stop = stop or threading.Event()
        progress = progress or (lambda r: None)
        row = req.row
        if req.layer:
            try:
                self.context.receptive_field(req.layer)  # the view's box and readout need it
            except Exception:
                pass  # a layer without a receptive field: the readout says so
        t0 = time.perf_counter()
        try:
            result = self._group(req) if row.one_pass else None
            if result is None:
                result = runners.run(self.context, req, stop, progress)
        except Exception as exc:
            if row.layers == "differentiable" and "not differentiable" in str(exc):
                self._bad_layers.setdefault(row.key, set()).add(req.layer)
            raise
        result = result.replace(request=req)
        self.counts["computed"] += 1
        self.timings[row.key] = {"compute_ms": (time.perf_counter() - t0) * 1e3}
        if not result.stopped:
            self._store(self.key(req), result)
        return result

    def _group(self, req: Request) -> Result | None:
        """``req``'s result from its one-pass group, or None when the group cannot serve it
        (then the row runs alone). A pass is computed once per image, layer and target; a pass at
        any layer serves a row that reads no layer (saliency), a pass for any target serves a
        row that reads no target (activations)."""
        row = req.row
        group = getattr(_one_pass, row.one_pass, None)
        if group is None:
            return None
        layer = req.layer if "layer" in row.needs else None
        with self._lock:
            raw = next((value for (g, iid, lay, tgt), value in reversed(self._groups.items())
                        if g == row.one_pass and iid == req.image_id and layer in (None, lay)
                        and ("target" not in row.needs or tgt == req.target)), None)
        if raw is None:
            layer = layer or self._group_layer(req)
            try:
                raw = group(self.context, req.replace(layer=layer))
            except ValueError as exc:
                if "not differentiable" in str(exc) and row.layers != "differentiable":
                    return None  # e.g. activations of a layer the score does not flow through
                raise
            self.counts["one_pass"] += 1
            with self._lock:
                self._groups[(row.one_pass, req.image_id, layer, req.target)] = raw
                while len(self._groups) > 8:
                    self._groups.popitem(last=False)
        if row.key not in raw:
            return None
        return self.from_array(row, raw[row.key], req)

    def _group_layer(self, req: Request) -> str | None:
        """The layer a layer-free member of a group (saliency) is computed at: the last request's
        layer for this image, else the default spatial layer."""
        return getattr(self, "_last_layer", None) or self.probe.spatial_layer().path

    @staticmethod
    def from_array(row: table.Method, array, req: Request) -> Result:
        """A row's result from its raw array: its runner's ``from_array`` or the generic one."""
        runner = row.runner_object()
        convert = getattr(runner, "from_array", None) if runner is not None else None
        return convert(req, array) if convert is not None else result_from_array(row, array, req)

    def _store(self, key, result: Result) -> None:
        with self._lock:
            self._cache[key] = result
            self._cache.move_to_end(key)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)

    def submit(self, req: Request, on_result: Callable[[Result], None], *,
               on_error: Callable[[BaseException, str], None] | None = None, channel: str = "main"):
        """Compute ``req`` in the background; see the module docstring. Returns the worker job,
        or None when the result was served from the cache."""
        if req.layer:
            self._last_layer = req.layer
        hit = self.cached(req)
        if hit is not None:
            self.worker.cancel(channel)
            self.counts["cached"] += 1
            self.timings[req.method] = {"cached": True, "total_ms": 0.0}
            hit = hit.replace(elapsed_ms=0.0)  # shown at once
            self._emit("cached", req, hit)
            on_result(hit)
            return None
        submitted = time.perf_counter()

        def run(job):
            started = time.perf_counter()
            self._emit("start", req, None)

            def progress(partial: Result):
                if not job.current():
                    self.counts["dropped"] += 1
                    return
                partial = partial.replace(elapsed_ms=(time.perf_counter() - submitted) * 1e3, request=req)
                self._emit("partial", req, partial)
                on_result(partial)

            result = self.compute(req, stop=job.stop, progress=progress)
            t = self.timings.setdefault(req.method, {})
            t.update(queue_ms=(started - submitted) * 1e3, total_ms=(time.perf_counter() - submitted) * 1e3)
            return result.replace(elapsed_ms=t["total_ms"])

        def done(result):
            self._emit("result", req, result)
            on_result(result)

        def failed(exc, tb):
            self._emit("error", req, exc)
            if on_error is not None:
                on_error(exc, tb)

        return self.worker.submit(run, done, failed, channel=channel, name=req.method)

    def stop(self, channel: str = "main") -> None:
        """Ask ``channel``'s running request to stop early (feature visualisation returns its
        current picture, which is delivered)."""
        self.worker.stop(channel)

    def cancel(self, channel: str = "main") -> None:
        """Drop ``channel``'s waiting request and stop its running one."""
        self.worker.cancel(channel)

    def prewarm(self, req: Request) -> list[Request]:
        """Compute, in the background, every other method for ``req``'s image, layer, target and
        channel with default settings (compiling their functions for this input shape and
        filling the cache), after any waiting request. Rows that run on demand, rows that need a
        point when ``req`` has none, and layers a row cannot use are left out. Returns the
        requests queued."""
        queued = []
        for row in table.METHODS:
            if row.on_demand or row.key == req.method:
                continue
            if "point" in row.needs and req.point is None:
                continue
            layer = req.layer or self.probe.spatial_layer().path
            if "layer" in row.needs and layer not in self.layers(row.key):
                continue
            try:
                r = self.request(row.key, req.image, image_id=req.image_id, layer=layer, target=req.target,
                                 channel=req.channel if "channel" in row.needs else 0, point=req.point)
            except ValueError:
                continue
            queued.append(r)

        def job(r):
            def run(_job):
                try:
                    self.compute(r)
                except Exception:
                    pass  # the user sees the error when choosing the method
            return run

        # one-pass groups first: one pass serves several rows
        queued.sort(key=lambda r: r.row.one_pass is None)
        self.worker.background([(job(r), r.method) for r in queued])
        return queued

    def wait(self, timeout: float = 120.0, *, background: bool = False) -> bool:
        """Block until no request runs or waits (``background``: prewarming done too)."""
        return self.worker.wait(timeout, background=background)

    # ------------------------------------------------------------ listeners

    def subscribe(self, listener: Callable[[str, Request, Any], None]) -> Callable[[], None]:
        """Call ``listener(event, request, payload)`` for every request (see the module
        docstring); returns a function that unsubscribes."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def _emit(self, event: str, req: Request, payload) -> None:
        for listener in list(self._listeners):
            try:
                listener(event, req, payload)
            except Exception:
                pass  # a broken listener must not break the session

    def clear(self) -> None:
        """Forget cached results (e.g. after the model's weights changed)."""
        with self._lock:
            self._cache.clear()
            self._groups.clear()

    def close(self) -> None:
        self.worker.close()


def check_point(point, size) -> tuple[int, int]:
    """``point`` as (y, x) ints inside an image of ``size`` (h, w), or a ValueError."""
    h, w = (int(v) for v in size)
    try:
        y, x = point
        if any(isinstance(v, bool) or not float(v).is_integer() for v in (y, x)):
            raise TypeError
        y, x = int(y), int(x)
    except (TypeError, ValueError):
        raise ValueError(f"point must be (y, x) integer pixel coordinates, got {point!r}") from None
    if not (0 <= y < h and 0 <= x < w):
        raise ValueError(f"point ({y}, {x}) is outside the {h}×{w} image")
    return y, x


def clean_error(exc: BaseException) -> str:
    """One line for ``exc``: TensorFlow's autograph wraps errors raised while tracing in a long
    "in user code" traceback; the last ``Type: message`` line is what matters."""
    text = str(exc)
    if "in user code" in text:
        lines = [ln.strip() for ln in text.splitlines() if re.match(r"\s*\w+(Error|Exception): ", ln)]
        if lines:
            return lines[-1]
    first = text.strip().splitlines()[0] if text.strip() else ""
    return f"{type(exc).__name__}: {first}"
