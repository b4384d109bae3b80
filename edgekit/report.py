"""report.json (the stable, scriptable record of a run) and report.md (the same, for people).

report.json's format is documented in the README ("report.json"); fields are only
ever added under the same `format` tag.
"""

from __future__ import annotations

import json
from pathlib import Path


def milliseconds(value: float) -> str:
    """About 3 significant digits: 15.4, 7.00, 2.36, 0.0123 (a tiny CNN runs in microseconds)."""
    for floor, digits in ((100, 0), (10, 1), (1, 2)):
        if value >= floor:
            return f"{value:.{digits}f}"
    return f"{value:.3g}"


def count(value: float) -> str:
    """Parameters or bytes with a unit prefix: 17.4M, 9.2k."""
    for factor, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= factor:
            return f"{value / factor:.3g}{unit}"
    return f"{value:.0f}"


def _ms(latency: dict, name: str) -> str:
    return milliseconds(latency[name])


def _metric(m: dict) -> str:
    low, high = m["ci95"]
    return f"{m['value']:.3f} [{low:.3f}, {high:.3f}]"


def _arch(entry: dict) -> str:
    a = entry.get("architecture") or {}
    if "width" in a:
        return f"CNN w{a['width']} d{a['depth']}"
    if "layers" in a:
        return f"{a['layers']} layer{'s' if a['layers'] != 1 else ''} {a['keep']}, h{a['hidden']}"
    return "teacher"


def render_markdown(data: dict) -> str:
    budget, teacher, tasks = data["budget"], data["teacher"], [t["name"] for t in data["tasks"]]
    p = budget["percentile"]
    seq = "task lengths" if budget["seq_len"] == "task" else f"seq {budget['seq_len']}"
    size = f", size <= {budget['size_mb']} MB" if budget["size_mb"] else ""
    size += f"; a file fits at <= {budget['ms'] * (1 - budget['headroom']):.3g} ms measured " \
            f"({budget['headroom']:.0%} headroom for re-timing drift)" if budget["headroom"] else ""
    intro = (f"Budget: {p} <= {budget['ms']} ms at batch {budget['batch']}, {seq}, on {budget['provider']} with "
             f"{budget['threads']} thread(s){size}. Machine: {data['machine']['name']}. "
             f"Run took {data['seconds'] / 60:.1f} min.")
    lines = [f"# edgekit run: {data['recipe']['name']}", "", intro, ""]
    selected = data["selected"]
    if selected:
        lines += [f"**Selected: {selected['name']}** (`{selected['onnx']}`, shipped as `{selected['bundle']}`).", ""]
    else:
        lines += [f"**Nothing fits.** {data['why']}", ""]

    header = ["file", "architecture", "params", "size (bytes)", f"probe {p} (ms)", "p50", "p95", "p99"]
    header += [f"{t} {data['tasks'][i]['metric']} [95% CI] (retention)" for i, t in enumerate(tasks)]
    header += ["meets budget"]
    legend = ("Latency in ms measured on the file itself; metrics on the ONNX file, per task, with bootstrap "
              "95% intervals; retention = student / teacher.")
    lines += ["## Teacher and candidates", "", legend, "",
              "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    rows = [{"name": "teacher (fp32)", **teacher, "retention": {}}] + data["candidates"]
    for entry in rows:
        probe = entry.get("probe_latency_ms")
        cells = [entry["name"], _arch(entry), count(entry["params"]), count(entry["size_bytes"]),
                 _ms(probe, p) if probe else "-"]
        cells += [_ms(entry["latency_ms"], q) for q in ("p50", "p95", "p99")]
        for task in tasks:
            kept = entry["retention"].get(task)
            cells.append(_metric(entry["metrics"][task]) + (f" ({kept:.1f}%)" if kept is not None else ""))
        cells.append("-" if entry is rows[0] else ("yes" if entry["meets_budget"] else "no"))
        lines.append("| " + " | ".join(cells) + " |")

    lines += ["", "## Probes (untrained candidates, timed before any training)", "",
              f"| candidate | architecture | params | fp32 {p} (ms) | int8 {p} (ms) | can fit |", "|---" * 6 + "|"]
    for probe in data["probes"]:
        variants = probe["variants"]
        cells = [probe["name"], _arch(probe), count(probe["params"])]
        cells += [_ms(variants[v]["latency_ms"], p) if v in variants else "-" for v in ("fp32", "int8")]
        cells.append("yes" if probe["feasible"] else "no")
        lines.append("| " + " | ".join(cells) + " |")

    if selected:
        best = next(e for e in data["candidates"] if e["name"] == selected["name"])
        lines += ["", f"## What {best['name']} lost, per task", ""]
        losses = []
        for task in tasks:
            t, s = teacher["metrics"][task], best["metrics"][task]
            losses.append((s["value"] - t["value"], task))
            kept = best["retention"].get(task)
            lines.append(f"- {task}: teacher {_metric(t)}, student {_metric(s)}, change {s['value'] - t['value']:+.3f}"
                         + (f" ({kept:.1f}% kept)" if kept is not None else ""))
        change, task = min(losses)
        verdict = f"Largest loss: {task} ({change:+.3f})." if change < 0 else \
            f"No task lost ground; the smallest change is {task} ({change:+.3f})."
        lines += ["", verdict + " Differences inside the intervals above are not distinguishable from noise "
                                "on this evaluation set."]
    lines += ["", "## What distillation bought", "",
              ("The same student as initialized from the teacher's layers (untrained, fp32) against the "
              "distilled one:"), ""]
    for entry in data["candidates"]:
        if entry["variant"] == "fp32" and entry.get("undistilled_metrics"):
            before = entry["undistilled_metrics"]
            lines.append(f"- {entry['student']}: " + "; ".join(
                f"{task} {before[task]['value']:.3f} -> {entry['metrics'][task]['value']:.3f}" for task in tasks))
    lines += ["", "## Distillation", ""]
    for entry in data["candidates"]:
        if entry["variant"] == "fp32":
            d = entry["distillation"]
            lines.append(f"- {entry['student']}: {d['steps']} steps in {d['seconds']:.0f} s; "
                         f"{d['initialized_from_teacher']['copied_tensors']} tensors initialized from the teacher, "
                         f"{d['initialized_from_teacher']['random_tensors']} random")
    return "\n".join(lines) + "\n"


def write_report(folder: Path, data: dict) -> None:
    (folder / "report.json").write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    (folder / "report.md").write_text(render_markdown(data), encoding="utf-8")
