"""``engine="ray"``: Ray Data ``map_batches`` over a pool of actors, each with its own worker.

Each actor builds its model once (loading the ``.keras`` file, or calling the factory) and one
:class:`~nbviz.dataset.worker.Worker`, whose compiled functions serve every batch that actor
gets. The driver keeps the results store: batches come back (in any order), are gathered by
shard, and each shard is written as soon as it is complete, exactly as with the local engine.

``ray.init(address=...)`` joins an existing cluster (``"auto"``, or ``"ray://host:10001"``);
without an address and without a running Ray, a local Ray is started (no dashboard) and shut
down at the end. A Ray that is already initialised in this process is used as it is and left
running. Ray is imported only here (``pip install nbviz[ray]``).
"""

from __future__ import annotations

import numpy as np

from nbviz.dataset.source import Item
from nbviz.dataset.worker import Batch, Worker

__all__ = ["run_ray", "RayExplainer"]


def load_model_spec(spec):
    """A model from what the driver sent: ("path", file, safe_mode) or ("factory", callable)."""
    kind = spec[0]
    if kind == "path":
        from nbviz.dataset.modelfile import load_model_file

        return load_model_file(spec[1], safe_mode=spec[2])
    if kind == "factory":
        return spec[1]()
    raise ValueError(f"unknown model spec {kind!r}")


class RayExplainer:
    """The callable class run by each actor of the pool (built once per actor)."""

    def __init__(self, model_spec, plan):
        self.worker = Worker(load_model_spec(model_spec), plan)
        self.plan = plan

    def __call__(self, batch: dict) -> dict:
        n = len(batch["index"])
        images = batch.get("image")
        items = [Item(int(batch["index"][i]), "", str(batch["path"][i]) or None,
                      None if int(batch["label"][i]) < 0 else int(batch["label"][i]),
                      None if images is None else np.asarray(images[i])) for i in range(n)]
        result = self.worker.process(items)
        out = {"index": result.index, "error": np.array(result.error, dtype=object),
               "outputs": result.outputs,
               "target": np.array([-1 if t is None else t for t in result.targets], np.int64),
               "thumb": result.thumbs}
        for name, maps in result.maps.items():
            out[f"map:{name}"] = maps
        for name, values in result.metrics.items():
            out[f"metric:{name}"] = values
        if result.images is not None:
            out["images"] = result.images
        return out


def _batch(columns: dict, items: dict) -> Batch:
    index = np.asarray(columns["index"], np.int64)
    meta = [items[int(i)] for i in index]
    return Batch(
        index=index, ids=[m[0] for m in meta], paths=[m[1] for m in meta], labels=[m[2] for m in meta],
        error=[str(e) for e in columns["error"]], outputs=np.asarray(columns["outputs"], np.float32),
        targets=[None if t < 0 else int(t) for t in columns["target"]],
        maps={k[4:]: np.asarray(v, np.float32) for k, v in columns.items() if k.startswith("map:")},
        metrics={k[7:]: np.asarray(v, np.float64) for k, v in columns.items() if k.startswith("metric:")},
        thumbs=np.asarray(columns["thumb"], np.uint8), images=columns.get("images"))


def run_ray(model_spec, plan, source, pending, assembler, bar, *, address=None, num_actors=1,
            num_gpus_per_actor=0, num_cpus_per_actor=1) -> None:
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise ImportError("engine='ray' needs Ray Data: pip install 'nbviz[ray]'") from exc
    started = False
    if not ray.is_initialized():
        if address is not None:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(include_dashboard=False, log_to_driver=False)
        started = True
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False  # the run has its own bar
        size = assembler.shard_size
        wanted = set(pending)
        rows, meta = [], {}
        for item in source.items(min(pending) * size):
            if item.index // size not in wanted:
                continue
            meta[item.index] = (item.id, item.path, item.label)
            row = {"index": item.index, "path": item.path or "",
                   "label": -1 if item.label is None else item.label}
            if item.image is not None:
                row["image"] = np.asarray(item.image)
            rows.append(row)
        dataset = ray.data.from_items(rows, override_num_blocks=max(1, -(-len(rows) // plan.batch_size)))
        dataset = dataset.map_batches(
            RayExplainer, fn_constructor_args=(model_spec, plan), batch_size=plan.batch_size,
            batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=num_actors),
            num_gpus=num_gpus_per_actor,
            num_cpus=num_cpus_per_actor)
        for columns in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            batch = _batch(columns, meta)
            assembler.add(batch)
            bar.update(len(batch.index))
    finally:
        if started:
            ray.shutdown()
