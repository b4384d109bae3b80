"""Stage 3: time every candidate untrained, so only students that can meet the budget are trained.

Latency does not depend on weight values: each candidate is built, exported and quantized
untrained, and every variant's graph is timed on the target provider. Cached per architecture,
budget shape, provider and machine; the budget's limits only judge a timing, so a sweep over
budgets reuses every probe.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from edgekit import __version__
from edgekit.recipe import Budget, Recipe
from edgekit.records import ProbeEntry
from edgekit.runtime.quantize import quant_config
from edgekit.runtime.web_runtime import is_web, web_versions
from edgekit.stages.fits import latency_of, meets_budget, probe_fits
from edgekit.stages.measure import Lab, app_paths, export_files, holds_latency, latency_summary, runs_on, time_files
from edgekit.stages.students import Candidate, build
from edgekit.trust.cache import cache_key
from edgekit.units import count, milliseconds

PROBE_CALIBRATION = 8  # a probe's static graph is timed, not scored: a few calibration inputs do


def _probe_problem(entry: dict) -> str | None:
    """What a cached probe lacks that judging it reads (its name, size, provider, and each variant's size and
    latency percentiles), or None."""
    variants = entry.get("variants")
    if not (isinstance(entry.get("name"), str) and isinstance(entry.get("params"), int)
            and isinstance(entry.get("provider"), str) and isinstance(variants, dict) and variants
            and all(isinstance(v, dict) and holds_latency(v.get("latency_ms")) and isinstance(v.get("size_bytes"), int)
                    and all(v.get(key) is None or holds_latency(v[key]) for key in ("latency_e2e_ms", "latency_app_ms"))
                    for v in variants.values())):
        return "is not a probe (it lacks the name, params, provider, or a variant's latency or size)"
    return None


def probe_class(variant: str) -> str:
    """Variants that differ only in calibration ranges run the same graph, so one probe times them all."""
    return variant if variant == "fp32" else quant_config(variant).graph


def probe(candidate: Candidate, recipe: Recipe, teacher, lab: Lab, budget: Budget,
          budgets: list[Budget]) -> ProbeEntry:
    """Export the untrained candidate, quantize it, time every variant's graph on the lab's target provider.
    `budget`: the run's (resolved) budget; `budgets`: what the verdict it prints is about (the recipe's
    budget, or a sweep's). Returns the probe entry report.json keeps, `feasible` judged at `budget`."""
    from edgekit.modeling.networks import count_parameters
    from edgekit.runtime.environment import cpu_fingerprint, package_versions

    exporting, timing, cache, provider = lab.exporting, lab.timing, lab.cache, lab.target
    outputs = teacher.model.output_names  # a student exports the teacher's outputs
    kinds = list(dict.fromkeys(probe_class(v) for v in lab.variants if runs_on(v, provider)))
    # The budget's limits (ms or speedup, size, quality floor, headroom, percentile, sweep) only judge a timing:
    # they are not part of the key, so a sweep over budgets reuses every probe.
    shape = budget.model_dump(exclude={"ms", "speedup", "size_mb", "min_retention", "tie_margin", "headroom",
                                       "percentile", "sweep", "providers", "require_full_placement"})
    # "paths": 2, probes timed end to end on both paths (before, on tokenizer.json only) are not reused
    key = cache_key("probe", __version__, candidate.arch, outputs, recipe.teacher.kind, shape, provider, {"paths": 2},
                    kinds, recipe.quantize.reduce_range, recipe.quantize.block_size, recipe.quantize.accuracy_level,
                    recipe.export.opset, str(timing.lengths_file),
                    cpu_fingerprint(), package_versions().get("onnxruntime"),
                    # a web provider's timing depends on onnxruntime-web and Chromium, not on native onnxruntime
                    *([web_versions()] if is_web(provider) else []))
    entry = cache.load_json("probes", key, _probe_problem)
    if entry is None:
        model, _ = build(candidate, recipe, teacher, list(lab.tasks))
        timed_variants = {}
        with tempfile.TemporaryDirectory(prefix="edgekit-probe-") as tmp:
            # One variant per graph: the static graph is made with min-max ranges.
            made = ["int8-static-minmax" if kind == "int8-static" else kind for kind in kinds]
            files = export_files(model, Path(tmp), lab, made,
                                 calibration=(exporting.calibration or [])[:PROBE_CALIBRATION], cached=False).files
            paths = [(path, provider) for path in files.values()]
            timed, _ = time_files(paths, timing, cache)
            # End to end only when that is what the budget bounds: a probe is judged, not reported. On both paths a
            # file can ship (tokenizer.json, and its app graph where it has one), as every file is judged on its faster
            # path and the teacher's reference is its own faster path (fits.latency_of).
            whole, inside = [None] * len(paths), [None] * len(paths)
            if budget.scope == "end-to-end":
                apps = app_paths(paths, lab.run, timing, cache) if timing.text else [None] * len(paths)
                with_app = [i for i, app in enumerate(apps) if app is not None and app.file is not None]
                wholes = time_files(paths + [(apps[i].file, provider) for i in with_app], timing, cache,
                                    end_to_end=True)[0]
                whole = wholes[:len(paths)]
                for i, result in zip(with_app, wholes[len(paths):]):
                    inside[i] = result
            for i, (variant, result) in enumerate(zip(files, timed)):
                timed_variants[probe_class(variant)] = {
                    "latency_ms": latency_summary(result), "size_bytes": result["model"]["size_bytes"],
                    "latency_e2e_ms": latency_summary(whole[i]) if whole[i] else None,
                    **({"latency_app_ms": latency_summary(inside[i])} if inside[i] else {})}
        entry = {"name": candidate.name, "architecture": candidate.arch, "params": count_parameters(model),
                 "provider": provider, "variants": timed_variants}
        cache.save_json("probes", key, entry)
    _judge(entry, budget)
    if len(budgets) > 1:
        fitting = [b for b in budgets if probe_fits(entry, b)]
        verdict = (f"  fits budgets >= {fitting[0].label()} ({fitting[0].ms:.3g} ms)" if fitting
                   else "  fits none of the budgets")
    else:
        best = min(entry["variants"].items(), key=lambda kv: latency_of(kv[1], budget))
        verdict = "  fits" if entry["feasible"] else f"  too slow (best: {best[0]})"
    lab.echo(f"  {candidate.name:<12} {count(entry['params']):>6} params  " + "  ".join(
        f"{variant} {milliseconds(latency_of(record, budget))}" for variant, record in entry["variants"].items())
        + f" ms {budget.percentile}" + verdict)
    return entry


def _judge(entry: dict, budget: Budget) -> None:
    for record in entry["variants"].values():
        record["meets_budget"] = meets_budget(record, budget)
    entry["feasible"] = probe_fits(entry, budget)
