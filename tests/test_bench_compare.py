"""`python -m bench`'s code path on a tiny teacher: sweep, Optimum baselines, scores, floor, interleaved timing."""

import json
from pathlib import Path
from typing import NamedTuple

import pytest

from bench.compare import FIXED, compare, markdown, optimum_preset, quick_recipe, write_results
from edgekit.recipe import Recipe
from edgekit.testing import tiny_recipe


class QuickBench(NamedTuple):
    recipe: Recipe
    results: dict
    path: Path  # the results JSON written beside its markdown
    root: Path  # holds work/ (the sweep, the Optimum baselines), cache/ and results/


@pytest.fixture(scope="module")
def quick_bench(tiny_bert, tmp_path_factory):
    """One quick comparison per module (sweep, baselines, scores, timing are the slow part); tests only read it."""
    root = tmp_path_factory.mktemp("bench")
    recipe = quick_recipe(tiny_recipe(tiny_bert), max_test=60)
    results = compare(recipe, ["500", "x1"], root / "work", root / "cache", None, quick=True, echo=print)
    path = write_results(results, root / "results")
    return QuickBench(recipe, results, path, root)


def entry_names(results):
    return [e["name"] for e in results["entries"]]


# the entries: the three things a user would run, then edgekit's pick(s), each with every figure

def test_entries_are_the_three_user_baselines_then_the_edgekit_picks(quick_bench):
    # setup
    names = entry_names(quick_bench.results)
    # assert
    assert names[:3] == ["teacher PyTorch eager", "teacher fp32 (Optimum)", "teacher int8 (Optimum dynamic)"]
    assert len(names) >= 4 and all(n.startswith("edgekit ") for n in names[3:])


def test_the_eager_teacher_and_its_fp32_export_score_the_same(quick_bench):
    # setup: same weights, same head, one text per run
    eager, fp32, *_ = quick_bench.results["entries"]
    # assert
    for task, metric in fp32["metrics"].items():
        assert abs(eager["metrics"][task]["value"] - metric["value"]) < 1e-6


def test_the_bench_scores_each_pick_as_the_sweeps_report_does(quick_bench):
    # setup
    _, _, _, *picks = quick_bench.results["entries"]
    # assert: the bench's own scoring of a pick agrees with what the sweep's report says of the same file
    for pick in picks:
        for task, value in pick["run_metrics"].items():
            assert abs(pick["metrics"][task]["value"] - value) < 1e-9


# latency at the fixed shape and at every task's lengths; the ratios are the quotients of those

def test_latency_is_timed_at_the_fixed_shape_and_at_every_tasks_lengths(quick_bench):
    # setup
    fp32 = quick_bench.results["entries"][1]
    # assert
    assert set(fp32["latency_ms"]) == {FIXED, "sentiment lengths", "lee lengths"}


def test_every_entrys_latency_percentiles_are_positive_and_ordered(quick_bench):
    # setup
    entries = quick_bench.results["entries"]
    # assert
    for entry in entries:
        lat = entry["latency_ms"][FIXED]
        assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"]


def test_speedup_ratios_are_the_fp32_files_p95_over_each_entrys(quick_bench):
    # setup
    entries = quick_bench.results["entries"]
    fp32 = entries[1]
    # assert
    for entry in entries:
        lat = entry["latency_ms"][FIXED]
        assert entry["ratios"][FIXED]["fp32_over_this_p95"] == fp32["latency_ms"][FIXED]["p95"] / lat["p95"]
    assert fp32["ratios"][FIXED]["fp32_over_this_p95"] == 1.0


# the floor: int8 work in the int8 files only; the eager teacher does the fp32 file's work

def test_int8_work_is_counted_in_the_int8_file_only(quick_bench):
    # setup
    _, fp32, int8, *_ = quick_bench.results["entries"]
    # assert
    assert fp32["work"]["int8_gop"] == 0 and int8["work"]["int8_gop"] > 0


def test_the_eager_teacher_does_the_fp32_files_work_and_every_entry_has_a_floor(quick_bench):
    # setup
    results = quick_bench.results
    eager, fp32, *_ = results["entries"]
    # assert
    assert eager["work"] == fp32["work"] and all(0 < e["floor_ms"] for e in results["entries"])


def test_this_cpus_fp32_and_int8_matmul_peaks_are_measured(quick_bench):
    # setup
    results = quick_bench.results
    # assert
    assert results["peaks"]["fp32_gflops"] > 0 and results["peaks"]["int8_gops"] > 0


# the goal, the budgets and where they came from

def test_the_goal_is_judged_for_every_pick(quick_bench):
    # setup
    results = quick_bench.results
    names = entry_names(results)
    # assert
    assert [g["entry"] for g in results["goal"]] == names[3:]


def test_results_list_every_budget_swept(quick_bench):
    # setup
    results = quick_bench.results
    # assert
    assert sorted(results["budgets"]) == ["500 ms", "x1"]


def test_a_relative_budget_is_the_teachers_fp32_file_as_timed_in_the_sweep(quick_bench):
    # setup: x1 is the sweep's own relative budget
    results = quick_bench.results
    sweep_report = json.loads((quick_bench.root / "work/sweep/report.json").read_text())
    # assert
    assert results["teacher_fp32_p95_in_sweep_ms"] == sweep_report["budget"]["teacher"]["ms"]
    assert results["budgets_ms"][results["budgets"].index("x1")] == sweep_report["budget"]["teacher"]["ms"]


def test_the_optimum_baseline_is_made_with_the_preset_of_this_cpu(quick_bench):
    # setup
    results = quick_bench.results
    # assert
    assert results["baseline_made_by"]["preset"] == optimum_preset(results["machine"])


# the files are where the results say

def test_the_saved_json_and_markdown_hold_the_results(quick_bench):
    # setup
    fp32 = quick_bench.results["entries"][1]
    path = quick_bench.path
    saved = json.loads(path.read_text())
    # assert
    assert saved["entries"][1]["file"] == fp32["file"] and "| teacher fp32 (Optimum) |" in markdown(saved)
    assert path.with_suffix(".md").read_text() == markdown(saved)


def test_comparing_the_same_sweep_again_keeps_its_budgets_and_the_teacher_timing_they_came_from(quick_bench):
    # setup: --run, the sweep the module's comparison made
    recipe, results, _, root = quick_bench
    _, _, _, *picks = results["entries"]
    # execute
    again = compare(recipe, ["999"], root / "work", root / "cache", root / "work/sweep", quick=True, echo=print)
    # assert
    assert again["budgets"] == results["budgets"] and again["budgets_ms"] == results["budgets_ms"]
    assert again["teacher_fp32_p95_in_sweep_ms"] == results["teacher_fp32_p95_in_sweep_ms"]
    assert [e["budgets"] for e in again["entries"][3:]] == [e["budgets"] for e in picks]


def test_the_optimum_baseline_uses_the_preset_of_the_cpu_at_hand():
    x86 = {"avx2": True, "fma": True, "avx512f": False, "avx512_vnni": False, "avx_vnni": False}
    assert optimum_preset({"arch": "x86_64", "instruction_sets": x86}) == "avx2"
    assert optimum_preset({"arch": "x86_64", "instruction_sets": {**x86, "avx512f": True}}) == "avx512"
    assert optimum_preset({"arch": "x86_64", "instruction_sets": {**x86, "avx512f": True,
                                                                   "avx512_vnni": True}}) == "avx512_vnni"
    assert optimum_preset({"arch": "aarch64", "instruction_sets": {"dotprod": True}}) == "arm64"
