"""distill-and-export and sweep: the one place that knows the order of the stages.

    recipe -> task data -> teacher (+ heads, cached outputs) -> teacher fp32 + quantized variants
           -> probe every candidate untrained (latency does not depend on weight values)
           -> distill the feasible ones, largest first -> export (parity) + quantized variants
           -> evaluation matrix: accuracy per task and latency of every file on every provider
           -> Pareto frontier, pick per provider, gap report -> bundle + report

A sweep runs the same stages once for several budgets: only the choice of students to
train and the pick differ per budget, every measurement is shared.

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
from dataclasses import dataclass, field
from pathlib import Path

from edgekit import __version__
from edgekit.atomic import atomic_dir
from edgekit.cache import Cache, cache_key, digest_feeds, digest_texts, file_problem, write_checked
from edgekit.errors import ProviderUnavailable
from edgekit.loading import available_providers, check_recipe, load_recipe, load_tasks, skipped_text
from edgekit.quantize import STATIC_METHODS
from edgekit.recipe import Budget, Recipe, RecipeError, budget_token
from edgekit.report import REPORT_FORMAT, count, milliseconds, task_record, write_report
from edgekit.select import (
    BudgetNotMet,
    closest_miss,
    latency_of,
    limit_ms,
    meets_budget,
    pareto_front,
    pick,
    retention,
    shape_text,
)

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
    def files(self) -> list[dict]:
        """The evaluation matrix: one row per file x provider."""
        return self.data["files"]


def _echo(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


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


def _parity_examples(tasks, teacher):
    """Real evaluation inputs spread over the length range (texts), or the first test images."""
    from edgekit.tasks import spread_sample

    if teacher.tokenizer is None:
        return tasks[0].test["image"][:PARITY_SAMPLES]
    return spread_sample([t for task in tasks for t in task.texts("test")], PARITY_SAMPLES)


def _parity_batches(examples, teacher) -> list[dict]:
    """The parity examples as numpy feeds of PARITY_BATCH."""
    import numpy as np

    from edgekit.tasks import batched

    if teacher.tokenizer is None:
        return [{"pixel_values": examples[i:i + PARITY_BATCH]} for i in range(0, len(examples), PARITY_BATCH)]
    feeds = []
    for chunk in batched(examples, PARITY_BATCH):
        encoded = teacher.tokenizer(chunk, padding="longest", truncation=True, max_length=teacher.max_length,
                                    return_tensors="np")
        ids = encoded["input_ids"].astype(np.int64)
        feeds.append({"input_ids": ids, "attention_mask": encoded["attention_mask"].astype(np.int64),
                      "token_type_ids": np.zeros_like(ids)})
    return feeds


def _keep_for_bundles(run: Path, examples, teacher) -> None:
    """What any bundle of this run needs beyond its model file: the tokenizer, and real inputs
    its reference outputs are computed on (`edgekit bundle` works from the run folder alone)."""
    import numpy as np

    folder = run / "reference"
    folder.mkdir()
    if teacher.tokenizer is None:
        np.save(folder / "images.npy", examples)
        return
    teacher.tokenizer.save_pretrained(run / "tokenizer")
    (folder / "texts.json").write_text(json.dumps(examples, ensure_ascii=False, indent=0) + "\n", encoding="utf-8")


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
    providers: list[str]  # available, in the recipe's order: the first is the target
    variants: list[str]  # quantized variants made of every file
    calibration: list[dict] | None = None  # static int8 calibration feeds, drawn from the distillation set
    failures: dict[str, str] = field(default_factory=dict)  # "file on provider" -> why it was not measured
    sample_feeds: list[dict] | None = None  # inputs of the accuracy-aware int8 step's sensitivity pass
    mixed: dict[str, dict] = field(default_factory=dict)  # int8 file -> its accuracy-aware search (precision.py)
    scored: dict[str, dict | None] = field(default_factory=dict)  # _evaluate's cache key -> its result


def _lengths_file(recipe: Recipe, tasks, cache: Cache) -> Path | None:
    if recipe.budget.seq_len != "task":
        return None
    task = next(t for t in tasks if t.spec.kind != "image-classification")
    texts = [t for column in ("text", "text_a", "query") for t in task.test.get(column, [])]
    path = cache.folder("lengths", cache_key(task.digest)) / "texts.txt"
    if file_problem(path):
        text = "\n".join(t.replace("\n", " ") for t in texts) + "\n"
        write_checked(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return path


def _time(files: list[tuple[Path, str]], ctx: _Context) -> list[dict]:
    return _timings(files, ctx)[0]


def _timings(files: list[tuple[Path, str]], ctx: _Context,
             reference: tuple[Path, str] | None = None) -> tuple[list[dict], dict | None]:
    """Latency of each (file, provider) at the budget's shape, with the shipping session options.

    Rounds are interleaved over the files (round 1 of every file, then round 2, ...), each round a
    fresh session, and per file the round with the median percentile is kept. This host's speed
    drifts by ~10% over minutes (the same untrained and trained student timed 12.1 and 14.2 ms
    p95 at different moments of one run, and 13.5 ms both side by side): interleaving gives every
    file of a comparison the same drift, and the median round sheds one burst of noise.

    A timing is cached under the file's content, the timing settings, the CPU (instruction sets
    included) and the ONNX Runtime version: a rerun times only files it has not timed on this machine
    (`"cached": true` and `measured_at` say which figure is from when). `reference` (the teacher's fp32
    file) is re-timed, uncached, in the same rounds as the files timed now, if any: how far the host's
    speed moved since the figure a relative budget was derived from. Returns (timings, its re-timing).
    """
    from edgekit.bench import BenchConfig, run_benchmark
    from edgekit.environment import cpu_fingerprint, package_versions
    from edgekit.provenance import sha256_file

    budget = ctx.recipe.budget

    def config(provider: str) -> BenchConfig:
        return BenchConfig(provider=provider, threads=budget.threads, batch=budget.batch, min_runs=budget.min_runs,
                           min_seconds=budget.min_seconds, allow_spinning=False,
                           seq_len=budget.seq_len if isinstance(budget.seq_len, int) and ctx.teacher.tokenizer
                           else None,
                           lengths_from=str(ctx.lengths_file) if ctx.lengths_file else None,
                           tokenizer=ctx.teacher.tokenizer_source, max_length=ctx.teacher.max_length)

    keys = [cache_key("timing", __version__, sha256_file(path), config(provider).model_dump(), budget.rounds,
                      budget.percentile, cpu_fingerprint(), package_versions().get("onnxruntime"))
            for path, provider in files]
    chosen = [ctx.cache.load_json("timings", key) for key in keys]
    for result, (path, _) in zip(chosen, files):
        if result is not None:
            result["cached"] = True
            result["model"]["path"] = str(path)
    todo = [i for i, result in enumerate(chosen) if result is None]
    timed = [files[i] for i in todo] + ([reference] if reference and todo else [])
    rounds = [[] for _ in timed]
    for _ in range(budget.rounds):
        for results, (path, provider) in zip(rounds, timed):
            results.append(run_benchmark(path, config(provider)))
    medians = []
    for results in rounds:
        results.sort(key=lambda result: result["latency_ms"][budget.percentile])
        middle = results[len(results) // 2]
        middle["rounds_ms"] = [result["latency_ms"][budget.percentile] for result in results]
        middle["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        medians.append(middle)
    for i, middle in zip(todo, medians):
        ctx.cache.save_json("timings", keys[i], middle)
        chosen[i] = middle | {"cached": False}
    return chosen, (medians[-1] if len(medians) > len(todo) else None)


def _latency_summary(result: dict) -> dict:
    lat = result["latency_ms"]
    return {"p50": lat["p50"], "p95": lat["p95"], "p99": lat["p99"], "mean": lat["mean"], "ci95": lat["ci95"],
            "runs": result["runs"], "rounds": result["rounds_ms"], "measured_at": result.get("measured_at"),
            "cached": result.get("cached", False)}


def _export(model, folder: Path, ctx: _Context, variants: list[str],
            calibration: list[dict] | None = None, fit: bool = False, cached: bool = True) -> dict[str, Path]:
    """model.onnx (parity-checked) and model.<variant>.onnx for each quantized variant in `folder`.

    fit: the int8-dynamic file keeps MatMuls in fp32 until it loses at most quantize.max_drop (precision.py).
    The folder's files are cached under everything they depend on (the weights and structure, the
    export and quantize settings, the calibration and parity inputs, the CPU and package versions):
    a rerun copies them instead of exporting and quantizing again, so their scores and timings, keyed by
    content, come from the cache too. cached=False (a probe's untrained files, whose timings are cached
    as the probe): export without the cache.
    """
    calibration = (calibration or ctx.calibration) if any(v in STATIC_METHODS for v in variants) else None
    fitting = fit and "int8-dynamic" in variants and ctx.recipe.quantize.max_drop is not None
    if not cached:
        files = _make_export(model, folder, ctx, variants, calibration, fitting)
    else:
        files = _cached_export(model, folder, ctx, variants, calibration, fitting)
    if fitting:
        records = json.loads((folder / "quantization.json").read_text(encoding="utf-8"))
        ctx.mixed[str(files["int8-dynamic"])] = records["int8-dynamic"]["accuracy_aware"]
    return files


def _cached_export(model, folder: Path, ctx: _Context, variants: list[str], calibration: list[dict] | None,
                   fitting: bool) -> dict[str, Path]:
    """_make_export's files, copied from the cache when it has them (and stored there when it has not)."""
    from edgekit.environment import cpu_fingerprint, package_versions
    from edgekit.networks import state_digest

    versions = package_versions()
    key = cache_key("export", __version__, state_digest(model), _structure(model), ctx.recipe.export.opset, variants,
                    digest_feeds(calibration), digest_feeds(ctx.parity), ctx.recipe.quantize.model_dump(),
                    # the accuracy-aware step scores on the tasks and compares on the sensitivity inputs
                    [[t.digest for t in ctx.tasks], digest_feeds(ctx.sample_feeds), ctx.recipe.budget.batch,
                     ctx.providers[0]] if fitting else None,
                    cpu_fingerprint(), [versions.get(name) for name in ("torch", "onnx", "onnxruntime")])
    entry = ctx.cache.load_json("exports", key)
    stored = ctx.cache.folder("exports", key)
    if entry is not None and all(file_problem(stored / name) is None for name in entry["files"]):
        folder.mkdir(parents=True, exist_ok=True)
        for name in entry["files"]:
            shutil.copyfile(stored / name, folder / name)
        ctx.echo(f"  {folder.name}: exported and quantized files from the cache")
        files = {"fp32": folder / "model.onnx", **{v: folder / f"model.{v}.onnx" for v in variants}}
    else:
        files = _make_export(model, folder, ctx, variants, calibration, fitting)
        names = sorted(p.name for p in folder.iterdir() if p.is_file())
        for name in names:
            write_checked(stored / name, lambda tmp, name=name: shutil.copyfile(folder / name, tmp))
        ctx.cache.save_json("exports", key, {"files": names})
    return files


def _structure(model) -> dict:
    """What, besides the weights, decides a network's graph: its class, module tree, settings and config."""
    config = getattr(getattr(model, "backbone", None), "config", None)
    return {"class": type(model).__name__, "modules": repr(model), "outputs": list(model.output_names),
            "settings": {k: getattr(model, k, None) for k in ("kind", "pooling", "normalize", "classifier_task")},
            "config": config.to_dict() if config is not None else _net_config(model)}


def _net_config(model):
    """An image network's settings: edgekit's ConvNet keeps a dict, a Hugging Face ViT a config object."""
    config = getattr(getattr(model, "net", None), "config", None)
    return config.to_dict() if hasattr(config, "to_dict") else config


def _make_export(model, folder: Path, ctx: _Context, variants: list[str], calibration: list[dict] | None,
                 fit: bool) -> dict[str, Path]:
    from edgekit.export import export_network
    from edgekit.precision import fit_allowed_drop
    from edgekit.quantize import quantize_file

    folder.mkdir(parents=True, exist_ok=True)
    files = {"fp32": folder / "model.onnx"}
    parity = export_network(model, files["fp32"], ctx.parity, opset=ctx.recipe.export.opset)
    (folder / "parity.json").write_text(json.dumps(parity, indent=1) + "\n", encoding="utf-8")
    if hasattr(model, "backbone"):
        model.backbone.config.save_pretrained(folder)  # the architecture, and the vocab size bench feeds use
    records = {}
    reduce_range = ctx.recipe.quantize.reduce_range  # "auto": decided by this CPU's int8 instructions
    for variant in variants:
        files[variant] = folder / f"model.{variant}.onnx"
        records[variant] = quantize_file(files["fp32"], files[variant], variant,
                                         calibration if variant in STATIC_METHODS else None, reduce_range=reduce_range)
    if fit:
        provider = ctx.providers[0]
        record = fit_allowed_drop(
            files["fp32"], files["int8-dynamic"], ctx.recipe.quantize.max_drop,
            lambda path: {task: r["value"] for task, r in _evaluate(path, ctx, provider).items()},
            ctx.sample_feeds, lambda paths: [_latency_summary(r) for r in _time([(p, provider) for p in paths], ctx)],
            ctx.echo, reduce_range=reduce_range)
        records["int8-dynamic"] |= {"accuracy_aware": record, "kept_fp32": record["kept_fp32"],
                                    "size_bytes": files["int8-dynamic"].stat().st_size}
    if records:
        (folder / "quantization.json").write_text(json.dumps(records, indent=1) + "\n", encoding="utf-8")
    return files


def _evaluate(path: Path, ctx: _Context, provider: str) -> dict:
    """Every task's metric on the file, with the per-example predictions (the gap report's input)."""
    # At the budget's batch size, as the file ships: an int8-dynamic file quantizes activations with
    # ranges over the whole batch, so its outputs (and accuracy) depend on what else is in it (L3
    # int8-dynamic: 0.7431 sentiment in length-sorted batches of 64, 0.7459 one text at a time).
    # Cached per file content, data, provider and CPU (int8 kernels differ by instruction set, and
    # so can their outputs): a rerun scores only files it has not scored on this machine.
    from edgekit.environment import cpu_fingerprint, package_versions
    from edgekit.evaluate import evaluate_onnx
    from edgekit.provenance import sha256_file

    key = cache_key("scores", __version__, sha256_file(path), provider, ctx.teacher.digest,
                    [task.digest for task in ctx.tasks], [task.spec.metric for task in ctx.tasks],
                    ctx.teacher.max_length, ctx.recipe.budget.batch, cpu_fingerprint(),
                    package_versions().get("onnxruntime"))
    if key not in ctx.scored:
        ctx.scored[key] = ctx.cache.load_json("scores", key)
    if ctx.scored[key] is None:
        # As JSON types, fresh or cached alike.
        ctx.scored[key] = _jsonable(evaluate_onnx(path, ctx.tasks, ctx.teacher.tokenizer, ctx.teacher.max_length,
                                                  provider=provider, threads=os.cpu_count() or 1,
                                                  batch_size=ctx.recipe.budget.batch))
        ctx.cache.save_json("scores", key, ctx.scored[key])
    return ctx.scored[key]


def _without_predictions(results: dict) -> dict:
    return {task: {k: v for k, v in r.items() if k != "predictions"} for task, r in results.items()}


def _is_gpu(provider: str) -> bool:
    return provider.lower() not in ("cpu", "cpuexecutionprovider", "xnnpack", "xnnpackexecutionprovider")


def _variants(recipe: Recipe, providers: list[str]) -> tuple[list[str], dict[str, str]]:
    """(quantized variants to make, {variant: why it is skipped})."""
    variants, skipped = [], {}
    for variant in recipe.quantize.variants:
        if variant == "fp16" and not any(_is_gpu(p) for p in providers):
            skipped[variant] = ("fp16 files are made and measured for GPU providers only, and none of the "
                                f"recipe's providers available here is one ({', '.join(providers)})")
        else:
            variants.append(variant)
    return variants, skipped


def _runs_on(variant: str, provider: str) -> bool:
    return variant != "fp16" or _is_gpu(provider)


def _calibration(inputs, teacher, samples: int, seed: int) -> list[dict]:
    """Static int8 calibration feeds from the distillation inputs: training-side data, never
    the evaluation split the quantized file is then scored on."""
    from edgekit.inputs import ImageInputs
    from edgekit.quantize import image_calibration, text_calibration

    if isinstance(inputs, ImageInputs):
        return image_calibration(inputs.images, samples, seed)
    return text_calibration(teacher.tokenizer, inputs.texts, samples, teacher.max_length, seed)


# ---------------------------------------------------------------------------- stages

def _candidates(recipe: Recipe, teacher):
    from edgekit.students import image_candidates, text_candidates

    if recipe.teacher.kind == "image-classifier":
        candidates = image_candidates(recipe.students, teacher.model)
        if "width" in candidates[0].arch:  # CNN students
            return candidates
        teacher_config = teacher.model.net.config  # a ViT's: its students are checked as text ones are
    else:
        teacher_config = teacher.model.backbone.config
        candidates = text_candidates(teacher_config, recipe.students)
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


def _probe_class(variant: str) -> str:
    """Variants that differ only in calibration ranges run the same graph, so one probe times them all."""
    return "int8-static" if variant in STATIC_METHODS else variant


# Inputs the accuracy-aware int8 step compares each singly-quantized MatMul's outputs on (precision.py).
SENSITIVITY_SAMPLES = 32
PROBE_CALIBRATION = 8  # a probe's static graph is timed, not scored: a few calibration inputs do


def _probe(candidate, ctx: _Context, budget: Budget, budgets: list[Budget]) -> dict:
    """Export the untrained candidate, quantize it, time every variant's graph on the target
    provider: cached per architecture, budget shape and machine. `budget`: the run's (resolved) budget;
    `budgets`: what the verdict it prints is about (the recipe's budget, or a sweep's)."""
    import tempfile

    from edgekit.environment import cpu_fingerprint, package_versions
    from edgekit.networks import count_parameters

    provider = ctx.providers[0]
    outputs = ctx.teacher.model.output_names  # a student exports the teacher's outputs
    kinds = list(dict.fromkeys(_probe_class(v) for v in ctx.variants if _runs_on(v, provider)))
    # The budget's limits (ms or speedup, size, quality floor, headroom, percentile, sweep) only judge a timing:
    # they are not part of the key, so a sweep over budgets reuses every probe.
    timing = budget.model_dump(exclude={"ms", "speedup", "size_mb", "min_retention", "headroom", "percentile", "sweep",
                                        "providers"})
    key = cache_key("probe", __version__, candidate.arch, outputs, ctx.recipe.teacher.kind, timing, provider,
                    kinds, ctx.recipe.quantize.reduce_range, ctx.recipe.export.opset, str(ctx.lengths_file),
                    cpu_fingerprint(),
                    package_versions().get("onnxruntime"))
    entry = ctx.cache.load_json("probes", key)
    if entry is None:
        model, _ = _build(candidate, ctx)
        variants = {}
        with tempfile.TemporaryDirectory(prefix="edgekit-probe-") as tmp:
            made = ["int8-static-minmax" if kind == "int8-static" else kind for kind in kinds]
            files = _export(model, Path(tmp), ctx, made, (ctx.calibration or [])[:PROBE_CALIBRATION], cached=False)
            timed = _time([(path, provider) for path in files.values()], ctx)
            for variant, result in zip(files, timed):
                variants[_probe_class(variant)] = {"latency_ms": _latency_summary(result),
                                                   "size_bytes": result["model"]["size_bytes"]}
        entry = {"name": candidate.name, "architecture": candidate.arch, "params": count_parameters(model),
                 "provider": provider, "variants": variants}
        ctx.cache.save_json("probes", key, entry)
    _judge_probe(entry, budget)
    if len(budgets) > 1:
        fitting = [b for b in budgets if _probe_fits(entry, b)]
        verdict = (f"  fits budgets >= {fitting[0].label()} ({fitting[0].ms:.3g} ms)" if fitting
                   else "  fits none of the budgets")
    else:
        best = min(entry["variants"].items(), key=lambda kv: latency_of(kv[1], budget))
        verdict = "  fits" if entry["feasible"] else f"  too slow (best: {best[0]})"
    ctx.echo(f"  {candidate.name:<12} {count(entry['params']):>6} params  " + "  ".join(
        f"{variant} {milliseconds(latency_of(record, budget))}" for variant, record in entry["variants"].items())
        + f" ms {budget.percentile}" + verdict)
    return entry


def _probe_fits(entry: dict, budget) -> bool:
    """Whether any variant of the probed candidate meets `budget`."""
    return any(meets_budget(record, budget) for record in entry["variants"].values())


def _judge_probe(entry: dict, budget) -> None:
    for record in entry["variants"].values():
        record["meets_budget"] = meets_budget(record, budget)
    entry["feasible"] = _probe_fits(entry, budget)


def _to_train(candidates, probes: dict, budgets: list, max_students: int) -> list:
    """The students worth distilling: for one budget, the largest feasible candidates up to
    max_students (the larger the student, the more of the teacher it keeps); for a sweep, the
    largest feasible candidate of each budget, so every budget gets its likely pick for the cost
    of at most one student per budget."""
    by_size = sorted(candidates, key=lambda c: -probes[c.name]["params"])
    chosen = []
    for budget in budgets:
        feasible = [c for c in by_size if _probe_fits(probes[c.name], budget)]
        chosen += [c for c in feasible[:max_students if len(budgets) == 1 else 1] if c not in chosen]
    return chosen


def _refit_heads(student, ctx: _Context) -> dict[str, int]:
    """Refit each classification task's linear head on the student's own embeddings of the task's training
    split, as the teacher's head was fit on the teacher's: a distilled student's embeddings are close to the
    teacher's (0.80-0.85 cosine, FIELD-NOTES) but not the same, and the teacher's head reads them off-axis
    (distilled L1 students with the teacher's head kept 95.7% of sentiment accuracy after 3 and after 6
    epochs). Returns {task: training examples}; {} when the recipe keeps the teacher's heads."""
    from edgekit.inputs import TextInputs, run_model
    from edgekit.teacher import fit_linear_head

    spec = ctx.recipe.teacher
    if not (ctx.recipe.distill.refit_heads and spec.kind == "sentence-encoder" and spec.head == "linear"):
        return {}
    refit = {}
    for task in ctx.tasks:
        if task.spec.kind == "classification":
            inputs = TextInputs(ctx.teacher.tokenizer, task.train["text"], ctx.teacher.max_length)
            embeddings = run_model(student, inputs)["embedding"]
            student.heads[task.name] = fit_linear_head(embeddings, task.train["label"], len(task.labels))
            refit[task.name] = len(inputs)
    return refit


def _undistilled(student, init_digest: str, ctx: _Context) -> dict:
    """Per-task metrics of the student as initialized from the teacher, before any training (its heads refit
    like the distilled student's, when the recipe refits them): what distillation bought is the difference."""
    import copy
    import tempfile

    from edgekit.export import export_network

    key = cache_key("undistilled", init_digest, [t.digest for t in ctx.tasks], ctx.teacher.max_length,
                    ctx.recipe.distill.refit_heads)
    metrics = ctx.cache.load_json("undistilled", key)
    if metrics is None:
        student = copy.deepcopy(student)
        _refit_heads(student, ctx)
        with tempfile.TemporaryDirectory(prefix="edgekit-undistilled-") as tmp:
            path = Path(tmp) / "model.onnx"
            export_network(student, path, ctx.parity)
            metrics = _without_predictions(_evaluate(path, ctx, "cpu"))
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
    # refit_heads acts after training: the trained weights do not depend on it.
    key = cache_key("student", ctx.teacher.digest, candidate.arch, spec.model_dump(exclude={"refit_heads"}),
                    inputs_digest, init_digest)
    started = time.perf_counter()
    history = train(student, len(inputs), step_loss, settings, ctx.cache.folder("students", key),
                    f"distilling {candidate.name}", ctx.echo, lengths=inputs.lengths())
    history["seconds"] = round(time.perf_counter() - started, 1)
    history["initialized_from_teacher"] = {"copied_tensors": init["copied"], "random_tensors": len(init["random"])}
    return history


def _score_files(student: str, files: dict[str, Path], run: Path, ctx: _Context, predictions: dict,
                 teacher_metrics: dict | None, extra: Callable[[str], dict] = lambda variant: {}) -> list[dict]:
    """One row of the evaluation matrix per file x provider, with every task's metric measured on
    the file itself (latency comes later, from _time_rows). Predictions go to
    `predictions[(row name, provider)]` for the gap report."""
    rows = []
    for variant, path in files.items():
        for provider in ctx.providers:
            if not _runs_on(variant, provider):
                continue
            name = f"{student}-{variant}"
            try:
                results = _evaluate(path, ctx, provider)
            except ProviderUnavailable as e:
                if provider == ctx.providers[0]:
                    raise
                # Another provider failing on one file (TensorRT without its libraries, an operator
                # it lacks) costs that cell of the matrix, not the run.
                ctx.failures[f"{name} on {provider}"] = str(e)
                ctx.echo(f"  {name:<24} {provider:<5} skipped: {e}")
                continue
            predictions[(name, provider)] = results
            metrics = _without_predictions(results)
            row = {"name": name, "student": student, "variant": variant, "provider": provider,
                   "onnx": str(path.relative_to(run)), "metrics": metrics,
                   "retention": retention(metrics, teacher_metrics or metrics)}
            if str(path) in ctx.mixed:
                row["accuracy_aware"] = ctx.mixed[str(path)]
            rows.append(row | extra(variant))
            ctx.echo(f"  {name:<24} {provider:<5} " + _metrics_text(metrics, row["retention"]))
    return rows


def _time_rows(rows: list[dict], run: Path, ctx: _Context, budget: Budget | None = None,
               reference: Path | None = None) -> dict | None:
    """Latency and size of every row, timed in interleaved rounds; raw samples beside each file.
    `budget` (resolved), when known, flags the rows over it as they are printed; `reference`: see _timings.
    Returns the reference's re-timing, or None."""
    timings, retimed = _timings([(run / row["onnx"], row["provider"]) for row in rows], ctx,
                                (reference, ctx.providers[0]) if reference else None)
    for row, result in zip(rows, timings):
        suffix = "" if row["provider"] == ctx.providers[0] else f".{row['provider']}"
        row["bench"] = str(Path(row["onnx"]).with_suffix(f"{suffix}.bench.json"))
        (run / row["bench"]).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
        row |= {"size_bytes": result["model"]["size_bytes"], "latency_ms": _latency_summary(result)}
        latency = row["latency_ms"]
        over = budget is not None and not meets_budget(row, budget)
        ctx.echo(f"  {row['name']:<32} {row['provider']:<5} p50 {milliseconds(latency['p50']):>6}  "
                 f"p95 {milliseconds(latency['p95']):>6}  p99 {milliseconds(latency['p99']):>6} ms"
                 + ("  (cached)" if latency["cached"] else "") + ("  over budget" if over else ""))
    return retimed


def _pick_on(rows: list[dict], budget, provider: str, int8: bool) -> tuple[dict | None, str | None]:
    """(the pick among `provider`'s rows, None) or (None, why nothing fits)."""
    mine = [r for r in rows if r["provider"] == provider]
    best = pick(mine, budget)
    return best, None if best or not mine else closest_miss(mine, budget, "file", int8, provider)


def _decide(rows: list[dict], budget, providers: list[str], int8: bool) -> dict:
    """Per provider: the Pareto frontier (flags set on the rows), the pick, and why nothing fits."""
    picks, why = {}, {}
    for provider in providers:
        front = pareto_front([r for r in rows if r["provider"] == provider], budget)
        for row in rows:
            if row["provider"] == provider:
                row["pareto"] = row["name"] in front
        best, why[provider] = _pick_on(rows, budget, provider, int8)
        picks[provider] = best["name"] if best else None
    return {"picks": picks, "why": {provider: text for provider, text in why.items() if text}}


def _row(rows: list[dict], name: str, provider: str) -> dict:
    return next(r for r in rows if r["name"] == name and r["provider"] == provider)


def _token_lengths(ctx: _Context) -> dict:
    """Per task, the token length of each test example (pairs: the longer side) for length slices."""
    import numpy as np

    tokenizer = ctx.teacher.tokenizer
    if tokenizer is None:
        return {task.name: None for task in ctx.tasks}

    def lengths(texts):
        ids = tokenizer(list(texts), truncation=True, max_length=ctx.teacher.max_length)["input_ids"]
        return np.array([len(i) for i in ids])

    out = {}
    for task in ctx.tasks:
        if "text" in task.test:
            out[task.name] = lengths(task.test["text"])
        elif "text_a" in task.test:
            out[task.name] = np.maximum(lengths(task.test["text_a"]), lengths(task.test["text_b"]))
        else:
            out[task.name] = lengths(task.test["query"])
    return out


def _gap(chosen: dict, predictions: dict, ctx: _Context) -> dict:
    """Where the shipped file loses against the teacher: per task, class, length, hardest cases."""
    from edgekit.gap import gap_report

    provider = chosen["provider"]
    teacher = predictions[("teacher-fp32", provider)]
    fp32 = predictions[(f"{chosen['student']}-fp32", provider)]
    quantized = None if chosen["variant"] == "fp32" else predictions[(chosen["name"], provider)]

    def preds(results):
        return None if results is None else {task: r["predictions"] for task, r in results.items()}

    return gap_report(ctx.tasks, preds(teacher), preds(fp32), preds(quantized), _token_lengths(ctx))


def _check_teacher_skill(recipe: Recipe, tasks, teacher_metrics: dict) -> None:
    """Stop before any student is trained when the teacher is no better than a trivial predictor on a task:
    its students, files and retentions would all be relative to a model that learnt nothing."""
    from edgekit.baselines import weak_tasks
    from edgekit.errors import TeacherTooWeak

    weak = [] if recipe.teacher.allow_weak else weak_tasks(tasks, teacher_metrics)
    if weak:
        raise TeacherTooWeak("the teacher is not worth distilling:\n" + "\n".join(f"  {line}" for line in weak)
                             + "\nNothing was distilled or written. Fix: check the task's labels and inputs "
                             "(data columns, image scaling), train the teacher longer or at another learning rate "
                             "(teacher.epochs, teacher.lr for head: finetune and edgekit:cnn), or use a teacher that "
                             "knows the task; teacher.allow_weak: true runs anyway (a smoke test on a random model).")


def _target(recipe: Recipe) -> dict | None:
    """The deployment profile the recipe named, as recorded in the report and the manifest."""
    from edgekit.profiles import load_profile
    from edgekit.provenance import sha256_file

    if recipe.target is None:
        return None
    profile, path = load_profile(recipe.profile_file or recipe.target)
    return {"name": recipe.target, "description": profile.description, "arch": profile.arch, "file": str(path),
            "sha256": sha256_file(path)}


def _run(recipe: Recipe | str | Path, out: str | Path | None, cache_dir: str | Path | None, force: bool,
         echo: Callable[[str], None], sweep: list[float | str] | None) -> RunReport:
    """The stages shared by a single run (sweep None) and a sweep over budgets."""
    import torch

    from edgekit.bundle import write_bundle
    from edgekit.data.tasks import truncated_examples, truncation_note
    from edgekit.environment import cpu_info, package_versions
    from edgekit.networks import count_parameters, state_digest
    from edgekit.provenance import data_provenance, teacher_provenance
    from edgekit.teacher import prepare_teacher

    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe)
    out = Path(out) if out is not None else Path("runs") / (recipe.name + ("-sweep" if sweep else ""))
    cache = Cache(cache_dir or os.environ.get("EDGEKIT_CACHE_DIR") or out.parent / ".edgekit-cache", echo)
    check_recipe(recipe)
    torch.set_num_threads(os.cpu_count() or 1)
    started = time.perf_counter()
    budget = recipe.budget  # resolved (ms set) once the teacher's fp32 file is timed
    budgets = [budget.at(token) for token in sweep] if sweep else [budget]
    providers, skipped_providers = available_providers(recipe)
    variants, skipped_variants = _variants(recipe, providers)
    int8 = any(v.startswith("int8") for v in variants)
    for name, why in {**skipped_providers, **skipped_variants}.items():
        echo(f"  skipping {name}: {why}")

    stages: dict[str, float] = {}  # stage -> seconds since the start, as the run reaches it

    def stage(number: int, name: str, detail: str) -> None:
        elapsed = time.perf_counter() - started
        stages.setdefault(name, round(elapsed, 1))
        echo(f"[{number}/7 {elapsed / 60:4.1f} min] {name}: {detail}")

    with atomic_dir(out, replace=force) as run:
        stage(1, "data", ", ".join(t.name for t in recipe.tasks))
        tasks = load_tasks(recipe)
        for task in tasks:
            echo(f"  {task.name}: {task.spec.kind}, {_count(task.train)} train / {_count(task.test)} test examples "
                 f"(test: {task.test_from})")
            for note in task.notes():  # duplicates, conflicting labels, classes without test examples
                echo(f"  {task.name}: {note}")
            if task.skipped:
                echo(f"  {task.name}: left out {skipped_text(task.skipped)} (data.bad_rows: skip)")
            if task.preprocessing:  # image tasks: the input every model file takes (bundles copy the record)
                from edgekit.preprocessing import describe, write_record

                echo(f"  {task.name}: {describe(task.preprocessing)}")
                write_record(run / "preprocessing.json", task.preprocessing)
        stage(2, "teacher", recipe.teacher.model)
        attention = any(loss.name == "attention" for loss in recipe.distill.losses)
        teacher = prepare_teacher(recipe, tasks, cache, echo, attention=attention)
        # Counted with the teacher's tokenizer, the first stage that has it.
        truncated = {t.name: truncated_examples(t, teacher.tokenizer, teacher.max_length) for t in tasks}
        for name, counts in truncated.items():
            if truncation_note(counts):
                echo(f"  {name}: {truncation_note(counts)}")
        examples = _parity_examples(tasks, teacher)
        _keep_for_bundles(run, examples, teacher)
        ctx = _Context(recipe, tasks, teacher, cache, _parity_batches(examples, teacher),
                       _lengths_file(recipe, tasks, cache), echo, providers, variants)
        inputs, labels, inputs_digest = _distillation_set(recipe, tasks, teacher)
        if any(v in STATIC_METHODS for v in variants):
            ctx.calibration = _calibration(inputs, teacher, recipe.quantize.calibration_samples, recipe.distill.seed)
        if "int8-dynamic" in variants and recipe.quantize.max_drop is not None:
            ctx.sample_feeds = _calibration(inputs, teacher, SENSITIVITY_SAMPLES, recipe.distill.seed)
        predictions: dict = {}
        # No accuracy-aware step for the teacher: its int8 file is the baseline as ONNX Runtime makes it.
        teacher_files = _export(teacher.model, run / "teacher", ctx, variants if recipe.quantize.teacher else [])
        teacher_params = count_parameters(teacher.model)

        def teacher_details(variant):
            return {"architecture": None, "params": teacher_params}

        # The teacher's fp32 file on the target provider is the reference every retention is relative to.
        rows = _score_files("teacher", {"fp32": teacher_files.pop("fp32")}, run, ctx, predictions, None,
                            teacher_details)
        teacher_metrics = rows[0]["metrics"]
        _check_teacher_skill(recipe, tasks, teacher_metrics)
        rows += _score_files("teacher", teacher_files, run, ctx, predictions, teacher_metrics, teacher_details)
        # The teacher's files are timed first: a relative budget (speedup) is a fraction of its fp32 file's
        # latency on this machine, and the probes are judged against it.
        _time_rows(rows, run, ctx)
        teacher_fp32 = _row(rows, "teacher-fp32", providers[0])
        reference_ms = latency_of(teacher_fp32, budget)
        budget = budget.resolved(reference_ms)
        budgets = sorted((b.resolved(reference_ms) for b in budgets), key=lambda b: b.ms)
        if any(b.speedup is not None for b in budgets):
            echo(f"  the teacher's fp32 file measures {budget.percentile} {reference_ms:.3g} ms: "
                 + ", ".join(f"x{b.speedup:g} -> {b.ms:.3g} ms" for b in budgets if b.speedup is not None))
        teacher_rows = list(rows)  # the students' rows follow

        stage(3, "probe", f"timing candidates untrained at {shape_text(budget, teacher.tokenizer is not None)}")
        candidates = _candidates(recipe, teacher)
        probes = {c.name: _probe(c, ctx, budget, budgets) for c in candidates}
        chosen = _to_train(candidates, probes, budgets, recipe.students.max_students)
        if not chosen:
            entries = [{"name": f"{name} ({variant})", "architecture": p["architecture"], **record}
                       for name, p in probes.items() for variant, record in p["variants"].items()]
            limits = budgets[-1] if sweep else budget  # a sweep fails only if its largest budget fits nothing
            raise BudgetNotMet(closest_miss(entries, limits, "candidate", int8) + " Nothing was trained or written.")

        stage(4, "distill", ", ".join(c.name for c in chosen)
              + (" (the largest feasible at each budget)" if sweep else " (largest feasible first)"))
        teacher_out = teacher.outputs(inputs, inputs_digest, cache)
        for candidate in chosen:
            student, init = _build(candidate, ctx)
            init_digest = state_digest(student)  # the untrained student: part of both cache keys
            undistilled = _undistilled(student, init_digest, ctx)
            history = _distill(student, init, init_digest, candidate, ctx, inputs, inputs_digest, labels,
                               teacher_out)
            history["heads_refit"] = _refit_heads(student, ctx)
            stage(5, "evaluate", f"exporting, quantizing and scoring {candidate.name}")
            folder = run / "candidates" / candidate.name
            files = _export(student, folder, ctx, variants, fit=True)
            (folder / "distillation.json").write_text(json.dumps(history, indent=1) + "\n", encoding="utf-8")
            probe = probes[candidate.name]

            def details(variant, candidate=candidate, student=student, probe=probe, history=history,
                        undistilled=undistilled):
                probed = probe["variants"].get(_probe_class(variant))
                return {"architecture": candidate.arch, "params": count_parameters(student),
                        "probe_latency_ms": probed["latency_ms"] if probed else None,
                        "undistilled_metrics": undistilled,
                        "distillation": {k: history[k] for k in ("steps", "seconds", "initialized_from_teacher",
                                                                 "heads_refit")}}

            rows += _score_files(candidate.name, files, run, ctx, predictions, teacher_metrics, details)

        stage(6, "time", f"every student file, {budget.rounds} interleaved rounds at "
                         f"{shape_text(budget, teacher.tokenizer is not None)}")
        retimed = _time_rows(rows[len(teacher_rows):], run, ctx, budget, run / teacher_fp32["onnx"])
        if retimed is not None and budget.speedup is not None:
            drift = retimed["latency_ms"][budget.percentile] / reference_ms - 1
            if abs(drift) > budget.headroom:
                echo(f"  warning: the teacher's fp32 file, re-timed among the students, measures {drift:+.0%} from "
                     f"the {reference_ms:.3g} ms the x{budget.speedup:g} budget was derived from (more than the "
                     f"{budget.headroom:.0%} headroom): this host's speed moved since; to time every file anew, "
                     f"remove {cache.root / 'timings'} and rerun.")
        for row in rows:
            row["meets_budget"] = meets_budget(row, budget)
        stage(7, "select", "Pareto frontier, pick, gap report, bundle")
        sweep_table = [_sweep_point(rows, b, providers[0], int8) for b in budgets] if sweep else None
        decision = _decide(rows, budget, providers, int8)
        target = decision["picks"][providers[0]]
        best = None if target is None else _row(rows, target, providers[0])
        gap = _gap(best, predictions, ctx) if best is not None else None
        data = {
            "format": REPORT_FORMAT,
            "edgekit_version": __version__,
            "recipe": recipe.model_dump(mode="json"),
            "recipe_digest": recipe.digest(),
            "target": _target(recipe),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "seconds": round(time.perf_counter() - started, 1),
            "stages_started_s": stages,
            "machine": cpu_info(),
            "versions": package_versions(),
            "budget": _budget_record(budget, teacher_fp32, retimed),
            "providers": {"measured": providers, "skipped": {**skipped_providers, **ctx.failures}},
            "variants": {"made": ["fp32", *variants], "skipped": skipped_variants},
            "tasks": [task_record(t, _count(t.train), _count(t.test), truncated[t.name]) for t in tasks],
            "teacher": {"model": recipe.teacher.model, "kind": recipe.teacher.kind, "params": teacher_params,
                        "prepared": _jsonable(teacher.prepared)},
            "provenance": {"teacher": teacher_provenance(recipe.teacher.model, _teacher_location(recipe, teacher),
                                                         teacher.digest),
                           "data": data_provenance(recipe, tasks)},
            "probes": list(probes.values()),
            "files": rows,
            "picks": decision["picks"],
            "selected": None if best is None else {
                "name": best["name"], "onnx": best["onnx"], "provider": best["provider"],
                "bundle": None if sweep else "bundle/model.onnx"},
            "why": decision["why"].get(providers[0]),
            "why_by_provider": decision["why"],
            "gap": gap,
            "int8_on_this_cpu": _int8_effect(rows, providers[0]),
            "sweep": sweep_table,
            "bundle": None,
        }
        if best is not None and not sweep:
            (run / "bundle").mkdir()
            data["bundle"] = write_bundle(run, data, best, run / "bundle")
            if recipe.signing is not None:  # signed inside the run folder: it appears signed, or not at all
                from edgekit.signing import sign_bundle

                data["bundle"]["signature"] = sign_bundle(run / "bundle", recipe.signing.key).name
                echo(f"  signed the bundle with {recipe.signing.key} (bundle/{data['bundle']['signature']})")
        write_report(run, data)
    report = RunReport(out, data)
    if sweep:
        picks = ", ".join(f"{p['budget']} ({p['ms']:.3g} ms) -> {p['pick'] or 'nothing fits'}" for p in sweep_table)
        echo(f"done in {data['seconds'] / 60:.1f} min: {picks} (report: {out / 'report.md'})")
        return report
    if best is None:
        raise BudgetNotMet(f"{data['why']} The run folder {out} holds every file and report.md.")
    echo(f"done in {data['seconds'] / 60:.1f} min: {best['name']} -> {out / 'bundle'} (report: {out / 'report.md'})")
    return report


def _teacher_location(recipe: Recipe, teacher) -> str | None:
    """The teacher's files: the folder or hub id transformers loaded, or a torch file (None: edgekit:cnn)."""
    if teacher.tokenizer_source:
        return teacher.tokenizer_source
    return recipe.teacher.model if Path(recipe.teacher.model).exists() else None


def _int8_effect(rows: list[dict], provider: str) -> list[dict]:
    """Per quantized file, what quantizing bought on this CPU: its speed-up over its own fp32 file (timed in the
    same rounds) and what each task's metric did. int8 is ~2.3x faster than fp32 on a VNNI CPU and ~1.5x on
    AVX2 alone (FIELD-NOTES): measured here, not assumed."""
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


def _budget_record(budget: Budget, teacher_fp32: dict, retimed: dict | None) -> dict:
    """report.json's budget: how it was asked for (ms or speedup), the teacher latency a speedup divided,
    the resulting limit, and how far the teacher's fp32 file moved when re-timed among the students."""
    p = budget.percentile
    record = {"percentile": p, "ms": budget.ms, "speedup": budget.speedup, "label": budget.label(),
              "batch": budget.batch, "seq_len": budget.seq_len, "threads": budget.threads,
              "size_mb": budget.size_mb, "headroom": budget.headroom, "limit_ms": limit_ms(budget),
              "min_retention": budget.min_retention,
              "teacher": {"file": teacher_fp32["onnx"], "provider": teacher_fp32["provider"],
                          "ms": latency_of(teacher_fp32, budget), "measured_at": teacher_fp32["latency_ms"]["measured_at"],
                          "cached": teacher_fp32["latency_ms"]["cached"]}}
    if retimed is not None:
        again = retimed["latency_ms"][p]
        record["teacher"]["retimed_with_students_ms"] = again
        record["teacher"]["drift"] = again / record["teacher"]["ms"] - 1
    return record


def _sweep_point(rows: list[dict], budget, provider: str, int8: bool) -> dict:
    """The pick at one budget of a sweep, among the files measured once for all of them."""
    best, why = _pick_on(rows, budget, provider, int8)
    point = {"budget": budget.label(), "ms": budget.ms, "speedup": budget.speedup, "limit_ms": limit_ms(budget),
             "provider": provider,
             "pick": best["name"] if best else None,
             "latency_ms": latency_of(best, budget) if best else None,
             "size_bytes": best["size_bytes"] if best else None,
             "metrics": {t: m["value"] for t, m in best["metrics"].items()} if best else None,
             "retention": best["retention"] if best else None,
             "min_retention": min((v for v in best["retention"].values() if v is not None), default=None)
             if best else None,
             "why": why}
    return point


def distill_and_export(recipe: Recipe | str | Path, out: str | Path | None = None,
                       cache_dir: str | Path | None = None, force: bool = False,
                       echo: Callable[[str], None] = _echo) -> RunReport:
    """Run a recipe end to end; returns the report (also written as report.json/.md/.html).

    Raises BudgetNotMet (after probing, before any training) when no candidate can fit,
    and after writing the run folder when no measured file does."""
    return _run(recipe, out, cache_dir, force, echo, sweep=None)


def sweep(recipe: Recipe | str | Path, budgets: list[float | str] | None = None, out: str | Path | None = None,
          cache_dir: str | Path | None = None, force: bool = False,
          echo: Callable[[str], None] = _echo) -> RunReport:
    """The pick at each latency budget, in one run: teacher outputs, probes, trained students and
    measurements are shared by every budget (and cached with single runs). Budgets default to
    the recipe's budget.sweep; each is milliseconds (4.5) or a speed-up over the teacher's fp32 file
    ("x8"). Writes no bundle: rerun distill-and-export at the chosen budget, which reuses the cache."""
    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe)
    budgets = list(dict.fromkeys(budgets or recipe.budget.sweep))
    if not budgets:
        raise RecipeError("no budgets to sweep: pass --budgets x4,x8,x16 (speed-ups over the teacher) or 2,4,8 "
                          "(milliseconds), or set budget.sweep in the recipe.")
    for token in budgets:
        try:
            budget_token(token)
        except ValueError as e:
            raise RecipeError(f"sweep: {e}.") from None
    return _run(recipe, out, cache_dir, force, echo, sweep=budgets)


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
