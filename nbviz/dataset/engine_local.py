"""``engine="local"``: every batch in the calling process, one :class:`~nbviz.dataset.worker.Worker`.

The worker is built once (its functions compile once, at the run's batch shape); the items of
the pending shards are read in order, the finished shards' items skipped without loading, and
each shard is written as soon as its last batch is done.
"""

from __future__ import annotations

from nbviz.dataset.worker import Worker

__all__ = ["run_local"]


def run_local(model, plan, source, pending, assembler, bar) -> None:
    worker = Worker(model, plan)
    wanted = set(pending)
    size = assembler.shard_size
    first = min(pending) * size
    batch: list = []

    def flush():
        if batch:
            result = worker.process(batch)
            assembler.add(result)
            bar.update(len(batch))
            batch.clear()

    for item in source.items(first):
        k = item.index // size
        if k not in wanted:
            continue
        if batch and batch[-1].index // size != k:
            flush()  # a batch never spans two shards: each shard is written once its batch is in
        batch.append(item)
        if len(batch) == plan.batch_size:
            flush()
    flush()
