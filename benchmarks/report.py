"""Turn interleaved samples into ratios with their spread: a JSON file and a Markdown report.

Every ratio is the median [interquartile range] of per-round ratios (see :mod:`interleave`).
``×floor`` = nbviz / floor; a peer column = nbviz / peer (below 1: nbviz is faster). Targets are
"met" only when the upper quartile meets them.
"""

from __future__ import annotations

import json
from pathlib import Path

import interleave as il

_BEGIN, _END = "<!-- bench:begin -->", "<!-- bench:end -->"
#: per-sample extras a row reports in seconds, shown beside its warm time
EXTRAS = ("cached", "slowest", "final", "startup", "after_startup", "store")


def _spread(record: dict, clock: str = "wall"):
    key = f"{clock}_spread"
    return il.Spread(**record[key]) if record.get(key) else None


def summarise(group, records: dict) -> dict:
    """One group's rows, ratios and verdict (plain JSON)."""
    key = group.key
    nbviz = f"{key}/nbviz"
    out = {"label": group.label, "target": group.target_text(), "floor": group.floor,
           "floor_times": group.floor_times, "clock": group.clock, "rows": records, "ratios": {}}
    floor = f"{key}/floor"
    variants = [name for name, _ in group.variants]
    out["variants"] = variants
    for clock in dict.fromkeys(("wall", "cpu", group.clock)):
        if group.floor is not None:
            for name in ["nbviz", *variants]:
                r = il.paired(records, f"{key}/{name}", floor, clock)
                if r is not None:
                    r = il.Spread(*(v / group.floor_times for v in (r.median, r.q1, r.q3)), r.n)
                    out["ratios"][f"floor_{clock}" if name == "nbviz" else f"{name}/floor_{clock}"] = r.as_dict()
        for row_id in records:
            library = row_id.split("/", 1)[1]
            if library in ("nbviz", "floor", "floor-peers-venv"):
                continue
            if clock not in ("wall", "cpu") and library not in variants:
                continue  # an extra: nbviz's row and its variants only
            r = il.paired(records, nbviz, row_id, clock)
            if r is not None:
                out["ratios"][f"{library}_{clock}"] = r.as_dict()
        r = il.paired(records, f"{key}/floor-peers-venv", floor, clock)
        if r is not None:
            out["ratios"][f"peer_floor_vs_floor_{clock}"] = r.as_dict()
    out["verdict"] = _verdict(group, records.get(nbviz, {}), out["ratios"])
    traces = records.get(nbviz, {}).get("traces")
    out["traces_warm"] = None if traces is None else int(sum(traces))
    return out


def _verdict(group, record: dict, ratios: dict) -> str:
    if record.get("status") != "ok" or not record.get("wall"):
        return "not measured"
    parts = []
    if group.max_ratio is not None:
        if f"floor_{group.clock}" not in ratios:
            return "not measured"
        parts.append(il.verdict(il.Spread(**ratios[f"floor_{group.clock}"]), group.max_ratio))
    if group.max_seconds is not None:
        parts.append(il.verdict(_spread(record), group.max_seconds))
    if not parts:
        return "no target"
    for word in ("missed", "within noise"):
        if word in parts:
            return word
    return "met"


def summarise_pair(records: dict) -> dict:
    """Two rows (A, B): B's time over A's per round, wall and CPU."""
    ids = list(records)
    out = {"rows": records}
    if len(ids) == 2:
        for clock in ("wall", "cpu"):
            r = il.paired(records, ids[1], ids[0], clock)
            out["ratio" if clock == "wall" else "ratio_cpu"] = None if r is None else r.as_dict()
    return out


def _ms(spread) -> str:
    return "–" if spread is None else spread.text(" ms", 1000)


def _x(d) -> str:
    return "–" if not d else il.Spread(**d).text("×", digits=3)


def one_line(summary: dict) -> str:
    nb = next((r for k, r in summary["rows"].items() if k.endswith("/nbviz")), {})
    if nb.get("status") != "ok":
        return f"{summary['label']}: {nb.get('status')} {nb.get('error', '')[:200]}"
    return (f"{summary['label']}: {_ms(_spread(nb))}, ×floor {_x(summary['ratios'].get('floor_wall'))}"
            f", {summary['verdict']}, new traces when warm {summary['traces_warm']}")


def markdown(results: dict) -> str:
    meta = results["meta"]
    m = meta["machine"]
    lines = [f"# nbviz benchmark, {meta['started']}", "",
             f"Machine: {m['cpu']}, {m['cores']} cores; load average at start "
             f"{', '.join(f'{v:.2f}' for v in m['load'])}"
             + (f", at end {', '.join(f'{v:.2f}' for v in meta['load_end'])}" if "load_end" in meta else "")
             + ".", ""]
    for name, info in meta.get("workers", {}).items():
        lines.append(f"- worker `{name}`: " + ", ".join(f"{k} {v}" for k, v in info.items()))
    lines += ["", f"{meta['samples']} interleaved warm samples per row (fewer, marked *, once a "
              f"group's warm samples took {meta['budget_s']:g} s). Times: median [interquartile "
              "range] of wall time. Ratios: median [IQR] of per-round ratios; CPU-time ratio "
              "below. A target is met only when the upper quartile meets it; 'within noise' when "
              "the interquartile range straddles it.", ""]
    for model, entry in results["models"].items():
        lines += [f"## {model}, {entry['size']}×{entry['size']}", "",
                  "| method | cold | warm | ×floor (wall) | ×floor (CPU) | peers: nbviz / peer | "
                  "target | verdict | traces |", "|---|---|---|---|---|---|---|---|---|"]
        for key, g in entry["groups"].items():
            nb = g["rows"].get(f"{key}/nbviz", {})
            if nb.get("status") != "ok":
                lines.append(f"| {g['label']} | {nb.get('status')}: {nb.get('error', '')[:120]} "
                             "| | | | | | | |")
                continue
            cold = nb.get("cold", {}).get("wall")
            peers = [f"{k[:-5]} {_x(v)}" for k, v in g["ratios"].items()
                     if k.endswith("_wall") and "/" not in k and not k.startswith(("floor", "peer_floor"))
                     and k[:-5] not in g.get("variants", [])]
            errors = [f"{rid.split('/', 1)[1]}: error" for rid, r in g["rows"].items()
                      if r.get("status") != "ok"]
            if g["ratios"].get("peer_floor_vs_floor_wall"):
                peers.append(f"(peers' TF floor / ours {_x(g['ratios']['peer_floor_vs_floor_wall'])})")
            short = "*" if nb.get("short") else ""
            extras = [f"{k} {_ms(il.spread(nb[k]))}" for k in EXTRAS if nb.get(k)]
            clock = g.get("clock", "wall")
            if clock != "wall" and g["ratios"].get(f"floor_{clock}"):
                extras.append(f"{clock} ×floor {_x(g['ratios'][f'floor_{clock}'])}")
            for k, v in g["ratios"].items():  # the variants over the floor
                if "/floor_" in k and (k.endswith("_wall") or (clock != "wall" and k.endswith(f"_{clock}"))):
                    name, rest = k.split("/floor_")
                    extras.append(f"{name} {_ms(_spread(g['rows'].get(f'{key}/{name}', {})))}, ×floor {_x(v)}"
                                  if rest == "wall" else f"{name} {rest} ×floor {_x(v)}")
            for name in g.get("variants", []):  # nbviz's row over each variant
                for c in dict.fromkeys(("wall", clock)):
                    if g["ratios"].get(f"{name}_{c}"):
                        extras.append(f"nbviz / {name}{'' if c == 'wall' else f' ({c})'} "
                                      f"{_x(g['ratios'][f'{name}_{c}'])}")
            if extras:
                short += f" ({'; '.join(extras)})"
            lines.append(
                f"| {g['label']} | {'–' if cold is None else f'{cold * 1000:.0f} ms'} "
                f"| {_ms(_spread(nb))}{short} | {_x(g['ratios'].get('floor_wall'))} "
                f"| {_x(g['ratios'].get('floor_cpu'))} | {'; '.join(peers + errors) or '–'} "
                f"| {g['target'] or '–'} | {g['verdict']} | {g['traces_warm']} |")
        if entry.get("threads"):
            lines += ["", "Threads (fwd_bwd, second row over first: below 1 means 1/1 threads is "
                      "faster; 'loaded' runs beside a busy loop on one core):", "",
                      "| rows | ratio (wall) | ratio (CPU) |", "|---|---|---|"]
            for label, t in entry["threads"].items():
                ids = " / ".join(k.split("/", 1)[1] for k in list(t["rows"])[::-1])
                lines.append(f"| {label}: {ids} | {_x(t.get('ratio'))} | {_x(t.get('ratio_cpu'))} |")
        lines.append("")
    lines.append(f"Run took {meta.get('duration_s', 0) / 60:.1f} min: `{meta['command']}`.")
    return "\n".join(lines) + "\n"


def write(results: dict, stem: Path) -> dict:
    stem = Path(stem)
    paths = {"json": stem.with_suffix(".json"), "md": stem.with_suffix(".md")}
    paths["json"].write_text(json.dumps(results, indent=1, default=float))
    paths["md"].write_text(markdown(results))
    return paths


def update_readme(readme: Path, table_md: str) -> None:
    """Replace the text between the bench markers of ``readme`` with ``table_md``."""
    text = readme.read_text()
    if _BEGIN in text and _END in text:
        head, rest = text.split(_BEGIN, 1)
        _, tail = rest.split(_END, 1)
        readme.write_text(f"{head}{_BEGIN}\n{table_md}{_END}{tail}")
