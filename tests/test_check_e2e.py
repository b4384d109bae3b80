"""bench/check_e2e.py re-times a run's end-to-end figures (both paths) without edgekit and catches a false ratio."""

import ast
import json
from pathlib import Path

import bench.check_e2e as check_e2e_module
from bench.check_e2e import main

# The tiny run's files take tenths of a millisecond end to end, and this test re-times them minutes after the run
# on a machine that may be busy beside another test worker: one burst of noise moved a tenth-of-a-millisecond p95
# 23x (0.19 -> 4.4 ms, 2 suites on 2 cores). The honest check gets a tolerance wider than that (31x either way);
# a claim 1000x off is far outside it.
QUICK = ["--runs", "40", "--rounds", "2", "--tolerance", "30"]


def test_the_check_imports_nothing_of_edgekit():
    # setup
    tree = ast.parse(Path(check_e2e_module.__file__).read_text(encoding="utf-8"))
    # execute
    modules = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    modules |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    # assert: an independent witness
    assert not [m for m in modules if m.split(".")[0] in ("edgekit", "bench")]


def test_the_run_s_ratios_are_re_timed_on_both_paths(run_copy, capsys):
    # setup
    report = json.loads((run_copy / "report.json").read_text(encoding="utf-8"))
    student = report["selected"]["name"]
    # execute
    code = main([str(run_copy), "--files", student, *QUICK])
    # assert: the teacher and the student, each on every path the run timed (the app graph kept in the run)
    result = json.loads((run_copy / "check-e2e.json").read_text(encoding="utf-8"))
    timed = {(e["file"], e["path"]) for e in result["entries"]}
    assert timed == {(name, path) for name in ("teacher-fp32", student) for path in ("tokenizer.json", "app graph")}
    assert all(e["measured_ms"] > 0 for e in result["entries"]) and code == 0
    assert "| teacher-fp32 | app graph |" in capsys.readouterr().out


def test_a_ratio_the_run_did_not_measure_is_a_mismatch(run_copy):
    # setup: the report claims the student's app graph 1000x faster than it measured
    path = run_copy / "report.json"
    report = json.loads(path.read_text(encoding="utf-8"))
    student = next(row for row in report["files"] if row["name"] == report["selected"]["name"])
    student["latency_app_ms"]["p95"] /= 1000
    path.write_text(json.dumps(report), encoding="utf-8")
    # execute
    code = main([str(run_copy), "--files", student["name"], *QUICK])
    # assert
    entries = json.loads((run_copy / "check-e2e.json").read_text(encoding="utf-8"))["entries"]
    wrong = [(e["file"], e["path"]) for e in entries if not e["agrees"]]
    assert code == 1 and wrong == [(student["name"], "app graph")]


def test_a_missing_app_graph_is_bad_input(run_copy, capsys):
    # setup
    report = json.loads((run_copy / "report.json").read_text(encoding="utf-8"))
    row = next(row for row in report["files"] if row["name"] == report["selected"]["name"])
    (run_copy / row["app_graph"]["onnx"]).unlink()
    # execute
    code = main([str(run_copy), "--files", row["name"], *QUICK])
    # assert
    assert code == 2 and "is missing" in capsys.readouterr().err


def _teacher_e2e_bench(run):
    report = json.loads((run / "report.json").read_text(encoding="utf-8"))
    row = next(row for row in report["files"] if row["name"] == "teacher-fp32" and row["provider"] == "cpu")
    return report, run / Path(row["bench"]).with_suffix("").with_suffix(".e2e.bench.json")


def test_the_check_times_whole_passes_over_the_run_s_pool(run_copy):
    # setup
    report, bench = _teacher_e2e_bench(run_copy)
    pool = json.loads(bench.read_text(encoding="utf-8"))["inputs"]["pool"]
    # execute
    main([str(run_copy), "--files", report["selected"]["name"], *QUICK])
    # assert: the run's own texts (its digest), every round a whole number of passes over them
    result = json.loads((run_copy / "check-e2e.json").read_text(encoding="utf-8"))
    assert result["pool"]["sha256"] == pool["sha256"] and result["pool"]["texts"] == pool["texts"]
    assert result["runs"] >= 40 and result["runs"] % pool["texts"] == 0


def test_a_pool_whose_texts_changed_is_bad_input(run_copy, capsys):
    # setup: the digest the run recorded no longer matches the texts at its indices
    report, bench = _teacher_e2e_bench(run_copy)
    raw = json.loads(bench.read_text(encoding="utf-8"))
    raw["inputs"]["pool"]["sha256"] = "0" * 64
    bench.write_text(json.dumps(raw), encoding="utf-8")
    # execute
    code = main([str(run_copy), "--files", report["selected"]["name"], *QUICK])
    # assert
    assert code == 2 and "changed since the run" in capsys.readouterr().err
