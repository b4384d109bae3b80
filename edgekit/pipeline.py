"""distill-and-export: the one place that knows the order of the stages.

    recipe -> task data -> teacher (+ heads, cached outputs)
           -> probe every candidate untrained (latency does not depend on weight values)
           -> distill the feasible ones, largest first -> export (parity) + int8
           -> accuracy per task and latency of every file -> pick -> bundle + report

The run folder is built under a temporary name and renamed at the end; everything
expensive (teacher outputs, fine-tuned teachers, probes, student checkpoints) lives
in a content-addressed cache beside it, so a killed run resumes where it stopped.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edgekit import __version__
from edgekit.atomic import atomic_dir
from edgekit.cache import Cache, cache_key, digest_texts
from edgekit.recipe import Recipe, RecipeError, load_recipe
from edgekit.report import count, milliseconds, write_report
from edgekit.select import BudgetNotMet, closest_miss, latency_of, meets_budget, pick, retention, shape_text

PARITY_SAMPLES = 32
PARITY_BATCH = 8


@dataclass
class RunReport:
    """What a run produced: `data` is report.json's content, `path` the run folder."""

    path: Path
    data: dict

    @property
    def selected(self) -> dict | None:
        return self.data["selected"]

    @property
    def candidates(self) -> list[dict]:
        return self.data["candidates"]


def _echo(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def check_recipe(recipe: Recipe) -> None:
    """Problems a user can fix (data sources, provider), found before any expensive work and
    reported together; `edgekit recipe check` runs exactly this."""
    from edgekit.data.tasks import check_task_sources
    from edgekit.errors import EdgekitError
    from edgekit.providers import require_provider

    problems = list(check_task_sources(recipe))
    try:
        require_provider(recipe.budget.provider)
    except EdgekitError as e:
        problems.append(f"budget.provider: {e}")
    if problems:
        raise RecipeError(f"recipe '{recipe.name}' cannot run ({len(problems)} problem(s)):\n"
                          + "\n".join(f"  {p}" for p in problems))


# ---------------------------------------------------------------------------- inputs

def _distillation_set(recipe: Recipe, tasks, teacher):
    """Inputs the student learns from: every task's training inputs plus the unlabeled
    corpora, deduplicated; labels per classification task (-1 where an input has none)."""
    import numpy as np

    from edgekit.data.tasks import load_unlabeled
    from edgekit.inputs import ImageInputs, TextInputs

    if recipe.teacher.kind == "image-classifier":
        task = tasks[0]
        return ImageInputs(task.train["image"]), {task.name: task.train["label"]}, \
            cache_key("images", task.digest)
    texts = []
    for task in tasks:
        texts.extend(task.train_inputs())
    for spec in recipe.distill.unlabeled:
        texts.extend(load_unlabeled(spec))
    # Evaluation inputs never become distillation inputs, even unlabeled: the student
    # would otherwise have matched the teacher on the very texts it is scored on.
    held_out = {t for task in tasks for t in task.texts("test")}
    texts = [t for t in dict.fromkeys(texts) if t not in held_out]
    if recipe.distill.max_texts and len(texts) > recipe.distill.max_texts:
        keep = np.sort(np.random.default_rng(recipe.distill.seed).permutation(len(texts))[:recipe.distill.max_texts])
        texts = [texts[i] for i in keep]
    if not texts:
        raise RecipeError("there is nothing to distill on: every task is eval_only and distill.unlabeled is "
                          "empty. Name an unlabeled corpus in distill.unlabeled, or give a task a training split.")
    position = {text: i for i, text in enumerate(texts)}
    labels = {}
    for task in tasks:
        if task.spec.kind == "classification":
            column = np.full(len(texts), -1, dtype=np.int64)
            for text, label in zip(task.train["text"], task.train["label"]):
                if text in position:
                    column[position[text]] = label
            labels[task.name] = column
    return TextInputs(teacher.tokenizer, texts, teacher.max_length), labels, digest_texts(texts)


def _parity_batches(tasks, teacher) -> list[dict]:
    """Real evaluation inputs spread over the length range, as numpy feeds."""
    import numpy as np

    from edgekit.tasks import batched, spread_sample

    if teacher.tokenizer is None:
        images = tasks[0].test["image"][:PARITY_SAMPLES]
        return [{"pixel_values": images[i:i + PARITY_BATCH]} for i in range(0, len(images), PARITY_BATCH)]
    texts = [t for task in tasks for t in task.texts("test")]
    feeds = []
    for chunk in batched(spread_sample(texts, PARITY_SAMPLES), PARITY_BATCH):
        encoded = teacher.tokenizer(chunk, padding="longest", truncation=True, max_length=teacher.max_length,
                                    return_tensors="np")
        ids = encoded["input_ids"].astype(np.int64)
        feeds.append({"input_ids": ids, "attention_mask": encoded["attention_mask"].astype(np.int64),
                      "token_type_ids": np.zeros_like(ids)})
    return feeds


# ---------------------------------------------------------------------------- measuring

@dataclass
class _Context:
    recipe: Recipe
    tasks: list
    teacher: object
    cache: Cache
    parity: list[dict]
    lengths_file: Path | None  # texts whose token lengths the budget follows (seq_len: task)
    echo: Callable[[str], None]


def _lengths_file(recipe: Recipe, tasks, cache: Cache) -> Path | None:
    if recipe.budget.seq_len != "task":
        return None
    task = next(t for t in tasks if t.spec.kind != "image-classification")
    texts = [t for column in ("text", "text_a", "query") for t in task.test.get(column, [])]
    path = cache.folder("lengths", cache_key(task.digest)) / "texts.txt"
    if not path.is_file():
        path.write_text("\n".join(t.replace("\n", " ") for t in texts) + "\n", encoding="utf-8")
    return path


def _measure(path: Path, ctx: _Context) -> dict:
    """Latency of one file at the budget's shape and provider, with the shipping session options."""
    from edgekit.bench import BenchConfig, run_benchmark

    budget = ctx.recipe.budget
    config = BenchConfig(provider=budget.provider, threads=budget.threads, batch=budget.batch,
                         min_runs=budget.min_runs, min_seconds=budget.min_seconds, allow_spinning=False,
                         seq_len=budget.seq_len if isinstance(budget.seq_len, int) and ctx.teacher.tokenizer else None,
                         lengths_from=str(ctx.lengths_file) if ctx.lengths_file else None,
                         tokenizer=ctx.teacher.tokenizer_source, max_length=ctx.teacher.max_length)
    # Several rounds, each a fresh session, and the round with the median percentile is kept:
    # on a shared host one burst of noise would otherwise move a budget decision (a p95 of
    # one 2 s round moved by 15-25% between identical runs here).
    rounds = sorted((run_benchmark(path, config) for _ in range(budget.rounds)),
                    key=lambda result: result["latency_ms"][budget.percentile])
    chosen = rounds[len(rounds) // 2]
    chosen["rounds_ms"] = [result["latency_ms"][budget.percentile] for result in rounds]
    return chosen


def _latency_summary(result: dict) -> dict:
    lat = result["latency_ms"]
    return {"p50": lat["p50"], "p95": lat["p95"], "p99": lat["p99"], "mean": lat["mean"], "ci95": lat["ci95"],
            "runs": result["runs"], "rounds": result["rounds_ms"]}


def _export(model, folder: Path, ctx: _Context, int8: bool) -> dict[str, Path]:
    """model.onnx (parity-checked) and, if asked, model.int8.onnx in `folder`."""
    from edgekit.export import export_network
    from edgekit.quantize import quantize_dynamic_int8

    folder.mkdir(parents=True, exist_ok=True)
    files = {"fp32": folder / "model.onnx"}
    parity = export_network(model, files["fp32"], ctx.parity)
    (folder / "parity.json").write_text(json.dumps(parity, indent=1) + "\n", encoding="utf-8")
    if hasattr(model, "backbone"):
        model.backbone.config.save_pretrained(folder)  # the architecture, and the vocab size bench feeds use
    if int8:
        files["int8"] = folder / "model.int8.onnx"
        record = quantize_dynamic_int8(files["fp32"], files["int8"])
        (folder / "quantization.json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return files


def _evaluate(path: Path, ctx: _Context) -> dict:
    from edgekit.evaluate import evaluate_onnx

    results = evaluate_onnx(path, ctx.tasks, ctx.teacher.tokenizer, ctx.teacher.max_length,
                            threads=os.cpu_count() or 1)
    return {task: {k: v for k, v in r.items() if k != "predictions"} for task, r in results.items()}


# ---------------------------------------------------------------------------- stages

def _candidates(recipe: Recipe, teacher):
    from edgekit.students import image_candidates, text_candidates

    if recipe.teacher.kind == "image-classifier":
        return image_candidates(recipe.students)
    candidates = text_candidates(teacher.model.backbone.config, recipe.students)
    teacher_config = teacher.model.backbone.config
    names = {loss.name for loss in recipe.distill.losses}
    for candidate in candidates:
        if "hidden_mse" in names and candidate.arch["hidden"] != teacher_config.hidden_size:
            raise RecipeError(f"distill.losses: hidden_mse compares hidden states of equal width, but student "
                              f"{candidate.name} is {candidate.arch['hidden']} wide and the teacher "
                              f"{teacher_config.hidden_size}: drop students.hidden or the hidden_mse loss.")
        if "attention" in names and candidate.arch["heads"] != teacher_config.num_attention_heads:
            raise RecipeError(f"distill.losses: attention transfer needs the teacher's head count "
                              f"({teacher_config.num_attention_heads}); student {candidate.name} has "
                              f"{candidate.arch['heads']}: drop students.heads or the attention loss.")
    return candidates


def _build(candidate, ctx: _Context):
    from edgekit.students import build_image_student, build_text_student

    teacher = ctx.teacher
    if ctx.recipe.teacher.kind == "image-classifier":
        task = ctx.tasks[0]
        return build_image_student(teacher.model, candidate, task.test["image"].shape[1], len(task.labels))
    attention = any(loss.name == "attention" for loss in ctx.recipe.distill.losses)
    return build_text_student(teacher.model, candidate, attention_outputs=attention)


def _probe(candidate, ctx: _Context) -> dict:
    """Export the untrained candidate, quantize it, time both: cached per architecture,
    budget shape and machine."""
    import tempfile

    from edgekit.environment import cpu_info, package_versions
    from edgekit.networks import count_parameters

    budget = ctx.recipe.budget
    outputs = ctx.teacher.model.output_names  # a student exports the teacher's outputs
    # The budget's limits (ms, size, percentile) only judge a timing: they are not part of the key,
    # so a sweep over budgets reuses every probe.
    timing = budget.model_dump(exclude={"ms", "size_mb", "percentile"})
    key = cache_key("probe", __version__, candidate.arch, outputs, ctx.recipe.teacher.kind, timing,
                    str(ctx.lengths_file), cpu_info()["name"], package_versions().get("onnxruntime"))
    entry = ctx.cache.load_json("probes", key)
    if entry is None:
        model, _ = _build(candidate, ctx)
        variants = {}
        with tempfile.TemporaryDirectory(prefix="edgekit-probe-") as tmp:
            files = _export(model, Path(tmp), ctx, int8=budget.int8)
            for variant, path in files.items():
                result = _measure(path, ctx)
                variants[variant] = {"latency_ms": _latency_summary(result),
                                     "size_bytes": result["model"]["size_bytes"]}
        entry = {"name": candidate.name, "architecture": candidate.arch, "params": count_parameters(model),
                 "variants": variants}
        ctx.cache.save_json("probes", key, entry)
    for variant, record in entry["variants"].items():
        record["meets_budget"] = meets_budget(record, budget)
    entry["feasible"] = any(record["meets_budget"] for record in entry["variants"].values())
    best = min(entry["variants"].items(), key=lambda kv: latency_of(kv[1], budget))
    ctx.echo(f"  {candidate.name:<12} {count(entry['params']):>6} params  " + "  ".join(
        f"{variant} {budget.percentile} {milliseconds(latency_of(record, budget)):>6} ms" for variant, record in
        entry["variants"].items()) + ("  fits" if entry["feasible"] else f"  too slow (best: {best[0]})"))
    return entry


def _undistilled(student, init_digest: str, ctx: _Context) -> dict:
    """Per-task metrics of the student as initialized from the teacher, before any training:
    what distillation bought is the difference (a refit-free baseline, FIELD-NOTES)."""
    import tempfile

    from edgekit.export import export_network

    key = cache_key("undistilled", init_digest, [t.digest for t in ctx.tasks], ctx.teacher.max_length)
    metrics = ctx.cache.load_json("undistilled", key)
    if metrics is None:
        with tempfile.TemporaryDirectory(prefix="edgekit-undistilled-") as tmp:
            path = Path(tmp) / "model.onnx"
            export_network(student, path, ctx.parity)
            metrics = _evaluate(path, ctx)
        ctx.cache.save_json("undistilled", key, metrics)
    return metrics


def _distill(student, init: dict, init_digest: str, candidate, ctx: _Context, inputs, inputs_digest: str,
             labels: dict, teacher_out: dict) -> dict:
    """Train the candidate in place against the teacher; resumes from the cache's checkpoint."""
    import torch

    from edgekit.distill.losses import LIVE_TEACHER, total_loss
    from edgekit.distill.trainer import TrainSettings, train

    spec = ctx.recipe.distill
    live = {LIVE_TEACHER[loss.name] for loss in spec.losses if loss.name in LIVE_TEACHER}
    layer_map = dict(enumerate(candidate.arch.get("keep") or range(candidate.arch.get("depth", 0))))
    cached = {"logits": {t: torch.from_numpy(v) for t, v in teacher_out["logits"].items()}}
    if "embedding" in teacher_out:
        cached["embedding"] = torch.from_numpy(teacher_out["embedding"])
    label_tensors = {task: torch.from_numpy(column) for task, column in labels.items()}
    teacher_model = ctx.teacher.model

    def step_loss(model, indices):
        batch = inputs.batch(indices)
        index = torch.from_numpy(indices)
        student_out = model.internals(**batch, hidden="hidden" in live, attention="attention" in live)
        teacher_side = {"logits": {t: v[index] for t, v in cached["logits"].items()}}
        if "embedding" in cached:
            teacher_side["embedding"] = cached["embedding"][index]
        if live:
            with torch.no_grad():
                teacher_side.update({k: v for k, v in teacher_model.internals(
                    **batch, hidden="hidden" in live, attention="attention" in live).items() if k in live})
        extras = {"labels": {t: v[index] for t, v in label_tensors.items()}, "layer_map": layer_map}
        return total_loss(spec.losses, student_out, teacher_side, extras)

    if spec.freeze_embeddings and hasattr(student, "backbone"):
        words = student.backbone.get_input_embeddings()
        if words.weight.shape == ctx.teacher.model.backbone.get_input_embeddings().weight.shape:
            words.weight.requires_grad_(False)
    settings = TrainSettings(epochs=spec.epochs, batch_size=spec.batch_size, lr=spec.lr, seed=spec.seed,
                             checkpoint_every=spec.checkpoint_every)
    key = cache_key("student", ctx.teacher.digest, candidate.arch, spec.model_dump(), inputs_digest, init_digest)
    started = time.perf_counter()
    history = train(student, len(inputs), step_loss, settings, ctx.cache.folder("students", key),
                    f"distilling {candidate.name}", ctx.echo, lengths=inputs.lengths())
    history["seconds"] = round(time.perf_counter() - started, 1)
    history["initialized_from_teacher"] = {"copied_tensors": init["copied"], "random_tensors": len(init["random"])}
    return history


def _file_entry(name: str, student: str, variant: str, path: Path, run: Path, ctx: _Context,
                teacher_metrics: dict | None) -> dict:
    """Accuracy per task and latency of one file, plus its raw latency samples beside it."""
    metrics = _evaluate(path, ctx)
    result = _measure(path, ctx)
    path.with_suffix(".bench.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    entry = {"name": name, "student": student, "variant": variant, "onnx": str(path.relative_to(run)),
             "size_bytes": result["model"]["size_bytes"], "latency_ms": _latency_summary(result),
             "metrics": metrics}
    if teacher_metrics is not None:
        entry["retention"] = retention(metrics, teacher_metrics)
    return entry


def _write_bundle(chosen: dict, run: Path, ctx: _Context) -> None:
    """The file to ship with what an app needs beside it (tokenizer, labels, I/O contract)."""
    bundle = run / "bundle"
    bundle.mkdir()
    source = run / chosen["onnx"]
    shutil.copy2(source, bundle / "model.onnx")
    if (source.parent / "config.json").is_file():  # the student's architecture (and vocab size for bench)
        shutil.copy2(source.parent / "config.json", bundle / "config.json")
    if ctx.teacher.tokenizer is not None:
        ctx.teacher.tokenizer.save_pretrained(bundle)
    labels = {task.name: task.labels for task in ctx.tasks if task.labels}
    (bundle / "labels.json").write_text(json.dumps(labels, indent=1) + "\n", encoding="utf-8")
    spec = ctx.recipe.teacher
    contract = {"edgekit_version": __version__, "recipe": ctx.recipe.name, "source": chosen["onnx"],
                "variant": chosen["variant"], "max_length": ctx.teacher.max_length if ctx.teacher.tokenizer else None,
                "pooling": spec.pooling if spec.kind == "sentence-encoder" else None,
                "normalized": spec.normalize if spec.kind == "sentence-encoder" else None,
                "outputs": {t.name: t.output for t in ctx.tasks},
                "metrics": chosen["metrics"], "latency_ms": chosen["latency_ms"]}
    (bundle / "edgekit.json").write_text(json.dumps(contract, indent=1) + "\n", encoding="utf-8")


def distill_and_export(recipe: Recipe | str | Path, out: str | Path | None = None,
                       cache_dir: str | Path | None = None, force: bool = False,
                       echo: Callable[[str], None] = _echo) -> RunReport:
    """Run a recipe end to end; returns the report (also written as report.json/.md).

    Raises BudgetNotMet (after probing, before any training) when no candidate can fit,
    and after writing the run folder when no trained file does."""
    import torch

    from edgekit.data.tasks import load_task_data
    from edgekit.environment import cpu_info, package_versions
    from edgekit.networks import count_parameters, state_digest
    from edgekit.teacher import prepare_teacher

    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe)
    out = Path(out) if out is not None else Path("runs") / recipe.name
    cache = Cache(cache_dir or os.environ.get("EDGEKIT_CACHE_DIR") or out.parent / ".edgekit-cache")
    check_recipe(recipe)
    torch.set_num_threads(os.cpu_count() or 1)
    started = time.perf_counter()
    budget = recipe.budget

    stages: dict[str, float] = {}  # stage -> seconds since the start, as the run reaches it

    def stage(number: int, name: str, detail: str) -> None:
        elapsed = time.perf_counter() - started
        stages.setdefault(name, round(elapsed, 1))
        echo(f"[{number}/6 {elapsed / 60:4.1f} min] {name}: {detail}")

    with atomic_dir(out, replace=force) as run:
        stage(1, "data", ", ".join(t.name for t in recipe.tasks))
        tasks = [load_task_data(spec) for spec in recipe.tasks]
        for task in tasks:
            echo(f"  {task.name}: {task.spec.kind}, {_count(task.train)} train / {_count(task.test)} test examples")
        stage(2, "teacher", recipe.teacher.model)
        attention = any(loss.name == "attention" for loss in recipe.distill.losses)
        teacher = prepare_teacher(recipe, tasks, cache, echo, attention=attention)
        ctx = _Context(recipe, tasks, teacher, cache, _parity_batches(tasks, teacher),
                       _lengths_file(recipe, tasks, cache), echo)
        teacher_files = _export(teacher.model, run / "teacher", ctx, int8=False)
        teacher_entry = _file_entry("teacher", "teacher", "fp32", teacher_files["fp32"], run, ctx, None)
        teacher_metrics = teacher_entry["metrics"]
        echo("  teacher: " + _metrics_text(teacher_metrics) +
             f"; {budget.percentile} {milliseconds(latency_of(teacher_entry, budget))} ms")

        stage(3, "probe", f"timing candidates untrained at {shape_text(budget, teacher.tokenizer is not None)}")
        candidates = _candidates(recipe, teacher)
        probes = {c.name: _probe(c, ctx) for c in candidates}
        feasible = [c for c in candidates if probes[c.name]["feasible"]]
        if not feasible:
            entries = [{"name": f"{name} ({variant})", "architecture": p["architecture"], **record}
                       for name, p in probes.items() for variant, record in p["variants"].items()]
            raise BudgetNotMet(closest_miss(entries, budget, "candidate") + " Nothing was trained or written.")
        chosen = sorted(feasible, key=lambda c: -probes[c.name]["params"])[:recipe.students.max_students]

        stage(4, "distill", f"{', '.join(c.name for c in chosen)} (largest feasible first)")
        inputs, labels, inputs_digest = _distillation_set(recipe, tasks, teacher)
        teacher_out = teacher.outputs(inputs, inputs_digest, cache)
        entries = []
        for candidate in chosen:
            student, init = _build(candidate, ctx)
            init_digest = state_digest(student)  # the untrained student: part of both cache keys
            undistilled = _undistilled(student, init_digest, ctx)
            history = _distill(student, init, init_digest, candidate, ctx, inputs, inputs_digest, labels,
                               teacher_out)
            stage(5, "measure", f"exporting and measuring {candidate.name}")
            files = _export(student, run / "candidates" / candidate.name, ctx, int8=budget.int8)
            (run / "candidates" / candidate.name / "distillation.json").write_text(
                json.dumps(history, indent=1) + "\n", encoding="utf-8")
            for variant, path in files.items():
                entry = _file_entry(f"{candidate.name}-{variant}", candidate.name, variant, path, run, ctx,
                                    teacher_metrics)
                probe = probes[candidate.name]["variants"][variant]
                entry |= {"architecture": candidate.arch, "params": count_parameters(student),
                          "probe_latency_ms": probe["latency_ms"],
                          "probe_ratio": latency_of(entry, budget) / latency_of(probe, budget),
                          "meets_budget": meets_budget(entry, budget),
                          "undistilled_metrics": undistilled,
                          "distillation": {k: history[k] for k in ("steps", "seconds", "initialized_from_teacher")}}
                entries.append(entry)
                echo(f"  {entry['name']:<14} " + _metrics_text(entry["metrics"], entry["retention"]) +
                     f"; {budget.percentile} {milliseconds(latency_of(entry, budget))} ms "
                     f"(probe {milliseconds(latency_of(probe, budget))})"
                     + ("" if entry["meets_budget"] else "  OVER BUDGET"))

        stage(6, "select", "picking and writing the bundle")
        best = pick(entries, budget)
        if best is not None:
            _write_bundle(best, run, ctx)
        data = {
            "format": "edgekit.report/1",
            "edgekit_version": __version__,
            "recipe": recipe.model_dump(mode="json"),
            "recipe_digest": recipe.digest(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "seconds": round(time.perf_counter() - started, 1),
            "stages_started_s": stages,
            "machine": cpu_info(),
            "versions": package_versions(),
            "budget": {"percentile": budget.percentile, "ms": budget.ms, "batch": budget.batch,
                       "seq_len": budget.seq_len, "provider": budget.provider, "threads": budget.threads,
                       "size_mb": budget.size_mb, "headroom": budget.headroom},
            "tasks": [{"name": t.name, "kind": t.spec.kind, "metric": t.spec.metric,
                       "train_examples": _count(t.train), "test_examples": _count(t.test)} for t in tasks],
            "teacher": {"model": recipe.teacher.model, "kind": recipe.teacher.kind,
                        "params": count_parameters(teacher.model), "prepared": _jsonable(teacher.prepared),
                        **{k: teacher_entry[k] for k in ("onnx", "size_bytes", "latency_ms", "metrics")}},
            "probes": list(probes.values()),
            "candidates": entries,
            "selected": None if best is None else {"name": best["name"], "onnx": best["onnx"],
                                                   "bundle": "bundle/model.onnx"},
            "why": None if best is not None else closest_miss(entries, budget, "trained file"),
        }
        write_report(run, data)
    report = RunReport(out, data)
    if best is None:
        raise BudgetNotMet(f"{data['why']} The run folder {out} holds every file and report.md.")
    echo(f"done in {data['seconds'] / 60:.1f} min: {best['name']} -> {out / 'bundle'} (report: {out / 'report.md'})")
    return report


def _count(columns: dict) -> int:
    first = next(iter(columns.values()), [])
    return len(first)


def _jsonable(value):
    return json.loads(json.dumps(value, default=str))


def _metrics_text(metrics: dict, kept: dict | None = None) -> str:
    parts = []
    for task, m in metrics.items():
        text = f"{task} {m['metric']} {m['value']:.4f}"
        if kept and kept.get(task) is not None:
            text += f" ({kept[task]:.1f}%)"
        parts.append(text)
    return ", ".join(parts)
