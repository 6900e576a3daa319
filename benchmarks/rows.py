"""The rows measured in nbviz's own process: floors and every nbviz method.

``factory(spec) -> call(i)`` prepares one row (the worker calls it once) and returns the call
that one sample times. Sample ``i`` gets new input ``i`` (image, class, cell or channel), so no
row is timed on a result it has already cached. nbviz rows return their new compiled-function
traces as an extra (0 after warm-up means no retracing).

Row specs (plain JSON, written by :mod:`run`):

* ``{"kind": "floor", "name": "forward" | "fwd_bwd" | "fwd_bwd_xla", "batch": N}``: the bare
  compiled TensorFlow work, see :mod:`floor`;
* ``{"kind": "method", "name": KEY, "batch": N, "options": {...}}``: a row of nbviz's method
  table (``nbviz.methods.table``) called as a user calls it: ``fn(model, image, target=k,
  **options)``;
* ``{"kind": "receptive_field" | "gradient_rf" | "featvis" | "explorer_click" | "frame_512"}``.

Every spec also names the model (``model``, ``size``, ``weights``) and the inputs (``images``:
a .npy file, ``classes``).
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, Callable

import numpy as np
import tensorflow as tf

import models
from floor import forward_fn, fwd_bwd_fn, onehot

_MODELS: dict[tuple, Any] = {}


def versions() -> dict:
    import keras

    import nbviz
    return {"env": "nbviz", "nbviz": nbviz.__version__, "tensorflow": tf.__version__,
            "keras": keras.__version__, "numpy": np.__version__}


def model_of(spec: dict):
    """The spec's model, loaded once per worker (name, size, weights file)."""
    key = (spec["model"], spec["size"], spec["weights"])
    if key not in _MODELS:
        _MODELS[key] = models.load(spec["model"], spec["size"], spec["weights"])
    return _MODELS[key]


def batches(spec: dict) -> Callable[[int], tuple[np.ndarray, int]]:
    """``i -> (image or batch, class)``: consecutive images, cycled, one new batch per sample."""
    images = np.load(spec["images"])
    classes = np.asarray(spec["classes"])
    n, b = len(images), int(spec.get("batch", 1))

    def get(i: int):
        idx = (b * i + np.arange(b)) % n
        x = images[idx] if b > 1 else images[idx[0]]
        return x, int(classes[idx[0]])
    return get


def nbviz_probe(model):
    from nbviz.probe import probe
    return probe(model)


def _traces(model) -> Callable[[], int]:
    from nbviz.probe import probe
    return lambda: probe(model).trace_count()


def _counting(model, run: Callable[[int], Any]) -> Callable[[int], dict]:
    count = _traces(model)

    def call(i: int) -> dict:
        before = count()
        out = run(i)
        if hasattr(out, "numpy"):
            out.numpy()
        return {"extras": {"traces": count() - before}}
    return call


def factory(spec: dict) -> Callable[[int], Any]:
    kind = spec["kind"]
    model = model_of(spec)
    if kind == "floor":
        return floor_row(model, spec)
    from nbviz.probe import clear_cache
    clear_cache()  # the first sample pays what a user's first call pays
    get = batches(spec)
    if kind == "recorder":
        return training_epoch(record=True)
    if kind == "method":
        from nbviz.methods import table
        fn = table.method(spec["name"]).function_object()
        options = dict(spec.get("options", {}))

        def run(i):
            x, k = get(i)
            return fn(model, x, target=k, **options)
        return _counting(model, run)
    if kind == "receptive_field":
        import nbviz
        return _counting(model, lambda i: nbviz.receptive_field(model))
    if kind == "gradient_rf":
        import nbviz
        rf = nbviz.receptive_field(model)
        h, w = rf.output_shape[:2]
        mode = spec.get("options", {}).get("mode", "theoretical")

        def run(i):
            x, _ = get(i)
            cell = ((3 * i + h // 2) % h, (5 * i + w // 2) % w)
            return nbviz.gradient_rf(model, cell, image=x, mode=mode).map
        return _counting(model, run)
    if kind == "featvis":
        from nbviz import featvis
        layer, steps = spec["options"]["layer"], int(spec["options"]["steps"])
        return _counting(model, lambda i: featvis.render(model, featvis.channel(layer, i), steps=steps))
    if kind == "curves":
        # deletion + insertion, 20 steps each, for a saliency map computed beforehand (untimed)
        from nbviz import metrics
        from nbviz.methods.gradients import saliency
        maps = {}

        def timed_curves(i):
            x, k = get(i)
            if i not in maps:
                maps.clear()
                maps[i] = saliency(model, x, target=k)
            wall, cpu = time.perf_counter(), time.process_time()
            before = _traces(model)()
            metrics.curves(model, x, maps[i], target=k, steps=20, batch_size=64)
            return {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu,
                    "traces": _traces(model)() - before}
        return timed_curves
    if kind == "randomisation":
        # the model-randomisation check of one method through every layer (cascade), on the
        # shipped demo model (the target is stated for it), a new demo scene per sample
        from nbviz import demo, sanity
        method = spec.get("options", {}).get("method", "gradcam")
        demo_model = demo.load_model()
        return lambda i: sanity.model_randomisation(method, demo_model, demo.image(i % 32))
    if kind == "dictionary":
        # the semantic dictionary at a new cell of a new image (one forward/backward)
        import nbviz
        layer = spec["options"]["layer"]
        h, w = nbviz.probe.probe(model).layer(layer).output_shape[1:3]

        def run(i):
            x, k = get(i)
            return nbviz.dictionary(model, x, layer, ((3 * i) % h, (5 * i) % w), k=8, target=k,
                                    by="attribution")
        return _counting(model, run)
    if kind == "neuron_groups":
        import nbviz
        layer = spec["options"]["layer"]
        return lambda i: nbviz.neuron_groups(model, get(i)[0], layer, n=6)
    if kind == "icons":
        # 8 channels rendered as one batch (no disk cache), or read back from the disk cache
        import tempfile

        from nbviz import featvis
        o = spec["options"]
        cached = bool(o.get("cached"))
        root = tempfile.mkdtemp(prefix="nbviz-bench-icons-")
        cache = featvis.IconCache(root) if cached else False

        count = int(nbviz_probe(model).layer(o["layer"]).output_shape[-1])

        def run(i):
            channels = list(range(8)) if cached else [(8 * i + c) % count for c in range(8)]
            return featvis.icons(model, o["layer"], channels, size=int(o["size"]),
                                 steps=int(o["steps"]), cache=cache, param="fft")
        if cached:
            run(0)  # fill the cache once: every sample is then a hit
        return _counting(model, run)
    if kind == "dataset":
        # explain_dataset on 256 new images (8 batches of 32, shards of 64), Grad-CAM, into a new
        # store each sample; engine "local", or "ray" with ``actors`` actors on a Ray started
        # once in this worker (each call builds its actor pool: its start-up is an extra)
        import shutil
        import tempfile

        import nbviz
        o = spec.get("options", {})
        engine, actors = o.get("engine", "local"), int(o.get("actors", 1))
        store_images = o.get("store_images")  # None: the default (an array's pixels are stored)
        writes = contextlib.nullcontext if o.get("write_arrays", True) else _arrays_not_written
        images = np.load(spec["images"])
        root = tempfile.mkdtemp(prefix="nbviz-bench-dataset-")
        if engine == "ray":
            import ray
            if not ray.is_initialized():
                ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
            source = spec["weights"].replace(".weights.h5", ".keras")
            model.save(source)
        else:
            source = model

        def run(i):
            batch = images[(DATASET_IMAGES * i + np.arange(DATASET_IMAGES)) % len(images)]
            out = f"{root}/{i}"
            t0 = time.perf_counter()
            with writes():
                r = nbviz.explain_dataset(source, batch, methods=("gradcam",), out=out, engine=engine,
                                          batch_size=32, shard_size=64, progress=False,
                                          num_actors=actors, store_images=store_images)
            wall = time.perf_counter() - t0
            run_info = r.manifest["runs"][-1]
            shutil.rmtree(out, ignore_errors=True)
            # "after start-up": from the first batch back to the end (the steady state)
            return {"extras": {"startup": run_info["first_batch_s"], "store": run_info["write_s"],
                               "after_startup": wall - run_info["setup_s"] - run_info["first_batch_s"]}}
        return run
    if kind in ("explorer_click", "frame_512", "session_switch", "session_first_partial", "compare4"):
        import widget_rows
        return getattr(widget_rows, kind)(model, spec, get)
    raise ValueError(f"unknown row kind {kind!r}")


@contextlib.contextmanager
def _arrays_not_written():
    """The local engine with a store that writes no arrays (maps, thumbnails, pixels; the tables,
    ``shard.json`` and the renames stay): everything else is the same run, so nbviz's row over
    this one is the time the arrays' writing adds to a run (the writer overlaps the computing, so
    its own busy time is not that)."""
    from nbviz.dataset.store import ShardWriter

    class Sink:
        oindex = property(lambda self: self)

        def __setitem__(self, key, value):
            pass

    real = ShardWriter._array
    ShardWriter._array = lambda self, name, data: Sink()
    try:
        yield
    finally:
        ShardWriter._array = real


def training_epoch(record: bool) -> Callable[[int], Any]:
    """One epoch of ``model.fit`` of the demo CNN (512 shipped-style scenes, batch 64) per
    sample, with a :class:`nbviz.callbacks.Recorder` on 4 probe scenes (Grad-CAM, saliency and
    the ERF of every convolution, written to a run store) or without one (the floor). Each row
    trains its own seeded copy, so the two rows do the same training work."""
    import tempfile

    import keras

    from nbviz import demo
    from nbviz.callbacks import Recorder
    from nbviz.demo.shapes import scenes
    from nbviz.demo.train import build_model

    keras.utils.set_random_seed(0)
    model = build_model()
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
    data = scenes(512, seed=0)
    x, y = data.images.astype("float32"), data.labels
    callbacks = []
    if record:
        probe_images = demo.load_images().images[:4].astype("float32")
        callbacks.append(Recorder(probe_images, methods=("gradcam", "saliency"), initial=False,
                                  out=tempfile.mkdtemp(prefix="nbviz-bench-recorder-")))
    epoch = [0]

    def run(i):
        model.fit(x, y, batch_size=64, initial_epoch=epoch[0], epochs=epoch[0] + 1,
                  callbacks=callbacks, verbose=0)
        epoch[0] += 1
    return run


#: images per sample of the dataset rows (their floor: the bare method on as many, in batches)
DATASET_IMAGES = 256


def floor_row(model, spec: dict) -> Callable[[int], Any]:
    """The floor: ``forward`` or ``fwd_bwd`` (XLA-compiled with ``fwd_bwd_xla``) at ``batch``;
    ``ascent``: a bare batched gradient-ascent loop on a channel's mean (see :mod:`floor`)."""
    name = spec["name"]
    if name == "ascent":
        from floor import ascent_fn
        o = spec["options"]
        fn = ascent_fn(model, o["layer"], batch=int(spec.get("batch", 8)), size=int(o["size"]),
                       steps=int(o["steps"]))
        return lambda i: fn(8 * i)
    if name == "fit_epoch":
        return training_epoch(record=False)
    get = batches(spec)
    n_classes = int(model.outputs[0].shape[-1])
    if name == "dataset_local":  # the local engine is the Ray rows' reference
        return factory({**spec, "kind": "dataset", "options": {"engine": "local"}})
    if name not in ("forward", "fwd_bwd", "fwd_bwd_xla"):  # a method of the table, bare, at batch
        from nbviz.methods import table
        fn = table.method(name).function_object()
        images, b = np.load(spec["images"]), int(spec.get("batch", 1))
        chunk = int(spec.get("chunk") or b)

        def bare(i):  # b images (the dataset rows' own of round i) as calls of `chunk`
            picked = images[(b * i + np.arange(b)) % len(images)]
            return [fn(model, picked[j:j + chunk]) for j in range(0, b, chunk)][-1]
        return bare
    if name == "forward":
        fn = forward_fn(model)
        b, chunk = int(spec.get("batch", 1)), int(spec.get("chunk") or spec.get("batch", 1))
        if chunk >= b:
            return lambda i: fn(tf.constant(_batch(get(i)[0])))
        images = np.load(spec["images"])
        cycle = [tf.constant(images[(chunk * j + np.arange(chunk)) % len(images)]) for j in range(8)]

        def chunks(i):  # b images as forward passes of `chunk` (the last one padded, as methods do)
            return [fn(cycle[(i + j) % len(cycle)]) for j in range(-(-b // chunk))][-1]
        return chunks
    fn = fwd_bwd_fn(model, jit_compile=name == "fwd_bwd_xla")
    b = int(spec.get("batch", 1))

    def call(i):
        x, k = get(i)
        return fn(tf.constant(_batch(x)), onehot([k] * b, n_classes))
    return call


def _batch(x: np.ndarray) -> np.ndarray:
    return x if x.ndim == 4 else x[None]
