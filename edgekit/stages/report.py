"""report.json (the stable, scriptable record of a run), report.md and report.html (the same,
for people; the HTML is self-contained: inline SVG charts, no scripts, no CDN).

report.json's format is documented in docs/pipeline.md ("report.json"); fields are only
ever added under the same `format` tag. Both human renderings come from one list of
blocks, so the Markdown and the HTML never disagree.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from pathlib import Path

from edgekit.names import LATENCY_FIELDS
from edgekit.recipe import Budget
from edgekit.records import Decision, ProbeEntry, Report, Row
from edgekit.stages.fits import END_TO_END_PATHS, PATH_WORDS, faster_path, path_latency
from edgekit.units import class_list, count, milliseconds, timed_shape

REPORT_FORMAT = "edgekit.report/2"


@dataclass
class RunReport:
    """What a run produced: `data` is report.json's content, `path` the run folder."""

    path: Path
    data: dict

    @property
    def selected(self) -> dict | None:
        return self.data["selected"]

    @property
    def files(self) -> list[dict]:
        """The evaluation matrix: one row per file x provider."""
        return self.data["files"]


def _metric(m: dict) -> str:
    low, high = m["ci95"]
    return f"{m['value']:.3f} [{low:.3f}, {high:.3f}]"


def _number(value) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _arch(entry: dict) -> str:
    a = entry.get("architecture") or {}
    if "width" in a:
        return f"CNN w{a['width']} d{a['depth']}"
    if "layers" in a:
        return (f"{a['layers']} layer{'s' if a['layers'] != 1 else ''} {a['keep']}, h{a['hidden']}"
                + (f" a{a['heads']} f{a['ffn']}" if "ffn" in a else ""))
    if "static" in a:
        # a static-embedding student (edgekit.stages.students.static_candidates): a token table, no layers
        return f"static embeddings d{a['static']}" + (f", {count(a['vocab'])} tokens" if a.get("vocab") else "")
    return "teacher"


def task_record(task, train_examples: int, test_examples: int, truncated: dict | None) -> dict:
    """report.json's `tasks[]` entry of one loaded task (edgekit.data.tasks.TaskData): what it is, how many
    examples each side holds and where the test side came from, and everything loading left out or changed
    (bad rows, duplicates, conflicting labels, training rows also in the test split), the classes without
    test examples and, for text tasks, how many examples the teacher's max_length cuts (`truncated`), and what the
    trivial answer scores on the test split (edgekit.data.baselines: every file is compared with it)."""
    from edgekit.data.baselines import trivial_baseline

    trivial, who = trivial_baseline(task)
    return {"name": task.name, "kind": task.spec.kind, "metric": task.spec.metric, "output": task.output,
            "trivial": {"value": trivial, "who": who},
            "labels": task.labels, "train_examples": train_examples, "test_examples": test_examples,
            "test_from": task.test_from,
            "skipped_rows": {reason: {"count": len(numbers), "rows": numbers[:20]}
                             for reason, numbers in task.skipped.items()},
            "duplicates_dropped": task.duplicates, "conflicting_labels": task.conflicts,
            "train_rows_also_in_test": task.also_in_test,
            "classes_without_test_examples": task.classes_without("test"),
            "classes_without_train_examples": task.classes_without("train"),
            "truncated": truncated}


def _data_notes(task: dict) -> list[str]:
    """report.md's lines on what loading did to one task's data: its class names in the logits' order (the
    bundle's labels.json order), then what it left out or changed (report.json `tasks[]`; older reports lack the
    fields, and get no lines)."""
    name, lines = task["name"], []
    if task.get("labels"):
        lines.append(f"Task {name}: classes, as the logits' columns: {class_list(task['labels'])}")
    if task.get("test_from"):
        lines.append(f"Task {name}: {task['train_examples']} train / {task['test_examples']} test examples (test: "
                     f"{task['test_from']})")
    if task.get("duplicates_dropped"):
        lines.append(f"Task {name}: {task['duplicates_dropped']} exact duplicate row(s) dropped")
    conflicts = task.get("conflicting_labels") or {}
    if conflicts.get("count"):
        cases = "; ".join(f"{case['text']!r} -> {case['kept']} ("
                          + ", ".join(f"{label} x{n}" for label, n in case["labels"].items()) + ")"
                          for case in conflicts["cases"][:5])
        lines.append(f"Task {name}: {conflicts['count']} input(s) with conflicting labels, each kept with "
                     f"{conflicts['rule']}; {conflicts['rows_dropped']} row(s) dropped. E.g. {cases}")
    if task.get("train_rows_also_in_test"):
        lines.append(f"Task {name}: {task['train_rows_also_in_test']} training row(s) left out because their input "
                     "is also a test example")
    if task.get("classes_without_test_examples"):
        lines.append(f"Task {name}: no test examples of class(es) {', '.join(task['classes_without_test_examples'])}"
                     ": their accuracy is not measured")
    if task.get("classes_without_train_examples") and task.get("train_examples"):
        lines.append(f"Task {name}: no training examples of class(es) "
                     f"{', '.join(task['classes_without_train_examples'])}")
    cut = task.get("truncated")
    if cut and (cut["train"] or cut["test"]):
        lines.append(f"Task {name}: {cut['train']} train / {cut['test']} test example(s) have a text longer than "
                     f"teacher.max_length {cut['max_length']} tokens, cut to it")
    return lines


# ---------------------------------------------------------------------------- blocks

def _blocks(data: dict) -> list[tuple]:
    """The report as ("h1"|"h2"|"h3"|"p"|"strong"|"list"|"table"|"figure"|"summary", ...) blocks."""
    budget, tasks = data["budget"], [t["name"] for t in data["tasks"]]
    p = budget["percentile"]
    size = f", size <= {budget['size_mb']} MB" if budget["size_mb"] else ""
    fits = (f" A file fits at <= {budget['limit_ms']:.3g} ms measured ({budget['headroom']:.0%} headroom for "
            "re-timing drift)." if budget["headroom"] else "")
    providers = data["providers"]
    blocks = [("h1", f"edgekit {'sweep' if data.get('sweep') else 'run'}: {data['recipe']['name']}"),
              *_first_screen(data), ("h2", "Budget, machine and data"),
              ("p", (f"Budget: {_budget_text(budget)} at {_timed_shape(data)}, {budget['threads']} "
                    f"thread(s){size}.{fits} Providers measured: {', '.join(providers['measured'])}. "
                    f"Machine: {data['machine']['name']}. {_timed_on(data)}Run took {data['seconds'] / 60:.1f} "
                    f"min."))]
    skipped = {**providers["skipped"], **data["variants"]["skipped"]}
    rows = [f"Left out of task {t['name']}: " + ", ".join(f"{r['count']} row(s) with {reason} (rows "
                                                          f"{', '.join(map(str, r['rows']))})"
                                                          for reason, r in t["skipped_rows"].items())
            for t in data["tasks"] if t.get("skipped_rows")]
    rows += [line for t in data["tasks"] for line in _data_notes(t)]
    if skipped or rows:
        blocks.append(("list", [f"Skipped {name}: {why}" for name, why in skipped.items()] + rows))
    blocks += _selection(data)
    if data.get("bundle"):
        blocks += _bundle(data["bundle"], data["machine"])
    blocks += _matrix(data, tasks, p)
    blocks += _providers_compared(data, tasks)
    blocks += _web_runtime(data, tasks)
    if data.get("sweep"):
        blocks += _sweep(data, tasks, p)
    blocks += _accuracy_aware(data)
    blocks += _int8_effect(data, tasks)
    blocks += _probes(data, p)
    if data.get("gap"):
        blocks += _gap(data)
    if data.get("score_scale"):
        blocks += _score_scale(data["score_scale"])
    blocks += _distillation(data, tasks)
    return blocks


def _selection(data: dict) -> list[tuple]:
    blocks = []
    selected = data["selected"]
    if data.get("sweep"):
        return blocks
    if selected:
        blocks.append(("strong", (f"Selected: {selected['name']} on {selected['provider']} ({selected['onnx']}, "
                                 f"shipped as {selected['bundle']}).")))
        blocks += [("p", d["statement"])] if (d := (data.get("decision") or {}).get(selected["provider"])) else []
    else:
        blocks.append(("strong", f"Nothing fits. {data['why']}"))
    others = {prov: name for prov, name in data["picks"].items() if prov != data["providers"]["measured"][0]}
    if others:
        blocks.append(("list", [f"Pick on {prov}: {name or 'nothing fits: ' + data['why_by_provider'][prov]}"
                                for prov, name in others.items()]))
    return blocks


def _bundle(bundle: dict, machine: dict) -> list[tuple]:
    from edgekit.runtime.profiles import elsewhere_note

    target = bundle["target"]
    note = elsewhere_note(target, machine)
    parts = [(f"bundle/ holds {len(bundle['files']) + 1} files ({_mb(bundle['bytes'])}) with manifest.json; "
             f"the file to deploy is {bundle['deploy']}")]
    fixed = bundle["fixed_shape"]
    if fixed:
        scores = ", ".join(f"{task} {m['value']:.4f}" for task, m in fixed["metrics"].items())
        if fixed.get("seq_len") is None:  # an image model: no length to pad to, its inputs are fixed whole
            inputs = ", ".join(f"{name} {'x'.join(map(str, dims))}" for name, dims in (fixed.get("inputs") or {}).items())
            parts.append(f"its shapes are fixed at batch {fixed['batch']} ({inputs or 'every input'}: it scores "
                         f"{scores} measured as it ships)")
        else:
            parts.append(f"its shapes are fixed at batch {fixed['batch']}, seq {fixed['seq_len']} (every input padded "
                         f"to that length: it scores {scores} measured as it ships)")
    if bundle["ort"]:
        parts.append(f"model.ort ({bundle['ort']['platform']}) is made from it for ONNX Runtime Mobile, with the "
                     f"operators a reduced build needs in {bundle['ort']['required_operators']}")
    app = bundle.get("app")
    if app and app.get("file"):
        latency = app.get("latency_ms") or {}
        timed = (f": text in to outputs out p50 {milliseconds(latency['app']['p50'])} ms, against "
                 f"{milliseconds(latency['two_step']['p50'])} ms for tokenizer.json + model.onnx"
                 if latency.get("app") else "")
        parts.append(f"{app['file']} takes the texts themselves (the tokenizer inside the graph, onnxruntime-"
                     f"extensions){timed}"
                     + (" — it is the measured path: the pick met the end-to-end budget through it, so it ships "
                        "whatever export.tokenizer_in_graph says" if app.get("measured_path") else ""))
    elif app:
        parts.append(f"no app graph with the tokenizer inside: {app['reason']} ({app['fix']})")
    if target:
        parts.append(f"target profile: {target['name']} ({target['description']})")
    blocks = [("h2", "Bundle"), ("p", "; ".join(parts) + ". Check it any time with `edgekit verify RUN/bundle`.")]
    if note:
        blocks.append(("strong", note))
    mobile = bundle["mobile"]
    if mobile:
        rows = [[name, p["suitability"], str(p["partitions"]), f"{p['supported_nodes']}/{p['nodes']}",
                 ", ".join(p["unsupported_ops"]) or "-"] for name, p in mobile["providers"].items()]
        blocks += [("p", (f"ONNX Runtime's mobile usability check of {mobile['file']}: how NNAPI and CoreML would "
                          "split the graph (one partition over 75% of the nodes is a 'yes'; every extra partition "
                          "costs a copy between the accelerator and the CPU).")),
                   ("table", ["provider", "ORT's verdict", "partitions", "nodes on it", "unsupported ops"], rows)]
    return blocks


def _matrix(data: dict, tasks: list[str], p: str) -> list[tuple]:
    e2e = any(_latency(entry, "end-to-end", p) is not None for entry in data["files"])
    # Each end-to-end path a column pair, labelled by what ships; the app graph's only where some file has one.
    paths = [path for path in END_TO_END_PATHS if any(path_latency(e, path, p) is not None for e in data["files"])]
    header = ["file", "provider", "architecture", "params", "size (MB)", f"probe {p}", "p50", "p95", "p99"]
    header += [f"end-to-end {q} ({PATH_WORDS[path]})" for path in paths for q in ("p50", "p95")]
    header += ["end to end vs teacher (faster path)"] if e2e else []
    header += [f"{t} {data['tasks'][i]['metric']} [95% CI] (retention)" + _trivial_note(data['tasks'][i])
               for i, t in enumerate(tasks)]
    placements = len(data["providers"]["measured"]) > 1 or any(
        (e.get("placement") or {}).get("full") is False for e in data["files"])
    header += ["fits", "Pareto"] + (["placement"] if placements else [])
    rows = []
    for entry in data["files"]:
        probe = entry.get("probe_latency_ms")
        cells = [entry["name"], entry["provider"], _arch(entry), count(entry["params"]),
                 f"{entry['size_bytes'] / 1e6:.3g}", milliseconds(probe[p]) if probe else "-"]
        cells += [milliseconds(entry["latency_ms"][q]) for q in ("p50", "p95", "p99")]
        cells += [milliseconds(v) if (v := path_latency(entry, path, q)) is not None else "-"
                  for path in paths for q in ("p50", "p95")]
        if e2e:
            cells.append(_versus_teacher(entry, _teacher_row(data, entry["provider"]), p))
        for task in tasks:
            kept = entry["retention"].get(task)
            cells.append(_metric(entry["metrics"][task]) + (f" ({kept:.1f}%)" if kept is not None else "")
                         + _no_better(entry, task))
        cells += ["yes" if entry["meets_budget"] else "no", "yes" if entry.get("pareto") else ""]
        cells += [_placement_cell(entry.get("placement"))] if placements else []
        rows.append(cells)
    unmeasured = _app_unmeasured(data["files"]) if "app graph" in paths or e2e else []
    return [("h2", "Evaluation matrix: every file on every provider"),
            ("p", ("Latency in ms measured on the file itself at the budget shape (median of the timing rounds)"
                   + (f"; end to end: text in to outputs out on the tasks' test texts, each path timed alike in the "
                      f"same rounds: {PATH_WORDS['tokenizer.json']} (the bundle's tokenizer.json through the Rust "
                      f"tokenizers library, then the file), and {PATH_WORDS['app graph']} (the file with "
                      "onnxruntime-extensions' BertTokenizer op in front, fed the texts; checked token for token "
                      "against tokenizer.json on those texts and probe texts first). 'vs teacher': the teacher's "
                      f"fp32 file on its faster end-to-end path over this file's on its faster one, at {p}"
                      if e2e else "") + "; "
                  "metrics measured on the ONNX file, per task, on the full evaluation split, with bootstrap 95% "
                  "intervals; retention = file / teacher fp32; trivial: what a model that learnt nothing scores "
                  "(the most frequent class, chance, a constant score), and a file marked 'no better than trivial' "
                  "never fits. Pareto: no other file of the same provider is as "
                  f"good on every task, as fast at {p} and as small, and better on one.")),
            ("table", header, rows)] + ([("list", unmeasured)] if unmeasured else [])


def _versus_teacher(row: dict, teacher: dict | None, p: str) -> str:
    """'2.4x faster (app graph)': the teacher's faster end-to-end path over the row's, the row's path named."""
    path, mine = _faster(row, p)
    _, theirs = _faster(teacher, p)
    if mine is None or theirs is None or mine <= 0:
        return "-"
    ratio = theirs / mine
    return (f"{_times(ratio)} faster" if ratio >= 1 else f"{_times(1 / ratio)} slower") + f" ({path})"


def _app_unmeasured(rows: list[dict]) -> list[str]:
    """'App graph not timed for X, Y: why', one line per reason (report.json: each row's latency_app_why)."""
    reasons: dict[str, list[str]] = {}
    for row in rows:
        if row.get("latency_app_why"):
            reasons.setdefault(row["latency_app_why"], []).append(f"{row['name']} on {row['provider']}")
    return [f"{PATH_WORDS['app graph']} not timed for {', '.join(names)}: {why}" for why, names in reasons.items()]


def _trivial_note(task: dict) -> str:
    """'; trivial 0.654' for a column header (runs before the trivial baseline was recorded: nothing)."""
    trivial = task.get("trivial")
    return f"; trivial {trivial['value']:.3f}" if trivial else ""


def _no_better(entry: dict, task: str) -> str:
    """' - no better than trivial' where the file does not clear the trivial answer on `task` (it never fits)."""
    record = (entry.get("trivial") or {}).get(task)
    return " - no better than trivial" if record and not record["ships"] else ""


def _reads_images(data: dict) -> bool:
    """Whether the run's tasks read images (report.json tasks[].kind is the task kind's name)."""
    from edgekit.data.kinds import KINDS

    return any(getattr(KINDS.get(t.get("kind")), "images", False) for t in data["tasks"])


def _timed_shape(data: dict) -> str:
    """'batch 1, seq 128', or for an image run 'batch 1, images 1x8x8 (C x H x W)' (edgekit.units.timed_shape);
    an image run's report from before budget.image_shape says 'the task's images', never its unused seq_len."""
    budget = data["budget"]
    return timed_shape(budget["batch"], budget.get("seq_len"), budget.get("image_shape"), _reads_images(data))


def _timed_on(data: dict) -> str:
    """'Every file timed on vm (AMD EPYC), by the Ray executor. ': which machines timed the files."""
    hosts = {}
    for row in data["files"]:
        where = row.get("timed_on") or {}
        hosts.setdefault(f"{where.get('host')} ({where.get('cpu')})", []).append(row["name"])
    executor = (data.get("executor") or {}).get("name", "in-process")
    if not hosts:
        return ""
    if len(hosts) == 1:
        return f"Every file timed on {next(iter(hosts))}, {executor}. "
    return ("Files timed on " + "; ".join(f"{host}: {len(names)} file(s)" for host, names in hosts.items())
            + f" ({executor}; a cached timing keeps the machine that took it). ")


def _placement_cell(record: dict | None) -> str:
    """'all 186' or '180/186, MatMulNBits 6 on CPU': where the provider ran the file's nodes."""
    if not record or not record.get("recorded"):
        return "unknown"
    if record["full"]:
        return f"all {record['nodes']}"
    ops = ", ".join(f"{op} {n}" for op, n in record["fallback_op_types"].items())
    where = "/".join(ep.removesuffix("ExecutionProvider") for ep in record["fallback"])
    return f"{record['on_provider']}/{record['nodes']}, {ops} on {where}"


def _providers_compared(data: dict, tasks: list[str]) -> list[tuple]:
    """The same files on each other provider against the target: metric differences and latency ratios."""
    compared = data.get("provider_agreement") or []
    if not compared:
        return []
    rows = []
    for c in compared:
        cells = [c["name"], f"{c['provider']} vs {c['versus']}"]
        for task in tasks:
            d = c["tasks"][task]
            interval = "" if d["ci95"] is None else f" [{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}]"
            verdict = {True: "within noise", False: "differs", None: "(no interval)"}[d["within_noise"]]
            cells.append(f"{d['difference']:+.4f}{interval} {verdict}")
        cells += [f"{c['p95_ratio']['latency_ms']:.2f}x" if "latency_ms" in c["p95_ratio"] else "-",
                  _placement_cell(c["placement"])]
        rows.append(cells)
    differ = sum(c["within_noise"] is False for c in compared)
    return [("h2", "The same files on each provider"),
            ("p", (f"Each file's metric on the other provider minus on {compared[0]['versus']}, on the same test "
                  "examples (paired bootstrap 95% interval; within noise when it holds zero), and its model-only "
                  f"p95 there over its p95 on {compared[0]['versus']}. {differ} of {len(compared)} file(s) score "
                  "differently beyond noise.")),
            ("table", ["file", "providers", *[f"{t} difference" for t in tasks], "p95 ratio", "placement"], rows)]


def _web_runtime(data: dict, tasks: list[str]) -> list[tuple]:
    """Rows measured in the browser (onnxruntime-web, edgekit/runtime/web_runtime.py): how far each file's outputs there
    are from the same file's on the native CPU provider, and whether any label changed."""
    web = [r for r in data.get("files") or [] if r.get("agreement")]
    if not web:
        return []

    def cell(d: dict) -> str:
        diff = "-" if d.get("max_abs_diff") is None else f"{d['max_abs_diff']:.2g}"
        if d.get("labels_changed") is None:
            return f"max diff {diff}"
        return f"max diff {diff}, {d['labels_changed']} of {d['of']} changed"

    rows = [[r["name"], r["provider"], *[cell(r["agreement"]["tasks"].get(t) or {}) for t in tasks]] for r in web]
    changed = [r["name"] for r in web if any(d.get("labels_changed") for d in r["agreement"]["tasks"].values())]
    against = web[0]["agreement"]["against"]
    return [("h2", "On the web runtime"),
            ("p", (f"Files run in onnxruntime-web inside headless Chromium ({web[0]['provider']}), timed in the page, "
                   f"against the same file on {against}: the largest absolute difference of what each task's "
                   "predictions carry (probabilities, cosines) and how many labels (or retrieval ranks) changed. "
                   + (f"Labels changed for {', '.join(changed)}." if changed else "No label changed.")
                   + " End-to-end latency is not measured in the browser.")),
            ("table", ["file", "provider", *tasks], rows)]


def _int8_effect(data: dict, tasks: list[str]) -> list[tuple]:
    effect = data.get("int8_on_this_cpu") or []
    if not effect:
        return []
    sets = [name for name, present in data["machine"]["instruction_sets"].items() if present]
    rows = [[e["file"], f"{e['x_vs_fp32']['p50']:.2f}x", f"{e['x_vs_fp32']['p95']:.2f}x"]
            + [f"{e['metric_change'][t]:+.4f}" + (f" ({e['kept_of_fp32'][t]:.1f}%)"
                                                   if e["kept_of_fp32"].get(t) is not None else "") for t in tasks]
            for e in effect]
    return [("h2", "Quantization on this CPU"),
            ("p", (f"Each quantized file against its own fp32 file, both measured here ({data['machine']['name']}, "
                   f"{', '.join(sets) or 'no listed instruction sets'}): int8's speed-up depends on the CPU's int8 "
                   "instructions (VNNI or not), and so can its accuracy (weights use 7 bits on x86 without VNNI).")),
            ("table", ["file", "x faster (p50)", "x faster (p95)"] + [f"{t} change (kept of fp32)" for t in tasks],
             rows)]


def _budget_text(budget: dict) -> str:
    """'p95 <= 4.5 ms', or for a relative budget where its milliseconds came from, and how far the
    teacher moved when re-timed among the students."""
    p, teacher = budget["percentile"], budget.get("teacher") or {}
    if budget.get("speedup") is None:
        return f"{p} <= {budget['ms']:g} ms"
    via = f" via {PATH_WORDS[teacher['path']]}, its faster end-to-end path" if teacher.get("path") in PATH_WORDS else ""
    text = (f"{p} <= {budget['ms']:.3g} ms, i.e. x{budget['speedup']:g} faster than the teacher's fp32 file "
            f"({teacher['file']}, {p} {teacher['ms']:.3g} ms{via} on this machine, measured {teacher['measured_at']})")
    if "drift" in teacher:
        again = " on the tokenizer.json path" if teacher.get("path") == "app graph" else ""
        text += (f"; re-timed among the students it measured {teacher['retimed_with_students_ms']:.3g} ms{again} "
                 f"({teacher['drift']:+.1%})")
    return text


def _sweep(data: dict, tasks: list[str], p: str) -> list[tuple]:
    header = ["budget", "as ms", "fits at (ms)", "pick", p, "size (MB)"] + [f"{t} (retention)" for t in tasks]
    header += ["worst-task retention"]
    rows = []
    for point in data["sweep"]:
        if point["pick"] is None:
            rows.append([point["budget"], f"{point['ms']:.3g}", f"{point['limit_ms']:.3g}", "nothing fits", "-", "-"]
                        + ["-"] * len(tasks) + [point["why"]])
            continue
        cells = [point["budget"], f"{point['ms']:.3g}", f"{point['limit_ms']:.3g}", point["pick"],
                 milliseconds(point["latency_ms"]),
                 f"{point['size_bytes'] / 1e6:.3g}"]
        for task in tasks:
            kept = point["retention"].get(task)
            cells.append(f"{point['metrics'][task]:.3f}" + (f" ({kept:.1f}%)" if kept is not None else ""))
        cells.append(f"{point['min_retention']:.1f}%" if point["min_retention"] is not None else "-")
        rows.append(cells)
    return [("h2", "Sweep: the pick at each budget"),
            ("p", ("Every file was measured once; each budget picks among the same files. Run distill-and-export "
                  "with --budget set to one of them to get its bundle (the cache makes that fast).")),
            ("table", header, rows), ("figure", "sweep", "Worst-task retention of the pick at each budget.")]


def _probes(data: dict, p: str) -> list[tuple]:
    kinds = list(dict.fromkeys(k for probe in data["probes"] for k in probe["variants"]))
    rows = []
    for probe in data["probes"]:
        variants = probe["variants"]
        rows.append([probe["name"], _arch(probe), count(probe["params"])]
                    + [milliseconds(variants[k]["latency_ms"][p]) if k in variants else "-" for k in kinds]
                    + ["yes" if probe["feasible"] else "no"])
    return [("h2", "Probes: candidates timed untrained, before any training"),
            ("table", ["candidate", "architecture", "params"] + [f"{k} {p} (ms)" for k in kinds] + ["can fit"], rows)]


def _gap(data: dict) -> list[tuple]:
    selected = data["selected"]
    blocks = [("h2", f"Where {selected['name']} loses against the teacher"),
              ("p", ("Per task and per slice, measured on the evaluation split. A student matches its teacher on "
                    "average, not everywhere: it is not guaranteed to match the teacher on rare or hardest cases, "
                    "and the slices below show how far it is."))]
    for task, gap in data["gap"].items():
        overall = gap["overall"]
        blocks.append(("h3", f"{task} ({gap['metric']}, n={gap['n']})"))
        line = (f"Teacher {overall['teacher']:.3f}, shipped file {overall['student']:.3f} "
                f"(change {overall['change']:+.3f})")
        if overall.get("student_fp32") is not None:
            line += f"; the same student in fp32 {overall['student_fp32']:.3f}"
        agreement = gap["agreement"]
        blocks.append(("p", f"{line}. Agreement with the teacher: {agreement['value']:.3f} ({agreement['what']})."))
        blocks.append(("strong", gap["statement"]))
        scored_by = _slice_metric(gap)  # the slices' metric, named in every figure: it need not be the task's
        if scored_by != gap["metric"]:
            why = gap.get("slice_metric_note")
            blocks.append(("p", f"Slices and hardest cases are scored by {scored_by}, not the task's "
                                f"{gap['metric']}" + (f": {why}." if why else ".")))
        if gap["slices"]:
            blocks.append(("table", ["slice", "group", "n", f"teacher {scored_by} [95% CI]",
                                     f"shipped {scored_by} [95% CI]", f"change in {scored_by} [95% CI]"],
                           [[s["slice"], s["group"], str(s["n"]), _with_ci(s["teacher"], s.get("teacher_ci95")),
                             _with_ci(s["student"], s.get("student_ci95")),
                             _with_ci(s["change"], s.get("change_ci95"), sign=True)] for s in gap["slices"]]))
            if gap.get("intervals"):
                blocks.append(("p", (f"Intervals: {gap['intervals']}. Slices under "
                                     f"{gap['worst_slice_ignores']['min_n']} examples are not ranked for the "
                                     "largest drop.")))
        if gap.get("calibration"):
            calibration = gap["calibration"]
            blocks.append(("p", f"Calibration ({calibration['what']}): " + ", ".join(
                f"{who.replace('_', ' ')} {calibration[who]:.3f}" for who in ("teacher", "student", "student_fp32")
                if calibration.get(who) is not None) + "."))
        hardest = gap["hardest"]
        blocks.append(("p", (f"Hardest cases ({hardest['rule']}; n={hardest['n']}), "
                             f"{hardest.get('metric') or scored_by}: teacher {_number(hardest['teacher'])}, "
                             f"shipped {_number(hardest['student'])}.")))
        blocks.append(_examples(hardest["examples"]))
        for cause, flips in gap["flips"].items():
            if flips is None:
                blocks.append(("p", f"Flipped by {cause}: not applicable (the shipped file is fp32)."))
                continue
            blocks.append(("p", _flips_text(cause, flips, gap.get("kind"))))
            if flips["examples"]:
                blocks.append(_examples(flips["examples"]))
    return blocks


def _scale_lines(scale: dict | None) -> list[str]:
    """A line per task whose cosine an app would threshold: how the shipped file's sits against the teacher's."""
    if not scale:
        return []
    return [f"Cosine scale on {task}: {entry['statement']}." for task, entry in scale["tasks"].items()]


def _share(value) -> str:
    return "-" if value is None else f"{value:.0%}"


def _score_scale(scale: dict) -> list[tuple]:
    """The shipped file's cosine against the teacher's per pair task (edgekit.stages.score_scale): the shift, and at each
    teacher threshold the matched file threshold and how often the file decides a test pair as the teacher does."""
    blocks = [("h2", f"What a cosine means: {scale['file']} against {scale['teacher']} on {scale['provider']}"),
              ("p", ("A rank metric does not see a cosine's scale: a student can keep the teacher's order of pairs and "
                     "still move every cosine, and an app that thresholds the teacher's cosine then decides "
                     "differently. Matched threshold: the file's cosine with the same share of the fit pairs (never "
                     "test pairs) above it as above the teacher's; agreement: the share of test pairs both call alike "
                     "or both call apart. bundle/manifest.json and bundle/README.md state the matched thresholds."))]
    for task, entry in scale["tasks"].items():
        blocks += [("h3", f"{task} ({entry['kind']})"), ("strong", entry["statement"] + "."),
                   ("table", ["cosine on test pairs", "mean", "std", "p10", "p50", "p90", "at or above 0.5"],
                    [[who, *(f"{entry['shift'][key][q]:.3f}" for q in ("mean", "std", "p10", "p50", "p90")),
                      _share(entry["shift"][key]["above_0.5"])]
                     for who, key in (("teacher", "teacher"), (scale["file"], "file"))])]
        if entry.get("fitted_on") is None:
            blocks.append(("p", f"No threshold matched: {entry.get('why_not_fitted')}."))
        else:
            line = entry["linear"]
            blocks.append(("p", f"Fitted on {entry['fitted_on']}: teacher cosine ~ "
                                + (f"{line['slope']:.3f} x file cosine {line['intercept']:+.3f} (r2 {line['r2']:.3f})"
                                   if line["slope"] is not None and line["r2"] is not None else "(no line: the file's "
                                   "cosine is constant)") + "."))
        blocks.append(("table", ["teacher's threshold", "file's matched threshold", "line's threshold",
                                 "test pairs above: teacher / file / file matched",
                                 "decided as the teacher: same threshold", "matched", "line"],
                       [[f"{t['teacher']:g}", _short(t["file"]), _short(t.get("file_linear")),
                         " / ".join(_share(t[k]) for k in ("teacher_above", "file_above", "file_above_matched")),
                         _share(t["agree_raw"]), _share(t["agree_matched"]), _share(t["agree_linear"])]
                        for t in entry["thresholds"]]))
        if len(entry.get("files") or []) > 2:  # more than the teacher and the pick: every file, unmatched
            threshold = entry["files"][0]["threshold"]
            blocks.append(("table", ["file", "mean cosine", "at or above 0.5",
                                     f"decided as the teacher at the teacher's {threshold:g}"],
                           [[f["file"], f"{f['mean']:.3f}", _share(f["above_0.5"]), _share(f["agree_raw"])]
                            for f in entry["files"]]))
    return blocks


def _slice_metric(gap: dict) -> str:
    """The metric a task's gap slices are scored by (reports before `slice_metric`: the slices' own)."""
    return gap.get("slice_metric") or next((s["metric"] for s in gap["slices"] if s.get("metric")), gap["metric"])


def _flips_text(cause: str, flips: dict, kind: str | None) -> str:
    """'Flipped by quantization: 4 examples (3 right before and wrong after, 1 the other way).'; for a rank
    correlation kind (similarity), where no example is right or wrong, the large rank moves and which way they
    went (older reports held the same counts under a_right_b_wrong / b_right_a_wrong)."""
    from edgekit.data.kinds import KINDS

    found = KINDS.get(kind)
    if getattr(found, "correlation", False):
        further = flips.get("further_from_gold", flips.get("a_right_b_wrong"))
        closer = flips.get("closer_to_gold", flips.get("b_right_a_wrong"))
        return (f"Rank moves by {cause}: {flips['count']} {found.what[0]}s ({flips['rule']}): {further} moved "
                f"further from the gold rank, {closer} closer to it.")
    return (f"Flipped by {cause}: {flips['count']} examples ({flips['a_right_b_wrong']} right before and wrong "
            f"after, {flips['b_right_a_wrong']} the other way).")


def _with_ci(value, interval, sign: bool = False) -> str:
    """0.812 [0.74, 0.87]; '-' for an undefined value (reports before intervals show the value alone)."""
    if value is None:
        return "-"
    text = f"{value:+.3f}" if sign else f"{value:.3f}"
    if not interval:
        return text
    low, high = interval
    return text + (f" [{low:+.3f}, {high:+.3f}]" if sign else f" [{low:.3f}, {high:.3f}]")


def _examples(examples: list[dict]) -> tuple:
    keys = list(dict.fromkeys(k for e in examples for k in e))
    return ("table", keys, [[_short(e.get(k)) for k in keys] for e in examples])


def _short(value) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    text = "-" if value is None else str(value)
    return text if len(text) <= 120 else text[:117] + "..."


def _losses(drops: dict) -> str:
    """Per task, the change against the fp32 file (a drop of 0.4% reads -0.40%, a gain +0.38%)."""
    return ", ".join(f"{task} {-value:+.2f}%" for task, value in drops.items())


def _accuracy_aware(data: dict) -> list[tuple]:
    """The int8 step's search: what all-int8 lost, which MatMuls stayed fp32 and what each one costs."""
    target = data["providers"]["measured"][0]
    searched = [e for e in data["files"] if e.get("accuracy_aware") and e["provider"] == target]
    if not searched:
        return []
    allowed = searched[0]["accuracy_aware"]["max_drop"]
    lines, tables = [], []
    for e in searched:
        record = e["accuracy_aware"]
        first = f"{e['name']}: all-int8 against fp32: {_losses(record['all_int8']['drops'])}"
        if "sensitivity" not in record:
            lines.append(f"{first}: within {allowed:g}%, every MatMul stays int8.")
            continue
        if not record["fits"]:
            lines.append(f"{first}; keeping every MatMul in fp32 one by one did not bring it within {allowed:g}%, "
                         "so the file stays all-int8.")
        else:
            extra = record["latency_ms"]["p50"] - record["all_int8_latency_ms"]["p50"]
            lines.append(f"{first}; {len(record['kept_fp32'])} MatMul(s) kept in fp32 bring it to "
                         f"{_losses(record['drops'])} for {extra:+.3f} ms p50.")
        tables.append(("table", ["kept in fp32 (most sensitive first)", "output error when int8 alone",
                                 "change per task after keeping it", "p50 cost (ms)", "p95 cost (ms)"],
                       [[r["node"], f"{r['error']:.4f}", _losses(r["drops_after"]), f"{r['cost_ms']['p50']:+.3f}",
                         f"{r['cost_ms']['p95']:+.3f}"] for r in record["sensitivity"] if "cost_ms" in r]))
    return [("h2", "Accuracy-aware int8"),
            ("p", (f"int8-dynamic files may lose at most {allowed:g}% of the fp32 file's metric on any task "
                   "(quantize.max_drop). When the all-int8 file loses more, each MatMul is quantized alone and "
                   "ranked by how far the outputs move; the most sensitive stay fp32 until every task fits. "
                   "Each kept node's cost is measured: the search's files timed side by side.")),
            ("list", lines), *tables]


def _distillation(data: dict, tasks: list[str]) -> list[tuple]:
    fp32 = [e for e in data["files"] if e["variant"] == "fp32" and e.get("distillation")
            and e["provider"] == data["providers"]["measured"][0]]
    if not fp32:
        return []
    bought = [f"{e['student']}: " + "; ".join(
        f"{task} {e['undistilled_metrics'][task]['value']:.3f} -> {e['metrics'][task]['value']:.3f}"
        for task in tasks) for e in fp32]
    runs = [f"{e['student']}: {e['distillation']['steps']} steps in {e['distillation']['seconds']:.0f} s; "
            f"{e['distillation']['initialized_from_teacher']['copied_tensors']} tensors initialized from the "
            f"teacher, {e['distillation']['initialized_from_teacher']['random_tensors']} random"
            + "".join(f"; {task} head refit on the student's embeddings of {n} training texts"
                      for task, n in e["distillation"].get("heads_refit", {}).items()) for e in fp32]
    return [("h2", "What distillation bought"),
            ("p", ("The same student as initialized from the teacher's layers (untrained, fp32) against the "
                  "distilled one:")), ("list", bought), ("h2", "Distillation"), ("list", runs)]


# ---------------------------------------------------------------------------- the first screen

# How the first screen names each latency kind (its row field: names.LATENCY_FIELDS; the one the budget
# bounds: budget.scope).
_LATENCY_WORDS = {"model": "model only", "end-to-end": "end to end, tokenizer + model"}


def _mb(size_bytes) -> str:
    """Bytes as MB with about 3 significant digits: 90.4 MB, 17.4 MB, 0.0995 MB (a tiny test model)."""
    value = size_bytes / 1e6
    return f"{value:.0f} MB" if value >= 100 else f"{value:.3g} MB"


def _scope(data: dict) -> str:
    """The latency the budget bounds: 'model' or 'end-to-end' (reports before budget.scope bound the model)."""
    return data["budget"].get("scope") or "model"


def _latency(row: dict | None, kind: str, p: str) -> float | None:
    """A row's latency of `kind` at percentile `p`, or None where it was not measured (image rows have no
    end-to-end latency; older reports no `latency_e2e_ms` at all). End to end: the file's faster path
    (tokenizer.json + model.onnx, or its app graph with the tokenizer inside), as the selection judges it."""
    if kind == "end-to-end":
        return _faster(row, p)[1]
    value = ((row or {}).get(LATENCY_FIELDS[kind]) or {}).get(p)
    return float(value) if isinstance(value, (int, float)) else None


def _faster(row: dict | None, p: str) -> tuple[str | None, float | None]:
    """fits.faster_path, as (None, None) where neither path was measured."""
    return faster_path(row, p) or (None, None)


def _both_paths(row: dict | None, p: str) -> bool:
    return all(path_latency(row, path, p) is not None for path in END_TO_END_PATHS)


def _teacher_row(data: dict, provider: str) -> dict | None:
    """The teacher's fp32 file on `provider`: report.json's `teacher_fp32` row when it has one, else the matrix's
    (None for a run without one on that provider)."""
    known = data.get("teacher_fp32")
    if isinstance(known, dict) and known.get("provider") == provider and "metrics" in known:
        return known
    return next((r for r in data["files"] if r["provider"] == provider and r.get("student") == "teacher"
                 and r.get("variant") == "fp32"), None)


def chart_inputs(data: dict) -> dict:
    """The accuracy-latency chart's arguments (edgekit.stages.plot.accuracy_latency_figure) for a report's data: the
    target provider's files, the budget line of a single run, its pick and the teacher's fp32 file."""
    selected = data["selected"]
    provider = (selected or {}).get("provider") or data["providers"]["measured"][0]
    teacher = _teacher_row(data, provider)
    return {"rows": [e for e in data["files"] if e["provider"] == provider], "tasks": data["tasks"],
            "percentile": data["budget"]["percentile"],
            "limit_ms": data["budget"]["limit_ms"] if not data.get("sweep") else None,
            "picked": selected["name"] if selected else None, "scope": _scope(data),
            "teacher": teacher["name"] if teacher else None}


def _first_screen(data: dict) -> list[tuple]:
    """What a reader needs before scrolling: the file to ship (or why nothing fits and the closest miss), how
    much faster than the teacher's fp32 file it is model only and end to end, what it keeps per task with its
    95% interval, and its largest slice drop. Then the charts."""
    from edgekit.stages.plot import latency_axes_text

    chart = chart_inputs(data)
    # The axes' range from the function the chart sets them with: it starts below 0.1 ms when a file is faster.
    span = latency_axes_text(chart["rows"], chart["percentile"], chart["limit_ms"], chart["scope"])
    line = " and the budget line" if chart["limit_ms"] is not None else ""  # a sweep draws none
    caption = (f"Each task's metric (95% interval as a bar) against latency on a log axis spanning every file"
               f"{line}: {span}. Marker area is the file size. The step line is the frontier: no "
               "faster file scores higher. Only the frontier, the pick and the teacher are named; every file is in "
               "the matrix below.")
    summary = _sweep_summary(data) if data.get("sweep") else _run_summary(data)
    return [summary, ("figure", "accuracy-latency", caption)]


def _speed_lines(row: dict, teacher: dict | None, p: str, scope: str, images: bool) -> list[str]:
    """'Model only: 4.6x faster than the teacher's fp32 file (p95 3.62 ms vs 16.6 ms).', then end to end."""
    parts = []
    for kind in (scope, *(k for k in LATENCY_FIELDS if k != scope)):
        words = _LATENCY_WORDS[kind]
        mine, theirs = _latency(row, kind, p), _latency(teacher, kind, p)
        bound = " (what the budget bounds)" if kind == scope else ""
        if mine is None:
            why = "not applicable to image inputs" if images and kind == "end-to-end" else "not measured"
            parts.append(f"{words[0].upper()}{words[1:]}: {why}.")
        elif theirs is None or theirs <= 0:
            parts.append(f"{words[0].upper()}{words[1:]}{bound}: {p} {milliseconds(mine)} ms (teacher not measured).")
        else:
            ratio = theirs / mine
            speed = f"{_times(ratio)} faster than" if ratio >= 1 else f"{_times(1 / ratio)} slower than"
            parts.append(f"{words[0].upper()}{words[1:]}{bound}: {speed} the teacher's fp32 file "
                         f"({p} {milliseconds(mine)} ms vs {milliseconds(theirs)} ms"
                         + (f"{_paths_said(row, teacher, p)})." if kind == "end-to-end" else ")."))
    return parts


def _paths_said(row: dict, teacher: dict | None, p: str) -> str:
    """'; this file via model.app.onnx, tokenizer inside (tokenizer.json + model.onnx: 0.352 ms), the teacher via
    tokenizer.json + model.onnx': which end-to-end path each figure is, where a file was timed both ways."""
    if not (_both_paths(row, p) or _both_paths(teacher, p)):
        return ""
    said = []
    for who, entry in (("this file", row), ("the teacher", teacher)):
        path, _ = _faster(entry, p)
        if path is None:
            continue
        other = next(o for o in END_TO_END_PATHS if o != path)
        slower = path_latency(entry, other, p)
        said.append(f"{who} via {PATH_WORDS[path]}" + (f" ({PATH_WORDS[other]}: {milliseconds(slower)} ms)"
                                                       if slower is not None else ""))
    return "; " + ", ".join(said) + ", each on its faster path"


def _times(ratio: float) -> str:
    """1.02x, 4.6x, 15x, 500x: near 1 three digits (1.0x would hide a 4% difference), never an exponent."""
    return f"{ratio:.2f}x" if ratio < 2 else f"{ratio:.2g}x" if ratio < 10 else f"{ratio:.0f}x"


def _budget_line(budget: dict, row: dict | None, scope: str) -> str:
    """'Budget: p95 <= 5.53 ms (x3 the teacher's speed), model only; a file fits at <= 4.98 ms measured.'"""
    p = budget["percentile"]
    asked = f"{p} <= {milliseconds(budget['ms'])} ms" + (f" (x{budget['speedup']:g} faster than the teacher)"
                                                if budget.get("speedup") is not None else "")
    text = f"Budget ({_LATENCY_WORDS[scope]}): {asked}"
    if budget.get("headroom"):
        text += f"; a file fits at <= {milliseconds(budget['limit_ms'])} ms measured"
    if budget.get("size_mb"):
        text += f" and <= {budget['size_mb']:g} MB"
    mine = _latency(row, scope, p)
    if row is not None and mine is not None and budget.get("limit_ms"):
        used = mine / budget["limit_ms"]
        path = _faster(row, p)[0] if scope == "end-to-end" else None
        via = f" via {PATH_WORDS[path]}" if path else ""
        text += f" (the pick measures {milliseconds(mine)} ms{via}, " + ("under 1% of that)" if used < 0.01
                                                                           else f"{used:.0%} of that)")
    if scope == "end-to-end":
        text += (". End to end, every file is judged on its faster path (tokenizer.json + model.onnx, or "
                 "model.app.onnx with the tokenizer inside where that is offered), and so is the teacher's fp32 file "
                 "a speed-up is relative to: the best way to ship each file against the best way to ship the teacher")
    return text + "."


def _worst_slice(gap: dict | None) -> str:
    """A task's largest slice drop for the first screen (edgekit.stages.gap's worst_slice), or why there is none."""
    if not gap:
        return "-"
    worst = gap.get("worst_slice")
    if worst is None or worst.get("change") is None or worst["change"] >= 0:
        small = (gap.get("worst_slice_ignores") or {}).get("slices")
        least = (gap.get("worst_slice_ignores") or {}).get("min_n")
        return (f"no slice of >= {least} examples scores lower" if small and least else "no slice scores lower")
    where = worst["slice"] if worst["group"] == "hardest" else (
        f"{'rarest class' if worst['group'] == 'rarest' else worst['group']} {worst['slice']}")
    interval = worst.get("change_ci95")
    change = f"{worst['change']:+.3f}" + (f" [{interval[0]:+.3f}, {interval[1]:+.3f}]" if interval else "")
    metric = worst.get("metric") or _slice_metric(gap)  # a slice's metric need not be the task's (macro F1)
    return f"{where} (n={worst['n']}): {metric} {worst['teacher']:.3f} -> {worst['student']:.3f}, {change}"


def _task_table(data: dict, row: dict, teacher: dict | None, who: str) -> tuple:
    """Per task: the metric, the file's value and the teacher's with 95% intervals, % kept, largest slice drop."""
    header = ["task", "metric", f"{who} [95% CI]", "teacher fp32 [95% CI]", "kept of teacher", "trivial answer"]
    gaps = data.get("gap") if data.get("selected") and data["selected"]["name"] == row["name"] else None
    if gaps:
        header.append("where it loses most (slice: its metric teacher -> shipped, change [95% CI])")
    cells = []
    for task in data["tasks"]:
        name = task["name"]
        mine, theirs = row["metrics"].get(name), (teacher or {}).get("metrics", {}).get(name)
        kept = (row.get("retention") or {}).get(name)
        trivial = task.get("trivial")
        line = [name, task["metric"], _metric_or_dash(mine) + _no_better(row, name), _metric_or_dash(theirs),
                f"{kept:.1f}%" if kept is not None else "- (teacher <= 0)",
                f"{trivial['value']:.3f}: {trivial['who']}" if trivial else "-"]
        if gaps:
            line.append(_worst_slice(gaps.get(name)))
        cells.append(line)
    return header, cells


def _metric_or_dash(m: dict | None) -> str:
    if not m:
        return "-"
    ci = m.get("ci95")
    return _metric(m) if ci and len(ci) == 2 and None not in ci else f"{m['value']:.3f}"


def _run_summary(data: dict) -> tuple:
    budget, selected = data["budget"], data["selected"]
    p, scope = budget["percentile"], _scope(data)
    provider = (selected or {}).get("provider") or data["providers"]["measured"][0]
    mine = [r for r in data["files"] if r["provider"] == provider]
    teacher = _teacher_row(data, provider)
    images = _reads_images(data)
    lines = []
    if selected:
        row = next((r for r in mine if r["name"] == selected["name"]), None) or {
            "name": selected["name"], "variant": "?", "size_bytes": 0, "metrics": {}}
        student = "the teacher itself" if row.get("student") == "teacher" else f"student {row.get('student')}"
        headline = (f"Ship {row['name']}: {student}, {row['variant']}, on {provider}, {_mb(row['size_bytes'])}"
                    + (f" (deploy {selected['bundle']})" if selected.get("bundle") else "") + ".")
        tone, who = "ship", "shipped"
    else:
        row = _closest_miss(mine, budget, scope)
        headline = f"Nothing fits the budget on {provider}: nothing to ship."
        tone, who = "miss", "closest miss"
        lines.append(f"Why: {data.get('why') or 'no file meets the budget.'}")
        if row is not None:
            lines.append(f"Closest miss: {row['name']} ({row['variant']}, {_mb(row['size_bytes'])}), "
                         + _miss_text(row, budget, scope) + ".")
    own = row is not None and teacher is not None and row["name"] == teacher["name"]
    if own and selected:
        # Nothing to compare with: say what it costs, and that no smaller file ranked above it.
        timed = [f"{milliseconds(v)} ms {_LATENCY_WORDS[k]}" for k in (scope, *(k for k in LATENCY_FIELDS if k != scope))
                 if (v := _latency(row, k, p)) is not None]
        lines.append(f"This is the teacher's own fp32 file ({p} {'; '.join(timed)}): no student or quantized file "
                     "ranked above it (the selection below says why).")
    elif row is not None and not own:  # (a closest miss that is the teacher's file: its line said it all)
        lines += _speed_lines(row, teacher, p, scope, images)
        if teacher is not None and row["size_bytes"] > 0 and teacher["size_bytes"] > 0:
            ratio = teacher["size_bytes"] / row["size_bytes"]
            lines.append(f"Size: {_mb(row['size_bytes'])} against the teacher's fp32 {_mb(teacher['size_bytes'])} "
                         + (f"({_times(ratio)} smaller)." if ratio >= 1 else f"({_times(1 / ratio)} larger)."))
    lines.append(_budget_line(budget, row if selected else None, scope))
    lines += _teacher_against_trivial(data, teacher)
    tie = _tie_sentence(data, provider)
    if selected and tie:
        lines.append(tie)
    if selected:
        lines += _scale_lines(data.get("score_scale"))
    table = _task_table(data, row, teacher, who) if row is not None else None
    return ("summary", tone, headline, lines, table)


def _teacher_against_trivial(data: dict, teacher: dict | None) -> list[str]:
    """A line per task where the teacher itself does not clearly beat the trivial answer (edgekit.data.baselines)."""
    from edgekit.data.baselines import LEAD_SHARE

    lines = []
    for task in data["tasks"]:
        record = ((teacher or {}).get("trivial") or {}).get(task["name"])
        if not record or record["standing"] == "clear":
            continue
        metric = teacher["metrics"][task["name"]]
        said = (f"Teacher on {task['name']}: {_metric_or_dash(metric)} against {record['baseline']:.3f} for "
                f"{task['trivial']['who']}, on {task['test_examples']} test examples: ")
        if record["standing"] == "unproven":
            said += ("above it, but its 95% interval reaches it, so this test set cannot tell that lead from chance; "
                     f"a file ships on this task only if it keeps at least {LEAD_SHARE:.0%} of the lead.")
        else:
            said += "no better than it (teacher.allow_weak): no file ships unless it clears that score."
        lines.append(said)
    return lines


def _tie_sentence(data: dict, provider: str) -> str | None:
    """The selection's sentence when a tie within noise decided the pick (report.json `decision`, newer runs):
    a faster file shipped instead of the top-ranked one. Other decisions are in the selection section."""
    decision = data.get("decision")
    decision = decision.get(provider) if isinstance(decision, dict) else None
    if not isinstance(decision, dict):
        return None
    text = decision.get("sentence") or decision.get("statement")
    tied = decision.get("ships") != decision.get("top") if "ships" in decision and "top" in decision else True
    return str(text) if text and tied else None


def _closest_miss(rows: list[dict], budget: dict, scope: str) -> dict | None:
    """The file nearest to fitting: when some meet the latency (and miss on size or the quality floor), the one
    keeping the most of the teacher on its worst task; otherwise the fastest."""
    p, limit = budget["percentile"], budget["limit_ms"]
    timed = [r for r in rows if _latency(r, scope, p) is not None]
    fast = [r for r in timed if _latency(r, scope, p) <= limit]
    if fast:
        return max(fast, key=lambda r: min((v for v in (r.get("retention") or {}).values() if v is not None),
                                           default=0.0))
    return min(timed, key=lambda r: _latency(r, scope, p), default=None)


def _miss_text(row: dict, budget: dict, scope: str) -> str:
    p, limit = budget["percentile"], budget["limit_ms"]
    latency = _latency(row, scope, p)
    kept = ", ".join(f"{task} {v:.1f}%" for task, v in (row.get("retention") or {}).items() if v is not None)
    text = f"{p} {milliseconds(latency)} ms ({_LATENCY_WORDS[scope]})"
    text += (f", {latency / limit - 1:.0%} over the {limit:.3g} ms a file must measure" if latency > limit
             else f", within the {limit:.3g} ms")
    return text + (f"; keeps {kept} of the teacher" if kept else "")


def _sweep_summary(data: dict) -> tuple:
    """A sweep ships nothing: its first screen is the pick at each budget."""
    budget = data["budget"]
    p, scope = budget["percentile"], _scope(data)
    provider = data["providers"]["measured"][0]
    teacher = _teacher_row(data, provider)
    theirs = _latency(teacher, scope, p)
    rows = []
    for point in data["sweep"]:
        if point["pick"] is None:
            rows.append([point["budget"], f"{point['limit_ms']:.3g}", "nothing fits", "-", "-", "-", "-"])
            continue
        latency = point.get("latency_ms")
        rows.append([point["budget"], f"{point['limit_ms']:.3g}", point["pick"], milliseconds(latency),
                     _times(theirs / latency) if theirs and latency else "-", _mb(point["size_bytes"]),
                     f"{point['min_retention']:.1f}%" if point.get("min_retention") is not None else "-"])
    headline = f"Sweep of {len(data['sweep'])} budgets on {provider}: the pick at each (nothing is bundled)."
    lines = [(f"Latency: {p}, {_LATENCY_WORDS[scope]}; each budget picks among the same measured files. Rerun "
              "distill-and-export with --budget set to one of them to get its bundle (the cache makes that fast).")]
    header = ["budget", "fits at (ms)", "pick", f"{p} (ms)", "faster than the teacher", "size", "worst-task kept"]
    return ("summary", "ship", headline, lines, (header, rows))


# ---------------------------------------------------------------------------- renderers

def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(data: dict) -> str:
    lines = []
    for block in _blocks(data):
        kind = block[0]
        if kind in ("h1", "h2", "h3"):
            lines += ["#" * int(kind[1]) + " " + block[1], ""]
        elif kind == "p":
            lines += [block[1], ""]
        elif kind == "strong":
            lines += [f"**{block[1]}**", ""]
        elif kind == "list":
            lines += [f"- {item}" for item in block[1]] + [""]
        elif kind == "table":
            lines += ["| " + " | ".join(_md_cell(h) for h in block[1]) + " |", "|" + "---|" * len(block[1])]
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in block[2]] + [""]
        elif kind == "figure":
            lines += [f"*Chart: {block[2]} See report.html.*", ""]
        elif kind == "summary":
            _, _, headline, items, table = block
            lines += [f"**{headline}**", ""] + [f"- {item}" for item in items] + [""]
            if table:
                lines += ["| " + " | ".join(_md_cell(h) for h in table[0]) + " |", "|" + "---|" * len(table[0])]
                lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in table[1]] + [""]
    return "\n".join(lines)


# The first screen (a 1280x800 window) must hold the summary: compact margins and a tight summary box; charts
# scale down to the window's width rather than scroll sideways.
_STYLE = ("body{font-family:system-ui,sans-serif;margin:1.2em 2em;max-width:110em;color:#222}"
          "h1{font-size:1.5em;margin:.2em 0 .5em}"
          "table{border-collapse:collapse;margin:1em 0;font-size:.85em}"
          "th,td{border:1px solid #ccc;padding:.25em .5em;text-align:left;vertical-align:top}"
          "th{background:#f3f3f3}figure{margin:1em 0}figcaption{color:#555;font-size:.9em;max-width:70em}"
          "figure svg{max-width:100%;height:auto}"
          ".summary{border-left:.4em solid #2e7d32;background:#f4faf4;padding:.6em 1em;margin:0 0 1em}"
          ".summary.miss{border-left-color:#c62828;background:#fdf3f3}"
          ".summary .headline{font-size:1.3em;font-weight:600;margin:.1em 0 .4em}"
          ".summary ul{margin:.3em 0;padding-left:1.2em}.summary li{margin:.15em 0}"
          ".summary table{margin:.5em 0 .2em;background:#fff}"
          ".summary th,.summary td:not(:last-child){white-space:nowrap}")


def render_html(data: dict) -> str:
    figures = _figures(data)
    parts = ["<!doctype html>", "<html><head><meta charset='utf-8'>",
             f"<title>edgekit: {html.escape(data['recipe']['name'])}</title><style>{_STYLE}</style></head><body>"]
    for block in _blocks(data):
        kind = block[0]
        if kind in ("h1", "h2", "h3"):
            parts.append(f"<{kind}>{html.escape(block[1])}</{kind}>")
        elif kind == "p":
            parts.append(f"<p>{html.escape(block[1])}</p>")
        elif kind == "strong":
            parts.append(f"<p><strong>{html.escape(block[1])}</strong></p>")
        elif kind == "list":
            parts.append("<ul>" + "".join(f"<li>{html.escape(item)}</li>" for item in block[1]) + "</ul>")
        elif kind == "table":
            head = "".join(f"<th>{html.escape(str(h))}</th>" for h in block[1])
            body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>"
                           for row in block[2])
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif kind == "summary":
            _, tone, headline, items, table = block
            section = [f"<section class='summary {tone}'><p class='headline'>{html.escape(headline)}</p>",
                       "<ul>" + "".join(f"<li>{html.escape(item)}</li>" for item in items) + "</ul>"]
            if table:
                head = "".join(f"<th>{html.escape(str(h))}</th>" for h in table[0])
                body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>"
                               for row in table[1])
                section.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
            parts.append("".join(section) + "</section>")
        elif kind == "figure" and figures.get(block[1]):
            parts.append(f"<figure>{figures[block[1]]}<figcaption>{html.escape(block[2])}</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _figures(data: dict) -> dict[str, str]:
    """Inline SVG charts: the accuracy-latency plot of the pick's provider (the target's without a pick), and
    the sweep."""
    from edgekit.stages.plot import accuracy_latency_svg, sweep_svg

    budget = data["budget"]
    figures = {"accuracy-latency": accuracy_latency_svg(**chart_inputs(data))}
    if data.get("sweep"):
        figures["sweep"] = sweep_svg(data["sweep"], budget["percentile"])
    return figures


def write_report(folder: Path, data: dict) -> None:
    (folder / "report.json").write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    (folder / "report.md").write_text(render_markdown(data), encoding="utf-8")
    (folder / "report.html").write_text(render_html(data), encoding="utf-8")


# ---------------------------------------------------------------------------- report.json

@dataclass(frozen=True)
class Measured:
    """What stages 1-6 measured, as report.json records it."""

    teacher: object  # teacher.Teacher
    tasks: list
    truncated: dict  # task -> how many texts the teacher's max_length cut
    budget: Budget  # resolved: its ms set
    teacher_fp32: Row  # the teacher's fp32 row on the target: the reference
    retimed: dict | None  # the teacher's fp32 file re-timed among the students (measure.time_rows)
    probes: list[ProbeEntry]
    rows: list[Row]  # the evaluation matrix: every file on every provider
    skipped: dict  # provider or "file on provider" -> why it was not measured
    skipped_variants: dict  # variant -> why it was not made


@dataclass(frozen=True)
class Selected:
    """What stage 7 decided from the measurements (select.py, gap.py)."""

    picks: dict  # provider -> the picked row's name, or None
    why: dict  # provider -> why that pick (or why nothing fits)
    decision: dict[str, Decision | None]  # per provider: select.choose's decision
    best: Row | None  # the target's pick, its row
    gap: dict | None  # gap.shipped_gap of the pick
    sweep: list[dict] | None  # a sweep's pick at each budget; None for a single run
    agreement: list[dict]  # select.provider_agreement


def build_report(recipe, lab, measured: Measured, selected: Selected, seconds: float, stages: dict) -> Report:
    """report.json's content (`edgekit.report/2`, documented in docs/), without the bundle record:
    the stages' results as measured, plus the machine, versions and provenance they were measured with.
    `lab`: the run's measure.Lab (its providers and variants); `stages`: stage -> seconds since the start."""
    import time

    from edgekit import __version__
    from edgekit.data.kinds import image_shape
    from edgekit.runtime.environment import cpu_info, package_versions
    from edgekit.runtime.providers import runtime_limits
    from edgekit.stages.loading import examples
    from edgekit.stages.measure import jsonable
    from edgekit.trust.provenance import data_provenance, teacher_provenance

    teacher, tasks, budget, rows, best = measured.teacher, measured.tasks, measured.budget, measured.rows, selected.best
    providers = list(lab.providers)
    return {
        "format": REPORT_FORMAT,
        "edgekit_version": __version__,
        "recipe": recipe.model_dump(mode="json"),
        "recipe_digest": recipe.digest(),
        "target": _target(recipe),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seconds": round(seconds, 1),
        "stages_started_s": stages,
        "machine": cpu_info(),
        "versions": package_versions(),
        "budget": budget_record(budget, measured.teacher_fp32, measured.retimed, image_shape(tasks)),
        "providers": {"measured": providers, "skipped": measured.skipped, "runtime": runtime_limits(),
                      "options": {p: budget.options_for(p) for p in providers}},
        "variants": {"made": ["fp32", *lab.variants], "skipped": measured.skipped_variants},
        "tasks": [task_record(t, examples(t.train), examples(t.test), measured.truncated[t.name]) for t in tasks],
        "teacher": {"model": recipe.teacher.model, "kind": recipe.teacher.kind,
                    "params": measured.teacher_fp32["params"],
                    "prepared": jsonable(teacher.prepared)},
        "provenance": {"teacher": teacher_provenance(recipe.teacher.model, _teacher_location(recipe, teacher),
                                                     teacher.digest),
                       "data": data_provenance(recipe, tasks)},
        "probes": measured.probes,
        "files": rows,
        "picks": selected.picks,
        "selected": None if best is None else {
            "name": best["name"], "onnx": best["onnx"], "provider": best["provider"],
            "bundle": None if selected.sweep is not None else "bundle/model.onnx"},
        "why": selected.why.get(providers[0]),
        "why_by_provider": selected.why,
        "decision": selected.decision,  # per provider: select.choose's decision (ties within noise), None: nothing fits
        "provider_agreement": selected.agreement,  # select.provider_agreement: each file on another provider vs target
        "gap": selected.gap,
        "score_scale": None,  # edgekit.stages.score_scale.shipped_scale: the pick's cosine against the teacher's (pipeline)
        "int8_on_this_cpu": int8_effect(rows, providers[0]),
        "sweep": selected.sweep,
        "bundle": None,
    }


def _target(recipe) -> dict | None:
    """The deployment profile the recipe named, as recorded in the report and the manifest."""
    from edgekit.runtime.profiles import load_profile
    from edgekit.trust.provenance import sha256_file

    if recipe.target is None:
        return None
    profile, path = load_profile(recipe.profile_file or recipe.target)
    return {"name": recipe.target, "description": profile.description, "arch": profile.arch, "file": str(path),
            "sha256": sha256_file(path)}


def _teacher_location(recipe, teacher) -> str | None:
    """The teacher's files: the folder or hub id transformers loaded, or a torch file (None: edgekit:cnn)."""
    if teacher.tokenizer_source:
        return teacher.tokenizer_source
    return recipe.teacher.model if Path(recipe.teacher.model).exists() else None


def int8_effect(rows: list[dict], provider: str) -> list[dict]:
    """Per quantized file, what quantizing bought on this CPU: its speed-up over its own fp32 file (timed in the
    same rounds) and what each task's metric did. int8 is ~2.3x faster than fp32 on a VNNI CPU and ~1.5x on
    AVX2 alone (FIELD-NOTES): measured here, not assumed."""
    from edgekit.stages.fits import retention

    mine = {r["name"]: r for r in rows if r["provider"] == provider}
    effect = []
    for row in mine.values():
        fp32 = mine.get(f"{row['student']}-fp32")
        if row["variant"] == "fp32" or fp32 is None:
            continue
        effect.append({"file": row["name"], "student": row["student"], "variant": row["variant"],
                       "x_vs_fp32": {p: fp32["latency_ms"][p] / row["latency_ms"][p] for p in ("p50", "p95")},
                       "metric_change": {t: m["value"] - fp32["metrics"][t]["value"] for t, m in row["metrics"].items()},
                       "kept_of_fp32": retention(row["metrics"], fp32["metrics"])})
    return effect


def budget_record(budget, teacher_fp32: dict, retimed: dict | None, image_shape: tuple | None = None) -> dict:
    """report.json's budget: how it was asked for (ms or speedup), the teacher latency a speedup divided,
    the resulting limit, and how far the teacher's fp32 file moved when re-timed among the students.
    `image_shape`: an image run's (C, H, W), what each timed input is; its seq_len is null (an image has none,
    and the recipe's default 128 would read as if it were timed)."""
    from edgekit.stages.fits import latency_of, limit_ms

    p = budget.percentile
    # The re-timing among the students is of the tokenizer.json path: it is judged against the teacher's figure there.
    same_path = {k: v for k, v in teacher_fp32.items() if k != "latency_app_ms"}
    path = faster_path(teacher_fp32, p) if budget.scope == "end-to-end" else None
    record = {"percentile": p, "scope": budget.scope, "ms": budget.ms, "speedup": budget.speedup,
              "label": budget.label(),
              "batch": budget.batch, "seq_len": None if image_shape else budget.seq_len,
              "image_shape": list(image_shape) if image_shape else None, "threads": budget.threads,
              "size_mb": budget.size_mb, "headroom": budget.headroom, "limit_ms": limit_ms(budget),
              "min_retention": budget.min_retention,
              "min_retention_from": "recipe" if "min_retention" in budget.model_fields_set else "default",
              "tie_margin": budget.tie_margin,
              "teacher": {"file": teacher_fp32["onnx"], "provider": teacher_fp32["provider"],
                          "ms": latency_of(teacher_fp32, budget), "measured_at": teacher_fp32["latency_ms"]["measured_at"],
                          "cached": teacher_fp32["latency_ms"]["cached"],
                          "model_ms": teacher_fp32["latency_ms"][p],
                          "e2e_ms": (teacher_fp32.get("latency_e2e_ms") or {}).get(p),
                          "app_ms": (teacher_fp32.get("latency_app_ms") or {}).get(p),
                          # scope end-to-end: the path `ms` is of, the teacher's faster one (fits.latency_of)
                          "path": path[0] if path else None}}
    if retimed is not None and retimed.get(budget.latency_key) is not None:
        again = latency_of(retimed, budget)
        record["teacher"]["retimed_with_students_ms"] = again
        record["teacher"]["drift"] = again / latency_of(same_path, budget) - 1
    return record
