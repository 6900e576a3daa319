"""Turn a benchmark result into ratios: a JSON file, a Markdown table and a bar chart.

Ratios use warm times (medians). ``×floor`` is nbviz's time over the floor's; a peer column is
nbviz's time over that peer's (below 1: nbviz is faster). Both are also given on CPU time, which
moves less than wall time on a shared machine.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from catalog import METHODS, PEERS

# --------------------------------------------------------------------------- numbers


def _ok(record) -> bool:
    return isinstance(record, dict) and record.get("status") == "ok"


def floor_of(model: dict, method: str, *, cpu: bool = False) -> float | None:
    """The floor time of a method: measured paired with its calls where it was, else the
    floor row of the model."""
    spec = METHODS[method]
    mine = model.get("nbviz", {}).get(method)
    if _ok(mine) and "paired_floor_s" in mine:
        return mine["paired_floor_cpu_s" if cpu else "paired_floor_s"] * spec.floor_times
    key = spec.floor_key(model["size"])
    record = model.get("floors", {}).get(key) if key else None
    if not _ok(record):
        return None
    times = spec.floor_times
    if method == "featvis":  # one floor call per optimisation step
        times = model.get("nbviz", {}).get("featvis", {}).get("steps", times)
    return record["warm_cpu_s" if cpu else "warm_s"] * times


def verdict(model_name: str, model: dict, method: str) -> str:
    """'met', 'not met', 'not met (met on CPU time)', 'no target' or 'not measured'."""
    spec = METHODS[method]
    record = model.get("nbviz", {}).get(method)
    if not spec.has_target(model_name):
        return "no target"
    if not _ok(record):
        return "not measured"

    def passes(cpu: bool) -> bool | None:
        ok = True
        if spec.max_ratio is not None:
            floor = floor_of(model, method, cpu=cpu)
            if floor is None:
                return None
            ok &= record["warm_cpu_s" if cpu else "warm_s"] / floor <= spec.max_ratio
        if spec.max_seconds is not None:
            ok &= record["warm_cpu_s" if cpu else "warm_s"] <= spec.max_seconds
        return ok

    wall = passes(False)
    if wall is None:
        return "not measured"
    if wall:
        return "met"
    return "not met (met on CPU time)" if passes(True) else "not met"


def rows(results: dict) -> list[dict]:
    """One row per (model, method) with every number the table shows."""
    out = []
    for name, model in results["models"].items():
        if "nbviz" not in model and "peers" not in model:
            continue
        for method, spec in METHODS.items():
            record = model.get("nbviz", {}).get(method)
            peers = model.get("peers", {})
            if record is None and not any(method in p for p in peers.values()):
                continue
            row = {"model": name, "method": method, "label": spec.label,
                   "status": record.get("status") if record else "not measured",
                   "error": (record or {}).get("error")}
            floor, floor_cpu = floor_of(model, method), floor_of(model, method, cpu=True)
            row["floor_s"] = floor
            row["floor_paired"] = _ok(record) and "paired_floor_s" in record
            if _ok(record):
                row.update(warm_s=record["warm_s"], warm_cpu_s=record["warm_cpu_s"],
                           cold_s=record["cold_s"], warm_calls=record.get("warm_calls"), traces_warm=record.get("traces_warm"),
                           traces_cold=record.get("traces_cold"))
                if floor:
                    row["ratio"] = record["warm_s"] / floor
                    row["ratio_cpu"] = record["warm_cpu_s"] / floor_cpu
            row["target"] = spec.target_text() if spec.has_target(name) else ""
            row["verdict"] = verdict(name, model, method)
            row["peers"] = {}
            for peer in PEERS:
                precord = peers.get(peer, {}).get(method)
                if precord is None:
                    continue
                cell = {"status": precord.get("status"), "error": precord.get("error")}
                if _ok(precord):
                    cell.update(warm_s=precord["warm_s"], warm_cpu_s=precord["warm_cpu_s"],
                                cold_s=precord["cold_s"], warm_calls=precord.get("warm_calls"))
                    if _ok(record):
                        cell["ratio"] = record["warm_s"] / precord["warm_s"]
                        cell["ratio_cpu"] = record["warm_cpu_s"] / precord["warm_cpu_s"]
                row["peers"][peer] = cell
            out.append(row)
    return out


# --------------------------------------------------------------------------- markdown


def _ms(seconds) -> str:
    if seconds is None:
        return "–"
    ms = seconds * 1000
    if ms >= 10000:
        return f"{seconds:.1f} s"
    if ms >= 100:
        return f"{ms:.0f} ms"
    return f"{ms:.1f} ms" if ms >= 1 else f"{ms:.3f} ms"


def _ratio(value) -> str:
    if value is None:
        return "–"
    return f"{value:.2f}×" if value < 10 else f"{value:.0f}×"


def _peer_cell(cell) -> str:
    if cell is None:
        return ""
    if cell["status"] != "ok":
        return f"error¹" if cell["status"] == "error" else cell["status"]
    if "ratio" not in cell:
        return f"({_ms(cell['warm_s'])})"
    calls = cell.get("warm_calls")
    few = "*" if calls is not None and calls < 5 else ""
    return f"{_ratio(cell['ratio'])} / {_ratio(cell['ratio_cpu'])} ({_ms(cell['warm_s'])}{few})"


def markdown(results: dict) -> str:
    meta = results["meta"]
    machine, load = meta["machine"], meta["load"]
    lines = [
        "# nbviz benchmark",
        "",
        f"Run {meta['started']} – {meta['finished']} UTC ({meta['duration_s'] / 60:.1f} min), "
        f"`{meta['command']}`.",
        "",
        f"**Machine**: {machine['cpu']}, {machine['cores']} cores, {machine['memory_gib']:.0f} GiB, "
        f"{machine['os']}; no GPU used. "
        f"**Load average** (1 min) during the run: {load['min']:.1f}–{load['max']:.1f} "
        f"(start {load['start']:.1f}, end {load['end']:.1f}) on {machine['cores']} cores"
        + (": the machine was shared with other work, so wall times are noisy; CPU times "
           "(this process, all threads) are given beside them." if load["max"] > 0.5 * machine["cores"]
           else "."),
        "",
        f"**Versions**: nbviz {meta['versions'].get('nbviz')}, TensorFlow "
        f"{meta['versions'].get('tensorflow')}, Keras {meta['versions'].get('keras')}"
        + (", peers' virtualenv: " + ", ".join(f"{k} {v}" for k, v in meta.get('peers_versions', {}).items()
                                           if v and k != "python") if meta.get("peers_versions") else "")
        + ".",
        "",
        "Warm = median of the warm calls, each on a new image (new cell / new channel); cold = first "
        "call, tracing included. ×floor = nbviz warm / floor warm (wall; CPU in brackets); † = the "
        "floor was run right before each warm call of that row (same load), else the floor table's. "
        "Peer columns: "
        "nbviz warm / peer warm on wall time / on CPU time (below 1: nbviz is faster), with the "
        "peer's warm wall time (the peers run after nbviz, so when the load changed during the run "
        "the CPU ratio is the fairer one; * = median of "
        "fewer than 5 warm calls: slow rows stop once their warm calls took "
        f"{meta['args'].get('budget', 20):g} s, after 2 calls at least).",
    ]
    table_rows = rows(results)
    for name, model in results["models"].items():
        if "nbviz" not in model and "floors" not in model:
            continue
        lines += ["", f"## {name}, {model['size']}×{model['size']}, batch 1 unless noted", ""]
        lines += ["| floor | warm | warm CPU | cold | calls |", "|---|---|---|---|---|"]
        for key, record in model.get("floors", {}).items():
            if _ok(record):
                lines.append(f"| {key} | {_ms(record['warm_s'])} | {_ms(record['warm_cpu_s'])} | "
                             f"{_ms(record['cold_s'])} | {record['warm_calls']} |")
            else:
                lines.append(f"| {key} | {record.get('status')}: {record.get('error', '')[:80]} | | | |")
        peer_floors = model.get("peer_floors") or {}
        for key, record in peer_floors.items():
            if _ok(record):
                lines.append(f"| {key} (peers' venv, TF {meta.get('peers_versions', {}).get('tensorflow')}) | "
                             f"{_ms(record['warm_s'])} | {_ms(record['warm_cpu_s'])} | "
                             f"{_ms(record['cold_s'])} | {record['warm_calls']} |")
        peers_here = [p for p in PEERS if p in model.get("peers", {})]
        head = ("| method | nbviz warm | CPU | cold | calls | floor | ×floor (CPU) | target | verdict "
                "| new traces warm |")
        rule = "|---|---|---|---|---|---|---|---|---|---|"
        for p in peers_here:
            head += f" vs {p} |"
            rule += "---|"
        lines += ["", head, rule]
        for row in (r for r in table_rows if r["model"] == name):
            if row["status"] != "ok":
                cells = [row["label"], row["status"], "", "", "", _ms(row["floor_s"]), "",
                         row["target"], row["verdict"], ""]
            else:
                ratio = (f"{_ratio(row.get('ratio'))} ({_ratio(row.get('ratio_cpu'))})"
                         if row.get("ratio") is not None else "–")
                traces = row.get("traces_warm")
                cells = [row["label"], _ms(row["warm_s"]), _ms(row["warm_cpu_s"]), _ms(row["cold_s"]),
                         str(row.get("warm_calls", "")),
                         _ms(row["floor_s"]) + (" †" if row.get("floor_paired") else ""), ratio, row["target"], row["verdict"],
                         "–" if traces is None else str(traces)]
            cells += [_peer_cell(row["peers"].get(p)) for p in peers_here]
            lines.append("| " + " | ".join(cells) + " |")
        for note in model.get("peer_notes") or []:
            lines += ["", f"Note ({name}): {note[:400]}"]
        if model.get("peers_error"):
            lines += ["", f"Peers' process failed: `{model['peers_error'][:300]}`"]
    errors = []
    for row in table_rows:
        if row["status"] not in ("ok",) and row.get("error"):
            errors.append(f"- {row['model']} nbviz {row['method']}: {row['status']}: {row['error'][:300]}")
        for peer, cell in row["peers"].items():
            if cell["status"] != "ok":
                errors.append(f"- {row['model']} {peer} {row['method']}: `{(cell.get('error') or '')[:300]}`")
    if errors:
        lines += ["", "¹ Errors and missing rows:", ""] + errors
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- chart


def chart(results: dict, path: Path) -> None:
    """Grouped bars of warm times (log scale) per method: floor, nbviz and each peer."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table_rows = [r for r in rows(results) if r["status"] == "ok" or r["peers"]]
    model_names = [n for n in results["models"] if any(r["model"] == n for r in table_rows)]
    if not model_names:
        return
    series = ["floor", "nbviz", *PEERS]
    colours = {"floor": "#9e9e9e", "nbviz": "#1f77b4", "tf-keras-vis": "#ff7f0e",
               "tf-explain": "#2ca02c", "xplique": "#d62728"}
    fig, axes = plt.subplots(len(model_names), 1, figsize=(13, 4.2 * len(model_names)), squeeze=False)
    for ax, name in zip(axes[:, 0], model_names):
        mine = [r for r in table_rows if r["model"] == name]
        width = 0.8 / len(series)
        for j, s in enumerate(series):
            xs, ys = [], []
            for i, r in enumerate(mine):
                value = (r.get("floor_s") if s == "floor" else r.get("warm_s") if s == "nbviz"
                         else r["peers"].get(s, {}).get("warm_s"))
                if value:
                    xs.append(i + (j - (len(series) - 1) / 2) * width)
                    ys.append(value * 1000)
            ax.bar(xs, ys, width, label=s, color=colours[s])
        ax.set_yscale("log")
        ax.set_xticks(range(len(mine)))
        ax.set_xticklabels([textwrap.fill(r["label"], 16) for r in mine], fontsize=7, rotation=0)
        ax.set_ylabel("warm time (ms, log)")
        ax.set_title(f"{name} {results['models'][name]['size']}², median warm wall time; "
                     f"load {results['meta']['load']['min']:.1f}–{results['meta']['load']['max']:.1f} "
                     f"on {results['meta']['machine']['cores']} cores")
        ax.grid(axis="y", alpha=0.3, which="both")
        ax.legend(fontsize=8, ncol=len(series))
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write(results: dict, stem: Path) -> dict[str, Path]:
    """Write ``stem.json``, ``stem.md`` and ``stem.png``; returns the paths."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = {ext: stem.with_suffix(f".{ext}") for ext in ("json", "md", "png")}
    results = dict(results, rows=rows(results))
    paths["json"].write_text(json.dumps(results, indent=1, default=_json_default))
    paths["md"].write_text(markdown(results))
    chart(results, paths["png"])
    return paths


def update_readme(readme: Path, table_md: str) -> None:
    """Put ``table_md`` (without its title) between the latest-results markers of ``readme``."""
    text = readme.read_text()
    begin, end = "<!-- latest:begin -->", "<!-- latest:end -->"
    if begin not in text or end not in text:
        return
    body = "\n".join(line.replace("## ", "### ", 1) if line.startswith("## ") else line
                     for line in table_md.splitlines() if not line.startswith("# "))
    head, rest = text.split(begin, 1)
    tail = rest.split(end, 1)[1]
    readme.write_text(f"{head}{begin}\n{body.strip()}\n\n![latest](latest.png)\n{end}{tail}")


def _json_default(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)
