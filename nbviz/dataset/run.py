"""``explain_dataset``: every map and metric of a whole image set, once, into a results store."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Callable

import numpy as np

from nbviz.dataset import store as _store
from nbviz.dataset.source import ImageError, as_source, load_image
from nbviz.dataset.worker import TARGETS, Batch, Plan, resolve_methods, resolve_metrics

__all__ = ["explain_dataset"]

ENGINES = ("local", "ray")


def _positive_int(name, value, lo=1):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
        raise ValueError(f"{name} must be an int >= {lo}, got {value!r}")
    return int(value)


def _model(model, safe_mode: bool, engine: str, out: Path):
    """(keras model for the driver, spec an actor rebuilds it from, description)."""
    import keras

    from nbviz.dataset.modelfile import load_model_file

    if isinstance(model, (str, os.PathLike)):
        obj = load_model_file(model, safe_mode=safe_mode)
        return obj, ("path", str(Path(model).resolve()), safe_mode), str(model)
    if isinstance(model, keras.Model):
        return model, None, model.name  # for Ray: saved into the store once it exists
    if callable(model):
        obj = model()
        if not isinstance(obj, keras.Model):
            raise TypeError(f"the model factory returned {type(obj).__name__}, not a keras.Model")
        return obj, ("factory", model), getattr(model, "__qualname__", repr(model))
    raise TypeError(f"model must be a keras.Model, a saved model path (.keras) or a factory "
                    f"callable returning one; got {type(model).__name__}")


def _weights_digest(model) -> str:
    h = hashlib.sha1()
    for w in model.get_weights():
        h.update(np.ascontiguousarray(w).tobytes())
    return h.hexdigest()[:16]


def _describe(fn) -> str | None:
    if fn is None:
        return None
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


class Assembler:
    """Hands each batch's results to the shards they belong to, as they come.

    One background thread writes every part straight into its shard's temporary folder
    (:class:`~nbviz.dataset.store.ShardWriter`), in order, while the next batches compute (the
    compression and file writes release the GIL), and renames a shard into place once its last
    item is in. At most :data:`QUEUED` parts wait for the writer (then :meth:`add` waits), so
    memory stays flat however long the run. :meth:`close` waits for the writes handed over,
    removes the shards left unfinished and raises the first write error. ``write_s`` is the
    writing thread's time."""

    QUEUED = 4

    def __init__(self, store, pending, write_kwargs, *, batch_rows: int | None = None):
        from concurrent.futures import ThreadPoolExecutor

        self.store = store
        self.shard_size = store.manifest["shard_size"]
        self.counts = {k: 0 for k in pending}
        self.write_kwargs = write_kwargs
        self.batch_rows = batch_rows
        self.write_s = 0.0
        self.written: list[int] = []
        self._open: dict = {}  # shard -> ShardWriter, only touched by the writing thread
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nbviz-store")
        self._futures: list = []
        self.first_at: float | None = None  # perf_counter() when the first batch came back

    def add(self, batch: Batch) -> None:
        self._raise_failed()
        if self.first_at is None:
            self.first_at = time.perf_counter()
        shards = batch.index // self.shard_size
        for k in np.unique(shards):
            k = int(k)
            rows = np.flatnonzero(shards == k)
            part = batch if len(rows) == len(batch.index) else batch.take(rows)
            self.counts[k] += len(rows)
            last = self.counts[k] == len(self.store.shard_range(k))
            self._futures.append(self._writer.submit(self._write, k, part, last))
        while len(self._futures) > self.QUEUED:
            self._futures.pop(0).result()  # the writer is behind: wait (and raise its error)

    def _write(self, k: int, part: Batch, last: bool) -> None:
        t0 = time.perf_counter()
        writer = self._open.get(k)
        if writer is None:
            writer = self._open[k] = _store.ShardWriter(self.store, k, batch_rows=self.batch_rows)
        writer.add(part)
        if last:
            del self._open[k]
            writer.finish(**self.write_kwargs)
            self.written.append(k)
        self.write_s += time.perf_counter() - t0

    def _raise_failed(self) -> None:
        for f in [f for f in self._futures if f.done()]:
            self._futures.remove(f)
            f.result()  # a write error stops the run here

    def close(self) -> None:
        """Wait for every part handed over (also when the run is being interrupted: a complete
        shard is never thrown away), remove unfinished shards, then raise the first write error."""
        self._writer.shutdown(wait=True)
        for writer in self._open.values():
            writer.abort()
        self._open.clear()
        futures, self._futures = self._futures, []
        for f in futures:
            f.result()


def _progress(progress, total, initial):
    from tqdm.auto import tqdm

    kwargs = {"total": total, "initial": initial, "unit": "img", "desc": "explain_dataset",
              "smoothing": 0.1}
    if isinstance(progress, dict):
        kwargs.update(progress)
    elif not progress:
        kwargs["disable"] = True
    return tqdm(**kwargs)


def explain_dataset(model, source, *, methods=("gradcam",), metrics=(), target=None, layer=None,
                    out, engine: str = "local", batch_size: int = 32, shard_size: int = 256,
                    preprocess: Callable | None = None, labels=None, class_names=None, options=None,
                    top_k: int = 5, thumbnail_size: int = 64, store_images: bool | None = None,
                    resize: bool = False, progress=True, overwrite: bool = False, safe_mode: bool = True,
                    ray_address: str | None = None, num_actors: int = 1, num_gpus_per_actor: float = 0,
                    num_cpus_per_actor: float = 1):
    """Explain every image of ``source`` with every method, measure every metric, and keep it all
    in a results store at ``out``; returns the store opened (:func:`nbviz.dataset.open_results`).

    ``model``: a ``keras.Model``, a saved model file (loaded with ``safe_mode``), or a factory
    callable returning a model (called once per process: the driver and each Ray actor).
    ``source``: a folder of PNG/JPEG files (recursive; ``labels=`` a CSV ``path,label`` or a
    mapping, or a ``labels.csv`` in the folder), a numpy array ``N×H×W×C`` (``labels=`` an
    ``(N,)`` int array) or a ``tf.data.Dataset`` of ``image`` or ``(image, label)``; see
    :mod:`nbviz.dataset.source`. Pixels are in the model's raw input space; ``preprocess`` maps
    them into the model's (the methods' own argument).
    ``methods``: keys of :mod:`nbviz.methods.table` whose row has no runner (``"gradcam"``,
    ``"saliency"``, ``"occlusion"``, ...; ``options={key: {control: value}}`` sets their controls)
    or functions ``fn(model, images, *, target=None, preprocess=None[, layer=None]) -> (N, ...)``.
    ``metrics``: names in :mod:`nbviz.metrics` (``"deletion_auc"``, ``"insertion_auc"``; looked
    up when the run starts) or functions ``f(model, image, attribution, *, target, preprocess)
    -> number or result with .auc``; one column ``<metric>_<method>`` each.
    ``target``: None (each method's own default: the top class), ``"top"`` (the predicted class,
    the same for every method), ``"label"`` (the true class; items without a label become
    errors) or an int class. ``layer``: passed to the methods that take one (Grad-CAM's layer).

    ``store_images``: keep each image's pixels in the store, so that the gallery and
    ``Results.image`` need no source later (default: for sources without files, arrays and
    tf.data); as uint8 when they are 8-bit or whole numbers in 0..255, else as float32.

    Work is cut into shards of ``shard_size`` consecutive images; each finished shard is renamed
    into place atomically, so a run that dies and is started again with the same arguments
    continues where it stopped (a different configuration in the same ``out`` is an error;
    ``overwrite=True`` starts afresh). Unusable items (unreadable, unsupported, wrong size) go to
    the errors table with the reason. ``progress``: a tqdm bar (a widget in a notebook) with
    images/s and the remaining time; False for none, or a dict of tqdm arguments.

    ``engine="local"`` runs batches of ``batch_size`` in this process; ``engine="ray"`` runs them
    on a Ray Data actor pool of ``num_actors`` actors (``num_gpus_per_actor`` /
    ``num_cpus_per_actor`` each), joining the cluster at ``ray_address`` or an initialised Ray,
    else starting a local one and shutting it down afterwards.
    """
    t_start = time.perf_counter()
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if out is None:
        raise ValueError("out= is required: the folder of the results store")
    batch_size = _positive_int("batch_size", batch_size)
    shard_size = _positive_int("shard_size", shard_size)
    top_k = _positive_int("top_k", top_k)
    thumbnail_size = _positive_int("thumbnail_size", thumbnail_size, 8)
    num_actors = _positive_int("num_actors", num_actors)
    if target is not None and target not in TARGETS and not (
            isinstance(target, (int, np.integer)) and not isinstance(target, bool) and target >= 0):
        raise ValueError(f"target must be None (each method's top class), 'top', 'label' or a class "
                         f"index >= 0; got {target!r}")
    if preprocess is not None and not callable(preprocess):
        raise TypeError(f"preprocess must be a callable (raw images -> model input), got {preprocess!r}")
    if store_images is not None and not isinstance(store_images, (bool, np.bool_)):
        raise TypeError(f"store_images must be None (store the pixels of sources without files), "
                        f"True or False; got {store_images!r}")
    if store_images is not None:
        store_images = bool(store_images)  # numpy's bool too: the manifest keeps a JSON bool
    out = Path(out)
    method_specs = resolve_methods(methods, options)
    metric_specs = resolve_metrics(metrics)
    src = as_source(source, labels, class_names)
    if target == "label" and (getattr(src, "labels", True) is None or getattr(src, "labelled", True) is False):
        raise ValueError("target='label' needs labels: pass labels= with the source")
    model_obj, model_spec, model_name = _model(model, safe_mode, engine, out)

    from nbviz.probe import probe

    p = probe(model_obj)
    channels = p.image_input.channels
    size = (p.image_input.height, p.image_input.width)
    if None in size:  # a model of any size: the first usable image sets the run's size
        size = None
        for item in src.items(0):
            try:
                size = tuple(load_image(item, channels=channels, size=None, resize=False).shape[:2])
                break
            except ImageError:
                continue
        if size is None:
            raise ValueError("no image of the source could be read")
    if layer is not None:
        layer = p.layer(layer).path  # a typo fails now, with the closest names
    if store_images is None:
        store_images = not src.has_paths
    image_dtype = src.pixel_dtype
    plan = Plan(method_specs, metric_specs, target if not isinstance(target, np.integer) else int(target),
                layer, preprocess, size, channels, batch_size, top_k, thumbnail_size, store_images,
                image_dtype, resize)
    metric_columns = [f"{mt.name}_{m.name}" for m in method_specs for mt in metric_specs]
    if class_names is None and hasattr(src, "class_names"):
        class_names = src.class_names
    from nbviz.methods import table as _table

    config = {
        "methods": [m.name for m in method_specs],
        "method_options": {m.name: m.kwargs for m in method_specs},
        "method_functions": {m.name: _describe(m.function) if m.function else m.key for m in method_specs},
        "metrics": [m.name if m.function is None else _describe(m.function) for m in metric_specs],
        "target": target if not isinstance(target, np.integer) else int(target),
        "layer": layer, "preprocess": _describe(preprocess), "size": list(size), "channels": channels,
        "top_k": top_k, "thumbnail_size": thumbnail_size, "store_images": store_images, "resize": resize,
        "source": src.fingerprint(), "model": {"name": model_name, "weights_sha1": _weights_digest(model_obj)},
        "class_names": None if class_names is None else [str(c) for c in class_names],
    }
    st = _store.Store(out, config, count=len(src), shard_size=shard_size, overwrite=overwrite)
    st.manifest["metric_columns"] = metric_columns
    st.manifest["displays"] = {m.name: (_table.method(m.key).display if m.key else None) for m in method_specs}
    st.save_manifest()
    if engine == "ray" and model_spec is None:  # actors rebuild an in-memory model from our own copy
        path = out / ".model.keras"
        model_obj.save(path)
        model_spec = ("path", str(path.resolve()), False)
    done = st.finished()
    pending = [k for k in range(st.shard_count) if k not in done]
    initial = sum(len(st.shard_range(k)) for k in done)
    write_kwargs = dict(class_names=config["class_names"], top_k=top_k, metric_columns=metric_columns)
    assembler = Assembler(st, pending, write_kwargs, batch_rows=batch_size)
    t_work = time.perf_counter()
    if pending:
        bar = _progress(progress, len(src), initial)
        try:
            if engine == "local":
                from nbviz.dataset.engine_local import run_local

                run_local(model_obj, plan, src, pending, assembler, bar)
            else:
                from nbviz.dataset.engine_ray import run_ray

                run_ray(model_spec, plan, src, pending, assembler, bar, address=ray_address,
                        num_actors=num_actors, num_gpus_per_actor=num_gpus_per_actor,
                        num_cpus_per_actor=num_cpus_per_actor)
        except BaseException:
            bar.close()
            try:  # keep the shards already complete; the run's own error is the one raised
                assembler.close()
            except Exception:  # noqa: BLE001
                pass
            raise
        bar.close()
    assembler.close()
    t_final = time.perf_counter()
    rows, errors = st.finalize(_store.results_schema(metric_columns, config["class_names"] is not None))
    t_end = time.perf_counter()
    st.manifest["runs"].append({
        "engine": engine, "started_at": time.time() - (t_end - t_start), "shards_written": len(assembler.written),
        "images": sum(len(st.shard_range(k)) for k in assembler.written), "wall_s": t_end - t_start,
        "setup_s": t_work - t_start, "work_s": t_final - t_work, "write_s": assembler.write_s,
        "first_batch_s": None if assembler.first_at is None else assembler.first_at - t_work,
        "finalize_s": t_end - t_final, "batch_size": batch_size,
        "num_actors": num_actors if engine == "ray" else None})
    st.save_manifest()
    return _store.open_results(out)
