"""The nbviz benchmark: every method against its floor and its peers, interleaved.

    make bench                                   # = .venv/bin/python benchmarks/run.py
    make bench BENCH_ARGS="--quick"              # 3 samples, no peers, the rows that take seconds
    make bench BENCH_ARGS="--only gradcam,saliency --no-peers"

One long-lived worker process per environment (nbviz's virtualenv; the peers' virtualenv;
nbviz's with 1/1 TensorFlow threads for the threads rows). For each group of comparable rows
(floor, nbviz, peers) the driver asks each worker for one sample in turn, rotating the order every
round (:mod:`interleave`), so every ratio comes from samples taken in the same minutes. Writes
benchmarks/results/bench-<time>.{json,md}; a full default run also writes benchmarks/latest.*.
See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import interleave as il  # noqa: E402

PEERS_VENV = HERE / ".peers-venv"
DEFAULT_MODELS = ("mobilenetv2",)


def parse(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="benchmarks/run.py", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="3 warm samples per row, no peers, no threads rows, and without the "
                         "groups that take tens of seconds (catalog.QUICK_SKIP): under 5 minutes")
    ap.add_argument("--only", default="", help="comma-separated parts of group keys to run")
    ap.add_argument("--models", default=",".join(DEFAULT_MODELS),
                    help="comma-separated: mobilenetv2, resnet50, tiny")
    ap.add_argument("--size", type=int, default=224, help="image height and width")
    ap.add_argument("--samples", type=int, default=None, help="warm samples per row (7)")
    ap.add_argument("--budget", type=float, default=None,
                    help="seconds of warm samples per group before it stops at 3 samples (30)")
    ap.add_argument("--featvis-steps", type=int, default=20,
                    help="feature visualisation steps (20: the row is a ratio to 20 bare steps; "
                         "tf-keras-vis takes 0.4 s a step)")
    ap.add_argument("--rise-masks", type=int, default=500,
                    help="RISE masks (500; the method's default is 4000: the row is a ratio to "
                         "the same number of bare forward passes, and 4000 would take a fifth of "
                         "the run's 20 minutes)")
    ap.add_argument("--no-peers", action="store_true", help="skip tf-keras-vis, tf-explain, xplique")
    ap.add_argument("--no-threads", action="store_true", help="skip the thread-setting rows")
    ap.add_argument("--out", default=str(HERE / "results"), help="folder for the results")
    ap.add_argument("--publish", choices=("auto", "yes", "no"), default="auto",
                    help="write benchmarks/latest.*: auto = only for a full default run")
    args = ap.parse_args(argv)
    args.samples = args.samples or (3 if args.quick else 7)
    args.no_peers = args.no_peers or args.quick
    args.budget = args.budget if args.budget is not None else (15.0 if args.quick else 30.0)
    args.models = [m for m in args.models.split(",") if m]
    args.only = [p for p in args.only.split(",") if p]
    if args.publish == "auto":
        args.publish = "yes" if (not args.quick and not args.only and args.size == 224
                                 and not args.no_peers and tuple(args.models) == DEFAULT_MODELS) else "no"
    return args


def ensure_peers_venv(log) -> Path | None:
    python = PEERS_VENV / "bin" / "python"
    if python.exists():
        return python
    log(f"creating the peers' virtualenv {PEERS_VENV} (TensorFlow 2.20 + peers; a few minutes)")
    try:
        base = shutil.which("python3") or "python3"  # not this venv's python: a clean venv
        subprocess.run([base, "-m", "venv", str(PEERS_VENV)], check=True)
        pip = [str(python), "-m", "pip", "install", "-q"]
        subprocess.run(pip + ["--upgrade", "pip"], check=True)
        subprocess.run(pip + ["-r", str(HERE / "requirements-peers.txt")], check=True)
        subprocess.run(pip + ["--no-deps", "xplique==2.0.2"], check=True)
    except (subprocess.CalledProcessError, OSError) as exc:
        log(f"could not create the peers' virtualenv: {exc}")
        return None
    return python


def start_workers(args, log) -> dict:
    path = os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH", "")) if p)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=path)
    script = str(HERE / "worker.py")
    workers = {"nbviz": il.ProcessWorker([sys.executable, script, "nbviz"], "nbviz", env)}
    if not args.quick and not args.no_threads:
        workers["nbviz-1x1"] = il.ProcessWorker(
            [sys.executable, script, "nbviz", "--threads", "1,1"], "nbviz-1x1", env)
    if not args.no_peers:
        python = ensure_peers_venv(log)
        if python is not None:
            try:
                workers["peers"] = il.ProcessWorker([str(python), script, "peers"], "peers", env)
            except RuntimeError as exc:
                log(f"the peers' worker did not start: {exc}")
    return workers


def model_files(name: str, size: int, out: Path) -> dict:
    """Build the model once here, save its weights and inputs for every worker."""
    import numpy as np

    import models
    model = models.build(name, size)
    images = models.images(32, size, seed=1)
    classes = np.asarray(model(images, training=False)).argmax(-1)
    weights = out / f"{name}-{size}.weights.h5"
    model.save_weights(weights)
    np.save(out / f"{name}-{size}-images.npy", images)
    return {"model": name, "size": size, "weights": str(weights),
            "images": str(out / f"{name}-{size}-images.npy"), "classes": classes.tolist()}


def group_rows(group, base: dict, workers: dict) -> list[il.Row]:
    import catalog
    rows = []
    if group.floor is not None:
        rows.append(il.Row(f"{group.key}/floor", "nbviz",
                           {**base, **catalog.floor_spec(group.floor, group.spec.get("options"))}))
    rows.append(il.Row(f"{group.key}/nbviz", "nbviz", {**base, **group.spec}))
    for name, options in group.variants:
        rows.append(il.Row(f"{group.key}/{name}", "nbviz",
                           {**base, **group.spec, "options": {**group.spec.get("options", {}), **options}}))
    if "peers" in workers:
        batch = group.spec.get("batch", 1)
        if group.floor is not None and group.peers:
            rows.append(il.Row(f"{group.key}/floor-peers-venv", "peers",
                               {**base, **catalog.floor_spec(group.floor)}))
        for library in group.peers:
            rows.append(il.Row(f"{group.key}/{library}", "peers",
                               {**base, "kind": "peer", "library": library,
                                "name": group.key, "batch": batch,
                                "options": group.spec.get("options", {})}))
    return rows


def thread_rows(base: dict) -> list[tuple[str, list[il.Row]]]:
    """fwd_bwd at batch 1 and 8 with TensorFlow's default thread pools and with 1/1; XLA once."""
    import catalog
    out = []
    for batch in (1, 8):
        spec = {**base, **catalog.floor_spec(f"fwd_bwd@{batch}")}
        out.append((f"threads@{batch}", [il.Row(f"threads@{batch}/default", "nbviz", spec),
                                         il.Row(f"threads@{batch}/1x1", "nbviz-1x1", spec)]))
    spec = {**base, **catalog.floor_spec("fwd_bwd@1")}
    out.append(("xla", [il.Row("xla/floor", "nbviz", spec),
                        il.Row("xla/jit_compile", "nbviz", {**spec, "name": "fwd_bwd_xla"})]))
    return out


def revive(workers: dict, log) -> None:
    """Restart the workers that died in an earlier group (noted in the report's meta)."""
    for name, w in workers.items():
        if not w.alive:
            log(f"  worker {name!r} died; restarting it")
            w.restart()


class Spinner:
    """A busy loop on one core: the 'loaded machine' of the threads rows."""

    def __enter__(self):
        self.proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        return self

    def __exit__(self, *exc):
        self.proc.kill()
        self.proc.wait()


def main(argv=None) -> dict:
    args = parse(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = datetime.datetime.now(datetime.timezone.utc)
    t0 = time.perf_counter()

    def log(line: str) -> None:
        print(f"[{time.perf_counter() - t0:6.0f} s] {line}", flush=True)

    import catalog
    import report
    stem = out / f"bench-{started.strftime('%Y%m%d-%H%M%S')}"
    results = {"meta": {"started": started.strftime("%Y-%m-%d %H:%M UTC"),
                        "command": "benchmarks/run.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                        "samples": args.samples, "budget_s": args.budget,
                        "machine": il.machine_info()},
               "models": {}}
    workers = start_workers(args, log)
    results["meta"]["workers"] = {name: w.info() for name, w in workers.items()}
    log(f"nbviz benchmark: {args.models} at {args.size}², {args.samples} interleaved warm samples "
        f"per row, group budget {args.budget:g} s; workers {list(workers)}")
    try:
        for name in args.models:
            base = model_files(name, args.size, out)
            entry = results["models"][name] = {"size": args.size, "groups": {}}
            for group in catalog.groups(name, args.size, featvis_steps=args.featvis_steps,
                                        rise_masks=args.rise_masks, quick=args.quick):
                if args.only and not any(p in group.key for p in args.only):
                    continue
                log(f"{name}/{group.key}")
                revive(workers, log)
                records = il.interleave(group_rows(group, base, workers), workers,
                                        samples=args.samples,
                                        min_samples=min(args.samples, group.min_samples),
                                        budget_s=args.budget, log=log)
                entry["groups"][group.key] = report.summarise(group, records)
                log("  " + report.one_line(entry["groups"][group.key]))
                report.write(results, stem)  # a crash keeps what was measured
            if "nbviz-1x1" in workers and not args.only:
                for loaded in (False, True):
                    for key, rows in thread_rows(base):
                        if loaded and key == "xla":
                            continue
                        label = f"{key}{' (loaded)' if loaded else ''}"
                        log(f"{name}/{label}")
                        revive(workers, log)
                        if loaded:
                            with Spinner():
                                records = il.interleave(rows, workers, samples=args.samples,
                                                        budget_s=args.budget, log=log)
                        else:
                            records = il.interleave(rows, workers, samples=args.samples,
                                                    budget_s=args.budget, log=log)
                        entry.setdefault("threads", {})[label] = report.summarise_pair(records)
                        log("  " + json.dumps(entry["threads"][label].get("ratio")))
    finally:
        for w in workers.values():
            w.close()
    results["meta"]["duration_s"] = time.perf_counter() - t0
    results["meta"]["worker_restarts"] = {n: w.restarts for n, w in workers.items() if w.restarts}
    results["meta"]["load_end"] = os.getloadavg()
    paths = report.write(results, stem)
    log(f"wrote {paths['md']} (+ .json)")
    if args.publish == "yes":
        latest = report.write(results, HERE / "latest")
        report.update_readme(HERE / "README.md", latest["md"].read_text())
        log(f"wrote {latest['md']} and the table in benchmarks/README.md")
    print(paths["md"].read_text())
    return results


if __name__ == "__main__":
    main()
