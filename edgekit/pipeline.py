"""distill-and-export and sweep: the one place that knows the order of the stages (edgekit/stages/).

    1 data      loading.py          recipe -> validated, checked; each task's examples loaded and split
    2 teacher   teacher.py          the teacher with its heads; its files made, scored and timed (measure.py):
                                    a relative budget is a fraction of its fp32 file's latency here
    3 probe     students.py         candidate architectures, each timed untrained (probe.py)
    4 distill   distill/stage.py    the feasible ones, largest first (select.to_train)
    5 evaluate  measure.py          each student exported (parity), quantized, scored on every task
    6 time      measure.py          every student file, in interleaved rounds
    7 select    select.py, gap.py   Pareto frontier and pick per provider; where the pick loses
              bundle.py, report.py  the bundle, report.json/.md/.html

From the teacher on, each stage reads stage(input, lab, the part of the recipe it needs): the Lab (measure.Lab,
frozen) holds how files are made, scored and timed, the cache, the run folder, the providers and the echo, so
a stage can run as a task on another machine. A sweep runs the same stages once for several budgets: only what
is trained and picked differs. The run folder appears whole or not at all (atomic_dir), and a content-addressed
cache beside it lets a killed run resume.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from edgekit.data.kinds import image_shape
from edgekit.errors import BudgetNotMet, EdgekitError
from edgekit.recipe import Recipe
from edgekit.runtime.executor import executor_for
from edgekit.runtime.quantize import quant_config
from edgekit.stages import bundle, gap, loading, measure, probe, report, score_scale, select, students
from edgekit.stages.distill.stage import Distillation, distill_student, distillation_set, row_details
from edgekit.stages.fits import PATH_WORDS, faster_path, latency_of
from edgekit.stages.report import RunReport
from edgekit.stages.teacher import prepare_teacher, teacher_rows
from edgekit.trust.atomic import atomic_dir, unexpected_entries
from edgekit.trust.cache import Cache
from edgekit.trust.reading import read_json

# What a run folder holds, all of it written by edgekit (bundles/: `edgekit bundle RUN NAME`'s default folders).
RUN_ENTRIES = ("report.json", "report.md", "report.html", "bundle", "bundles", "candidates", "reference", "teacher",
               "tokenizer", "preprocessing.json")


def foreign_run_entries(folder: Path) -> list[str]:
    """The entries of an existing output folder that no edgekit run wrote (all of them, unless its report.json
    is an edgekit report): what keeps --force from replacing it."""
    try:
        report = read_json(folder / "report.json", dict, error=EdgekitError)
    except EdgekitError:
        report = {}
    if not str(report.get("format", "")).startswith("edgekit.report/"):
        return [entry.name for entry in folder.iterdir()]
    return unexpected_entries(folder, RUN_ENTRIES)


def _echo(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def distill_and_export(recipe: Recipe | str | Path, out: str | Path | None = None,
                       cache_dir: str | Path | None = None, force: bool = False,
                       echo: Callable[[str], None] = _echo, executor: str | None = None,
                       address: str | None = None) -> RunReport:
    """Run a recipe end to end; returns the report (also written as report.json/.md/.html).

    `executor` ("in-process" or "ray") and `address` (a Ray cluster's) override the recipe's `executor`.
    Raises BudgetNotMet (after probing, before any training) when no candidate can fit,
    and after writing the run folder when no measured file does."""
    return _run(recipe, out, cache_dir, force, echo, sweep=None, executor=executor, address=address)


def sweep(recipe: Recipe | str | Path, budgets: list[float | str] | None = None, out: str | Path | None = None,
          cache_dir: str | Path | None = None, force: bool = False,
          echo: Callable[[str], None] = _echo, executor: str | None = None,
          address: str | None = None) -> RunReport:
    """The pick at each latency budget, in one run: teacher outputs, probes, trained students and
    measurements are shared by every budget (and cached with single runs). Budgets default to
    the recipe's budget.sweep; each is milliseconds (4.5) or a speed-up over the teacher's fp32 file
    ("x8"). Writes no bundle: rerun distill-and-export at the chosen budget, which reuses the cache."""
    if not isinstance(recipe, Recipe):
        recipe = loading.load_recipe(recipe)
    budgets = loading.sweep_budgets(recipe, budgets)
    return _run(recipe, out, cache_dir, force, echo, sweep=budgets, executor=executor, address=address)


def _run(recipe: Recipe | str | Path, out: str | Path | None, cache_dir: str | Path | None, force: bool,
         echo: Callable[[str], None], sweep: list[float | str] | None, executor: str | None = None,
         address: str | None = None) -> RunReport:
    """The executor for the run (executor.py), then the stages."""
    if not isinstance(recipe, Recipe):
        recipe = loading.load_recipe(recipe)
    loading.check_recipe(recipe)
    spec = recipe.executor
    ex = executor_for(executor or spec.kind, recipe.target, address or spec.address, spec.cpus_per_task)
    try:
        return _stages(recipe, out, cache_dir, force, echo, sweep, ex)
    finally:
        ex.close()


def _stages(recipe: Recipe, out: str | Path | None, cache_dir: str | Path | None, force: bool,
            echo: Callable[[str], None], sweep: list[float | str] | None, ex) -> RunReport:
    """The stages shared by a single run (sweep None: one budget, a bundle) and a sweep over budgets. `ex` runs
    the units of work (executor.py): timing ones where the target's latency is measured, the rest anywhere."""
    import torch

    out = Path(out) if out is not None else Path("runs") / (recipe.name + ("-sweep" if sweep else ""))
    cache = Cache(cache_dir or os.environ.get("EDGEKIT_CACHE_DIR") or out.parent / ".edgekit-cache", echo)
    torch.set_num_threads(os.cpu_count() or 1)
    started = time.perf_counter()
    budget = recipe.budget  # resolved (ms set) once the teacher's fp32 file is timed
    budgets = [budget.at(token) for token in sweep] if sweep else [budget]
    providers, skipped_providers = loading.available_providers(recipe)
    target = providers[0]
    variants, skipped_variants = measure.made_variants(recipe, providers)
    int8 = any(quant_config(v).int8 for v in variants)
    for name, why in {**skipped_providers, **skipped_variants}.items():
        echo(f"  skipping {name}: {why}")
    stages: dict[str, float] = {}  # stage -> seconds since the start, as the run reaches it

    def stage(number: int, name: str, detail: str) -> None:
        elapsed = time.perf_counter() - started
        stages.setdefault(name, round(elapsed, 1))
        echo(f"[{number}/7 {elapsed / 60:4.1f} min] {name}: {detail}")

    predictions: dict = {}  # (row name, provider) -> per-task predictions, for the gap report
    failures: dict[str, str] = {}  # "file on provider" -> why it was not measured

    def scored(result) -> list:
        predictions.update(result.predictions)
        failures.update(result.failures)
        return result.rows

    with atomic_dir(out, foreign_run_entries, replace=force) as run:
        stage(1, "data", ", ".join(t.name for t in recipe.tasks))
        tasks = loading.load_tasks(recipe)
        loading.describe_tasks(tasks, run, echo)

        stage(2, "teacher", recipe.teacher.model)
        attention = any(loss.name == "attention" for loss in recipe.distill.losses)
        teacher = prepare_teacher(recipe, tasks, cache, echo, attention=attention)
        truncated = loading.truncation(tasks, teacher, echo)
        examples = measure.parity_examples(tasks, teacher)
        bundle.keep_for_bundles(run, examples, teacher)
        inputs, labels, inputs_digest = distillation_set(recipe, tasks, teacher)
        lab = measure.lab(recipe, tasks, teacher, inputs, examples, (run, cache, echo), providers, variants)
        rows = scored(ex.timing([("teacher files", partial(teacher_rows, teacher, recipe, lab))])[0])
        teacher_fp32 = _row(rows, "teacher-fp32", target)
        reference_ms = latency_of(teacher_fp32, budget)
        budget = budget.resolved(reference_ms)
        budgets = sorted((b.resolved(reference_ms) for b in budgets), key=lambda b: b.ms)
        if any(b.speedup is not None for b in budgets):
            # end to end: the teacher on its faster path (fits.latency_of), as every student is judged on its own
            path = faster_path(teacher_fp32, budget.percentile) if budget.scope == "end-to-end" else None
            scope = f"end to end ({PATH_WORDS[path[0]]})" if path else "model only"
            echo(f"  the teacher's fp32 file measures {budget.percentile} {reference_ms:.3g} ms {scope}: "
                 + ", ".join(f"x{b.speedup:g} -> {b.ms:.3g} ms" for b in budgets if b.speedup is not None))
        first_student = len(rows)  # the students' rows follow

        shape = image_shape(tasks)  # an image run times batches of (C, H, W) images, not token sequences
        stage(3, "probe", f"timing candidates untrained at {select.shape_text(budget, shape)}")
        found = students.candidates(recipe, teacher, inputs)  # inputs: a static student's vocabulary
        probed = ex.timing([(f"probe {c.name}", partial(probe.probe, c, recipe, teacher, lab, budget, budgets))
                            for c in found])
        probes = {c.name: entry for c, entry in zip(found, probed)}
        chosen = select.to_train(found, probes, budgets, recipe.students.max_students)
        if not chosen:
            # budgets[-1]: the recipe's budget, or a sweep's largest (a sweep fails only if that fits nothing)
            raise BudgetNotMet(select.nothing_feasible(probes, budgets[-1], int8, shape))

        stage(4, "distill", ", ".join(c.name for c in chosen)
              + (" (the largest feasible at each budget)" if sweep else " (largest feasible first)"))
        teacher_out = ex.compute([("teacher outputs", partial(teacher.outputs, inputs, inputs_digest, cache))])[0]
        distillation = Distillation(teacher, inputs, labels, inputs_digest, teacher_out)
        # Data-parallel distillation (distill.workers > 1) starts Ray Train workers of its own: from the driver.
        distill_on = ex.compute if recipe.distill.workers == 1 else ex.here
        trained = distill_on([(f"distill {c.name}", partial(distill_student, c, recipe, distillation, lab))
                              for c in chosen])
        stage(5, "evaluate", "exporting, quantizing and scoring " + ", ".join(c.name for c in chosen))
        # The accuracy-aware int8 step times the files it tries: then evaluating is timing work.
        evaluated = (ex.timing if measure.searches_int8(variants, recipe.quantize) else ex.compute)(
            [(f"evaluate {c.name}", partial(_evaluate, c, result, probes[c.name], lab, teacher_fp32["metrics"]))
             for c, result in zip(chosen, trained)])
        for result in evaluated:
            rows += scored(result)

        stage(6, "time", f"every student file, {budget.rounds} interleaved rounds at "
                         f"{select.shape_text(budget, shape)}"
                         + ("" if teacher.images else ", then end to end on the tasks' test texts"))
        timed, retimed = ex.timing([("time students", partial(measure.time_rows, rows[first_student:], lab, budget,
                                                               run / teacher_fp32["onnx"]))])[0]
        rows = rows[:first_student] + timed
        rows = measure.web_agreement(rows, predictions)  # web rows: how far onnxruntime-web is from cpu
        # The re-timing is of the tokenizer.json path (end to end): judged against the teacher's figure on that path.
        same_path = latency_of({k: v for k, v in teacher_fp32.items() if k != "latency_app_ms"}, budget)
        if warning := measure.drift_warning(retimed, same_path, budget, cache):
            echo(warning)

        stage(7, "select", "Pareto frontier, pick, gap report, bundle")
        rows, picks, why, decision = select.decide(rows, budget, providers, int8, predictions, tasks)
        best = None if picks[target] is None else _row(rows, picks[target], target)
        measured = report.Measured(teacher, tasks, truncated, budget, teacher_fp32, retimed, list(probes.values()),
                                   rows, {**skipped_providers, **failures}, skipped_variants)
        selected = report.Selected(
            picks, why, decision, best, gap.shipped_gap(best, predictions, tasks, teacher) if best is not None else None,
            [select.sweep_point(rows, b, target, int8, predictions, tasks) for b in budgets] if sweep else None,
            select.provider_agreement(rows, providers, predictions, tasks))
        data = report.build_report(recipe, lab, measured, selected, time.perf_counter() - started, stages)
        if best is not None:  # what the pick's cosine means against the teacher's (the bundle states its thresholds)
            data["score_scale"] = ex.compute([("score scale", partial(
                score_scale.shipped_scale, best, rows, predictions, inputs, lab))])[0]
        if best is not None and not sweep:  # timing work: the bundle times its app graph
            data["bundle"] = ex.timing([("bundle", partial(bundle.ship, run, data, best,
                                                           recipe.signing.key if recipe.signing else None, echo))])[0]
        data["executor"] = ex.record()
        report.write_report(run, data)
    return _finish(RunReport(out, data), best, echo)


def _evaluate(candidate, trained: tuple, probed: dict, lab: measure.Lab, teacher_metrics: dict) -> measure.Scored:
    """A distilled student's files: exported (parity), quantized, every one scored on every provider."""
    student, history, before = trained
    folder = lab.run / "candidates" / candidate.name
    files = measure.export_files(student, folder, lab, fit=True)
    (folder / "distillation.json").write_text(json.dumps(history, indent=1) + "\n", encoding="utf-8")
    details = row_details(candidate, student, probed, history, before)
    return measure.score_rows(candidate.name, files, lab, teacher_metrics, details)


def _row(rows: list[dict], name: str, provider: str) -> dict:
    return next(r for r in rows if r["name"] == name and r["provider"] == provider)


def _finish(result: RunReport, best: dict | None, echo: Callable[[str], None]) -> RunReport:
    """Say what the run shipped (or, for a sweep, picked at each budget); a run that fits nothing fails
    after writing its folder."""
    data, out = result.data, result.path
    if data["sweep"] is not None:
        picks = ", ".join(f"{p['budget']} ({p['ms']:.3g} ms) -> {p['pick'] or 'nothing fits'}" for p in data["sweep"])
        echo(f"done in {data['seconds'] / 60:.1f} min: {picks} (report: {out / 'report.md'})")
        return result
    if best is None:
        raise BudgetNotMet(f"{data['why']} The run folder {out} holds every file and report.md.")
    echo(f"done in {data['seconds'] / 60:.1f} min: {best['name']} -> {out / 'bundle'} (report: {out / 'report.md'})")
    return result
