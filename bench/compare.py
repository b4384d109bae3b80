"""Is edgekit worth using? Its picks side by side with what a user ships without it, and with this CPU's floor.

In one process and one run, interleaved round by round:
  - the teacher in PyTorch eager (its transformers model, mean pooling, normalize: what sentence-transformers runs);
  - the teacher exported with Optimum (`main_export`, the library it detects: a user's `optimum-cli export onnx`);
  - that file quantized the way Optimum's documentation shows: `ORTQuantizer` with
    `AutoQuantizationConfig.<preset>(is_static=False, per_channel=False)` (int8 dynamic), with the preset a user of
    this CPU would pick (avx512_vnni, avx512, avx2 or arm64: `optimum_preset`);
  - edgekit's pick at each budget of `edgekit sweep` on the recipe (cached: the sweep reuses students).
    A budget `xN` is the sweep's own relative budget (`budget.speedup`): files N times faster at p95 than the
    teacher's fp32 file timed in the sweep, with the recipe's headroom.
For each: every task's metric on the eval split (one text per run, as the budget's batch 1), the size,
p50/p95/p99 at the budget's shape (seq 128) and at each text task's real length distribution, the ratios
to the teacher fp32 and int8 files, and the fraction of this CPU's floor it reaches: the file's matmul work
(counted from its graph) over ORT's fp32 and int8 matmul peaks, measured in the same run (bench/floor.py).

    python -m bench            # the default recipe at budgets x8 and x4 (below), full eval sets (~25 min cold)
    python -m bench --quick    # the same code path: eval sets subsampled, 1-epoch student, short timings
    python -m bench --run runs/minilm-multitask-sweep   # compare the picks of an earlier sweep instead

Writes bench/results/<date>-<cpu>[-quick].{json,md}. `python -m bench.check_ratios` re-times the same files
with plain onnxruntime and checks the ratios.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from bench.floor import floor_ms, matmul_work, measure_peaks
from edgekit.bench import latency_stats
from edgekit.cache import Cache
from edgekit.environment import cpu_info, cpu_slug, package_versions
from edgekit.errors import EdgekitError
from edgekit.loading import load_recipe, load_tasks
from edgekit.metrics import score_with_ci
from edgekit.names import logits_name
from edgekit.pipeline import sweep
from edgekit.providers import SessionSettings, create_session
from edgekit.recipe import Recipe
from edgekit.teacher import prepare_teacher

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results"
RECIPE = ROOT / "recipes" / "minilm-multitask.yaml"
# Files 8x and 4x faster than the teacher's fp32 file at p95: the 8x pick is where the goal is asked.
BUDGETS = ("x8", "x4")
FIXED = "seq128"
POOL = 256  # distinct real texts cycled through at a task's length distribution
FORMAT = "edgekit.bench/1"


def _echo(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- the recipe and its picks


def quick_recipe(recipe: Recipe, max_test: int = 200) -> Recipe:
    """The same recipe at CI size: eval sets subsampled, a 1-epoch student on a few hundred texts, short timings."""
    data = recipe.model_dump()
    for task in data["tasks"]:
        task["split"]["max_test"] = max_test
        if not task["split"].get("eval_only"):
            task["split"]["max_train"] = min(task["split"].get("max_train") or 400, 400)
    data["students"] |= {"layers": [min(data["students"]["layers"])], "max_students": 1}
    data["distill"] |= {"epochs": 1, "max_texts": 400, "unlabeled": []}
    data["budget"] |= {"min_runs": 50, "min_seconds": 0.1, "rounds": 2, "providers": ["cpu"]}
    data["quantize"] |= {"variants": ["int8-dynamic"]}
    return Recipe.model_validate(data)


def _picks(report: dict, run: Path) -> list[dict]:
    """One entry per file edgekit picked at some budget of the sweep (a file picked twice is listed once)."""
    picks: dict[str, dict] = {}
    for point in report["sweep"]:
        if point["pick"] is None:
            continue
        row = next(r for r in report["files"] if r["name"] == point["pick"] and r["provider"] == point["provider"])
        entry = picks.setdefault(row["name"], {"name": f"edgekit {row['name']}", "kind": "onnx",
                                               "file": run / row["onnx"], "budgets": [],
                                               "run_metrics": {t: m["value"] for t, m in row["metrics"].items()}})
        entry["budgets"].append(_budget_label(point))
    return list(picks.values())


def _budget_label(point: dict) -> str:
    """'x8 = 5.72 ms' or '4.5 ms', from a sweep point of report.json."""
    return f"{point['budget']} = {point['ms']:.3g} ms" if point.get("speedup") else f"{point['ms']:g} ms"


# ---------------------------------------------------------------------------- the user's baseline files


def optimum_preset(info: dict) -> str:
    """The AutoQuantizationConfig preset a user of this CPU would pick (Optimum's docs name one per
    instruction set): arm64, avx512_vnni, avx512 or avx2."""
    sets = info["instruction_sets"]
    if info["arch"] in ("aarch64", "arm64"):
        return "arm64"
    if sets.get("avx512_vnni") or sets.get("avx_vnni"):
        return "avx512_vnni"
    return "avx512" if sets.get("avx512f") else "avx2"


def optimum_baseline(teacher_folder: str, folder: Path, echo) -> tuple[Path, Path, dict]:
    """(fp32, int8, how they were made): Optimum's export and its documented dynamic int8 config."""
    from optimum.exporters.onnx import main_export
    from optimum.onnxruntime import ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    fp32_dir, int8_dir = folder / "optimum-fp32", folder / "optimum-int8"
    echo(f"  Optimum export of {teacher_folder} -> {fp32_dir}")
    main_export(teacher_folder, fp32_dir, task="feature-extraction")
    preset = optimum_preset(cpu_info())
    config = getattr(AutoQuantizationConfig, preset)(is_static=False, per_channel=False)
    ORTQuantizer.from_pretrained(fp32_dir, file_name="model.onnx").quantize(config, int8_dir)
    how = {"export": "optimum.exporters.onnx.main_export(task='feature-extraction'), library auto-detected",
           "quantize": f"ORTQuantizer + AutoQuantizationConfig.{preset}(is_static=False, per_channel=False)",
           "preset": preset,
           "weights": str(config.weights_dtype), "activations": str(config.activations_dtype),
           "per_channel": config.per_channel}
    return fp32_dir / "model.onnx", int8_dir / "model_quantized.onnx", how


# ---------------------------------------------------------------------------- runners


class OnnxRunner:
    """An ONNX file's embedding (edgekit's `embedding`, Optimum's sentence-transformers `sentence_embedding`, or
    a plain `last_hidden_state`, mean-pooled and normalized here as the teacher does) and the `<task>_logits`
    it carries, if any."""

    def __init__(self, path: Path, threads: int, normalize: bool):
        self.normalize = normalize
        self.session, _ = create_session(path, SessionSettings(threads=threads, allow_spinning=False))
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.names = [o.name for o in self.session.get_outputs()]
        self.output = next((n for n in ("embedding", "sentence_embedding", "last_hidden_state") if n in self.names),
                           None)
        if self.output is None:
            raise EdgekitError(f"{path}: no embedding output (it has {', '.join(self.names)}); the bench compares "
                               "sentence encoders")

    def run(self, feed: dict) -> list:
        return self.session.run(None, {name: feed[name] for name in self.inputs})

    def outputs(self, feed: dict) -> dict[str, np.ndarray]:
        out = dict(zip(self.names, self.run(feed)))
        embedding = out.pop(self.output)
        if self.output == "last_hidden_state":
            mask = feed["attention_mask"][..., None].astype(np.float32)
            embedding = (embedding * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)
            if self.normalize:
                embedding = embedding / np.maximum(np.linalg.norm(embedding, axis=1, keepdims=True), 1e-12)
        return {"embedding": embedding[0], **{name: value[0] for name, value in out.items()
                                              if name.endswith("_logits")}}


class TorchRunner:
    """The teacher in PyTorch eager (encoder, pooling, heads), on `threads` intra-op threads."""

    def __init__(self, model, threads: int):
        import torch

        self.torch, self.model = torch, model.eval()
        torch.set_num_threads(threads)

    def run(self, feed: dict) -> dict:
        with self.torch.inference_mode():
            return self.model.internals(**{name: self.torch.from_numpy(value) for name, value in feed.items()})

    def outputs(self, feed: dict) -> dict[str, np.ndarray]:
        out = self.run(feed)
        return {"embedding": out["embedding"][0].numpy(),
                **{logits_name(task): value[0].numpy() for task, value in out["logits"].items()}}


# ---------------------------------------------------------------------------- accuracy


def _feed(tokenizer, text: str, max_length: int) -> dict:
    encoded = tokenizer([text], truncation=True, max_length=max_length, return_tensors="np")
    ids = encoded["input_ids"].astype(np.int64)
    return {"input_ids": ids, "attention_mask": encoded["attention_mask"].astype(np.int64),
            "token_type_ids": encoded.get("token_type_ids", np.zeros_like(ids)).astype(np.int64)}


def score(runner, tasks, teacher) -> dict:
    """Every task's metric (value and bootstrap 95% interval), one text per run as at the budget's batch 1.

    Classification reads the file's own `<task>_logits`; a file without them (Optimum's export) gets the
    teacher's linear head applied to its embedding, the head the teacher's own files carry."""
    cache: dict[str, dict] = {}

    def outputs(texts) -> list[dict]:
        for text in texts:
            if text not in cache:
                cache[text] = runner.outputs(_feed(teacher.tokenizer, text, teacher.max_length))
        return [cache[text] for text in texts]

    def stack(rows, name):
        return np.stack([row[name] for row in rows]).astype(np.float64)

    def unit(x):
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    metrics = {}
    for task in tasks:
        if task.spec.kind == "classification":
            rows, name = outputs(list(task.test["text"])), logits_name(task.name)
            if name in rows[0]:
                logits = stack(rows, name)
            else:
                head = teacher.model.heads[task.name]
                logits = stack(rows, "embedding") @ head.weight.detach().numpy().T + head.bias.detach().numpy()
            result = score_with_ci(task.spec.metric, pred=logits.argmax(axis=1), gold=np.asarray(task.test["label"]))
        elif task.spec.kind == "similarity":
            a, b = (stack(outputs(list(task.test[column])), "embedding") for column in ("text_a", "text_b"))
            cosine = (unit(a) * unit(b)).sum(axis=1)
            result = score_with_ci(task.spec.metric, x=cosine, y=np.asarray(task.test["score"], dtype=np.float64))
        else:
            raise EdgekitError(f"task '{task.name}' is {task.spec.kind}: the bench scores classification and "
                               "similarity tasks of a sentence encoder")
        metrics[task.name] = {"value": result["value"], "ci95": result["ci95"], "n": result["n"]}
    return metrics


# ---------------------------------------------------------------------------- latency


def shapes(tasks, teacher, seq_len: int, vocab: int, seed: int = 0) -> dict[str, list[dict]]:
    """Input pools per shape: the budget's fixed length (random token ids) and each text task's real texts."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(min(1000, vocab // 2), vocab, size=(1, seq_len), dtype=np.int64)  # past special tokens
    pools = {FIXED: [{"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}]}
    for task in tasks:
        texts = list(dict.fromkeys(t for column in ("text", "text_a", "text_b") for t in task.test.get(column, [])))
        chosen = rng.choice(len(texts), size=min(POOL, len(texts)), replace=False)
        pools[f"{task.name} lengths"] = [_feed(teacher.tokenizer, texts[i], teacher.max_length) for i in chosen]
    return pools


def time_all(runners: dict, pools: dict, rounds: int, runs: int, echo) -> dict:
    """{entry: {shape: samples_ms}}: `rounds` interleaved rounds (every entry and shape once per round, so
    host drift hits all alike), `runs` timed runs each after 10 warm-up runs; samples of all rounds pooled."""
    samples = {name: {shape: [] for shape in pools} for name in runners}
    for r in range(rounds):
        for name, runner in runners.items():
            for shape, pool in pools.items():
                for i in range(10):
                    runner.run(pool[i % len(pool)])
                got = samples[name][shape]
                for i in range(runs):
                    feed = pool[i % len(pool)]
                    start = time.perf_counter_ns()
                    runner.run(feed)
                    got.append((time.perf_counter_ns() - start) / 1e6)
        echo(f"  round {r + 1}/{rounds}: " + ", ".join(
            f"{name} {statistics.median(s[FIXED][-runs:]):.2f}" for name, s in samples.items()) + f" ms p50 {FIXED}")
    return samples


# ---------------------------------------------------------------------------- the comparison


def _relative(path: Path) -> str:
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def compare(recipe: Recipe, budgets: list[str], work: Path, cache_dir: Path | None, run: Path | None,
            quick: bool, echo=_echo) -> dict:
    started = time.perf_counter()
    threads, seq_len = recipe.budget.threads, recipe.budget.seq_len
    if not isinstance(seq_len, int) or recipe.budget.batch != 1:
        raise EdgekitError("the bench compares at batch 1 and a fixed seq_len (the recipe's budget shape)")
    cache = cache_dir or work / ".edgekit-cache"
    rounds, runs = (2, 50) if quick else (5, 200)

    echo("[1/5] the teacher and the files a user would ship without edgekit")
    tasks = load_tasks(recipe)
    teacher = prepare_teacher(recipe, tasks, Cache(cache, echo), echo)
    fp32, int8, how = optimum_baseline(teacher.tokenizer_source, work / "baseline", echo)
    pools = shapes(tasks, teacher, seq_len, teacher.model.backbone.config.vocab_size)
    if run is None:
        # Relative budgets (x8) are resolved by the sweep itself, against the teacher's fp32 file timed in it.
        run = work / "sweep"
        echo(f"[2/5] edgekit sweep at {', '.join(budgets)} -> {run}")
        sweep(recipe, budgets, out=run, cache_dir=cache, force=True, echo=echo)
    report = json.loads((run / "report.json").read_text(encoding="utf-8"))
    fp32_p95 = report["budget"]["teacher"]["ms"]
    picks = _picks(report, run)
    if not picks:
        raise EdgekitError(f"the sweep in {run} picked nothing at any budget; see its report.md")
    entries = [{"name": "teacher PyTorch eager", "kind": "torch", "file": None},
               {"name": "teacher fp32 (Optimum)", "kind": "onnx", "file": fp32},
               {"name": "teacher int8 (Optimum dynamic)", "kind": "onnx", "file": int8}, *picks]
    runners = {e["name"]: TorchRunner(teacher.model, threads) if e["kind"] == "torch"
               else OnnxRunner(e["file"], threads, recipe.teacher.normalize) for e in entries}
    # Optimum exports pooling and normalize only when sentence-transformers is installed; otherwise the file
    # ends at last_hidden_state and the mean pooling (<1% of the forward) runs in numpy, outside the timing.
    how["embedding_output"] = runners[entries[1]["name"]].output

    echo("[3/5] every task's metric, one text per run")
    for entry in entries:
        entry["metrics"] = score(runners[entry["name"]], tasks, teacher)
        echo(f"  {entry['name']}: " + ", ".join(f"{t} {m['value']:.4f}" for t, m in entry["metrics"].items()))

    echo("[4/5] this CPU's matmul peaks and every file's matmul work")
    peaks = measure_peaks(threads, seconds=0.2 if quick else 1.0)
    for entry in entries:
        work_of = matmul_work(entry["file"] or fp32, pools[FIXED][0])  # eager runs the same matmuls as the fp32 export
        entry["work"] = {"fp32_gflop": work_of["fp32_flops"] / 1e9, "int8_gop": work_of["int8_ops"] / 1e9,
                         "matmuls": len(work_of["nodes"])}
        entry["floor_ms"] = floor_ms(work_of, peaks)

    echo(f"[5/5] latency: {rounds} interleaved rounds x {runs} runs per entry and shape, {threads} thread(s)")
    samples = time_all(runners, pools, rounds, runs, echo)
    base = {"fp32": entries[1], "int8": entries[2]}
    for entry in entries:
        entry["latency_ms"] = {shape: {k: v for k, v in latency_stats(s).items() if k in ("p50", "p95", "p99", "ci95")}
                               for shape, s in samples[entry["name"]].items()}
        entry["size_bytes"] = Path(entry["file"]).stat().st_size if entry["file"] else None
        entry["floor_fraction"] = entry["floor_ms"] / entry["latency_ms"][FIXED]["p50"]
    for entry in entries:
        entry["ratios"] = {shape: {f"{b}_over_this_{p}": base[b]["latency_ms"][shape][p] / lat[p]
                                   for b in base for p in ("p50", "p95")}
                           for shape, lat in entry["latency_ms"].items()}
        reference = base["fp32"]["metrics"]
        entry["retention"] = {t: 100.0 * m["value"] / reference[t]["value"] for t, m in entry["metrics"].items()}
    goal = [{"entry": e["name"], "budgets": e["budgets"],
             "x_vs_fp32_p95": e["ratios"][FIXED]["fp32_over_this_p95"],
             "x_vs_int8_p95": e["ratios"][FIXED]["int8_over_this_p95"],
             "min_retention": min(e["retention"].values())} for e in entries if "budgets" in e]
    for g in goal:
        g["met"] = g["x_vs_fp32_p95"] >= 8 and g["x_vs_int8_p95"] >= 3 and g["min_retention"] >= 97
    for entry in entries:
        if entry["file"]:
            entry["file"] = _relative(entry["file"])
    return {"format": FORMAT, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "mode": "quick" if quick else "full",
            "command": "python -m bench" + (" --quick" if quick else ""), "root": str(ROOT),
            "seconds": round(time.perf_counter() - started, 1), "recipe": report["recipe"]["name"],
            "sweep_run": _relative(run), "budgets": [p["budget"] for p in report["sweep"]],
            "budgets_ms": [p["ms"] for p in report["sweep"]], "teacher_fp32_p95_in_sweep_ms": fp32_p95,
            "headroom": recipe.budget.headroom, "threads": threads, "batch": 1, "seq_len": seq_len,
            "machine": cpu_info(), "versions": package_versions(), "baseline_made_by": how, "peaks": peaks,
            "shapes": {shape: len(pool) for shape, pool in pools.items()}, "rounds": rounds, "runs": runs,
            "baselines": {"fp32": base["fp32"]["name"], "int8": base["int8"]["name"]},
            "entries": entries, "goal": goal}


# ---------------------------------------------------------------------------- the table


def markdown(results: dict) -> str:
    tasks = list(results["entries"][0]["metrics"])
    lengths = [s for s in results["shapes"] if s != FIXED]
    head = (["file", "size (MB)", *[f"{t} (kept)" for t in tasks], "p50 / p95 / p99 at seq 128 (ms)",
             *[f"p95 at {s} (ms)" for s in lengths], "x faster than fp32 (p95)", "x faster than int8 (p95)",
             "GFLOP fp32 + GOP int8", "floor (ms)", "of floor"])
    rows = []
    for e in results["entries"]:
        lat, ratio = e["latency_ms"], e["ratios"][FIXED]
        name = e["name"] + (f" (pick at {', '.join(e['budgets'])})" if e.get("budgets") else "")
        rows.append([name, f"{e['size_bytes'] / 1e6:.1f}" if e["size_bytes"] else "-",
                     *[f"{e['metrics'][t]['value']:.3f} ({e['retention'][t]:.1f}%)" for t in tasks],
                     " / ".join(f"{lat[FIXED][p]:.2f}" for p in ("p50", "p95", "p99")),
                     *[f"{lat[s]['p95']:.2f}" for s in lengths],
                     f"{ratio['fp32_over_this_p95']:.2f}x", f"{ratio['int8_over_this_p95']:.2f}x",
                     f"{e['work']['fp32_gflop']:.2f} + {e['work']['int8_gop']:.2f}", f"{e['floor_ms']:.2f}",
                     f"{e['floor_fraction']:.0%}"])
    machine, peaks = results["machine"], results["peaks"]
    reference = results["teacher_fp32_p95_in_sweep_ms"]
    asked = ", ".join(f"{b} = {ms:.3g} ms" if b.startswith("x") else f"{ms:g} ms"
                      for b, ms in zip(results["budgets"], results["budgets_ms"]))
    lines = [f"# edgekit bench: {results['recipe']} ({results['mode']})", "",
             (f"`{results['command']}` on {machine['name']} ({machine['arch']}), {results['created']}, "
             f"{results['seconds'] / 60:.1f} min. Batch 1, {results['threads']} thread(s), CPU provider, onnxruntime "
             f"{results['versions'].get('onnxruntime')}. Latency: {results['rounds']} interleaved rounds x "
             f"{results['runs']} runs per file and shape, pooled. Metrics: every eval example, one text per run. "
             f"Kept: % of the Optimum fp32 teacher's metric. Matmul peaks measured in this run with ORT's kernels: "
             f"fp32 {peaks['fp32_gflops']:.0f} GFLOP/s, int8 {peaks['int8_gops']:.0f} GOP/s; the floor is the "
             "file's matmul work at seq 128 over them, and 'of floor' is floor / p50. Budgets of the sweep: "
             f"{asked} (xN: the sweep's relative budget, the teacher's fp32 file's p95 timed in the sweep, "
             f"{reference:.2f} ms, over N; a file fits {results['headroom']:.0%} under that)."), "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    lines += ["", ("Goal (batch 1, p95 at seq 128): a pick >= 8x faster than the teacher fp32 ONNX and >= 3x faster "
              "than the teacher int8, keeping >= 97% of the teacher's metric on every task."), ""]
    lines += [f"- {g['entry']} (pick at {', '.join(g['budgets'])}): {g['x_vs_fp32_p95']:.2f}x faster than fp32, "
              f"{g['x_vs_int8_p95']:.2f}x faster than int8, worst task {g['min_retention']:.1f}%: "
              f"{'meets the goal' if g['met'] else 'does not meet it'}" for g in results["goal"]]
    met = [g["entry"] for g in results["goal"] if g["met"]]
    lines += ["", f"Goal met by: {', '.join(met)}." if met else "Goal met by no pick.", ""]
    made = results["baseline_made_by"]
    output = f" (embedding output `{made['embedding_output']}`)" if made.get("embedding_output") else ""
    lines += ["", f"Baseline files: {made['export']}{output}; {made['quantize']}.", ""]
    return "\n".join(lines)


def write_results(results: dict, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"{dt.date.today().isoformat()}-{cpu_slug()}" + ("-quick" if results["mode"] == "quick" else "")
    for suffix, text in ((".json", json.dumps(results, indent=1, default=str) + "\n"), (".md", markdown(results))):
        tmp = folder / f".{stem}{suffix}.tmp"
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, folder / f"{stem}{suffix}")
    return folder / f"{stem}.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", type=Path, default=RECIPE)
    parser.add_argument("--budgets", default=",".join(BUDGETS),
                        help="comma-separated: ms (4.5), or xN for files N times faster than the teacher fp32 at p95")
    parser.add_argument("--quick", action="store_true", help="CI size: subsampled eval sets, short timings")
    parser.add_argument("--run", type=Path, help="take the picks of this earlier `edgekit sweep` folder")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "bench", help="sweep and baseline files")
    parser.add_argument("--cache-dir", type=Path, help="edgekit's cache [default: $EDGEKIT_CACHE_DIR or beside --work]")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    try:
        recipe = load_recipe(args.recipe)
        if args.quick:
            recipe = quick_recipe(recipe)
        budgets = args.budgets.split(",")
        cache = args.cache_dir or (Path(os.environ["EDGEKIT_CACHE_DIR"]) if os.environ.get("EDGEKIT_CACHE_DIR")
                                   else None)
        results = compare(recipe, budgets, args.work, cache, args.run, args.quick)
    except (EdgekitError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    path = write_results(results, args.results)
    print(markdown(results))
    print(f"written: {path} and {path.with_suffix('.md')}", file=sys.stderr)
    return 0
