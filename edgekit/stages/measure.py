"""Export, quantize, score and time: the unit of measurement every stage that makes files uses.

The teacher's files (stage 2), each probe's untrained files (stage 3) and each trained student's
files (stage 5) go through the same four steps, each cached by content so a rerun redoes none:

    model --export_files--> model.onnx (parity-checked) + model.<variant>.onnx
          --score_rows-->   one Row per file x provider: every task's metric, on the file itself
          --time_rows-->    the same rows with latency (interleaved rounds) and size

What each step needs is a small frozen spec built once per run (Exporting, Scoring, Timing), and the
three travel together with the cache, the run folder, the providers and the echo as one frozen Lab (`lab`):
explicit inputs, no shared state, so any step can run as a task on another machine. Timing and Scoring hold
the budget's measurement half (recipe.Measurement), never its limit: a figure does not depend on the budget
it is judged against.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from edgekit import __version__
from edgekit.errors import ProviderUnavailable, RecipeError
from edgekit.recipe import Budget, Measurement, QuantizeSpec, Recipe
from edgekit.records import Row
from edgekit.runtime.providers import provider_name
from edgekit.runtime.quantize import quant_config
from edgekit.runtime.web_runtime import is_web, web_versions
from edgekit.stages.fits import PATH_WORDS, latency_of, limit_ms, retention
from edgekit.trust.cache import Cache, cache_key, digest_feeds, file_problem, write_checked
from edgekit.units import milliseconds

PARITY_SAMPLES = 32
PARITY_BATCH = 8
SENSITIVITY_SAMPLES = 32  # inputs the accuracy-aware int8 step compares each singly-quantized MatMul's outputs on


@dataclass(frozen=True)
class Exporting:
    """How files are made: the export opset, the quantize settings and the inputs they are checked
    and calibrated on."""

    opset: int
    quantize: QuantizeSpec
    parity: list[dict]  # real inputs export parity is checked on (PARITY_BATCH each)
    calibration: list[dict] | None = None  # static int8 calibration feeds, from the distillation set
    sample_feeds: list[dict] | None = None  # the accuracy-aware int8 step's sensitivity inputs


@dataclass(frozen=True)
class Scoring:
    """How a file's accuracy is measured: the tasks' test splits, tokenized as the teacher does, at the
    budget's batch size."""

    tasks: tuple
    tokenizer: object | None
    max_length: int
    teacher_digest: str
    measurement: Measurement  # its batch, and each provider's ORT options, as the file is timed with them

    @property
    def batch(self) -> int:
        return self.measurement.batch


@dataclass(frozen=True)
class Timing:
    """How a file's latency is measured: the budget's shape, threads and rounds, with the shipping session
    options, on texts of the task's lengths when the budget says seq_len: task; and end to end (text in,
    outputs out, the shipped tokenizer included) on the real test texts of every text task (`texts_file`)."""

    measurement: Measurement
    tokenizer_source: str | None
    max_length: int
    lengths_file: Path | None
    text: bool
    texts_file: Path | None = None
    engine_cache: Path | None = None  # TensorRT's engines, in the run's cache folder

    def config(self, provider: str, end_to_end: bool = False):
        from edgekit.runtime.bench import BenchConfig

        budget = self.measurement
        common = {"provider": provider, "provider_options": budget.options_for(provider), "threads": budget.threads,
                  "batch": budget.batch, "min_runs": budget.min_runs, "min_seconds": budget.min_seconds,
                  "allow_spinning": False, "tokenizer": self.tokenizer_source, "max_length": self.max_length,
                  "engine_cache": str(self.engine_cache) if self.engine_cache and is_tensorrt(provider) else None}
        if end_to_end:
            return BenchConfig(**common, lengths_from=str(self.texts_file), end_to_end=True)
        return BenchConfig(**common, seq_len=budget.seq_len if isinstance(budget.seq_len, int) and self.text else None,
                           lengths_from=str(self.lengths_file) if self.lengths_file else None)

    def key(self, provider: str, end_to_end: bool = False) -> dict:
        """The settings a timing's cache key holds: not where TensorRT keeps its engines (a place, not a
        setting), and "placement": timings from before the session recorded its node placement are not reused,
        nor ("passes") those from before every round timed whole passes over one pool of texts (bench.POOL_SIZE)."""
        return self.config(provider, end_to_end).model_dump(exclude={"engine_cache"}) | {"placement": 1, "passes": 1}


@dataclass(frozen=True)
class Fit:
    """The accuracy-aware int8-dynamic step (precision.py): scored and timed on the target provider."""

    scoring: Scoring
    timing: Timing
    provider: str


@dataclass(frozen=True)
class Exported:
    files: dict[str, Path]  # variant ("fp32" first) -> file
    accuracy_aware: dict[str, dict]  # str(file) -> the accuracy-aware search that made it


@dataclass(frozen=True)
class Lab:
    """How a run makes, scores and times files, and where it keeps them: the one measurement object every stage
    after the teacher's loading receives, instead of five loose arguments. Frozen and picklable (a stage may run
    as a Ray task on another machine); built once per run by `lab`."""

    exporting: Exporting
    scoring: Scoring
    timing: Timing
    cache: Cache
    run: Path  # the run folder being written (atomic_dir's temporary name until the run ends)
    providers: tuple[str, ...]  # the recipe's available providers, the target (the bundle's) first
    variants: tuple[str, ...]  # the quantized variants every student file gets
    echo: Callable[[str], None]

    @property
    def target(self) -> str:
        return self.providers[0]

    @property
    def tasks(self) -> tuple:
        return self.scoring.tasks


# ---------------------------------------------------------------------------- the run's specs

def made_variants(recipe: Recipe, providers: list[str]) -> tuple[list[str], dict[str, str]]:
    """(quantized variants to make, {variant: why it is skipped})."""
    variants, skipped = [], {}
    for variant in recipe.quantize.variants:
        if quant_config(variant).gpu_only and not any(is_gpu(p) for p in providers):
            skipped[variant] = ("fp16 files are made and measured for GPU providers only, and none of the "
                                f"recipe's providers available here is one ({', '.join(providers)})")
        else:
            variants.append(variant)
    return variants, skipped


def is_tensorrt(provider: str) -> bool:
    return provider_name(provider) == "TensorrtExecutionProvider"


# Providers that run on the host's CPU cores, for which fp16 files are not made: OpenVINO counts among them, its
# default device being this CPU.
_CPU_PROVIDERS = ("CPUExecutionProvider", "XnnpackExecutionProvider", "OpenVINOExecutionProvider", "wasm")


def is_gpu(provider: str) -> bool:
    return provider_name(provider) not in _CPU_PROVIDERS


def searches_int8(variants: list[str], quantize: QuantizeSpec) -> bool:
    """Whether the accuracy-aware int8-dynamic step (precision.py) runs: it scores and times the files it tries."""
    return "int8-dynamic" in variants and quantize.max_drop is not None


def runs_on(variant: str, provider: str) -> bool:
    return variant == "fp32" or not quant_config(variant).gpu_only or is_gpu(provider)


def lab(recipe: Recipe, tasks, teacher, inputs, examples, where: tuple[Path, Cache, Callable[[str], None]],
        providers: list[str], variants: list[str]) -> Lab:
    """The run's Lab: parity feeds from the parity `examples`, calibration and sensitivity feeds from the
    distillation `inputs` (when a variant needs them), the teacher's tokenizer; `where`: (run folder, cache, echo)."""
    run, cache, echo = where
    seed = recipe.distill.seed
    exporting = Exporting(
        recipe.export.opset, recipe.quantize, parity_batches(examples, teacher),
        calibration=calibration_feeds(inputs, teacher, recipe.quantize.calibration_samples, seed)
        if any(quant_config(v).needs_calibration for v in variants) else None,
        sample_feeds=calibration_feeds(inputs, teacher, SENSITIVITY_SAMPLES, seed)
        if searches_int8(variants, recipe.quantize) else None)
    scoring = Scoring(tuple(tasks), teacher.tokenizer, teacher.max_length, teacher.digest, recipe.budget.measurement)
    timing = Timing(recipe.budget.measurement, teacher.tokenizer_source, teacher.max_length, lengths_file(recipe, tasks, cache),
                    text=not teacher.images, texts_file=None if teacher.images else texts_file(tasks, cache),
                    engine_cache=cache.root / "tensorrt-engines")
    return Lab(exporting, scoring, timing, cache, run, tuple(providers), tuple(variants), echo)


def parity_examples(tasks, teacher):
    """Real evaluation inputs spread over the length range (texts), or the first test images."""
    from edgekit.runtime.feeds import spread_sample

    if teacher.images:
        return tasks[0].test["image"][:PARITY_SAMPLES]
    return spread_sample([t for task in tasks for t in task.texts("test")], PARITY_SAMPLES)


def parity_batches(examples, teacher) -> list[dict]:
    """The parity examples as numpy feeds of PARITY_BATCH."""
    from edgekit.names import IMAGE_INPUT
    from edgekit.runtime.feeds import batched, text_feeds

    if teacher.images:
        return [{IMAGE_INPUT: examples[i:i + PARITY_BATCH]} for i in range(0, len(examples), PARITY_BATCH)]
    return [text_feeds(teacher.tokenizer, chunk, teacher.max_length) for chunk in batched(examples, PARITY_BATCH)]


def calibration_feeds(inputs, teacher, samples: int, seed: int) -> list[dict]:
    """Static int8 calibration feeds from the distillation inputs: training-side data, never
    the evaluation split the quantized file is then scored on."""
    from edgekit.runtime.quantize import image_calibration, text_calibration

    if teacher.images:
        return image_calibration(inputs.images, samples, seed)
    return text_calibration(teacher.tokenizer, inputs.texts, samples, teacher.max_length, seed)


def lengths_file(recipe: Recipe, tasks, cache: Cache) -> Path | None:
    """With budget.seq_len: task, a file of the first text task's test texts, whose token lengths the
    timings follow."""

    if recipe.budget.seq_len != "task":
        return None
    task = next(t for t in tasks if not t.kind.images)
    return _texts_at(cache.folder("lengths", cache_key(task.digest)), task.kind.length_texts(task.test))


def texts_file(tasks, cache: Cache) -> Path:
    """A file of every text task's test texts, in task order: what end-to-end timings tokenize and run, so
    they follow the lengths of the texts the file is scored on (Rotten Tomatoes' snippets and Lee's
    documents alike)."""

    text_tasks = [t for t in tasks if not t.kind.images]
    texts = [text for t in text_tasks for text in t.kind.length_texts(t.test)]
    return _texts_at(cache.folder("texts", cache_key([t.digest for t in text_tasks])), texts)


def _texts_at(folder: Path, texts: list[str]) -> Path:
    path = folder / "texts.txt"
    if file_problem(path):
        text = "\n".join(t.replace("\n", " ") for t in texts) + "\n"
        write_checked(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return path


# ---------------------------------------------------------------------------- export + quantize

def export_files(model, folder: Path, lab: Lab, variants: list[str] | None = None, fit: bool = False,
                 calibration: list[dict] | None = None, cached: bool = True) -> Exported:
    """model.onnx (parity-checked) and model.<variant>.onnx for each quantized variant in `folder` (the lab's
    variants unless `variants` says).

    fit: the int8-dynamic file keeps MatMuls in fp32 until it loses at most quantize.max_drop (precision.py),
    scored and timed on the lab's target provider.
    The folder's files are cached under everything they depend on (the weights and structure, the
    export and quantize settings, the calibration and parity inputs, the CPU and package versions):
    a rerun copies them instead of exporting and quantizing again, so their scores and timings, keyed by
    content, come from the cache too. cached=False (a probe's untrained files, whose timings are cached
    as the probe): export without the cache. `calibration` replaces exporting.calibration (a probe's few).
    """
    exporting, cache, echo = lab.exporting, lab.cache, lab.echo
    variants = list(lab.variants if variants is None else variants)
    static = any(quant_config(v).needs_calibration for v in variants)
    calibration = (calibration or exporting.calibration) if static else None
    fit = Fit(lab.scoring, lab.timing, lab.target) if fit and searches_int8(variants, exporting.quantize) else None
    if not cached:
        files = _make_export(model, folder, variants, exporting, calibration, fit, cache, echo)
    else:
        files = _cached_export(model, folder, variants, exporting, calibration, fit, cache, echo)
    searched = {}
    if fit is not None:
        records = json.loads((folder / "quantization.json").read_text(encoding="utf-8"))
        searched[str(files["int8-dynamic"])] = records["int8-dynamic"]["accuracy_aware"]
    return Exported(files, searched)


def _cached_export(model, folder: Path, variants: list[str], exporting: Exporting, calibration: list[dict] | None,
                   fit: Fit | None, cache: Cache, echo: Callable[[str], None]) -> dict[str, Path]:
    """_make_export's files, copied from the cache when it has them (and stored there when it has not)."""
    from edgekit.modeling.networks import state_digest
    from edgekit.runtime.environment import cpu_fingerprint, package_versions

    versions = package_versions()
    key = cache_key("export", __version__, state_digest(model), _structure(model), exporting.opset, variants,
                    digest_feeds(calibration), digest_feeds(exporting.parity), exporting.quantize.model_dump(),
                    # the accuracy-aware step scores on the tasks and compares on the sensitivity inputs
                    [[(t.name, t.digest) for t in fit.scoring.tasks], digest_feeds(exporting.sample_feeds),
                     fit.scoring.batch, fit.provider] if fit else None,
                    cpu_fingerprint(), [versions.get(name) for name in ("torch", "onnx", "onnxruntime")])
    made = {"fp32": folder / "model.onnx", **{v: folder / f"model.{v}.onnx" for v in variants}}
    needed = [path.name for path in made.values()] + (["quantization.json"] if fit is not None else [])
    entry = cache.load_json("exports", key, lambda value: _listing_problem(value, needed))
    stored = cache.folder("exports", key)
    opened = _open_listed(stored, entry["files"], fit is not None, cache) if entry is not None else None
    if opened is not None:
        # Copied from the descriptors that were verified: a plain name from a checked listing, into this folder.
        folder.mkdir(parents=True, exist_ok=True)
        for name, f in opened.items():
            with f, open(folder / name, "wb") as out:
                shutil.copyfileobj(f, out)
        echo(f"  {folder.name}: exported and quantized files from the cache")
        return made
    files = _make_export(model, folder, variants, exporting, calibration, fit, cache, echo)
    names = sorted(p.name for p in folder.iterdir() if p.is_file())
    for name in names:
        write_checked(stored / name, lambda tmp, name=name: shutil.copyfile(folder / name, tmp))
    cache.save_json("exports", key, {"files": names})
    return files


def _listing_problem(entry: dict, needed: list[str]) -> str | None:
    """What is wrong with an exports entry's listing (entry.json `files`), or None. Every name must be one plain
    file name in the entry's folder: the files are read from there and written into the run's folder under the
    same names, so '../x' or '/x' would read and write outside both."""
    from edgekit.trust.cache import name_problem

    files = entry.get("files")
    if not isinstance(files, list):
        return "has no list of files"
    for name in files:
        if problem := name_problem(name):
            return problem
    if missing := [name for name in needed if name not in files]:
        return f"lacks {', '.join(missing)}"
    return None


def _open_listed(stored: Path, names: list[str], fit: bool, cache: Cache) -> dict | None:
    """{name: the entry's file, open and verified against its sha256}, or None (the problem reported through the
    cache's echo, every file closed) when one is absent, corrupt or not a file, or (`fit`) its quantization.json
    does not hold the accuracy-aware search export_files reads."""
    from edgekit.errors import EdgekitError
    from edgekit.trust.cache import open_checked
    from edgekit.trust.reading import parse_json, shown

    opened = {}
    for name in dict.fromkeys(names):
        f, problem = open_checked(stored / name)
        if f is None:
            cache.echo(f"  cache entry {shown(stored / name)} {'is missing' if problem == 'absent' else problem}: "
                       "recomputing it")
            break
        opened[name] = f
    else:
        if not fit:
            return opened
        f = opened["quantization.json"]
        try:
            records = parse_json(f.read(64 << 20), shown(stored / "quantization.json"), "edgekit recomputes it",
                                 EdgekitError, dict)
            if not isinstance(records.get("int8-dynamic"), dict) or "accuracy_aware" not in records["int8-dynamic"]:
                raise EdgekitError(f"{shown(stored / 'quantization.json')} holds no int8-dynamic accuracy_aware "
                                   "search; edgekit recomputes it.")
            f.seek(0)
            return opened
        except EdgekitError as e:
            cache.echo(f"  corrupt cache entry: {e}")
    for f in opened.values():
        f.close()
    return None


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


def _make_export(model, folder: Path, variants: list[str], exporting: Exporting, calibration: list[dict] | None,
                 fit: Fit | None, cache: Cache, echo: Callable[[str], None]) -> dict[str, Path]:
    from edgekit.runtime.export import export_network
    from edgekit.runtime.precision import fit_allowed_drop
    from edgekit.runtime.quantize import quantize_file

    folder.mkdir(parents=True, exist_ok=True)
    files = {"fp32": folder / "model.onnx"}
    parity = export_network(model, files["fp32"], exporting.parity, opset=exporting.opset)
    (folder / "parity.json").write_text(json.dumps(parity, indent=1) + "\n", encoding="utf-8")
    if hasattr(model, "backbone"):
        model.backbone.config.save_pretrained(folder)  # the architecture, and the vocab size bench feeds use
    records = {}
    reduce_range = exporting.quantize.reduce_range  # "auto": decided by this CPU's int8 instructions
    for variant in variants:
        files[variant] = folder / f"model.{variant}.onnx"
        config = quant_config(variant, block_size=exporting.quantize.block_size,
                              accuracy_level=exporting.quantize.accuracy_level)
        records[variant] = quantize_file(files["fp32"], files[variant], config,
                                         calibration if config.needs_calibration else None, reduce_range=reduce_range)
    if fit is not None:
        record = fit_allowed_drop(
            files["fp32"], files["int8-dynamic"], exporting.quantize.max_drop,
            lambda path: {task: r["value"] for task, r in score(path, fit.provider, fit.scoring, cache).items()},
            exporting.sample_feeds,
            lambda paths: [latency_summary(r) for r in time_files([(p, fit.provider) for p in paths], fit.timing,
                                                                  cache)[0]],
            echo, reduce_range=reduce_range)
        records["int8-dynamic"] |= {"accuracy_aware": record, "kept_fp32": record["kept_fp32"],
                                    "size_bytes": files["int8-dynamic"].stat().st_size}
    if records:
        (folder / "quantization.json").write_text(json.dumps(records, indent=1) + "\n", encoding="utf-8")
    return files


# ---------------------------------------------------------------------------- score

def score(path: Path, provider: str, scoring: Scoring, cache: Cache) -> dict:
    """Every task's metric on the file, with the per-example predictions (the gap report's input)."""
    # At the budget's batch size, as the file ships: an int8-dynamic file quantizes activations with
    # ranges over the whole batch, so its outputs (and accuracy) depend on what else is in it (L3
    # int8-dynamic: 0.7431 sentiment in length-sorted batches of 64, 0.7459 one text at a time).
    # Cached per file content, data, provider and CPU (int8 kernels differ by instruction set, and
    # so can their outputs): a rerun scores only files it has not scored on this machine.
    from edgekit.runtime.environment import cpu_fingerprint, package_versions
    from edgekit.runtime.evaluate import evaluate_onnx
    from edgekit.trust.provenance import sha256_file

    options = scoring.measurement.options_for(provider)
    key = cache_key("scores", __version__, sha256_file(path), provider, scoring.teacher_digest,
                    # the names too: results are keyed by them, and a renamed task has the same examples
                    [(task.name, task.digest) for task in scoring.tasks], [task.spec.metric for task in scoring.tasks],
                    scoring.max_length, scoring.batch, cpu_fingerprint(), package_versions().get("onnxruntime"),
                    *([options] if options else []),  # without options, the key of a cache from before them
                    # a web provider runs onnxruntime-web's kernels in Chromium, not this onnxruntime's
                    *([web_versions()] if is_web(provider) else []))
    results = cache.load_json("scores", key, _scores_problem)
    if results is None:
        # As JSON types, fresh or cached alike.
        results = jsonable(evaluate_onnx(path, list(scoring.tasks), scoring.tokenizer, scoring.max_length,
                                         provider=provider, threads=os.cpu_count() or 1, batch_size=scoring.batch,
                                         options=options))
        cache.save_json("scores", key, results)
    return results


def _scores_problem(results: dict) -> str | None:
    """What a cached scores entry lacks that its readers take ({task: {"metric", "value", ...}}), or None."""
    for result in results.values():
        if not isinstance(result, dict) or not isinstance(result.get("metric"), str) or "value" not in result:
            return "does not hold a metric and value for each task"
    return None


def holds_latency(value, quantiles=("p50", "p95", "p99")) -> bool:
    """Whether a cached latency summary holds each of `quantiles` as a number of milliseconds."""
    return isinstance(value, dict) and all(isinstance(value.get(q), (int, float)) and not isinstance(value.get(q), bool)
                                           for q in quantiles)


def _timing_problem(result: dict) -> str | None:
    """What a cached timing lacks that time_files and time_rows read from it, or None."""
    latency, cpu = result.get("latency_ms"), result.get("cpu")
    if not (isinstance(result.get("model"), dict) and isinstance(result["model"].get("size_bytes"), int)
            and isinstance(latency, dict) and isinstance(result.get("session"), dict)
            and isinstance(cpu, dict) and isinstance(cpu.get("instruction_sets"), dict)
            and isinstance(result.get("rounds_ms"), list) and "runs" in result and "name" in cpu):
        return "is not a timing (it lacks the model, latency_ms, session, cpu, runs or rounds_ms edgekit records)"
    if not holds_latency(latency, ("p50", "p95", "p99", "mean")) or "ci95" not in latency:
        return "holds no p50, p95, p99 and mean latency in milliseconds"
    return None


def without_predictions(results: dict) -> dict:
    return {task: {k: v for k, v in r.items() if k != "predictions"} for task, r in results.items()}


def jsonable(value):
    return json.loads(json.dumps(value, default=str))


def metrics_text(metrics: dict, kept: dict | None = None) -> str:
    parts = []
    for task, m in metrics.items():
        text = f"{task} {m['metric']} {m['value']:.4f}"
        if kept and kept.get(task) is not None:
            text += f" ({kept[task]:.1f}%)"
        parts.append(text)
    return ", ".join(parts)


@dataclass(frozen=True)
class Scored:
    rows: list[Row]
    predictions: dict  # (row name, provider) -> per-task results with predictions (the gap report's input)
    failures: dict[str, str]  # "file on provider" -> why it was not measured


def score_rows(student: str, exported: Exported, lab: Lab, teacher_metrics: dict | None,
               details: Callable[[str], dict] = lambda variant: {}) -> Scored:
    """One row of the evaluation matrix per file x provider, with every task's metric measured on
    the file itself (latency comes later, from time_rows). `details(variant)`: what the row says about
    the model (architecture, params, distillation); teacher_metrics None: the rows are the reference."""
    from edgekit.data.baselines import against_trivial, floors

    run, scoring, providers, cache, echo = lab.run, lab.scoring, lab.providers, lab.cache, lab.echo
    rows, predictions, failures = [], {}, {}
    trivial = floors(scoring.tasks)
    for variant, path in exported.files.items():
        for provider in providers:
            if not runs_on(variant, provider):
                continue
            name = f"{student}-{variant}"
            try:
                results = score(path, provider, scoring, cache)
            except ProviderUnavailable as e:
                if provider == providers[0]:
                    raise
                # Another provider failing on one file (TensorRT without its libraries, an operator
                # it lacks) costs that cell of the matrix, not the run.
                failures[f"{name} on {provider}"] = str(e)
                echo(f"  {name:<24} {provider:<5} skipped: {e}")
                continue
            predictions[(name, provider)] = results
            metrics = without_predictions(results)
            row = Row(name=name, student=student, variant=variant, provider=provider,
                      onnx=str(path.relative_to(run)), metrics=metrics,
                      retention=retention(metrics, teacher_metrics or metrics),
                      trivial=against_trivial(metrics, teacher_metrics or metrics, trivial))
            if str(path) in exported.accuracy_aware:
                row["accuracy_aware"] = exported.accuracy_aware[str(path)]
            rows.append(row | details(variant))
            echo(f"  {name:<24} {provider:<5} " + metrics_text(metrics, row["retention"]))
    return Scored(rows, predictions, failures)


# Per prediction key: what the web-agreement record compares. Discrete keys count the examples whose answer
# changed (a classification's label, a retrieval query's gold rank); the others are floats whose largest
# absolute difference it records (the softmax probabilities, the cosines).
_DISCRETE_PREDICTIONS = ("pred", "gold_rank")


def web_agreement(rows: list[Row], predictions: dict, against: str = "cpu") -> list[Row]:
    """The rows, each web provider's row with `agreement`: how far the file's outputs in onnxruntime-web are from
    the same file's on the native `against` provider, per task {"max_abs_diff" (of the probabilities / cosines
    the predictions carry), "labels_changed" (of the labels / gold ranks), "of" (examples)}. Rows without a native
    twin, or without recorded predictions (an older cache), are left as they are."""
    import numpy as np

    out = []
    for row in rows:
        mine, theirs = predictions.get((row["name"], row["provider"])), predictions.get((row["name"], against))
        if not is_web(row["provider"]) or mine is None or theirs is None:
            out.append(row)
            continue
        tasks = {}
        for task, result in mine.items():
            a, b = result.get("predictions") or {}, (theirs.get(task) or {}).get("predictions") or {}
            diff, changed, n = None, None, None
            for key in sorted(set(a) & set(b)):
                x, y = np.asarray(a[key]), np.asarray(b[key])
                if x.shape != y.shape or not x.size:
                    continue
                n = len(x)
                if key in _DISCRETE_PREDICTIONS:
                    changed = (changed or 0) + int((x != y).reshape(n, -1).any(axis=1).sum())
                elif np.issubdtype(x.dtype, np.floating):
                    diff = max(diff or 0.0, float(np.max(np.abs(x.astype(np.float64) - y.astype(np.float64)))))
            tasks[task] = {"max_abs_diff": diff, "labels_changed": changed, "of": n}
        out.append(row | {"agreement": {"against": against, "tasks": tasks}})
    return out


# ---------------------------------------------------------------------------- time

def time_files(files: list[tuple[Path, str]], timing: Timing, cache: Cache,
               reference: tuple[Path, str] | None = None, end_to_end: bool = False) -> tuple[list[dict], dict | None]:
    """Latency of each (file, provider) at the budget's shape, with the shipping session options
    (end_to_end: text in -> outputs out on the tasks' test texts, the shipped tokenizer included).

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
    from edgekit.runtime.bench import run_benchmark
    from edgekit.runtime.environment import cpu_fingerprint, package_versions
    from edgekit.trust.provenance import sha256_file

    budget = timing.measurement
    keys = [cache_key("timing", __version__, sha256_file(path), timing.key(provider, end_to_end), budget.rounds,
                      budget.percentile, cpu_fingerprint(), package_versions().get("onnxruntime"),
                      *([web_versions()] if is_web(provider) else []))  # onnxruntime-web in Chromium: its own
            for path, provider in files]
    chosen = [cache.load_json("timings", key, _timing_problem) for key in keys]
    for result, (path, _) in zip(chosen, files):
        if result is not None:
            result["cached"] = True
            result["model"]["path"] = str(path)
    todo = [i for i, result in enumerate(chosen) if result is None]
    timed = [files[i] for i in todo] + ([reference] if reference and todo else [])
    rounds = [[] for _ in timed]
    for _ in range(budget.rounds):
        for results, (path, provider) in zip(rounds, timed):
            results.append(run_benchmark(path, timing.config(provider, end_to_end)))
    medians = []
    for results in rounds:
        results.sort(key=lambda result: result["latency_ms"][budget.percentile])
        middle = results[len(results) // 2]
        middle["rounds_ms"] = [result["latency_ms"][budget.percentile] for result in results]
        if middle.get("engine"):  # TensorRT: the build is in the round that built, not always the median one
            middle["engine"] = max((result["engine"] for result in results), key=lambda e: e["build_ms"])
        middle["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        medians.append(middle)
    for i, middle in zip(todo, medians):
        cache.save_json("timings", keys[i], middle)
        chosen[i] = middle | {"cached": False}
    return chosen, (medians[-1] if len(medians) > len(todo) else None)


def latency_summary(result: dict) -> dict:
    lat = result["latency_ms"]
    return {"p50": lat["p50"], "p95": lat["p95"], "p99": lat["p99"], "mean": lat["mean"], "ci95": lat["ci95"],
            "runs": result["runs"], "rounds": result["rounds_ms"], "measured_at": result.get("measured_at"),
            "cached": result.get("cached", False)}


class Timed(NamedTuple):
    """time_rows' result: the rows with their latencies, and the teacher's fp32 file re-timed among them."""

    rows: list[Row]
    retimed: dict | None  # {"latency_ms", "latency_e2e_ms"}, the scope the budget does not bound None; or None


def time_rows(rows: list[Row], lab: Lab, budget: Budget | None = None, reference: Path | None = None) -> Timed:
    """The rows with latency and size, timed in interleaved rounds, model only and then (text files) end to
    end; raw samples beside each file (model.<variant>[.<provider>][.e2e].bench.json).
    The lab's target provider's raw timings carry no provider suffix; `budget` (resolved), when known, flags
    the rows over it as they are printed; `reference`: see time_files.
    Returns (the timed rows, the reference's re-timing as {"latency_ms", "latency_e2e_ms"}, the scope the budget
    does not bound None; or None)."""
    run, timing, cache, echo, target = lab.run, lab.timing, lab.cache, lab.echo, lab.target
    files = [(run / row["onnx"], row["provider"]) for row in rows]
    # The reference is re-timed only in the pass whose latency the budget bounds: the drift is judged there.
    again = (reference, target) if reference else None
    end_to_end = timing.measurement.scope == "end-to-end"
    web = sorted({row["provider"] for row in rows if is_web(row["provider"])})
    if end_to_end and web:
        raise RecipeError(f"budget.scope is end-to-end, which is not measured on the web provider(s) {', '.join(web)} "
                          "(edgekit times onnxruntime-web model only, in the page). Fix: set budget.scope: model, or "
                          "leave the web providers out of budget.providers.")
    model, retimed = time_files(files, timing, cache, None if end_to_end else again)
    # End to end is not measured in the browser (the tokenizer would be transformers.js's, not the one timed
    # natively): web rows say so (latency_e2e_why) rather than carry another figure.
    native = [i for i, (_, provider) in enumerate(files) if not is_web(provider)]
    # The second end-to-end path: each text file's app graph (the tokenizer inside), where it can ship that way.
    apps = app_paths(files, run, timing, cache) if timing.text else [None] * len(rows)
    with_app = [i for i in native if apps[i] is not None and apps[i].file is not None]
    e2e, app, retimed_e2e = [None] * len(rows), [None] * len(rows), None
    if timing.text and native:
        # Both paths in the same interleaved rounds (the same drift for both), with the same texts and settings: a
        # timing of the app graph is keyed by its own content, so it never stands for the tokenizer.json path's.
        wholes, retimed_e2e = time_files([files[i] for i in native] + [(apps[i].file, files[i][1]) for i in with_app],
                                         timing, cache, again if end_to_end else None, end_to_end=True)
        for i, whole in zip(native, wholes[:len(native)]):
            e2e[i] = whole
        for i, whole in zip(with_app, wholes[len(native):]):
            app[i] = whole
    timed = []
    for row, result, whole, path, inside in zip(rows, model, e2e, apps, app):
        suffix = "" if row["provider"] == target else f".{row['provider']}"
        bench = str(Path(row["onnx"]).with_suffix(f"{suffix}.bench.json"))
        (run / bench).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
        row = row | {"bench": bench, "size_bytes": result["model"]["size_bytes"], "latency_ms": latency_summary(result),
                     "latency_e2e_ms": None, "placement": result["session"].get("placement"),
                     "timed_on": {"host": result.get("host"), "cpu": result["cpu"]["name"],
                                  "instruction_sets": sorted(k for k, v in result["cpu"]["instruction_sets"].items()
                                                             if v)}}
        if result.get("engine"):
            row["engine_build_ms"] = result["engine"]["build_ms"]
        if whole is None and timing.text and is_web(row["provider"]):
            row["latency_e2e_why"] = WEB_E2E_WHY
        if whole is not None:
            (run / bench).with_suffix("").with_suffix(".e2e.bench.json").write_text(
                json.dumps(whole, indent=1) + "\n", encoding="utf-8")
            row["latency_e2e_ms"] = latency_summary(whole)
        if path is not None:
            row["latency_app_ms"] = None
            if inside is not None:
                raw = str(Path(bench).with_suffix("").with_suffix(".app.bench.json"))
                (run / raw).write_text(json.dumps(inside, indent=1) + "\n", encoding="utf-8")
                # The timed graph beside its file, as every other timed file is in the run: what a re-timing reads
                # (bench/check_e2e.py) and what `edgekit bundle` would ship.
                app_file = str(Path(row["onnx"]).with_suffix(".app.onnx"))
                shutil.copyfile(path.file, run / app_file)
                row["latency_app_ms"] = latency_summary(inside)
                row["app_graph"] = path.record | {"bench": raw, "onnx": app_file}
            else:
                row["latency_app_why"] = path.why or "not measured"
        timed.append(row)
        # the timing alone: a file that lost too much accuracy is not "over budget" (the selection says why it
        # does not fit)
        over = budget is not None and latency_of(row, budget) > limit_ms(budget)
        echo(f"  {row['name']:<32} {row['provider']:<5} {_latency_text(row['latency_ms'])}"
             + (f"  end to end {_latency_text(row['latency_e2e_ms'])}" if whole is not None else "")
             + (f"  app graph {_latency_text(row['latency_app_ms'])}" if inside is not None else "")
             + _cached_text(row) + ("  over budget" if over else ""))
    if retimed is None and retimed_e2e is None:
        return Timed(timed, None)
    return Timed(timed, {"latency_ms": retimed and latency_summary(retimed),
                         "latency_e2e_ms": retimed_e2e and latency_summary(retimed_e2e)})


WEB_E2E_WHY = ("not measured: end-to-end timing (tokenizer + model) does not run in the browser yet; the model-only "
               "latency is onnxruntime-web's, timed in the page")


def _cached_text(row: Row) -> str:
    scopes = (("model only", "latency_ms"), ("end to end", "latency_e2e_ms"), ("app graph", "latency_app_ms"))
    measured = [scope for scope, key in scopes if row.get(key)]
    cached = [scope for scope, key in scopes if (row.get(key) or {}).get("cached")]
    if not cached:
        return ""
    return "  (cached)" if cached == measured else f"  ({', '.join(cached)}: cached)"


def _latency_text(latency: dict) -> str:
    return "  ".join(f"{q} {milliseconds(latency[q]):>6}" for q in ("p50", "p95", "p99")) + " ms"


# ---------------------------------------------------------------------------- the app graph path

@dataclass(frozen=True)
class AppPath:
    """A file's second end-to-end path: its app graph (the tokenizer inside, edgekit/runtime/app_graph.py), in the cache,
    with what it is and its tokenization check (`record`), or why the file does not ship that way (`why`)."""

    file: Path | None
    record: dict | None = None
    why: str | None = None


def app_provider_why(provider: str) -> str | None:
    """Why the app graph is not timed on `provider` (None: the CPU provider, where the extensions' ops run)."""
    if is_web(provider):
        return ("not measured: onnxruntime-web does not load onnxruntime-extensions' custom operators (the tokenizer "
                "inside the app graph); in a page the file ships with its tokenizer")
    if provider_name(provider) != "CPUExecutionProvider":
        return (f"not measured on {provider}: onnxruntime-extensions' custom operators (the BertTokenizer op inside "
                "the app graph) run on ONNX Runtime's CPU provider only; on this provider the file ships with "
                "tokenizer.json")
    return None


def app_paths(files: list[tuple[Path, str]], run: Path, timing: Timing, cache: Cache) -> list[AppPath]:
    """Each text (file, provider)'s app graph, built (cached by the file's content, the tokenizer, max_length and
    the onnxruntime-extensions version) and checked token for token against tokenizer.json on the run's timing
    texts and app_graph.PROBE_TEXTS, as the bundle checks its own; or why that path is not offered."""
    from edgekit.names import TOKENIZER_FILES
    from edgekit.runtime.app_graph import extensions_version
    from edgekit.runtime.providers import EXTENSIONS_FIX
    from edgekit.trust.provenance import sha256_file

    # What the bundle ships (and builds its own app graph from): the run's copy of the teacher's tokenizer.
    tokenizer = next((folder for folder in (run / "tokenizer", Path(timing.tokenizer_source or "-"))
                      if (folder / "tokenizer.json").is_file()), None)
    version = extensions_version()
    missing = None if version else f"not measured: onnxruntime-extensions is not installed; {EXTENSIONS_FIX}"
    shared = {"tokenizer": tokenizer, "extensions": version, "checks": {},
              "digest": tokenizer and {name: sha256_file(tokenizer / name) for name in TOKENIZER_FILES
                                       if (tokenizer / name).is_file()}}
    found = []
    for path, provider in files:
        why = app_provider_why(provider) or missing
        found.append(AppPath(None, why=why) if why else _app_path(path, timing, cache, shared))
    return found


def _app_path(path: Path, timing: Timing, cache: Cache, shared: dict) -> AppPath:
    from edgekit.runtime.app_graph import APP_FILE, build_app_graph, why_not
    from edgekit.runtime.environment import package_versions
    from edgekit.trust.provenance import sha256_file

    tokenizer = shared["tokenizer"]
    if tokenizer is None:
        return AppPath(None, why="not measured: the run has no tokenizer folder with a tokenizer.json to build the "
                                 "app graph from")
    key = cache_key("app-graph", __version__, sha256_file(path), shared["digest"], timing.max_length,
                    shared["extensions"], package_versions().get("onnx"))
    entry = cache.load_json("app-graphs", key, _app_entry_problem)
    app = cache.root / "app-graphs" / key / APP_FILE
    if entry is None or (entry["why"] is None and file_problem(app)):
        import onnx

        inputs = [i.name for i in onnx.load(str(path), load_external_data=False).graph.input]
        why = why_not(tokenizer, inputs, timing.max_length)
        record = None
        if why is None:
            made = {}
            write_checked(cache.folder("app-graphs", key) / APP_FILE,
                          lambda tmp: made.update(build_app_graph(path, tokenizer, timing.max_length, tmp)))
            record = {k: v for k, v in made.items() if k not in ("file", "from", "ort")}
        entry = {"why": why, "inputs": inputs, "record": record}
        cache.save_json("app-graphs", key, entry)
    if entry["why"] is not None:
        return AppPath(None, why=f"not offered: {entry['why']}")
    problems, checked = _app_tokens(app, entry["inputs"], timing, cache, shared)
    record = {"path": "app graph", "words": PATH_WORDS["app graph"], "file": APP_FILE,
              "built_from": path.name, **entry["record"], "checked": checked}
    if problems:
        return AppPath(None, record, f"not offered: the app graph's tokenizer (onnxruntime-extensions "
                                     f"{shared['extensions']}) differs from tokenizer.json on {len(problems)} of the "
                                     f"checked texts, e.g. {problems[0]}")
    return AppPath(app, record)


def _app_entry_problem(entry: dict) -> str | None:
    """What a cached app-graph entry lacks that _app_path reads ({why, inputs, record}), or None."""
    why = entry.get("why", 0)
    if not (why is None or isinstance(why, str)) or not isinstance(entry.get("inputs"), list) \
            or (why is None and not isinstance(entry.get("record"), dict)):
        return "is not an app-graph record (why, inputs, record)"
    return None


def _app_tokens(app: Path, inputs: list[str], timing: Timing, cache: Cache, shared: dict) -> tuple[list[str], dict]:
    """(the texts whose token ids, mask or padding from the app graph's tokenizer differ from tokenizer.json's, what
    was checked): the run's timing texts, then PROBE_TEXTS, in batches of PARITY_BATCH. The tokenizer part is the same
    for every file of a run with the same inputs: checked once (cached by the tokenizer, inputs and texts)."""
    from edgekit.data import load_texts
    from edgekit.modeling.models import load_tokenizer
    from edgekit.runtime.app_graph import PROBE_TEXTS, token_problems, tokenizer_session
    from edgekit.runtime.feeds import app_encoder, batched
    from edgekit.trust.cache import digest_texts

    names = tuple(inputs)
    if names in shared["checks"]:
        return shared["checks"][names]
    texts = list(dict.fromkeys(load_texts(str(timing.texts_file)) if timing.texts_file else []))
    batches = batched(texts, PARITY_BATCH) + [list(PROBE_TEXTS)]
    key = cache_key("app-tokens", __version__, shared["digest"], timing.max_length, shared["extensions"], names,
                    digest_texts(texts))
    entry = cache.load_json("app-checks", key, lambda e: None if isinstance(e.get("problems"), list)
                            else "holds no list of problems")
    if entry is None:
        encode, _ = app_encoder(load_tokenizer(str(shared["tokenizer"])), timing.max_length, names)
        problems = token_problems(tokenizer_session(app, list(names)), batches, [encode(batch) for batch in batches])
        entry = {"problems": problems}
        cache.save_json("app-checks", key, entry)
    checked = {"texts": len(texts), "probe_texts": len(PROBE_TEXTS),
               "token_ids": "identical to tokenizer.json's (ids, mask, padding)" if not entry["problems"] else
               f"{len(entry['problems'])} text(s) differ from tokenizer.json's"}
    shared["checks"][names] = (entry["problems"], checked)
    return shared["checks"][names]


def drift_warning(retimed: dict | None, reference_ms: float, budget: Budget, cache: Cache) -> str | None:
    """When the teacher's fp32 file, re-timed among the students, moved more than the headroom from the figure
    a relative budget was derived from: this host's speed moved since, and the run says how to re-time."""
    if retimed is None or budget.speedup is None or retimed[budget.latency_key] is None:
        return None
    drift = latency_of(retimed, budget) / reference_ms - 1
    if abs(drift) <= budget.headroom:
        return None
    return (f"  warning: the teacher's fp32 file, re-timed among the students, measures {drift:+.0%} from "
            f"the {reference_ms:.3g} ms it measured when the x{budget.speedup:g} budget was derived (more than the "
            f"{budget.headroom:.0%} headroom): this host's speed moved since; to time every file anew, "
            f"remove {cache.root / 'timings'} and rerun.")
