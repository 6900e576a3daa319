"""Explain a whole dataset in one call and keep the results: :func:`explain_dataset`,
:func:`open_results`.

* :mod:`nbviz.dataset.source`: folders, numpy arrays and ``tf.data`` as one ordered item list;
* :mod:`nbviz.dataset.worker`: what one process does with a batch (shared by both engines);
* :mod:`nbviz.dataset.engine_local` / :mod:`nbviz.dataset.engine_ray`: in-process, or a Ray Data
  actor pool (Ray imported only there);
* :mod:`nbviz.dataset.store`: the results folder (Parquet table, Zarr maps, PNG thumbnails, in
  atomically renamed shards) and its reader :class:`Results`;
* :mod:`nbviz.dataset.cli`: ``python -m nbviz.dataset SOURCE --model m.keras --out DIR``.
"""

from nbviz.dataset.run import explain_dataset
from nbviz.dataset.store import Results, open_results

__all__ = ["explain_dataset", "open_results", "Results"]
