"""Watch a model learn: :class:`Recorder`, a Keras callback that records maps, effective receptive
fields and feature visualisations of a fixed probe set during training.

::

    rec = nbviz.callbacks.Recorder(images[:4], methods=("gradcam", "saliency"), out="runs/a",
                                   tensorboard="logs/a")
    model.fit(x, y, epochs=5, callbacks=[rec])
    run = nbviz.callbacks.open_run("runs/a")
    run.epochs                       # [0., 1., 2., 3., 4., 5.]: 0 is before training
    run.maps(3, "gradcam", image=0)  # H×W, as after the third epoch
    run.erf_table()                  # ERF side / radius / TRF / ratio per record and layer

The run store's layout is described in :mod:`nbviz.runstore`; the ERF size in
:mod:`nbviz.methods.erf`.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import numbers
import os
import random
import time
import warnings
from typing import Callable

import numpy as np
import keras

from nbviz.runstore import Run, RunWriter, open_run

__all__ = ["Recorder", "open_run", "Run"]

_BAD_ROWS = ("point", "channel")  # methods that need a click or a channel are not maps of images


class Recorder(keras.callbacks.Callback):
    """Record what a model looks at while it trains; it never changes the training.

    Parameters
    ----------
    images: the probe set, one H×W×C image or an N×H×W×C batch, as the model's data comes (raw:
        ``preprocess`` maps it to the model's input, as for every nbviz method).
    methods: keys of the method table (:mod:`nbviz.methods.table`, e.g. "gradcam", "saliency",
        "gradcam_pp", "guided_backprop", "smoothgrad", "integrated_gradients", "occlusion"), or
        functions ``fn(model, images, *, target=None, ...) -> numpy``, or ``(name, fn)`` pairs.
        Each is called once per record on the whole probe batch, with its defaults and
        ``target``.
    layers: the layers whose effective receptive field is measured (names or paths; default:
        every convolution). Each must have a spatial (h×w×c) output.
    erf: measure the ERF (see :mod:`nbviz.methods.erf`: the side of the smallest centred square
        holding ``erf_mass`` of the centre cell's input-gradient mass, the same as a radius, the
        theoretical size and their ratio).
    featvis: ``((layer, channel), ...)``: a short feature visualisation
        (:func:`nbviz.featvis.render`, same seed at every record) of each pair;
        ``featvis_options`` are its keyword arguments (default ``steps=32``, 64 px, pixel
        parametrisation; give ``preprocess`` when the model wants another range than [0, 1]).
    every: record after every ``every``-th epoch; ``every_batches``: record every that many
        optimiser steps instead (epoch ends are then not recorded separately).
    initial: also record before the first training step (epoch 0).
    out: folder of the run store (:mod:`nbviz.runstore`); ``tensorboard``: a log folder for
        TensorBoard image summaries (maps, ERF maps, featvis) and scalars (``erf/<layer>``,
        ``erf_trf/<layer>``, ``recorder/seconds``), written with ``tf.summary``'s own writer.
        At least one of them is needed.
    target, preprocess: as for every method (one ``target`` for all probe images, or one per
        image as the methods accept).
    erf_mass: fraction of the gradient mass the ERF holds, in (0, 1].

    Training is the same with and without it: it reads the weights and never writes them, runs
    the model in inference mode (BatchNorm statistics are not updated), uses only seeded random
    generators of its own and leaves the global ones (Python, NumPy, TensorFlow's eager op seeds,
    Keras' global seed generator) as it found them, and its layer interceptions are scoped. Its
    compiled functions are traced at the first record and reused afterwards (the weights change,
    the graphs do not). Its cost per record is in the store (``seconds``), in the Keras logs as
    ``recorder_seconds`` (summed over the records of the epoch) and in :attr:`seconds`.
    """

    def __init__(self, images, *, methods=("gradcam", "saliency"), layers=None, erf: bool = True,
                 featvis=(), featvis_options=None, every: int = 1, every_batches: int | None = None,
                 initial: bool = True, out=None, tensorboard=None, target=None,
                 preprocess: Callable | None = None, erf_mass: float = 0.95):
        super().__init__()
        self.every = _positive_int(every, "every")
        self.every_batches = None if every_batches is None else _positive_int(every_batches, "every_batches")
        if out is None and tensorboard is None:
            raise ValueError("out and tensorboard are both None: give out=FOLDER for the run store, "
                             "tensorboard=LOGDIR for TensorBoard, or both")
        for name, value in (("out", out), ("tensorboard", tensorboard)):
            if value is not None and not isinstance(value, (str, os.PathLike)):
                raise TypeError(f"{name} must be a folder path (str or os.PathLike), got {type(value).__name__}")
        from nbviz.methods.erf import _check_mass

        self.erf_mass = _check_mass(erf_mass)
        self.erf = bool(erf)
        self.initial = bool(initial)
        self.out, self.tensorboard = out, tensorboard
        self.target, self.preprocess = target, preprocess
        if preprocess is not None and not callable(preprocess):
            raise TypeError(f"preprocess must be callable(images) -> images, got {type(preprocess).__name__}")
        self.methods = _methods(methods)
        self.layer_specs = layers
        self.featvis_pairs = _pairs(featvis)
        self.featvis_options = {"steps": 32, "size": 64, "param": "pixel", "jitter": 2,
                                "scale": None, "rotate": 0.0, "pad": 2, **dict(featvis_options or {})}
        array = images.numpy() if hasattr(images, "numpy") else np.asarray(images)
        if array.dtype == object or not np.issubdtype(array.dtype, np.number) or array.ndim not in (3, 4):
            raise ValueError(f"images must be an H×W×C image or an N×H×W×C batch of numbers, got "
                             f"dtype {array.dtype} and shape {array.shape}")
        self.images = np.array(array[None] if array.ndim == 3 else array)  # our own copy
        self.seconds: list[dict] = []  # cost of every record, by part
        self.erf_sizes: list[list] = []  # ErfSize list of every record
        self._ready = False
        self._recorded_initial = False
        self._epoch_seconds = 0.0
        self._steps_done = 0
        self._epoch_index = 0

    # ---------------------------------------------------------------- set-up

    def _setup(self):
        if self._ready:
            return
        with _global_rng_kept():
            self._setup_now()

    def _setup_now(self):
        from nbviz.probe import probe
        from nbviz.methods import erf as erf_module
        from nbviz.methods.receptive_field import receptive_field

        model = self.model
        p = probe(model)
        self._probe = p
        batch, _ = p.prepare(self.images, preprocess=self.preprocess)
        self._batch = batch
        self._paths = erf_module.spatial_paths(p, self.layer_specs) if self.erf else ()
        size = tuple(batch.shape[1:3])
        self._trf = {}
        for path in self._paths:
            rf = receptive_field(model, path, input_shape=size)
            self._trf[path] = rf
        for layer, _channel in self.featvis_pairs:
            info = p.layer(layer)
            if not info.is_spatial:
                raise ValueError(f"featvis: layer {info.path!r} has output shape {info.output_shape}, "
                                 "not a spatial map with channels")
            if not 0 <= _channel < info.output_shape[-1]:
                raise ValueError(f"featvis: channel {_channel} is out of range: layer {info.path!r} "
                                 f"has {info.output_shape[-1]} channels")
        header = {
            "methods": [{"name": name, "display": display} for name, _, display in self.methods],
            "layers": [{"path": path, "trf_size": list(rf.size), "trf_stride": list(rf.stride),
                        "cell": list(erf_module.centre_cell(p.layer(path).output_shape)),
                        "center": list(rf.center(erf_module.centre_cell(p.layer(path).output_shape)))}
                       for path, rf in self._trf.items()],
            "featvis": [[p.layer(layer).path, channel] for layer, channel in self.featvis_pairs],
            "featvis_options": {k: v for k, v in self.featvis_options.items() if k != "preprocess"},
            "erf_mass": self.erf_mass,
            "target": self.target if isinstance(self.target, (int, type(None))) else repr(self.target),
            "model": model.name,
        }
        self._writer = RunWriter(self.out, header, self.images) if self.out is not None else None
        self._tb = None
        if self.tensorboard is not None:
            import tensorflow as tf

            self._tb = tf.summary.create_file_writer(os.fspath(self.tensorboard))
        self._ready = True

    # ---------------------------------------------------------------- Keras hooks

    def set_model(self, model):
        if getattr(self, "_model", None) is not model:  # another model: set up again
            self._ready = False
        super().set_model(model)

    def on_train_begin(self, logs=None):
        self._setup()

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_seconds = 0.0
        self._epoch_index = int(epoch)
        if self.initial and not self._recorded_initial:
            self._recorded_initial = True
            self.record(epoch=float(epoch))

    def on_train_batch_end(self, batch, logs=None):
        self._steps_done += 1
        if self.every_batches is None:
            return
        step = self._step()
        if step % self.every_batches == 0:
            steps = (self.params or {}).get("steps")
            epoch = self._epoch_index + ((batch + 1) / steps if steps else 0.0)
            self._epoch_seconds += self.record(epoch=epoch, logs=logs, step=step)["total"]

    def on_epoch_end(self, epoch, logs=None):
        if self.every_batches is None and (epoch + 1) % self.every == 0:
            self._epoch_seconds += self.record(epoch=float(epoch + 1), logs=logs)["total"]
        if logs is not None:
            logs["recorder_seconds"] = self._epoch_seconds

    # ---------------------------------------------------------------- one record

    def _step(self) -> int:
        optimizer = getattr(self.model, "optimizer", None)
        iterations = getattr(optimizer, "iterations", None)
        if iterations is not None:
            return int(np.asarray(iterations))
        return self._steps_done

    def record(self, *, epoch: float, logs=None, step: int | None = None) -> dict:
        """Record now (the hooks call this); returns the seconds it took, by part."""
        self._setup()
        start = time.perf_counter()
        step = self._step() if step is None else int(step)
        seconds = {}
        with _global_rng_kept():
            t = time.perf_counter()
            maps, dead = [], []
            for name, fn, _display in self.methods:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    m = fn(self.model, self._batch, **_kwargs(fn, self.target))
                if any("zero everywhere" in str(w.message) for w in caught):
                    dead.append(name)
                maps.append(np.asarray(m, dtype=np.float32))
            seconds["maps"] = time.perf_counter() - t
            t = time.perf_counter()
            erf_maps, sizes = [], []
            if self.erf and self._paths:
                from nbviz.methods import erf as erf_module
                from nbviz.methods.receptive_field import receptive_field

                erf_maps = list(erf_module.erf_gradients(self.model, self._batch, self._paths))
                size = tuple(self._batch.shape[1:3])
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    sizes = [erf_module.measure(self.model, path, g, size, self.erf_mass, receptive_field)
                             for path, g in zip(self._paths, erf_maps)]
            seconds["erf"] = time.perf_counter() - t
            t = time.perf_counter()
            pictures = self._featvis()
            seconds["featvis"] = time.perf_counter() - t
        clean_logs = {k: float(v) for k, v in (logs or {}).items() if _is_number(v)}
        meta = {"step": step, "epoch": float(epoch), "logs": clean_logs,
                "erf": [s.as_dict() for s in sizes], "dead": dead}
        t = time.perf_counter()
        if self._tb is not None:
            self._tensorboard(step, maps, erf_maps, sizes, pictures)
        seconds["tensorboard"] = time.perf_counter() - t
        seconds["write"] = 0.0
        seconds["total"] = time.perf_counter() - start
        if self._writer is not None:
            t = time.perf_counter()
            meta["seconds"] = {k: v for k, v in seconds.items() if k != "write"}
            self._writer.write(meta, maps, erf_maps, pictures)
            seconds["write"] = time.perf_counter() - t
            seconds["total"] = time.perf_counter() - start
        if self._tb is not None:
            import tensorflow as tf

            with self._tb.as_default():
                tf.summary.scalar("recorder/seconds", seconds["total"], step=step)
            self._tb.flush()
        self.seconds.append(seconds)
        self.erf_sizes.append(sizes)
        return seconds

    def _featvis(self) -> list:
        if not self.featvis_pairs:
            return []
        from nbviz import featvis as fv

        out = []
        for layer, channel in self.featvis_pairs:
            picture = fv.render(self.model, fv.channel(layer, channel), seed=0, **self.featvis_options)
            out.append(picture[0])
        return out

    def _tensorboard(self, step, maps, erf_maps, sizes, pictures):
        import tensorflow as tf
        from nbviz import render

        with self._tb.as_default():
            for (name, _, display), m in zip(self.methods, maps):
                frames = np.stack([render.heatmap(_display_map(a, display), alpha=1.0)[..., :3]
                                   for a in m])
                tf.summary.image(f"maps/{name}", frames, step=step, max_outputs=len(frames))
            for path, g, s in zip(self._paths, erf_maps, sizes):
                frame = render.heatmap(render.normalize(g), cmap="viridis", alpha=1.0)[None, ..., :3]
                tf.summary.image(f"erf_map/{path}", frame, step=step)
                if not math.isnan(s.side):
                    tf.summary.scalar(f"erf/{path}", s.side, step=step)
                    tf.summary.scalar(f"erf_trf/{path}", s.ratio, step=step)
            for (layer, channel), picture in zip(self.featvis_pairs, pictures):
                tf.summary.image(f"featvis/{layer}/{channel}", picture[None], step=step)
        self._tb.flush()

    def trace_count(self) -> int:
        """Traces of every compiled function of the model's probe so far (the Recorder's own
        and the methods'): constant after the first record."""
        from nbviz.probe import probe

        return probe(self.model).trace_count()


# --------------------------------------------------------------------------- helpers


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return int(value)


def _is_number(value) -> bool:
    try:
        return np.ndim(value) == 0 and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _methods(methods) -> list[tuple[str, Callable, str]]:
    from nbviz.methods import table

    if isinstance(methods, (str, bytes)) or callable(methods):
        methods = (methods,)
    try:
        methods = tuple(methods)
    except TypeError:
        raise TypeError(f"methods must be a tuple of method keys or functions, got {methods!r}") from None
    out = []
    for item in methods:
        if isinstance(item, str):
            try:
                row = table.method(item)
            except ValueError as e:
                raise ValueError(f"methods: {e}") from None
            if row.on_demand or set(row.needs) & set(_BAD_ROWS) or row.display in ("field", "picture"):
                raise ValueError(f"methods: {item!r} is not a map of the probe images (it needs "
                                 f"{sorted(row.needs)}, display {row.display!r}); use featvis= for "
                                 "feature visualisation and layers= for receptive fields")
            out.append((item, row.function_object(), row.display))
        elif isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str) and callable(item[1]):
            out.append((item[0], item[1], "auto"))
        elif callable(item):
            out.append((getattr(item, "__name__", type(item).__name__), item, "auto"))
        else:
            raise ValueError(f"methods: {item!r} is neither a method key nor a function")
    names = [name for name, _, _ in out]
    if len(set(names)) != len(names):
        raise ValueError(f"methods: names must be unique, got {names}")
    return out


def _pairs(featvis) -> tuple:
    if featvis is None:
        return ()
    try:
        pairs = tuple(tuple(p) for p in featvis)
    except TypeError:
        raise ValueError(f"featvis must be ((layer, channel), ...), got {featvis!r}") from None
    for pair in pairs:
        if (len(pair) != 2 or not isinstance(pair[0], str) or isinstance(pair[1], bool)
                or not isinstance(pair[1], numbers.Integral)):
            raise ValueError(f"featvis must be ((layer, channel), ...) with a layer name and an int "
                             f"channel, got {pair!r}")
    return tuple((layer, int(channel)) for layer, channel in pairs)


def _kwargs(fn, target) -> dict:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return {"target": target}
    if "target" in params or any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return {"target": target}
    return {}


def _display_map(a: np.ndarray, display: str) -> np.ndarray:
    """One image's map as H×W in [0, 1] for a TensorBoard picture."""
    from nbviz import render

    if a.ndim == 3 or display in ("signed", "rgb"):
        return render.attribution_map(a)
    return render.normalize(a)


@contextlib.contextmanager
def _global_rng_kept():
    """Leave Python's, NumPy's, TensorFlow's eager op-seed and Keras' global random state as
    they were (set-up may build models, e.g. an RF-mode copy, whose initialisers draw from them)."""
    from tensorflow.python.eager import context as tf_context
    from keras.src.backend.common import global_state

    py, npy = random.getstate(), np.random.get_state()
    ctx = tf_context.context()
    ctx_rng = getattr(ctx, "_rng", None)
    ctx_state = ctx_rng.getstate() if ctx_rng is not None else None
    gen = global_state.get_global_attribute("global_seed_generator")
    gen_state = None if gen is None else np.array(gen.state.value)
    try:
        yield
    finally:
        random.setstate(py)
        np.random.set_state(npy)
        if ctx_rng is not None and getattr(ctx, "_rng", None) is ctx_rng:
            ctx_rng.setstate(ctx_state)
        if gen is not None:
            gen.state.assign(gen_state)
