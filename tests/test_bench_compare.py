"""`python -m bench`'s code path on a tiny teacher: sweep, Optimum baselines, scores, floor, interleaved timing."""

import json

from bench.compare import FIXED, compare, markdown, optimum_preset, quick_recipe, write_results
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
    assert sorted(results["budgets"]) == ["500 ms", "x1"]
    # x1 is the sweep's own relative budget: the teacher's fp32 file timed in the sweep
    sweep_report = json.loads((tmp_path / "work/sweep/report.json").read_text())
    assert results["teacher_fp32_p95_in_sweep_ms"] == sweep_report["budget"]["teacher"]["ms"]
    assert results["budgets_ms"][results["budgets"].index("x1")] == sweep_report["budget"]["teacher"]["ms"]
    assert results["baseline_made_by"]["preset"] == optimum_preset(results["machine"])
    saved = json.loads(path.read_text())
    assert saved["entries"][1]["file"] == fp32["file"] and "| teacher fp32 (Optimum) |" in markdown(saved)
    assert path.with_suffix(".md").read_text() == markdown(saved)
    # --run: the same sweep compared again keeps its budgets' labels and the teacher timing they came from
    again = compare(recipe, ["999"], tmp_path / "work", tmp_path / "cache", tmp_path / "work/sweep", quick=True,
                    echo=print)
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