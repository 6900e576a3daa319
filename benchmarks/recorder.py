"""The Recorder on the demo model: its cost per record against the methods' own warm cost, and
the effective receptive field of every convolution across epochs.

    python benchmarks/recorder.py [--scenes 2000] [--epochs 6] [--probe 4] [--out FILE.json]

Trains the demo CNN from scratch (seeded, as ``nbviz.demo.train`` does, on ``--scenes`` scenes)
with a Recorder on ``--probe`` shipped scenes (Grad-CAM, saliency, ERF of every convolution, no
feature visualisation), then times each method warm on one probe scene (median of ``--repeats``
calls). Per record after the first (which traces) it reports

* ``maps_ratio``: the Recorder's maps time / (probe scenes × sum of the methods' warm times);
* ``total_ratio``: its whole cost (maps, ERF, writing the store) / the same denominator;

and the ERF (side of the square holding 95 % of the gradient mass, radius, TRF, ratio) per
epoch, and the side for 50 % of the mass (recomputed from the stored maps); finally the same for
the shipped, fully trained model on the same scenes. Timings on a
shared machine are what they are: the spread is reported, nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenes", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--probe", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    import keras
    import tensorflow as tf

    from nbviz import demo
    from nbviz.callbacks import Recorder, open_run
    from nbviz.demo.shapes import scenes
    from nbviz.demo.train import augment, build_model
    from nbviz.methods import erf
    from nbviz.methods.table import method

    probe_images = demo.load_images().images[: args.probe].astype("float32")
    keras.utils.set_random_seed(0)
    data = scenes(args.scenes, seed=0)
    model = build_model()
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    store = tempfile.mkdtemp(prefix="nbviz-recorder-")
    rec = Recorder(probe_images, methods=("gradcam", "saliency"), out=store)
    rng = np.random.default_rng(3000)
    start = time.perf_counter()
    for epoch in range(args.epochs):
        model.fit(augment(data.images, rng).astype("float32"), data.labels, batch_size=64,
                  initial_epoch=epoch, epochs=epoch + 1, callbacks=[rec], verbose=0)
    train_s = time.perf_counter() - start

    warm = {}
    for key in ("gradcam", "saliency"):
        fn = method(key).function_object()
        fn(model, probe_images[0])
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            fn(model, probe_images[0])
            times.append(time.perf_counter() - t)
        warm[key] = statistics.median(times)
    denominator = args.probe * sum(warm.values())
    later = rec.seconds[1:]
    maps_ratio = [c["maps"] / denominator for c in later]
    total_ratio = [c["total"] / denominator for c in later]

    run = open_run(store)
    table = run.erf_table()
    erf_rows = [{k: (v.item() if hasattr(v, "item") else v) for k, v in zip(table, row)}
                for row in zip(*table.values())]
    shipped, _ = erf.effective_rf(demo.load_model(), probe_images)
    half_shipped, _ = erf.effective_rf(demo.load_model(), probe_images, mass=0.5)
    centres = {layer["path"]: layer["center"] for layer in run.header["layers"]}
    half = [{"epoch": float(e), "layer": layer,
             "side": erf.erf_size(run.erf_map(e, layer), centres[layer], mass=0.5)[0]}
            for e in run.epochs for layer in run.layers]  # from the stored maps

    def spread(values):
        return {"median": statistics.median(values), "min": min(values), "max": max(values),
                "n": len(values)}

    result = {
        "scenes": args.scenes, "epochs": args.epochs, "probe": args.probe, "train_s": train_s,
        "warm_s_per_image": warm, "denominator_s": denominator,
        "maps_ratio": spread(maps_ratio), "total_ratio": spread(total_ratio),
        "first_record_s": rec.seconds[0]["total"],
        "record_s": spread([c["total"] for c in later]),
        "loss": run.logs("loss").tolist(), "accuracy": run.logs("accuracy").tolist(),
        "erf": erf_rows, "shipped_erf": [s.as_dict() for s in shipped],
        "erf_half_mass": half, "shipped_erf_half_mass": [s.as_dict() for s in half_shipped],
        "store": store,
        "cpu_count": os.cpu_count(), "load": os.getloadavg(),
    }
    text = json.dumps(result, indent=1, default=float)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)
    return result


if __name__ == "__main__":
    main()
