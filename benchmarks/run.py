"""The nbviz benchmark: every method against its floor and against peer libraries, in one run.

    make bench                                   # = .venv/bin/python benchmarks/run.py
    make bench BENCH_ARGS="--quick"              # MobileNetV2 only, fewer calls, 20 featvis steps
    make bench BENCH_ARGS="--only gradcam,saliency --no-peers"

Writes benchmarks/results/bench-<time>.{json,md,png}; a full run (no --quick/--only, default
models and size) also writes benchmarks/latest.{json,md,png}. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402

from catalog import FEATVIS_MODELS, METHODS, PEER_METHODS, PEERS  # noqa: E402
from timing import load_average  # noqa: E402

PEERS_VENV = HERE / ".peers-venv"
DEFAULT_MODELS = ("mobilenetv2", "resnet50")
# peers measured per model: batch-1 rows of ResNet50 only (its batched peers would not fit 15 min)
PEER_MODEL_METHODS = {"resnet50": ("saliency", "guided_backprop", "gradcam")}


def parse(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="benchmarks/run.py", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="MobileNetV2 only, 3 warm calls (2 for batched rows and featvis), "
                         "20 featvis steps")
    ap.add_argument("--only", default="",
                    help="comma-separated parts of row ids 'model/library/method' to run, "
                         "e.g. 'gradcam' or 'mobilenetv2/xplique'; floors needed are always run")
    ap.add_argument("--models", default=",".join(DEFAULT_MODELS),
                    help="comma-separated: mobilenetv2, resnet50, tiny")
    ap.add_argument("--size", type=int, default=224, help="image height and width")
    ap.add_argument("--repeats", type=int, default=None, help="warm calls of batch-1 rows (5)")
    ap.add_argument("--batch-repeats", type=int, default=None,
                    help="warm calls of batched rows (5)")
    ap.add_argument("--featvis-steps", type=int, default=None, help="(100)")
    ap.add_argument("--featvis-repeats", type=int, default=None, help="warm renders (2)")
    ap.add_argument("--peer-featvis-repeats", type=int, default=None,
                    help="warm renders of the peers' feature visualisation (1)")
    ap.add_argument("--budget", type=float, default=None,
                    help="seconds of warm calls per row: once spent, a row stops after 2 warm "
                         "calls at least (10; --quick 8)")
    ap.add_argument("--no-peers", action="store_true", help="skip tf-keras-vis, tf-explain, xplique")
    ap.add_argument("--out", default=str(HERE / "results"), help="folder for the results")
    ap.add_argument("--publish", choices=("auto", "yes", "no"), default="auto",
                    help="write benchmarks/latest.*: auto = only for a full default run")
    args = ap.parse_args(argv)
    quick = args.quick
    if quick and args.models == ",".join(DEFAULT_MODELS):
        args.models = "mobilenetv2"
    defaults = dict(budget=8.0 if quick else 10.0, repeats=3 if quick else 5,
                    batch_repeats=2 if quick else 5, featvis_steps=20 if quick else 100,
                    featvis_repeats=2, peer_featvis_repeats=1)
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.models = [m for m in args.models.split(",") if m]
    args.only = [p for p in args.only.split(",") if p]
    if args.publish == "auto":
        args.publish = "yes" if (not quick and not args.only and args.size == 224 and not args.no_peers
                                 and tuple(args.models) == DEFAULT_MODELS) else "no"
    return args


def selected(args, row_id: str) -> bool:
    return not args.only or any(part in row_id for part in args.only)


# --------------------------------------------------------------------------- machine


def machine() -> dict:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import psutil
        memory = psutil.virtual_memory().total / 2**30
    except ImportError:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": memory,
            "os": f"{platform.system()} {platform.release()}", "python": platform.python_version(),
            "node": platform.node()}


def versions() -> dict:
    import keras
    import tensorflow as tf
    import nbviz
    return {"nbviz": nbviz.__version__, "tensorflow": tf.__version__, "keras": keras.__version__,
            "numpy": np.__version__}


# --------------------------------------------------------------------------- peers


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


def run_peers(args, specs: list[dict], out: Path, log) -> dict:
    """Run peers.py in the peers' virtualenv; returns its JSON (or {'error': ...})."""
    python = ensure_peers_venv(log)
    if python is None:
        return {"error": "the peers' virtualenv could not be created"}
    spec = {"budget_s": args.budget, "repeats": args.repeats, "batch_repeats": args.batch_repeats,
            "featvis_steps": args.featvis_steps, "featvis_repeats": args.peer_featvis_repeats,
            "models": specs}
    spec_path, out_path = out / "peers-spec.json", out / "peers-result.json"
    spec_path.write_text(json.dumps(spec, indent=1))
    if out_path.exists():
        out_path.unlink()
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(HERE))
    lines = []
    with subprocess.Popen([str(python), str(HERE / "peers.py"), str(spec_path), str(out_path)],
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True) as proc:
        for line in proc.stdout:  # streamed: each row is logged as it is measured
            lines.append(line)
            if line.startswith("  ") or line.startswith("peers venv"):
                log(line.rstrip())
    output = "".join(lines)
    (out / "peers-log.txt").write_text(output)
    if out_path.exists():
        result = json.loads(out_path.read_text())
        if proc.returncode:
            result["error"] = f"peers.py exited {proc.returncode}: {output[-800:]}"
        return result
    return {"error": f"peers.py exited {proc.returncode} without a result: {output[-1500:]}"}


# --------------------------------------------------------------------------- main


def main(argv=None) -> dict:
    args = parse(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = datetime.datetime.now(datetime.timezone.utc)
    t0 = time.perf_counter()
    loads = [load_average()]

    def log(line: str) -> None:
        loads.append(load_average())
        print(line, flush=True)

    import tensorflow as tf
    tf.get_logger().setLevel("ERROR")
    import timing
    timing.configure(budget_s=args.budget)
    import models
    from floor import measure_floors
    from nbviz_methods import measure_nbviz

    log(f"nbviz benchmark: models {args.models}, {args.size}², warm calls {args.repeats} "
        f"(batched {args.batch_repeats}), featvis {args.featvis_steps} steps × "
        f"{args.featvis_repeats + 1}, warm-call budget {args.budget:g} s per row; load {loads[0]}")
    results = {"models": {}}
    peer_specs = []
    meta_peers: dict = {}
    stem = out / f"bench-{started.strftime('%Y%m%d-%H%M%S')}"

    def checkpoint() -> dict:
        """Write what is measured so far (after each model, after the peers, at the end)."""
        import report
        loads.append(load_average())
        finished = datetime.datetime.now(datetime.timezone.utc)
        results["meta"] = {
            "started": started.strftime("%Y-%m-%d %H:%M"),
            "finished": finished.strftime("%H:%M"),
            "duration_s": time.perf_counter() - t0,
            "command": "benchmarks/run.py " + " ".join(
                shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])),
            "args": dict(vars(args)),
            "machine": machine(),
            "versions": versions(),
            "peers_versions": meta_peers,
            "load": {"start": loads[0], "end": loads[-1], "min": min(loads), "max": max(loads),
                     "samples": loads},
        }
        return report.write(results, stem)

    for name in args.models:
        wanted = [m for m in METHODS if selected(args, f"{name}/nbviz/{m}")]
        if name not in FEATVIS_MODELS and "featvis" in wanted:
            wanted.remove("featvis")
        peer_wanted = {
            p: [m for m in PEER_METHODS[p]
                if m in PEER_MODEL_METHODS.get(name, METHODS)
                and (m != "featvis" or name in FEATVIS_MODELS)
                and selected(args, f"{name}/{p}/{m}")]
            for p in PEERS} if not args.no_peers else {}
        peer_wanted = {p: ms for p, ms in peer_wanted.items() if ms}
        if not wanted and not peer_wanted and not selected(args, f"{name}/floor"):
            continue
        log(f"{name}: building (BatchNorm statistics from a seeded batch)")
        model = models.build(name, args.size)
        count = max(args.repeats + 1, 8 * (args.batch_repeats + 1), 16)
        images = models.images(count, args.size, seed=1)
        classes = np.asarray(model(images, training=False)).argmax(-1)
        weights = out / f"{name}-{args.size}.weights.h5"
        model.save_weights(weights)
        np.save(out / f"{name}-{args.size}-images.npy", images)
        entry = {"size": args.size, "classes": classes.tolist()}
        results["models"][name] = entry

        keys = {METHODS[m].floor_key(args.size) for m in wanted} | {"fwd_bwd@1", "forward@1"}
        if selected(args, f"{name}/floor"):
            keys = None
        log(f"{name}: floors")
        entry["floors"] = measure_floors(model, images, classes, repeats=args.repeats,
                                         batch_repeats=args.batch_repeats, keys=keys)
        for key, record in entry["floors"].items():
            log(f"  {name}/floor/{key}: " + (
                f"cold {record['cold_s'] * 1000:.0f} ms, warm {record['warm_s'] * 1000:.1f} ms "
                f"(cpu {record['warm_cpu_s'] * 1000:.1f} ms)" if record.get("status") == "ok"
                else f"{record.get('status')}: {record.get('error')}"))
        if wanted:
            log(f"{name}: nbviz")
            entry["nbviz"] = measure_nbviz(
                model, name, images, classes, repeats=args.repeats,
                batch_repeats=args.batch_repeats, featvis_steps=args.featvis_steps,
                featvis_repeats=args.featvis_repeats, selected=lambda m: m in wanted, log=log)
        if peer_wanted:
            peer_specs.append({"name": name, "size": args.size, "weights": str(weights),
                               "images": str(out / f"{name}-{args.size}-images.npy"),
                               "classes": classes.tolist(), "methods": peer_wanted,
                               "floors": ["forward@1", "fwd_bwd@1"]})
        from nbviz.probe import clear_cache
        clear_cache()
        del model
        checkpoint()

    if peer_specs:
        log("peers (separate virtualenv)")
        peers = run_peers(args, peer_specs, out, log)
        meta_peers.update(peers.get("versions", {}))
        for spec in peer_specs:
            entry = results["models"][spec["name"]]
            got = peers.get("models", {}).get(spec["name"])
            if got is None or got.get("status") == "error":
                entry["peers_error"] = (got or {}).get("error") or peers.get("error", "no result")
                continue
            entry["peers"] = got["peers"]
            entry["peer_floors"] = got["floors"]
            entry["peer_weights_check"] = got.get("weights_check")
            entry["peer_notes"] = got.get("notes", [])
        if peers.get("error"):
            results["peers_error"] = peers["error"]

    paths = checkpoint()
    log(f"wrote {paths['md']} (+ .json, .png)")
    if args.publish == "yes":
        import report
        latest = report.write(results, HERE / "latest")
        report.update_readme(HERE / "README.md", latest["md"].read_text())
        log(f"wrote {latest['md']} (+ .json, .png) and the table in benchmarks/README.md")
    print()
    print(paths["md"].read_text())
    return results


if __name__ == "__main__":
    main()
