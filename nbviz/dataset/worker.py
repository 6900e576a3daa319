"""What one process does with a batch of images: load, predict, explain, measure, thumbnail.

Both engines run the same :class:`Worker`: the local engine in the calling process, the Ray
engine inside each actor of its pool. A worker is built once per process and model; every batch
it sees is padded to the plan's ``batch_size`` (the last image repeated, the copies dropped), so
each method compiles once per run and every later batch reuses its compiled function (the
methods cache them on the model's probe, keyed by input shape).

A :class:`Plan` is the picklable description of the work (it travels to Ray actors); a
:class:`Batch` is what comes back: one entry per item, in the order given, with ``error`` set
(and zero maps) for items that could not be used.
"""

from __future__ import annotations

import dataclasses
import inspect
import warnings
from typing import Any, Callable, Sequence

import numpy as np

from nbviz.dataset.source import ImageError, Item, load_image

__all__ = ["MethodSpec", "MetricSpec", "Plan", "Batch", "Worker", "resolve_methods", "resolve_metrics",
           "TARGETS"]

#: accepted string values of explain_dataset's ``target``
TARGETS = ("label", "top")


# --------------------------------------------------------------------------- methods


@dataclasses.dataclass(frozen=True)
class MethodSpec:
    """A method to run: its store name, the table key or the function, keyword arguments, and
    whether it takes ``layer=``."""

    name: str
    key: str | None
    function: Callable | None
    kwargs: dict
    takes_layer: bool

    def callable(self) -> Callable:
        if self.function is not None:
            return self.function
        from nbviz.methods import table

        return table.method(self.key).function_object()


def resolve_methods(methods, options=None) -> list[MethodSpec]:
    """Method table keys (rows without a runner) or functions -> :class:`MethodSpec` list.

    ``options``: ``{key: {control name: value}}`` for table rows (checked by the row's controls).
    """
    from nbviz.methods import table

    if isinstance(methods, (str, bytes)) or callable(methods):
        methods = (methods,)
    methods = tuple(methods)
    if not methods:
        raise ValueError("methods must name at least one method")
    options = dict(options or {})
    usable = sorted(m.key for m in table.METHODS if m.runner is None)
    out, names = [], set()
    for m in methods:
        if isinstance(m, str):
            row = table.method(m)  # ValueError with the known keys
            if row.runner is not None:
                raise ValueError(
                    f"method {m!r} is not a map-per-image function: its row runs through the "
                    f"Explorer's runner {row.runner!r} (it needs a click, a channel or an "
                    f"optimisation). explain_dataset takes the keys {usable} or a function "
                    f"fn(model, images, *, target=None, preprocess=None, ...)")
            spec = MethodSpec(m, m, None, row.kwargs(options.pop(m, {})), "layer" in row.needs)
        elif callable(m):
            name = getattr(m, "__name__", None) or type(m).__name__
            try:
                params = inspect.signature(m).parameters
            except (TypeError, ValueError):
                params = {}
            missing = [p for p in ("target", "preprocess") if p not in params
                       and not any(v.kind is v.VAR_KEYWORD for v in params.values())]
            if missing:
                raise TypeError(f"method function {name!r} must take keyword arguments target= and "
                                f"preprocess= (fn(model, images, *, target=None, preprocess=None, ...)); "
                                f"it lacks {missing}")
            spec = MethodSpec(name, None, m, dict(options.pop(name, {})), "layer" in params)
        else:
            raise TypeError(f"methods must be method table keys ({usable}) or functions; got {m!r}")
        if spec.name in names:
            raise ValueError(f"method {spec.name!r} is listed twice")
        names.add(spec.name)
        out.append(spec)
    if options:
        raise ValueError(f"options name methods that are not run: {sorted(options)}")
    return out


# --------------------------------------------------------------------------- metrics


@dataclasses.dataclass(frozen=True)
class MetricSpec:
    """A metric: its column stem, and a name in :mod:`nbviz.metrics` or a function.

    A metric function is called per image and method as ``f(model, image, attribution, *,
    target=..., preprocess=...)`` and returns a number, or a result with an ``auc`` attribute
    (or key): what is stored. For a name ``X_auc`` without such a function, ``X`` is called and
    its ``auc`` is stored (``"deletion_auc"`` -> ``nbviz.metrics.deletion(...).auc``).
    """

    name: str
    function: Callable | None = None

    def callable(self) -> Callable:
        return self.function if self.function is not None else metric_by_name(self.name)


def metric_by_name(name: str) -> Callable:
    """The metric ``name`` of :mod:`nbviz.metrics`, resolved when first used."""
    import importlib

    try:
        module = importlib.import_module("nbviz.metrics")
    except ImportError as exc:
        raise ValueError(f"metric {name!r} is looked up in nbviz.metrics, which cannot be imported "
                         f"here ({exc}); pass a function instead") from None
    fn = getattr(module, name, None)
    if callable(fn):
        return fn
    if name.endswith("_auc") and callable(getattr(module, name[:-4], None)):
        return getattr(module, name[:-4])
    known = sorted(n for n in getattr(module, "__all__", dir(module))
                   if not n.startswith("_") and callable(getattr(module, n, None)))
    raise ValueError(f"unknown metric {name!r}: nbviz.metrics has {known} "
                     f"(a name X_auc takes the auc of X), or pass a function")


def resolve_metrics(metrics) -> list[MetricSpec]:
    if metrics is None:
        return []
    if isinstance(metrics, str) or callable(metrics):
        metrics = (metrics,)
    out, names = [], set()
    for m in metrics:
        if isinstance(m, str):
            spec = MetricSpec(m)
            spec.callable()  # unknown names fail now, not after the first shard
        elif callable(m):
            spec = MetricSpec(getattr(m, "__name__", None) or type(m).__name__, m)
        else:
            raise TypeError(f"metrics must be names in nbviz.metrics or functions; got {m!r}")
        if spec.name in names:
            raise ValueError(f"metric {spec.name!r} is listed twice")
        names.add(spec.name)
        out.append(spec)
    return out


def metric_value(result) -> float:
    """The stored number of a metric's result: a number, ``.auc``, or ``["auc"]``."""
    for get in (lambda r: r.auc, lambda r: r["auc"]):
        try:
            result = get(result)
            break
        except (AttributeError, KeyError, TypeError, IndexError):
            pass
    value = np.asarray(result, dtype=np.float64)
    if value.shape != ():
        raise ValueError(f"a metric must give one number per image and method, got shape {value.shape}")
    return float(value)


# --------------------------------------------------------------------------- the plan


@dataclasses.dataclass
class Plan:
    """Everything a worker needs besides the model (picklable)."""

    methods: list[MethodSpec]
    metrics: list[MetricSpec]
    target: Any
    layer: Any
    preprocess: Callable | None
    size: tuple[int, int]
    channels: int
    batch_size: int
    top_k: int = 5
    thumbnail_size: int = 64
    store_images: bool = False
    image_dtype: str = "uint8"
    resize: bool = False


@dataclasses.dataclass
class Batch:
    """Results for a list of items, in their order (``error`` is "" for a good item)."""

    index: np.ndarray          # (n,) int64
    ids: list
    paths: list
    labels: list               # int or None
    error: list                # str, "" when the item was processed
    outputs: np.ndarray        # (n, K) float32 model outputs (zeros on error rows)
    targets: list              # explained class per item (int) or None
    maps: dict                 # name -> (n, ...) float32
    metrics: dict              # column -> (n,) float64
    thumbs: np.ndarray | None  # (n, th, tw, C) uint8 thumbnails (zeros on error rows)
    images: np.ndarray | None  # (n, H, W, C) raw pixels when the plan stores them

    def take(self, rows) -> "Batch":
        """The items at positions ``rows``, in that order."""
        pick = lambda seq: [seq[i] for i in rows]  # noqa: E731
        part = lambda a: None if a is None else a[rows]  # noqa: E731
        return Batch(self.index[rows], pick(self.ids), pick(self.paths), pick(self.labels),
                     pick(self.error), self.outputs[rows], pick(self.targets),
                     {k: v[rows] for k, v in self.maps.items()},
                     {k: v[rows] for k, v in self.metrics.items()}, part(self.thumbs), part(self.images))

    def rows_only(self) -> "Batch":
        """This batch without its per-item arrays (maps, thumbnails, pixels): the table rows."""
        return dataclasses.replace(self, maps={}, thumbs=None, images=None)

    @staticmethod
    def join_rows(parts: Sequence["Batch"]) -> "Batch":
        """The table rows of ``parts`` (see :meth:`rows_only`) as one batch in index order."""
        first = parts[0]
        if len(parts) > 1:
            cat = lambda name: [x for p in parts for x in getattr(p, name)]  # noqa: E731
            first = Batch(np.concatenate([p.index for p in parts]), cat("ids"), cat("paths"), cat("labels"),
                          cat("error"), np.concatenate([p.outputs for p in parts]), cat("targets"), {},
                          {k: np.concatenate([p.metrics[k] for p in parts]) for k in first.metrics}, None, None)
        order = np.argsort(first.index, kind="stable")
        return first if (order == np.arange(len(order))).all() else first.take(order)


def thumbnail_shape(height: int, width: int, size: int) -> tuple[int, int]:
    """(th, tw): the longer side at most ``size``, the aspect ratio kept; small images unchanged."""
    if max(height, width) <= size:
        return int(height), int(width)
    scale = size / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def thumbnails(images: np.ndarray, size: int, *, byte_range: bool = False) -> np.ndarray:
    """Thumbnails of a batch ``(n, H, W, C)`` as uint8 ``(n, th, tw, C)``, all at once: area
    averaging (:func:`tf.image.resize`, ``method="area"``). uint8 images, and others whose values
    are 0..255 (``byte_range``), keep their values; any other image is min-max scaled per
    thumbnail. Images no larger than ``size`` keep their size."""
    a = np.asarray(images)
    bytes_ = a.dtype == np.uint8 or byte_range
    shape = thumbnail_shape(a.shape[1], a.shape[2], size)
    if shape != a.shape[1:3]:
        import tensorflow as tf

        a = tf.image.resize(tf.constant(a, tf.float32), shape, method="area").numpy()
    if bytes_:
        return a if a.dtype == np.uint8 else np.clip(np.rint(a), 0, 255).astype(np.uint8)
    a = a.astype(np.float32, copy=False)
    lo = np.nanmin(a, axis=(1, 2, 3), keepdims=True)
    span = np.nanmax(a, axis=(1, 2, 3), keepdims=True) - lo
    scaled = (a - lo) * np.where(span > 0, 255.0 / np.where(span > 0, span, 1), 0.0)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


class Worker:
    """Runs a :class:`Plan` on batches of items with one model (see the module docstring)."""

    def __init__(self, model, plan: Plan):
        from nbviz.methods import core
        from nbviz.probe import probe

        self.model = model
        self.plan = plan
        self.probe = p = probe(model)
        if p._n_inputs != 1:
            raise ValueError(f"explain_dataset needs a single-input image model; {model.name!r} has "
                             f"{p._n_inputs} inputs")
        from nbviz.methods import gradient_pass as _pass
        from nbviz.methods import table

        # table rows of the one-pass group with their default options share one compiled pass,
        # which also gives the model's outputs (no separate forward pass for the predictions)
        self._pass = [m for m in plan.methods if m.key in _pass.MEMBERS and not m.kwargs
                      and table.method(m.key).one_pass == "gradients"]
        self._functions = [(m, m.callable()) for m in plan.methods if m not in self._pass]
        self._metrics = [(m, m.callable()) for m in plan.metrics]
        size = (plan.batch_size, *plan.size, plan.channels)

        def forward(images, extra):
            return p.forward(images)

        self._forward = core.compiled(p, ("dataset_outputs", size), forward)
        self._core = core
        from nbviz.methods.core import explained_shape

        shape = explained_shape(p, None, tuple(plan.size))  # the output's, no forward pass when known
        self.classes = shape[-1] if len(shape) == 2 else None
        if plan.target in TARGETS and self.classes is None:
            raise ValueError(f"target={plan.target!r} needs a class-vector output; the model outputs "
                             f"shape {shape}")
        self.output_width = self.classes or 0
        self.map_shapes = None  # learnt from the first batch (or a batch of zeros, if needed first)

    def _learn_shapes(self):
        """Map shapes from one batch of zeros (only when a batch holds no usable image at all
        before any real batch was seen: its rows still need zero maps of the right shape)."""
        zeros = np.zeros((self.plan.batch_size, *self.plan.size, self.plan.channels), np.float32)
        _, _, maps = self._compute(zeros, [0] * self.plan.batch_size)
        self.map_shapes = {k: v.shape[1:] for k, v in maps.items()}

    # ---------------------------------------------------------------- pieces

    def _compute(self, raw: np.ndarray, labels) -> tuple[np.ndarray, Any, dict]:
        """(model outputs, the target explained, {method: maps}) for a full batch."""
        plan = self.plan
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*the map is zero everywhere.*")
            if self._pass:
                from nbviz.methods.gradient_pass import gradient_pass

                # "top" is each method's own default (the top class), read from these outputs
                first = None if plan.target == "top" else self._targets(None, labels)
                got = gradient_pass(self.model, raw, members=[m.key for m in self._pass], target=first,
                                    layer=plan.layer, preprocess=plan.preprocess, outputs=True)
                outputs = np.asarray(got.pop("outputs"), np.float32)
                maps = {m.name: got[m.key] for m in self._pass}
            else:
                outputs, maps = self._predict(raw), {}
            target = self._targets(outputs, labels)
            maps.update(self._explain(raw, target))
        return outputs, target, {m.name: maps[m.name] for m in plan.methods}

    def _predict(self, raw: np.ndarray) -> np.ndarray:
        _, images, _ = self._core.prepare(self.model, raw, self.plan.preprocess)
        out = self._forward(images, None)
        return np.asarray(out.numpy(), np.float32)

    def _targets(self, outputs, labels):
        t = self.plan.target
        if t is None:
            return None
        if t == "top":
            return np.argmax(outputs, axis=-1).astype(np.int64)
        if t == "label":
            return np.asarray(labels, np.int64)
        return t

    def _explain(self, raw, target) -> dict:
        out = {}
        for spec, fn in self._functions:
            kwargs = dict(spec.kwargs)
            if spec.takes_layer and self.plan.layer is not None:
                kwargs["layer"] = self.plan.layer
            maps = fn(self.model, raw, target=target, preprocess=self.plan.preprocess, **kwargs)
            maps = np.asarray(maps, np.float32)
            if maps.shape[0] != raw.shape[0]:
                raise ValueError(f"method {spec.name!r} returned {maps.shape[0]} maps for "
                                 f"{raw.shape[0]} images")
            out[spec.name] = maps
        return out

    # ---------------------------------------------------------------- a batch

    def process(self, items: Sequence[Item]) -> Batch:
        plan = self.plan
        n = len(items)
        errors, good, pixels = [""] * n, [], []
        for i, item in enumerate(items):
            try:
                if plan.target == "label" and item.label is None:
                    raise ImageError("no label, and target='label' explains the labelled class")
                if item.label is not None and self.classes is not None and not 0 <= item.label < self.classes:
                    raise ImageError(f"label {item.label} is not a class of the model (0..{self.classes - 1})")
                image = load_image(item, channels=plan.channels, size=plan.size, resize=plan.resize)
            except ImageError as exc:
                errors[i] = str(exc)
                continue
            good.append(i)
            pixels.append(image)
        width = self.output_width
        if self.map_shapes is None and not good:
            self._learn_shapes()
        # per-item arrays: a batch's own result when it holds every item (no copy), else zeros
        # with the usable items' rows filled in
        arrays: dict = {}

        def put(name, rows, values):
            if len(rows) == n:
                arrays[name] = values
                return
            if name not in arrays:
                arrays[name] = np.zeros((n, *values.shape[1:]), values.dtype)
            arrays[name][rows] = values

        metrics = {f"{mt.name}_{m.name}": np.full(n, np.nan) for m in plan.methods for mt in plan.metrics}
        targets: list = [None] * n
        for start in range(0, len(good), plan.batch_size):
            rows = good[start:start + plan.batch_size]
            chunk = pixels[start:start + plan.batch_size]
            raw = np.stack(chunk)
            pad = plan.batch_size - len(rows)
            if pad:  # same shape every batch: the compiled functions are reused
                raw = np.concatenate([raw, np.repeat(raw[-1:], pad, axis=0)])
            labels = [items[i].label if items[i].label is not None else 0 for i in rows]
            labels += [labels[-1]] * pad
            out, target, result = self._compute(raw, labels)
            real = len(rows)
            put("thumbs", rows, thumbnails(raw[:real], plan.thumbnail_size,
                                           byte_range=plan.image_dtype == "uint8"))
            if plan.store_images:
                put("images", rows, raw[:real].astype(plan.image_dtype, copy=False))
            if width:
                put("outputs", rows, out[:real])
            for k, v in result.items():
                put(("map", k), rows, v[:real])
            for j, i in enumerate(rows):
                if target is None:
                    targets[i] = int(np.argmax(out[j])) if width else None
                else:
                    targets[i] = int(np.asarray(target).reshape(-1)[j] if np.ndim(target) else target)
                for spec, fn in self._metrics:
                    for m in plan.methods:
                        value = fn(self.model, chunk[j], result[m.name][j],
                                   target=targets[i], preprocess=plan.preprocess)
                        metrics[f"{spec.name}_{m.name}"][i] = metric_value(value)
        maps = {k[1]: v for k, v in arrays.items() if isinstance(k, tuple)}
        if self.map_shapes is None:
            self.map_shapes = {k: v.shape[1:] for k, v in maps.items()}
        for k, shape in self.map_shapes.items():  # a batch without a usable item
            maps.setdefault(k, np.zeros((n, *shape), np.float32))
        thumbs = arrays.get("thumbs")
        if thumbs is None:
            thumbs = np.zeros((n, *thumbnail_shape(*plan.size, plan.thumbnail_size), plan.channels), np.uint8)
        images = arrays.get("images")
        if plan.store_images and images is None:
            images = np.zeros((n, *plan.size, plan.channels), plan.image_dtype)
        outputs = arrays.get("outputs", np.zeros((n, width), np.float32))
        return Batch(
            index=np.array([it.index for it in items], np.int64), ids=[it.id for it in items],
            paths=[it.path for it in items], labels=[it.label for it in items], error=errors,
            outputs=outputs, targets=targets, maps=maps, metrics=metrics, thumbs=thumbs, images=images)

