"""A long-lived benchmark worker: ``python benchmarks/worker.py ENV [--threads INTRA,INTER]``.

ENV is ``nbviz`` (rows from :mod:`rows`: floors and nbviz methods) or ``peers`` (rows from
:mod:`peers`, run with the peers' virtualenv's python). The driver (:mod:`run`) sends JSON lines
(see :func:`interleave.serve`): prepare a row once, then sample it as often as asked. Models
are loaded once per (name, size, weights file) and kept, as a user's session would.
``--threads 1,1`` sets TensorFlow's intra-/inter-op thread pools before anything runs.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from interleave import serve  # noqa: E402


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="benchmarks/worker.py")
    ap.add_argument("env", choices=("nbviz", "peers"))
    ap.add_argument("--threads", default="", help="INTRA,INTER thread pool sizes (default: TF's)")
    args = ap.parse_args(argv)
    import tensorflow as tf

    if args.threads:
        intra, inter = (int(v) for v in args.threads.split(","))
        tf.config.threading.set_intra_op_parallelism_threads(intra)
        tf.config.threading.set_inter_op_parallelism_threads(inter)
    tf.get_logger().setLevel("ERROR")
    if args.env == "nbviz":
        import rows as provider
    else:
        import peers as provider

    def info() -> dict:
        return {**provider.versions(), "threads": args.threads or "default",
                "intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
                "inter_op": tf.config.threading.get_inter_op_parallelism_threads()}

    serve(provider.factory, info)


if __name__ == "__main__":
    main()
