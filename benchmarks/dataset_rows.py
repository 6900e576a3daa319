"""Dataset engine figures (issue 18): local engine vs the bare compiled method, the store's share,
Ray 1 vs 2 actors.

    PYTHONPATH=. python benchmarks/dataset_rows.py [--n 256] [--reps 5] [--ray]

* ``local/bare``: images/s of ``explain_dataset(engine="local")`` (gradcam, batch 32, warm: the
  compiled functions exist) over images/s of the bare call ``gradcam(model, batch of 32)`` on the
  same images; the two are interleaved ``reps`` times and the ratio is reported as median
  [min, max]. The engine's time includes everything a run does (loading, predictions, thumbnails,
  the store); ``store share`` is the store's writing time over the run's wall time.
* ``ray``: wall time and images/s of the same run with 1 and 2 actors (Ray started once, 2 CPUs),
  the actors' start included and excluded (second run on a warm pool is not possible: each call
  builds its pool), and the overhead against local.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def main():
    a = argparse.ArgumentParser()
    a.add_argument("--n", type=int, default=256)
    a.add_argument("--reps", type=int, default=5)
    a.add_argument("--batch", type=int, default=32)
    a.add_argument("--ray", action="store_true")
    a.add_argument("--model", choices=("demo", "mobilenet"), default="demo",
                   help="demo: the shipped 64 px model (~0.6 ms per Grad-CAM, overheads show); "
                        "mobilenet: MobileNetV2 alpha 0.35 at 128 px, weights=None (a real network)")
    args = a.parse_args()

    import nbviz
    from nbviz import demo
    from nbviz.demo import shapes

    if args.model == "demo":
        model = demo.load_model()
        images = shapes.scenes(args.n, seed=11).images
    else:
        import keras

        model = keras.applications.MobileNetV2(weights=None, input_shape=(128, 128, 3), alpha=0.35)
        images = np.random.default_rng(0).integers(0, 256, (args.n, 128, 128, 3)).astype(np.uint8)
    tmp = Path(tempfile.mkdtemp(prefix="nbviz-bench-"))
    b = args.batch

    import tensorflow as tf

    forward = tf.function(lambda x: model(x, training=False))

    def bare(with_predictions=False):
        t = time.perf_counter()
        for i in range(0, args.n, b):
            nbviz.gradcam(model, images[i:i + b])
            if with_predictions:  # the top-k a run also stores: one more forward
                forward(tf.constant(images[i:i + b], tf.float32)).numpy()
        return args.n / (time.perf_counter() - t)

    def engine(k, **kw):
        out = tmp / f"run{k}"
        t = time.perf_counter()
        r = nbviz.explain_dataset(model, images, methods=("gradcam",), out=out, batch_size=b,
                                  shard_size=128, progress=False, **kw)
        wall = time.perf_counter() - t
        run = r.manifest["runs"][-1]
        shutil.rmtree(out)
        work.append(args.n / run["work_s"])  # the batches alone: no setup, no final union
        return args.n / wall, (run["write_s"] + run["finalize_s"]) / wall, wall

    work: list = []

    bare(), bare(True), engine("warm")  # compile everything at the batch shape
    ratios, ratios2, shares, eng, bar = [], [], [], [], []
    for k in range(args.reps):
        x = bare()
        x2 = bare(True)
        y, share, _ = engine(k)
        bar.append(x), eng.append(y), ratios.append(y / x), ratios2.append(y / x2), shares.append(share)
    result = {
        "model": args.model, "n": args.n, "batch": b, "reps": args.reps,
        "bare_ips": [round(v, 1) for v in bar], "engine_ips": [round(v, 1) for v in eng],
        "ratio_median": round(statistics.median(ratios), 3),
        "ratio_min": round(min(ratios), 3), "ratio_max": round(max(ratios), 3),
        "ratio_vs_method_plus_forward_median": round(statistics.median(ratios2), 3),
        "ratio_vs_method_plus_forward_range": [round(min(ratios2), 3), round(max(ratios2), 3)],
        "engine_work_phase_ips": [round(v, 1) for v in work[1:]],
        "store_share_median": round(statistics.median(shares), 3),
        "store_share_max": round(max(shares), 3),
    }
    print(json.dumps(result), flush=True)
    if args.ray:
        import os

        import ray

        os.environ.setdefault("RAY_agent_register_timeout_ms", "240000")
        os.environ.setdefault("RAY_gcs_server_request_timeout_seconds", "240")
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from tests.dataset.test_ray_engine import _agent_ports_given  # a slow machine's Ray start

        with _agent_ports_given(tmp):
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        rows = {}
        for actors in (1, 2):
            t = time.perf_counter()
            r = nbviz.explain_dataset(model, images, methods=("gradcam",), out=tmp / f"ray{actors}",
                                      batch_size=b, shard_size=128, progress=False, engine="ray",
                                      num_actors=actors)
            wall = time.perf_counter() - t
            rows[actors] = {"wall_s": round(wall, 2), "ips": round(args.n / wall, 1),
                            "store_share": round(r.manifest["runs"][-1]["write_s"] / wall, 3)}
        ray.shutdown()
        local_wall = args.n / statistics.median(eng)
        print(json.dumps({"ray": rows, "local_wall_s": round(local_wall, 2),
                          "note": "ray wall includes starting the actor pool (TF import, model load, compile)"}),
              flush=True)
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
