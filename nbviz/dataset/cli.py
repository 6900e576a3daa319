"""``python -m nbviz.dataset SOURCE --model model.keras --methods gradcam,saliency --out DIR``.

SOURCE is a folder of PNG/JPEG images (with an optional ``labels.csv``) or a ``.npy`` / ``.npz``
file (an ``.npz`` with arrays ``images`` and optionally ``labels``). The model file is loaded with
Keras' ``safe_mode`` unless ``--unsafe`` is given. Run it again with the same arguments after an
interruption: finished shards are kept and skipped.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

__all__ = ["main", "parser"]


def parser() -> argparse.ArgumentParser:
    a = argparse.ArgumentParser(prog="python -m nbviz.dataset", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    a.add_argument("source", help="folder of PNG/JPEG images, or a .npy/.npz file")
    a.add_argument("--model", required=True, help="saved Keras model (.keras)")
    a.add_argument("--out", required=True, help="results folder (created; reused to resume)")
    a.add_argument("--methods", default="gradcam", help="comma-separated method keys")
    a.add_argument("--metrics", default="", help="comma-separated metric names of nbviz.metrics")
    a.add_argument("--target", default=None, help="'top', 'label' or a class index (default: top class)")
    a.add_argument("--layer", default=None, help="layer for the methods that take one (Grad-CAM)")
    a.add_argument("--labels", default=None, help="labels CSV (path,label) for a folder")
    a.add_argument("--class-names", default=None, help="comma-separated class names")
    a.add_argument("--batch-size", type=int, default=32)
    a.add_argument("--shard-size", type=int, default=256)
    a.add_argument("--resize", action="store_true", help="resample images of another size")
    a.add_argument("--engine", choices=("local", "ray"), default="local")
    a.add_argument("--ray-address", default=None, help="join this Ray cluster ('auto', 'ray://host:10001')")
    a.add_argument("--num-actors", type=int, default=1)
    a.add_argument("--num-gpus-per-actor", type=float, default=0)
    a.add_argument("--unsafe", action="store_true",
                   help="load the model with safe_mode=False (runs Python code stored in the file)")
    a.add_argument("--no-images", action="store_true",
                   help="do not keep the pixels of a .npy/.npz source in the store (smaller and "
                        "faster; the gallery then cannot open those images)")
    a.add_argument("--overwrite", action="store_true", help="delete an existing results folder first")
    a.add_argument("--no-progress", action="store_true")
    return a


def _source(path: str):
    p = Path(path)
    if p.is_dir():
        return p, None
    import numpy as np

    if p.suffix == ".npy":
        return np.load(p), None
    if p.suffix == ".npz":
        with np.load(p) as data:
            if "images" not in data:
                raise ValueError(f"{p.name}: an .npz source needs an array named 'images' (and optionally 'labels')")
            return data["images"], (data["labels"] if "labels" in data else None)
    raise ValueError(f"SOURCE {path!r} is neither a folder nor a .npy/.npz file")


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        source, labels = _source(args.source)
        if args.labels is not None:
            labels = args.labels
        target = args.target
        if target is not None and target.lstrip("-").isdigit():
            target = int(target)
        from nbviz.dataset.run import explain_dataset

        results = explain_dataset(
            args.model, source, methods=[m for m in args.methods.split(",") if m],
            metrics=[m for m in args.metrics.split(",") if m], target=target, layer=args.layer,
            out=args.out, engine=args.engine, batch_size=args.batch_size, shard_size=args.shard_size,
            labels=labels, class_names=args.class_names.split(",") if args.class_names else None,
            resize=args.resize, progress=not args.no_progress, overwrite=args.overwrite,
            safe_mode=not args.unsafe, ray_address=args.ray_address, num_actors=args.num_actors,
            num_gpus_per_actor=args.num_gpus_per_actor, store_images=False if args.no_images else None)
    except (ValueError, TypeError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{len(results)} images explained, {results.errors.num_rows} errors: {results.out}")
    return 0
