"""Is edgekit worth using? Its picks side by side with what a user ships without it, and with this CPU's floor.

In one process and one run, interleaved round by round:
  - the teacher in PyTorch eager (its transformers model, mean pooling, normalize: what sentence-transformers runs);
  - the teacher exported with Optimum (`main_export`, the library it detects: a user's `optimum-cli export onnx`);
  - that file quantized the way Optimum's documentation shows: `ORTQuantizer` with
    `AutoQuantizationConfig.<preset>(is_static=False, per_channel=False)` (int8 dynamic), with the preset a user of
    this CPU would pick (avx512_vnni, avx512, avx2 or arm64: `optimum_preset`);
  - model2vec distilled from the same teacher folder with no data (`model2vec.distill.distill(model_name=...,
    pca_dims=N)`, N = 256 and 64: bench/model2vec_row.py), with a logistic-regression head per classification
    task fitted on its own embeddings of the training split; and model2vec trained on the run's data: that model
    fitted to the teacher's embeddings of the distillation texts with a linear head (n_layers=0), the head folded
    exactly into its vectors (teacher-wide), and a model2vec classifier per classification task;
  - edgekit's pick at each budget of `edgekit sweep` on the recipe (cached: the sweep reuses students).
    A budget `xN` is the sweep's own relative budget (`budget.speedup`): files N times faster at p95 than the
    teacher's fp32 file timed in the sweep, with the recipe's headroom.
For each: every task's metric on the eval split (one text per run, as the budget's batch 1, text in -> outputs
out), the size, p50/p95/p99 at the budget's shape (seq 128), at each text task's real length distribution (the
model alone) and end to end on the same texts (the tokenizer an app ships + the model + pooling and heads; for
model2vec its own `encode([text])`), the ratios to the teacher fp32 and int8 files, and the fraction of this
CPU's floor it reaches: the file's matmul work (counted from its graph) over ORT's fp32 and int8 matmul peaks,
measured in the same run (bench/floor.py). Each pick is compared with each model2vec row per task by the paired
bootstrap 95% interval of the metric difference on the same test examples.

    python -m bench            # the default recipe at budgets x8 and x4 (below), full eval sets (~25 min cold)
    python -m bench --quick    # the same code path: eval sets subsampled, 1-epoch student, short timings
    python -m bench --run runs/minilm-multitask-sweep   # compare the picks of an earlier sweep instead

Writes bench/results/<date>-<cpu>[-quick].{json,md} and <...>-frontier.svg (each task's metric against end-to-end
p95). `python -m bench.check_ratios` re-times the same files with plain onnxruntime and checks the ratios.
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
from bench.model2vec_row import (
    PCA_DIMS,
    Model2VecClassifierRunner,
    Model2VecRunner,
    classifier,
    classifier_name,
    distilled,
    entry_name,
    fitted,
    fitted_name,
)
from edgekit.data.metrics import paired_difference, score_with_ci
from edgekit.errors import EdgekitError
from edgekit.names import logits_name
from edgekit.pipeline import sweep
from edgekit.recipe import Recipe
from edgekit.runtime.bench import latency_stats
from edgekit.runtime.environment import cpu_info, cpu_slug, package_versions
from edgekit.runtime.feeds import app_encoder
from edgekit.runtime.providers import SessionSettings, create_session
from edgekit.stages.loading import load_recipe, load_tasks
from edgekit.stages.teacher import prepare_teacher
from edgekit.trust.cache import Cache

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results"
RECIPE = ROOT / "recipes" / "minilm-multitask.yaml"
# Files 8x and 4x faster than the teacher's fp32 file at p95: the 8x pick is where the goal is asked.
BUDGETS = ("x8", "x4")
FIXED = "seq128"
E2E = "end-to-end"  # a shape's suffix: text in, embedding and logits out (tokenizer + model + pooling + heads)
POOL = 256  # distinct real texts cycled through at a task's length distribution
FORMAT = "edgekit.bench/1"
FITTED_BY = ("model2vec.train.StaticModelForSimilarity.from_pretrained(path=<the distilled model>, n_layers=0, "
             "normalize=False).fit(<the recipe's distillation texts>, <the teacher's embeddings of them>, "
             "device='cpu', max_epochs=6), model2vec's defaults otherwise (cosine loss, Adam lr 1e-3, 10% held out, "
             "early stopping with patience 5, best checkpoint restored, seed 42); its linear head "
             "(nn.Linear, distilled width -> the teacher's) then folded exactly into the token vectors "
             "(row_t = (w_t e_t) W^T + b, so a text's mean of rows is the head's output) and saved as a "
             "StaticModel with normalize=True: teacher-wide, the head kept, not dropped as to_static_model() drops "
             "model2vec's default MLP head")
CLASSIFIER_BY = ("model2vec.train.StaticModelForClassification.from_pretrained(path=<the distilled model>)"
                 ".fit(<the task's training texts>, <their labels>, device='cpu').to_pipeline(); "
                 "model2vec's defaults otherwise")


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
    # No quality floor: a 1-epoch student on 400 texts keeps ~95% of sentiment and ~70% of Lee (its texts are not
    # distilled on), so with the recipe's 97% nothing would be picked and the rest of the path would not run.
    # Quick checks the code path; whether a pick keeps 97% is the full run's question.
    data["budget"] |= {"min_runs": 50, "min_seconds": 0.1, "rounds": 2, "providers": ["cpu"], "min_retention": None}
    data["quantize"] |= {"variants": ["int8-dynamic"]}
    return Recipe.model_validate(data)


def sweep_points(report: dict) -> list[dict]:
    """The budgets a run picked at: a sweep's points, or for a `distill-and-export` run (no sweep) its one budget
    and its CPU pick, in the sweep's point form ({budget, ms, speedup, provider, pick})."""
    if report.get("sweep"):
        return report["sweep"]
    budget = report["budget"]
    pick = (report.get("picks") or {}).get("cpu")
    return [{"budget": budget.get("label") or f"{budget['ms']:g} ms", "ms": budget["ms"],
             "speedup": budget.get("speedup"), "provider": "cpu", "pick": pick}]


def best_static(report: dict, provider: str | None) -> dict | None:
    """edgekit's best static-embedding file of the run: of the S<dim> students' rows on `provider`, the one keeping
    the most of the teacher on its worst task (the first of equals, in the report's order), or None."""
    rows = [r for r in report["files"] if r["provider"] == provider and r.get("retention")
            and (r.get("architecture") or {}).get("static")]
    return max(rows, key=lambda r: min(r["retention"].values()), default=None)


def _picks(report: dict, run: Path) -> list[dict]:
    """One entry per file edgekit picked at some budget of the sweep (a file picked twice is listed once), then
    the rest of the sweep's frontier and the run's best static-embedding file (`best_static`)."""
    picks: dict[str, dict] = {}
    points = sweep_points(report)
    for point in points:
        if point["pick"] is None:
            continue
        row = next(r for r in report["files"] if r["name"] == point["pick"] and r["provider"] == point["provider"])
        entry = picks.setdefault(row["name"], {"name": f"edgekit {row['name']}", "kind": "onnx",
                                               "file": run / row["onnx"], "budgets": [],
                                               "run_metrics": {t: m["value"] for t, m in row["metrics"].items()}})
        entry["budgets"].append(_budget_label(point))
    # The rest of the sweep's frontier too (the static-embedding students at the fast end among them): what a
    # user could ship at a budget the sweep did not ask, each compared as the picks are.
    provider = points[0]["provider"] if points else None
    for row in report["files"]:
        if row.get("pareto") and row["provider"] == provider and row["student"] != "teacher" \
                and row["name"] not in picks:
            picks[row["name"]] = {"name": f"edgekit {row['name']}", "kind": "onnx", "file": run / row["onnx"],
                                  "budgets": [], "frontier": True,
                                  "run_metrics": {t: m["value"] for t, m in row["metrics"].items()}}
    # The static file is compared with model2vec's whether or not it is on the frontier: the like-for-like
    # question (a static table against a static table) is asked of edgekit's best one.
    static = best_static(report, provider)
    if static is not None:
        entry = picks.setdefault(static["name"], {
            "name": f"edgekit {static['name']}", "kind": "onnx", "file": run / static["onnx"], "budgets": [],
            "run_metrics": {t: m["value"] for t, m in static["metrics"].items()}})
        entry |= {"best_static": True, "frontier": entry.get("frontier", False) or bool(entry["budgets"])}
    return list(picks.values())


def _where(entry: dict) -> str:
    """'pick at x8 = 4.53 ms', 'on the frontier' for a frontier file no budget of the sweep picked, and whether it
    is the run's best static-embedding file."""
    parts = []
    if entry["budgets"]:
        parts.append(f"pick at {', '.join(entry['budgets'])}")
    elif entry.get("frontier", not entry.get("best_static")):  # results from before the flag: frontier files
        parts.append("on the sweep's frontier")
    if entry.get("best_static"):
        parts.append("the run's best static file")
    return ", ".join(parts)


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
    """(fp32, int8, how they were made): Optimum's export and its documented dynamic int8 config, made in an
    environment that has optimum-onnx (bench/optimum_files.py: it caps transformers below 4.58)."""
    from bench import optimum_files

    preset = optimum_preset(cpu_info())
    echo(f"  Optimum export of {teacher_folder} -> {folder} ({optimum_files.optimum_python()})")
    try:
        made = optimum_files.run(teacher_folder, folder, preset)
    except RuntimeError as e:
        raise EdgekitError(str(e)) from None
    how = {key: made[key] for key in ("export", "quantize", "preset", "weights", "activations", "per_channel",
                                      "versions")}
    return Path(made["fp32"]), Path(made["int8"]), how


# ---------------------------------------------------------------------------- runners


class OnnxRunner:
    """An ONNX file's embedding (edgekit's `embedding`, Optimum's sentence-transformers `sentence_embedding`, or
    a plain `last_hidden_state`, mean-pooled and normalized here as the teacher does) and the `<task>_logits`
    it carries, if any; `heads` ({task: (weight, bias)}, the teacher's) give the logits a file lacks.

    `run(feed)` is the file alone (the model-only shapes); `text_outputs(text)` is what an app runs per request:
    the bundle's tokenizer (its tokenizer.json through the Rust `tokenizers`, `edgekit.runtime.feeds.app_encoder`), the
    file, the pooling and heads it lacks."""

    def __init__(self, path: Path, threads: int, normalize: bool, tokenizer, max_length: int,
                 heads: dict | None = None):
        self.normalize = normalize
        self.session, _ = create_session(path, SessionSettings(threads=threads, allow_spinning=False))
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.names = [o.name for o in self.session.get_outputs()]
        self.output = next((n for n in ("embedding", "sentence_embedding", "last_hidden_state") if n in self.names),
                           None)
        if self.output is None:
            raise EdgekitError(f"{path}: no embedding output (it has {', '.join(self.names)}); the bench compares "
                               "sentence encoders")
        self.encode, self.tokenizer_kind = app_encoder(tokenizer, max_length, tuple(self.inputs))
        self.heads = {task: head for task, head in (heads or {}).items() if logits_name(task) not in self.names}

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

    def text_outputs(self, text: str) -> dict[str, np.ndarray]:
        out = self.outputs(self.encode([text]))
        for task, (weight, bias) in self.heads.items():
            out[logits_name(task)] = weight @ out["embedding"] + bias
        return out


class TorchRunner:
    """The teacher in PyTorch eager (encoder, pooling, heads), on `threads` intra-op threads; `text_outputs`
    tokenizes with the transformers tokenizer first, as a sentence-transformers user's call does."""

    def __init__(self, model, threads: int, tokenizer, max_length: int):
        import torch

        self.torch, self.model = torch, model.eval()
        self.tokenizer, self.max_length = tokenizer, max_length
        torch.set_num_threads(threads)

    def run(self, feed: dict) -> dict:
        with self.torch.inference_mode():
            return self.model.internals(**{name: self.torch.from_numpy(value) for name, value in feed.items()})

    def outputs(self, feed: dict) -> dict[str, np.ndarray]:
        out = self.run(feed)
        return {"embedding": out["embedding"][0].numpy(),
                **{logits_name(task): value[0].numpy() for task, value in out["logits"].items()}}

    def text_outputs(self, text: str) -> dict[str, np.ndarray]:
        return self.outputs(_feed(self.tokenizer, text, self.max_length))


def teacher_heads(teacher) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{task: (weight (classes, hidden), bias (classes,))}: the teacher's linear heads, the ones its own files carry."""
    return {task: (head.weight.detach().numpy(), head.bias.detach().numpy())
            for task, head in teacher.model.heads.items()}


# ---------------------------------------------------------------------------- accuracy


def _feed(tokenizer, text: str, max_length: int) -> dict:
    encoded = tokenizer([text], truncation=True, max_length=max_length, return_tensors="np")
    ids = encoded["input_ids"].astype(np.int64)
    return {"input_ids": ids, "attention_mask": encoded["attention_mask"].astype(np.int64),
            "token_type_ids": encoded.get("token_type_ids", np.zeros_like(ids)).astype(np.int64)}


def gold(task) -> np.ndarray:
    """What a task's outcomes are scored against: the labels, or the human similarity scores."""
    return np.asarray(task.test["label"] if task.spec.kind == "classification" else task.test["score"])


def score(runner, tasks) -> tuple[dict, dict]:
    """(metrics, outcomes): every task's metric (value and bootstrap 95% interval) and its per-example outcome
    (the predicted class, or the pair's cosine), one text per run as at the budget's batch 1, each text through
    the runner's `text_outputs` (text in, embedding and `<task>_logits` out). The outcomes are what a paired
    comparison of two entries on the same examples resamples (`versus_model2vec`)."""
    cache: dict[str, dict] = {}

    def outputs(texts) -> list[dict]:
        for text in texts:
            if text not in cache:
                cache[text] = runner.text_outputs(text)
        return [cache[text] for text in texts]

    def stack(rows, name):
        return np.stack([row[name] for row in rows]).astype(np.float64)

    def unit(x):
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    metrics, outcomes = {}, {}
    for task in tasks:
        if task.spec.kind == "classification":
            outcome = stack(outputs(list(task.test["text"])), logits_name(task.name)).argmax(axis=1)
            result = score_with_ci(task.spec.metric, pred=outcome, gold=gold(task))
        elif task.spec.kind == "similarity":
            a, b = (stack(outputs(list(task.test[column])), "embedding") for column in ("text_a", "text_b"))
            outcome = (unit(a) * unit(b)).sum(axis=1)
            result = score_with_ci(task.spec.metric, x=outcome, y=gold(task).astype(np.float64))
        else:
            raise EdgekitError(f"task '{task.name}' is {task.spec.kind}: the bench scores classification and "
                               "similarity tasks of a sentence encoder")
        metrics[task.name] = {"value": result["value"], "ci95": result["ci95"], "n": result["n"]}
        outcomes[task.name] = outcome
    return metrics, outcomes


def versus_model2vec(entries: list[dict], tasks) -> list[dict]:
    """Each edgekit file of the comparison (its picks, the rest of its frontier, its best static file) against each
    model2vec entry, per task the model2vec entry answers (a classifier its own task only): the metric difference
    (edgekit - model2vec) on the same test examples with its paired bootstrap 95% interval
    (`edgekit.data.metrics.paired_difference`: both resampled on the same examples, so what they share cancels), and
    each side's end-to-end p95 on that task's texts where timed. A task's `beats`: the interval's lower end is
    above zero, i.e. edgekit's file is better by more than the noise of the test set; the row's `beats`: on every
    task compared."""
    picks = [e for e in entries if "budgets" in e]
    rows = []
    for m2v in (e for e in entries if e["kind"] == "model2vec"):
        for pick in picks:
            diffs = {}
            for task in tasks:
                if task.name not in m2v["outcomes"]:
                    continue
                d = paired_difference(task.spec.metric, pick["outcomes"][task.name], m2v["outcomes"][task.name],
                                      gold=gold(task))
                p95 = {side: ((e.get("latency_ms") or {}).get(e2e_shape(task.name)) or {}).get("p95")
                       for side, e in (("edgekit", pick), ("model2vec", m2v))}
                diffs[task.name] = {**d, "beats": d["ci95"] is not None and d["ci95"][0] > 0, "e2e_p95_ms": p95}
            rows.append({"pick": pick["name"], "model2vec": m2v["name"], "best_static": bool(pick.get("best_static")),
                         "difference": diffs, "beats": all(d["beats"] for d in diffs.values())})
    return rows


# ---------------------------------------------------------------------------- latency


def e2e_shape(task_name: str) -> str:
    return f"{task_name} {E2E}"


def shape_task(shape: str) -> str | None:
    """The task whose texts a shape's pool holds (`<task> lengths`, `<task> end-to-end`); None for FIXED."""
    for suffix in (" lengths", f" {E2E}"):
        if shape.endswith(suffix):
            return shape.removesuffix(suffix)
    return None


def _applies(runner, shape: str) -> bool:
    """A runner that answers some tasks only (model2vec's classifier: `applies(task)`) is timed on its tasks'
    texts and at the fixed shape; every other runner on every shape."""
    task = shape_task(shape)
    return task is None or not hasattr(runner, "applies") or runner.applies(task)


def shapes(tasks, teacher, seq_len: int, vocab: int, seed: int = 0) -> dict[str, list]:
    """Input pools per shape: the budget's fixed length (random token ids), each text task's real texts as
    feeds (the model alone at the task's lengths) and the same texts as text (end to end: tokenizer + model)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(min(1000, vocab // 2), vocab, size=(1, seq_len), dtype=np.int64)  # past special tokens
    pools = {FIXED: [{"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}]}
    chosen_of = {}
    for task in tasks:
        texts = list(dict.fromkeys(t for column in ("text", "text_a", "text_b") for t in task.test.get(column, [])))
        chosen = chosen_of[task.name] = [texts[i] for i in rng.choice(len(texts), size=min(POOL, len(texts)),
                                                                       replace=False)]
        pools[f"{task.name} lengths"] = [_feed(teacher.tokenizer, text, teacher.max_length) for text in chosen]
    for task in tasks:  # after every model-only shape, so the table's columns read model first, then end to end
        pools[e2e_shape(task.name)] = chosen_of[task.name]
    return pools


def time_all(runners: dict, pools: dict, rounds: int, runs: int, echo) -> dict:
    """{entry: {shape: samples_ms}}: `rounds` interleaved rounds (every entry and shape once per round, so
    host drift hits all alike), `runs` timed runs each after 10 warm-up runs; samples of all rounds pooled.
    A pool of feeds times `runner.run` (the model alone), a pool of texts `runner.text_outputs` (end to end)."""
    samples = {name: {shape: [] for shape in pools if _applies(runner, shape)} for name, runner in runners.items()}
    for r in range(rounds):
        for name, runner in runners.items():
            for shape, pool in pools.items():
                if not _applies(runner, shape):
                    continue
                call = runner.text_outputs if isinstance(pool[0], str) else runner.run
                for i in range(10):
                    call(pool[i % len(pool)])
                got = samples[name][shape]
                for i in range(runs):
                    item = pool[i % len(pool)]
                    start = time.perf_counter_ns()
                    call(item)
                    got.append((time.perf_counter_ns() - start) / 1e6)
        echo(f"  round {r + 1}/{rounds}: " + ", ".join(
            f"{name} {statistics.median(s[FIXED][-runs:]):.2f}" for name, s in samples.items()) + f" ms p50 {FIXED}")
    return samples


# ---------------------------------------------------------------------------- the comparison


def _version(package: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _relative(path: Path) -> str:
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def model2vec_entries(recipe: Recipe, tasks, teacher, cache: Cache, dims: tuple[int, ...], train: bool, work: Path,
                      echo) -> list[dict]:
    """Per PCA size: model2vec distilled from the teacher's folder (no data); with `train`, that model fitted to the
    teacher's embeddings of the recipe's distillation set (the texts edgekit's students learn from:
    `edgekit.stages.distill.stage.distillation_set`, their embeddings from edgekit's teacher cache, computed once), and a
    model2vec classifier per classification task trained on its training split (bench/model2vec_row.py)."""

    if train and dims:
        from edgekit.stages.distill.stage import distillation_set

        inputs, _, digest = distillation_set(recipe, tasks, teacher)
        vectors = teacher.outputs(inputs, digest, cache).get("embedding")  # (texts, hidden)
        if vectors is None:
            raise EdgekitError("model2vec's fitted row learns the teacher's sentence embeddings; this teacher has "
                               "none (a sentence-encoder teacher has): pass --no-model2vec-train")
    entries = []
    for dims_ in dims:
        folder = distilled(teacher.tokenizer_source, dims_, work, echo)
        entries.append({"name": entry_name(dims_), "kind": "model2vec", "variant": "distilled", "pca_dims": dims_,
                        "file": folder})
        if not train:
            continue
        entries.append({"name": fitted_name(dims_), "kind": "model2vec", "variant": "fitted", "pca_dims": dims_,
                        "fitted_on": len(inputs.texts),
                        "file": fitted(folder, inputs.texts, vectors, work, echo)})
        for task in tasks:
            if task.kind.labelled:
                entries.append({"name": classifier_name(dims_, task.name), "kind": "model2vec",
                                "variant": "classifier", "task": task.name, "pca_dims": dims_,
                                "fitted_on": len(task.train["text"]), "file": classifier(folder, task, work, echo)})
    return entries


def compare(recipe: Recipe, budgets: list[str], work: Path, cache_dir: Path | None, run: Path | None,
            quick: bool, echo=_echo, model2vec_dims: tuple[int, ...] = PCA_DIMS, model2vec_train: bool = True) -> dict:
    """The comparison (see the module docstring); `model2vec_dims`: model2vec entries per PCA size (none: ());
    `model2vec_train`: its trained entries too (fitted to the teacher, a classifier per classification task)."""
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
    # model2vec from the same teacher folder (no data, then trained on edgekit's data); cached under the work
    # folder (a rerun loads it).
    static = model2vec_entries(recipe, tasks, teacher, Cache(cache, echo), model2vec_dims, model2vec_train, work,
                               echo)
    pools = shapes(tasks, teacher, seq_len, teacher.model.backbone.config.vocab_size)
    if run is None:
        # Relative budgets (x8) are resolved by the sweep itself, against the teacher's fp32 file timed in it.
        run = work / "sweep"
        echo(f"[2/5] edgekit sweep at {', '.join(budgets)} -> {run}")
        sweep(recipe, budgets, out=run, cache_dir=cache, force=True, echo=echo)
    report = json.loads((run / "report.json").read_text(encoding="utf-8"))
    points = sweep_points(report)
    fp32_p95 = report["budget"]["teacher"]["ms"]
    picks = _picks(report, run)
    if not picks:
        raise EdgekitError(f"the sweep in {run} picked nothing at any budget; see its report.md")
    entries = [{"name": "teacher PyTorch eager", "kind": "torch", "file": None},
               {"name": "teacher fp32 (Optimum)", "kind": "onnx", "file": fp32},
               {"name": "teacher int8 (Optimum dynamic)", "kind": "onnx", "file": int8}, *static, *picks]
    heads = teacher_heads(teacher)
    by_name = {task.name: task for task in tasks}
    runners = {}
    for e in entries:
        if e["kind"] == "torch":
            runners[e["name"]] = TorchRunner(teacher.model, threads, teacher.tokenizer, teacher.max_length)
        elif e.get("variant") == "classifier":
            runners[e["name"]] = runner = Model2VecClassifierRunner(e["file"], by_name[e["task"]])
            e |= {"dim": runner.dim, "max_length": runner.max_length}
        elif e["kind"] == "model2vec":
            runners[e["name"]] = runner = Model2VecRunner(e["file"], tasks)
            e |= {"dim": runner.dim, "max_length": runner.max_length, "heads_fitted_on": {
                task.name: len(task.train["text"]) for task in tasks if task.name in runner.heads}}
        else:
            runners[e["name"]] = OnnxRunner(e["file"], threads, recipe.teacher.normalize, teacher.tokenizer,
                                            teacher.max_length, heads)
    # Optimum exports pooling and normalize only when sentence-transformers is installed; otherwise the file
    # ends at last_hidden_state and the mean pooling (<1% of the forward) runs in numpy, outside the model-only
    # timing (inside the end-to-end one, as in an app).
    how["embedding_output"] = runners[entries[1]["name"]].output
    how["app_tokenizer"] = runners[entries[1]["name"]].tokenizer_kind

    echo("[3/5] every task's metric, one text per run")
    for entry in entries:
        answers = [by_name[entry["task"]]] if entry.get("task") else tasks  # a classifier answers its task only
        entry["metrics"], entry["outcomes"] = score(runners[entry["name"]], answers)
        echo(f"  {entry['name']}: " + ", ".join(f"{t} {m['value']:.4f}" for t, m in entry["metrics"].items()))

    echo("[4/5] this CPU's matmul peaks and every file's matmul work")
    peaks = measure_peaks(threads, seconds=0.2 if quick else 1.0)
    for entry in entries:
        if entry["kind"] == "model2vec":  # a Gather and a mean: no matmul, so no matmul floor to reach
            entry["work"], entry["floor_ms"] = {"fp32_gflop": 0.0, "int8_gop": 0.0, "matmuls": 0}, None
            continue
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
        weights = Path(entry["file"]) / "model.safetensors" if entry["kind"] == "model2vec" else entry["file"]
        entry["size_bytes"] = Path(weights).stat().st_size if weights else None
        entry["floor_fraction"] = (entry["floor_ms"] / entry["latency_ms"][FIXED]["p50"]
                                   if entry["floor_ms"] is not None else None)
    for entry in entries:
        entry["ratios"] = {shape: {f"{b}_over_this_{p}": base[b]["latency_ms"][shape][p] / lat[p]
                                   for b in base for p in ("p50", "p95")}
                           for shape, lat in entry["latency_ms"].items()}
        reference = base["fp32"]["metrics"]
        entry["retention"] = {t: 100.0 * m["value"] / reference[t]["value"] for t, m in entry["metrics"].items()}
    goal = [{"entry": e["name"], "budgets": e["budgets"], "frontier": e.get("frontier", not e.get("best_static")),
             "best_static": bool(e.get("best_static")),
             "x_vs_fp32_p95": e["ratios"][FIXED]["fp32_over_this_p95"],
             "x_vs_int8_p95": e["ratios"][FIXED]["int8_over_this_p95"],
             "min_retention": min(e["retention"].values())} for e in entries if "budgets" in e]
    for g in goal:
        g["met"] = g["x_vs_fp32_p95"] >= 8 and g["x_vs_int8_p95"] >= 3 and g["min_retention"] >= 97
    versus = versus_model2vec(entries, tasks)
    for entry in entries:
        if entry["file"]:
            entry["file"] = _relative(entry["file"])
    return {"format": FORMAT, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "mode": "quick" if quick else "full",
            "command": "python -m bench" + (" --quick" if quick else ""), "root": str(ROOT),
            "seconds": round(time.perf_counter() - started, 1), "recipe": report["recipe"]["name"],
            "sweep_run": _relative(run), "budgets": [p["budget"] for p in points],
            "budgets_ms": [p["ms"] for p in points], "teacher_fp32_p95_in_sweep_ms": fp32_p95,
            "headroom": recipe.budget.headroom, "threads": threads, "batch": 1, "seq_len": seq_len,
            "teacher_max_length": teacher.max_length,
            "machine": cpu_info(), "versions": package_versions(), "baseline_made_by": how, "peaks": peaks,
            "shapes": {shape: len(pool) for shape, pool in pools.items()}, "rounds": rounds, "runs": runs,
            "baselines": {"fp32": base["fp32"]["name"], "int8": base["int8"]["name"]},
            "e2e_shapes": {task.name: e2e_shape(task.name) for task in tasks},
            "metrics": {task.name: task.spec.metric for task in tasks},
            "model2vec": {"made_by": "model2vec.distill.distill(model_name=<the recipe's teacher folder>, "
                                     "pca_dims=N, device='cpu'), no data",
                          "fitted_by": (FITTED_BY if model2vec_train and model2vec_dims else None),
                          "classifier_by": (CLASSIFIER_BY if model2vec_train and model2vec_dims else None),
                          "version": _version("model2vec"), "datasets": _version("datasets"),
                          "pca_dims": list(model2vec_dims)},
            "entries": entries, "goal": goal, "versus_model2vec": versus}


# ---------------------------------------------------------------------------- the table


def markdown(results: dict) -> str:
    tasks = list(results["entries"][0]["metrics"])
    lengths = [s for s in results["shapes"] if s != FIXED and not s.endswith(E2E)]
    e2e = list(results.get("e2e_shapes", {}).items())  # (task, shape); none in results from before it was timed
    head = (["file", "size (MB)", *[f"{t} (kept)" for t in tasks], "p50 / p95 / p99 at seq 128 (ms)",
             *[f"p95 at {s} (ms)" for s in lengths], *[f"p95 end to end, {t} texts (ms)" for t, _ in e2e],
             "x faster than fp32 (p95)", "x faster than int8 (p95)",
             *[f"x faster than fp32 end to end, {t} (p95)" for t, _ in e2e[:1]],
             "GFLOP fp32 + GOP int8", "floor (ms)", "of floor"])
    rows = []
    for e in results["entries"]:
        lat, ratio = e["latency_ms"], e["ratios"][FIXED]
        name = e["name"] + (f" ({_where(e)})" if "budgets" in e else "")
        static = e.get("kind") == "model2vec"
        rows.append([name, f"{e['size_bytes'] / 1e6:.1f}" if e["size_bytes"] else "-",
                     *[f"{e['metrics'][t]['value']:.3f} ({e['retention'][t]:.1f}%)" if t in e["metrics"] else NA
                       for t in tasks],
                     " / ".join(_ms(lat[FIXED][p]) for p in ("p50", "p95", "p99")) + (" *" if static else ""),
                     *[_ms(lat[s]["p95"]) if s in lat else NA for s in lengths],
                     *[_ms(lat[s]["p95"]) if s in lat else NA for _, s in e2e],
                     f"{ratio['fp32_over_this_p95']:.2f}x", f"{ratio['int8_over_this_p95']:.2f}x",
                     *[f"{e['ratios'][s]['fp32_over_this_p95']:.2f}x" if s in e["ratios"] else NA for _, s in e2e[:1]],
                     "-" if static else f"{e['work']['fp32_gflop']:.2f} + {e['work']['int8_gop']:.2f}",
                     "-" if e["floor_ms"] is None else f"{e['floor_ms']:.2f}",
                     "-" if e["floor_fraction"] is None else f"{e['floor_fraction']:.0%}"])
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
    if e2e:
        tokenizer = results["baseline_made_by"].get("app_tokenizer", "the bundle's tokenizer")
        lines += ["", (f"End to end: text in, embedding and every task's logits out, per call, on {POOL} of the "
                  f"task's test texts: the ONNX files with the tokenizer an app ships ({tokenizer}), mean pooling "
                  "and the teacher's head where a file lacks them (Optimum's) in numpy; PyTorch eager with the "
                  "transformers tokenizer; model2vec with its own `model.encode([text])` and its head.")]
    static = [e for e in results["entries"] if e.get("kind") == "model2vec"]
    if static:
        made = results.get("model2vec", {})
        lines += ["", (f"model2vec {made.get('version')}: `{made.get('made_by')}`; "
                  + "; ".join(f"{e['name']}: {e['dim']} dims, reads up to {e['max_length']} tokens (its default; "
                              f"the transformer files {results.get('teacher_max_length')})" for e in static
                              if e.get("variant", "distilled") == "distilled")
                  + ". Heads: logistic regression on its own embeddings of each classification task's training "
                  "split (edgekit's `fit_linear_head`, as for the teacher and the students). * At seq 128: the "
                  "model alone on 128 token ids, the Gather + mean + normalize its `encode` runs after "
                  "tokenizing (numpy); it has no matmul, so no floor.")]
        trained = [e for e in static if e.get("variant") in ("fitted", "classifier")]
        if trained:
            lines += ["", ("model2vec trained (datasets " f"{made.get('datasets')}): "
                      f"*fitted*: `{made.get('fitted_by')}`, on "
                      + ", ".join(f"{e['fitted_on']} texts ({e['dim']} dims)" for e in trained
                                  if e["variant"] == "fitted")
                      + ", then scored as the distilled rows (its own embeddings, the same kind of heads); "
                      f"*classifier*: `{made.get('classifier_by')}`, scored on its own task only with its own "
                      "`predict_proba([text])` (its MLP head), timed the same way (the model alone: Gather + mean "
                      f"+ normalize + head). {NA}: not applicable to that task.")]
    lines += ["", ("Goal (batch 1, p95 at seq 128): a pick >= 8x faster than the teacher fp32 ONNX and >= 3x faster "
              "than the teacher int8, keeping >= 97% of the teacher's metric on every task."), ""]
    lines += [f"- {g['entry']} ({_where(g)}): {g['x_vs_fp32_p95']:.2f}x faster than fp32, "
              f"{g['x_vs_int8_p95']:.2f}x faster than int8, worst task {g['min_retention']:.1f}%: "
              f"{'meets the goal' if g['met'] else 'does not meet it'}" for g in results["goal"]]
    met = [g["entry"] for g in results["goal"] if g["met"]]
    lines += ["", f"Goal met by: {', '.join(met)}." if met else "Goal met by no pick.", ""]
    lines += _versus_lines(results)
    made = results["baseline_made_by"]
    output = f" (embedding output `{made['embedding_output']}`)" if made.get("embedding_output") else ""
    lines += ["", f"Baseline files: {made['export']}{output}; {made['quantize']}.", ""]
    return "\n".join(lines)


NA = "—"  # a task or shape an entry does not answer (model2vec's classifier: its own task only)


def _ms(value: float) -> str:
    return f"{value:.2f}" if value >= 0.1 else f"{value:.3f}"  # model2vec's calls take hundredths of a ms


def _signed(value: float) -> str:
    return f"{value:+.3f}"


def _versus_lines(results: dict) -> list[str]:
    versus = results.get("versus_model2vec") or []
    if not versus:
        return []
    tasks = list(results["entries"][0]["metrics"])
    head = ["edgekit file", "model2vec"]
    for t in tasks:
        head += [f"{t}: edgekit - model2vec [paired 95%]", f"{t}: edgekit ahead beyond the interval",
                 f"{t}: p95 end to end, edgekit / model2vec (ms)"]
    head.append("edgekit ahead beyond the interval on every task compared")
    lines = ["", "## Against model2vec", "",
             ("Each edgekit file's metric minus model2vec's on the same test examples, with the paired bootstrap 95% "
              "interval of the difference (`edgekit.data.metrics.paired_difference`: both resampled on the same "
              "examples, 1,000 resamples); 'yes': the interval lies above zero. Beside it, each side's p95 end to "
              f"end on that task's texts (one text per call, in this process). {NA}: the model2vec entry does not "
              "answer that task (a classifier answers its own)."), "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for v in versus:
        cells = []
        for t in tasks:
            d = v["difference"].get(t)
            if d is None:
                cells += [NA, NA, NA]
                continue
            ci = d["ci95"]
            cells.append(f"{_signed(d['value'])} [{_signed(ci[0])}, {_signed(ci[1])}]" if ci else
                         f"{_signed(d['value'])} [undefined]")
            beats = d.get("beats", ci is not None and ci[0] > 0)
            cells.append("yes" if beats else "no")
            p95 = d.get("e2e_p95_ms") or {}
            cells.append(" / ".join(_ms(p95[side]) if p95.get(side) is not None else NA
                                    for side in ("edgekit", "model2vec")))
        pick = v["pick"] + (" (best static)" if v.get("best_static") else "")
        lines.append("| " + " | ".join([pick, v["model2vec"], *cells, "yes" if v["beats"] else "no"]) + " |")
    return lines + [""]


def write_results(results: dict, folder: Path) -> Path:
    """<stem>.json, <stem>.md and <stem>-frontier.svg in `folder`, each written whole and renamed into place.
    The JSON leaves out the per-example outcomes (thousands of numbers per entry): the paired intervals made
    from them are in it (`versus_model2vec`), and a rerun of the bench remakes them."""
    from bench.frontier import frontier_svg

    folder.mkdir(parents=True, exist_ok=True)
    stem = f"{dt.date.today().isoformat()}-{cpu_slug()}" + ("-quick" if results["mode"] == "quick" else "")
    saved = {**results, "entries": [{k: v for k, v in e.items() if k != "outcomes"} for e in results["entries"]]}
    for name, text in ((f"{stem}.json", json.dumps(saved, indent=1, default=str) + "\n"),
                       (f"{stem}.md", markdown(saved)), (f"{stem}-frontier.svg", frontier_svg(saved))):
        tmp = folder / f".{name}.tmp"
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, folder / name)
    return folder / f"{stem}.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", type=Path, default=RECIPE)
    parser.add_argument("--budgets", default=",".join(BUDGETS),
                        help="comma-separated: ms (4.5), or xN for files N times faster than the teacher fp32 at p95")
    parser.add_argument("--quick", action="store_true", help="CI size: subsampled eval sets, short timings")
    parser.add_argument("--run", type=Path, help="take the picks of this earlier `edgekit sweep` (or "
                        "`distill-and-export`) folder instead of sweeping")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "bench", help="sweep and baseline files")
    parser.add_argument("--cache-dir", type=Path, help="edgekit's cache [default: $EDGEKIT_CACHE_DIR or beside --work]")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--model2vec-dims", default=",".join(map(str, PCA_DIMS)),
                        help="comma-separated pca_dims, model2vec entries each, or 'none' [default: %(default)s]")
    parser.add_argument("--no-model2vec-train", action="store_true",
                        help="model2vec distilled only: not its models trained on the run's data (fitted to the "
                             "teacher, a classifier per classification task), which need `datasets`")
    args = parser.parse_args(argv)
    try:
        recipe = load_recipe(args.recipe)
        if args.quick:
            recipe = quick_recipe(recipe)
        budgets = args.budgets.split(",")
        cache = args.cache_dir or (Path(os.environ["EDGEKIT_CACHE_DIR"]) if os.environ.get("EDGEKIT_CACHE_DIR")
                                   else None)
        dims = () if args.model2vec_dims.strip().lower() in ("", "none") else \
            tuple(int(d) for d in args.model2vec_dims.split(","))
        results = compare(recipe, budgets, args.work, cache, args.run, args.quick, model2vec_dims=dims,
                          model2vec_train=not args.no_model2vec_train)
    except (EdgekitError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    # the command as given (--run, --cache-dir, ...), so the results say how to remake them
    results["command"] = " ".join(["python -m bench", *(sys.argv[1:] if argv is None else argv)])
    path = write_results(results, args.results)
    print(markdown(results))
    print(f"written: {path}, {path.with_suffix('.md')} and {path.with_name(path.stem + '-frontier.svg')}",
          file=sys.stderr)
    return 0
