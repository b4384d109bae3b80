"""`python -m bench`'s code path on a tiny teacher: sweep, Optimum baselines, scores, floor, interleaved timing."""

import json

import pytest

from bench.compare import FIXED, compare, markdown, quick_recipe, resolve_budgets, write_results
from edgekit.errors import EdgekitError
from edgekit.testing import tiny_recipe


def test_quick_bench_compares_picks_with_the_optimum_baselines(tiny_bert, tmp_path):
    # act
    recipe = quick_recipe(tiny_recipe(tiny_bert), max_test=60)
    results = compare(recipe, ["500", "x1"], tmp_path / "work", tmp_path / "cache", None, quick=True, echo=print)
    path = write_results(results, tmp_path / "results")
    # assert: the three things a user would run, then edgekit's pick(s), each with every figure
    names = [e["name"] for e in results["entries"]]
    assert names[:3] == ["teacher PyTorch eager", "teacher fp32 (Optimum)", "teacher int8 (Optimum dynamic)"]
    assert len(names) >= 4 and all(n.startswith("edgekit ") for n in names[3:])
    eager, fp32, int8, *picks = results["entries"]
    # the eager teacher and its fp32 export score the same (same weights, same head, one text per run)
    for task, metric in fp32["metrics"].items():
        assert abs(eager["metrics"][task]["value"] - metric["value"]) < 1e-6
    # the bench's own scoring of a pick agrees with what the sweep's report says of the same file
    for pick in picks:
        for task, value in pick["run_metrics"].items():
            assert abs(pick["metrics"][task]["value"] - value) < 1e-9
    # latency at the fixed shape and at every task's lengths; the ratios are the quotients of those
    assert set(fp32["latency_ms"]) == {FIXED, "sentiment lengths", "lee lengths"}
    for entry in results["entries"]:
        lat = entry["latency_ms"][FIXED]
        assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"]
        assert entry["ratios"][FIXED]["fp32_over_this_p95"] == fp32["latency_ms"][FIXED]["p95"] / lat["p95"]
    assert fp32["ratios"][FIXED]["fp32_over_this_p95"] == 1.0
    # the floor: int8 work in the int8 files only; the eager teacher does the fp32 file's work
    assert fp32["work"]["int8_gop"] == 0 and int8["work"]["int8_gop"] > 0
    assert eager["work"] == fp32["work"] and all(0 < e["floor_ms"] for e in results["entries"])
    assert results["peaks"]["fp32_gflops"] > 0 and results["peaks"]["int8_gops"] > 0
    # the goal is judged for every pick, and the files are where the results say
    assert [g["entry"] for g in results["goal"]] == names[3:]
    assert sorted(results["budgets"]) == ["500", "x1"] and (tmp_path / "work/sweep/bench-budgets.json").is_file()
    saved = json.loads(path.read_text())
    assert saved["entries"][1]["file"] == fp32["file"] and "| teacher fp32 (Optimum) |" in markdown(saved)
    assert path.with_suffix(".md").read_text() == markdown(saved)
    # --run: the same sweep compared again keeps its budgets' labels and the teacher timing they came from
    again = compare(recipe, ["999"], tmp_path / "work", tmp_path / "cache", tmp_path / "work/sweep", quick=True,
                    echo=print)
    assert again["budgets"] == results["budgets"] and again["budgets_ms"] == results["budgets_ms"]
    assert again["teacher_fp32_p95_before_sweep_ms"] == results["teacher_fp32_p95_before_sweep_ms"]
    assert [e["budgets"] for e in again["entries"][3:]] == [e["budgets"] for e in picks]


def test_budgets_are_milliseconds_or_speedups_over_the_teacher():
    # x8 of a 16 ms teacher with 10% headroom: files that measure <= 2 ms fit, so the budget is 2 / 0.9
    assert resolve_budgets(["4.5", "x8"], 16.0, 0.1) == {round(2 / 0.9, 3): "x8", 4.5: "4.5"}
    with pytest.raises(EdgekitError, match="neither milliseconds"):
        resolve_budgets(["fast"], 16.0, 0.1)
