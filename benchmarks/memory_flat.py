"""RSS over many calls that each pass a fresh lambda as ``target`` or ``preprocess`` (issue 14).

Not a timed test: it prints the resident set size after a warm-up and after every block of calls,
and the growth per call, for each case; the per-model compiled-function count too. Run:

    PYTHONPATH=. .venv/bin/python benchmarks/memory_flat.py [--calls 500] [--size 32]

Before fresh lambdas were keyed by what they compute (``nbviz.probe.fn_key``) every call compiled
and kept a new function (issue 14 measured +2.3 MiB per gradcam call, +5.3 MiB per render).
"""

from __future__ import annotations

import argparse
import gc
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--render-calls", type=int, default=100)
    args = parser.parse_args(argv)

    import keras

    import nbviz
    from nbviz.featvis import objectives as O
    from nbviz.probe import probe
    from tests.models import small_cnn

    model = small_cnn(size=args.size)
    image = np.random.default_rng(0).random((args.size, args.size, 3)).astype(np.float32)
    scale = 2.0
    cases = {
        "gradcam, target=lambda": lambda i: nbviz.gradcam(
            model, image, target=lambda out: out[:, 1] * scale),
        "gradcam, preprocess=lambda": lambda i: nbviz.gradcam(
            model, image, preprocess=lambda im: im / scale),
        "saliency, target=lambda with a default": lambda i: nbviz.saliency(
            model, image, target=lambda out, c=i % 4: out[:, c]),
        "featvis render, preprocess=lambda": lambda i: nbviz.featvis.render(
            model, O.channel("conv3", 0), steps=2, size=(args.size, args.size),
            preprocess=lambda x: x * scale),
    }
    print(f"keras {keras.__version__}; model {model.name} at {args.size}×{args.size}")
    for name, call in cases.items():
        calls = args.render_calls if "render" in name else args.calls
        for i in range(args.warmup):
            call(i)
        gc.collect()
        start = rss_mib()
        marks = []
        for i in range(calls):
            call(i)
            if (i + 1) % max(calls // 5, 1) == 0:
                gc.collect()
                marks.append(rss_mib())
        growth = marks[-1] - start
        print(f"{name:42s} RSS after warm-up {start:7.1f} MiB, then every {calls // 5} calls: "
              + " ".join(f"{m:7.1f}" for m in marks)
              + f" | growth {growth:+.1f} MiB = {growth / calls * 1024:+.1f} KiB/call over {calls}"
              f" calls | compiled functions {probe(model).function_count}")


if __name__ == "__main__":
    main()
