"""The whole distill-and-export pipeline on tiny real models and real (subsampled) data."""

import json

import onnxruntime as ort
import pytest
import yaml

from edgekit.errors import BudgetNotMet, RecipeError, TeacherTooWeak
from edgekit.pipeline import distill_and_export, sweep
from edgekit.runtime.precision import drops
from edgekit.runtime.quantize import quantized_matmuls
from edgekit.stages.report import RunReport
from edgekit.testing import tiny_recipe, tiny_task_files


@pytest.fixture(scope="module")
def tiny_run(finished_run):
    """The session's finished tiny run (conftest: the pipeline is the slow part) as (its RunReport read back from
    report.json, ROOT); the tests below read it, and runs of their own only add entries to its cache."""
    return RunReport(finished_run / "run", json.loads((finished_run / "run" / "report.json").read_text())), finished_run


@pytest.fixture
def report_json(tiny_run):
    """The run's report.json as a fresh dict for each test (cheap to read, so no test sees another's edits)."""
    _, root = tiny_run
    return json.loads((root / "run" / "report.json").read_text())


def file_row(report, name):
    return next(r for r in report.files if r["name"] == name)


# report.json: format, budget, providers, variants

def test_report_json_names_its_format_the_providers_measured_and_the_variants_made(report_json):
    # setup
    data = report_json
    # assert: the documented report.json fields
    assert data["format"] == "edgekit.report/2"
    assert data["providers"]["measured"] == ["cpu"]
    assert data["variants"] == {"made": ["fp32", "int8-dynamic", "int8-static-minmax"], "skipped": {}}


def test_report_json_budget_records_the_limit_and_the_teachers_measured_fp32_latency(tiny_run, report_json):
    # setup
    report, _ = tiny_run
    data = report_json
    teacher_fp32 = report.files[0]
    # assert
    assert data["budget"] == {"percentile": "p95", "scope": "model", "ms": 1000.0, "speedup": None, "label": "1000 ms", "batch": 1,
                              "seq_len": 128, "image_shape": None, "threads": 1, "size_mb": None, "headroom": 0.1,
                              "limit_ms": 900.0, "min_retention": 95.0, "min_retention_from": "default",
                              "tie_margin": 2.0,
                              "teacher": {"file": "teacher/model.onnx", "provider": "cpu",
                                          "ms": teacher_fp32["latency_ms"]["p95"], "cached": False,
                                          "model_ms": teacher_fp32["latency_ms"]["p95"],
                                          "e2e_ms": teacher_fp32["latency_e2e_ms"]["p95"],
                                          "app_ms": teacher_fp32["latency_app_ms"]["p95"], "path": None,
                                          "measured_at": teacher_fp32["latency_ms"]["measured_at"],
                                          "retimed_with_students_ms": data["budget"]["teacher"]["retimed_with_students_ms"],
                                          "drift": data["budget"]["teacher"]["drift"]}}
    assert data["budget"]["teacher"]["retimed_with_students_ms"] > 0  # re-timed among the students: the drift


def test_int8_on_this_cpu_compares_each_quantized_file_with_its_own_fp32_file(tiny_run, report_json):
    # setup: int8 against its own fp32 file, measured on this CPU, per quantized file
    report, root = tiny_run
    run = root / "run"
    effect = {e["file"]: e for e in report_json["int8_on_this_cpu"]}
    l1 = {r["variant"]: r for r in report.files if r["student"] == "L1"}
    # assert
    assert sorted(effect) == sorted(r["name"] for r in report.files if r["variant"] != "fp32")
    assert effect["L1-int8-dynamic"]["x_vs_fp32"]["p50"] == (l1["fp32"]["latency_ms"]["p50"]
                                                            / l1["int8-dynamic"]["latency_ms"]["p50"])
    assert "## Quantization on this CPU" in (run / "report.md").read_text()


# the evaluation matrix: one row per file

def test_matrix_has_every_teacher_and_student_file_in_order(tiny_run):
    # setup: every file of the teacher (the baseline a user would ship) and of the student
    report, _ = tiny_run
    # assert
    names = [row["name"] for row in report.files]
    assert names == ["teacher-fp32", "teacher-int8-dynamic", "teacher-int8-static-minmax",
                     "L1-fp32", "L1-int8-dynamic", "L1-int8-static-minmax"]


def test_teacher_retention_is_100(tiny_run):
    # setup
    report, _ = tiny_run
    teacher = report.files[0]
    # assert
    assert teacher["retention"] == {"sentiment": 100.0, "pairs": 100.0}


def test_every_row_is_a_file_in_the_run_measured_on_cpu(tiny_run):
    # setup
    report, root = tiny_run
    run = root / "run"
    # assert
    for row in report.files:
        assert (run / row["onnx"]).is_file() and row["provider"] == "cpu"


def test_every_row_has_ordered_latency_percentiles(tiny_run):
    # setup
    report, _ = tiny_run
    # assert
    for row in report.files:
        assert row["latency_ms"]["p50"] <= row["latency_ms"]["p95"] <= row["latency_ms"]["p99"]


def test_every_row_scores_and_retains_every_task(tiny_run):
    # setup
    report, _ = tiny_run
    # assert
    for row in report.files:
        assert set(row["metrics"]) == set(row["retention"]) == {"sentiment", "pairs"}


def test_every_row_meets_the_loose_budget_and_counts_its_params(tiny_run):
    # setup
    report, _ = tiny_run
    # assert
    for row in report.files:
        assert row["meets_budget"] and row["params"] > 0


def test_student_rows_record_architecture_probe_undistilled_scores_and_refit_heads(tiny_run):
    # setup
    report, _ = tiny_run
    students = [row for row in report.files if row["student"] == "L1"]
    # assert
    for row in students:
        assert row["architecture"]["keep"] == [0] and row["probe_latency_ms"]["p95"] > 0
        assert set(row["undistilled_metrics"]) == {"sentiment", "pairs"}
        assert row["distillation"]["heads_refit"] == {"sentiment": 300}  # its own head, on its embeddings


def test_static_int8_is_calibrated_on_16_batches(tiny_run):
    # setup
    _, root = tiny_run
    quantized = json.loads((root / "run" / "candidates/L1/quantization.json").read_text())
    # assert
    assert quantized["int8-static-minmax"]["calibration"]["batches"] == 16


# the accuracy-aware int8 step: what it says each int8-dynamic file loses is what the file scores

def test_teacher_int8_files_get_no_accuracy_aware_record(tiny_run):
    # setup
    report, _ = tiny_run
    # assert
    assert "accuracy_aware" not in next(r for r in report.files if r["name"] == "teacher-int8-dynamic")


def test_accuracy_aware_drops_are_the_int8_files_scores_against_its_fp32_file(tiny_run):
    # setup
    report, _ = tiny_run
    fp32, int8 = (file_row(report, f"L1-{v}") for v in ("fp32", "int8-dynamic"))
    record = int8["accuracy_aware"]
    # assert
    assert record["max_drop"] == 1.0
    assert record["drops"] == drops({t: m["value"] for t, m in fp32["metrics"].items()},
                                    {t: m["value"] for t, m in int8["metrics"].items()})
    assert record["fits"] == (max(record["drops"].values()) <= 1.0)


def test_accuracy_aware_keeps_fp32_nodes_only_after_a_search_that_fits_and_they_are_fp32_in_the_file(tiny_run):
    # setup
    report, root = tiny_run
    run = root / "run"
    int8 = file_row(report, "L1-int8-dynamic")
    record = int8["accuracy_aware"]
    kept = record["kept_fp32"]
    # assert
    assert (not kept) == ("sensitivity" not in record or not record["fits"])
    assert not set(kept) & set(quantized_matmuls(run / int8["onnx"]))  # kept nodes are fp32 in the file


# the pick: the most accurate file on its worst task, and on the Pareto frontier

def test_the_pick_is_recorded_per_provider_and_returned(tiny_run, report_json):
    # setup
    report, _ = tiny_run
    data = report_json
    # assert
    assert data["picks"] == {"cpu": data["selected"]["name"]} and report.selected == data["selected"]


def test_the_pick_is_on_the_pareto_frontier(tiny_run, report_json):
    # setup
    report, _ = tiny_run
    chosen = file_row(report, report_json["selected"]["name"])
    # assert
    assert chosen["pareto"]


def test_the_pick_is_the_most_accurate_file_on_its_worst_task_or_a_faster_one_tied_with_it(tiny_run, report_json):
    # setup
    report, root = tiny_run
    decision = report_json["decision"]["cpu"]
    worst = {r["name"]: r["retention"]["sentiment"] for r in report.files if r["meets_budget"] and r["pareto"]}
    # assert: the top of the rank, or one within noise of it on every task (select.py), said in report.md
    assert worst[decision["top"]] == max(worst.values()) and decision["ships"] == report_json["selected"]["name"]
    assert decision["ships"] == decision["top"] or decision["ships"] in decision["tied"]
    assert decision["statement"] in (root / "run" / "report.md").read_text()


def test_gap_report_of_the_pick_covers_every_task_with_hardest_examples_and_slices(report_json):
    # setup
    data = report_json
    # assert: the gap report of the pick, per task
    assert set(data["gap"]) == {"sentiment", "pairs"}
    assert data["gap"]["sentiment"]["hardest"]["examples"] and data["gap"]["sentiment"]["slices"]


# the bundle: the chosen file with one output per task, tokenizer and labels beside it

def test_bundle_model_has_the_embedding_and_one_output_per_head(tiny_run):
    # setup
    _, root = tiny_run
    session = ort.InferenceSession(str(root / "run" / "bundle" / "model.onnx"))
    # assert
    assert [o.name for o in session.get_outputs()] == ["embedding", "sentiment_logits"]


def test_bundle_has_labels_and_the_tokenizer_beside_the_model(tiny_run):
    # setup
    _, root = tiny_run
    bundle = root / "run" / "bundle"
    # assert
    assert json.loads((bundle / "labels.json").read_text()) == {"sentiment": ["fresh", "rotten"]}
    assert (bundle / "tokenizer.json").is_file() or (bundle / "vocab.txt").is_file()


# report.md and report.html

def test_report_md_lists_teacher_and_student_files(tiny_run):
    # setup
    _, root = tiny_run
    markdown = (root / "run" / "report.md").read_text()
    # assert
    assert "teacher-int8-dynamic" in markdown and "L1-int8-static-minmax" in markdown


def test_report_md_says_what_distillation_bought_and_that_it_may_not_match_the_teacher(tiny_run):
    # setup
    _, root = tiny_run
    markdown = (root / "run" / "report.md").read_text()
    # assert
    assert "What distillation bought" in markdown and "not guaranteed to match the teacher" in markdown


def test_report_md_says_how_the_students_head_was_refit(tiny_run):
    # setup
    _, root = tiny_run
    markdown = (root / "run" / "report.md").read_text()
    # assert
    assert "sentiment head refit on the student's embeddings of 300 training texts" in markdown


def test_report_md_has_the_accuracy_aware_int8_section(tiny_run):
    # setup
    _, root = tiny_run
    markdown = (root / "run" / "report.md").read_text()
    # assert
    assert "## Accuracy-aware int8" in markdown and "- L1-int8-dynamic: all-int8 against fp32: sentiment " in markdown


def test_report_html_has_one_chart_and_loads_nothing_from_the_network(tiny_run):
    # setup
    _, root = tiny_run
    page = (root / "run" / "report.html").read_text()
    # assert
    assert page.count("<svg") == 1 and "http://" not in page.replace("http://www.w3.org", "")


def test_nothing_half_written_is_left_beside_the_run(tiny_run):
    # setup
    _, root = tiny_run
    # assert
    assert sorted(p.name for p in root.iterdir()) == ["cache", "run"]


def test_sweep_reuses_every_measurement_and_picks_per_budget(tiny_run, tiny_bert, tmp_path):
    # setup: the single run's cache is warm
    report, root = tiny_run
    messages = []
    # execute
    swept = sweep(tiny_recipe(tiny_bert), [0.0001, 1000], out=tmp_path / "sweep", cache_dir=root / "cache",
                  echo=messages.append)
    # assert: nothing retrained, the same files measured, and the loose budget ranks the most accurate first
    # (the pick may be a faster file within noise of it, so the name itself depends on timing noise)
    assert not any(m.startswith("  distilling") or "resuming" in m for m in messages)
    assert [r["name"] for r in swept.files] == [r["name"] for r in report.files]
    tight, loose = swept.data["sweep"]
    assert tight["pick"] is None and "raise budget.ms" in tight["why"]
    assert (tight["budget"], loose["budget"]) == ("0.0001 ms", "1000 ms")
    top = next(r for r in swept.files if r["name"] == loose["decision"]["top"])
    fitting = [r for r in swept.files if r["meets_budget"] and r["pareto"]]  # the recipe's budget is the loose one
    assert min(top["retention"].values()) == max(min(r["retention"].values()) for r in fitting)
    assert loose["pick"] == loose["decision"]["ships"]
    assert loose["min_retention"] == min(loose["retention"].values())
    assert not (tmp_path / "sweep" / "bundle").exists()
    page = (tmp_path / "sweep" / "report.html").read_text()
    assert page.count("<svg") == 2 and "Sweep: the pick at each budget" in page


def test_rerun_reuses_the_cache_and_gives_the_same_metrics(tiny_run, tiny_bert, tmp_path):
    # setup
    report, root = tiny_run
    messages = []
    # execute
    again = distill_and_export(tiny_recipe(tiny_bert), out=tmp_path / "again", cache_dir=root / "cache",
                               echo=messages.append)
    # assert: nothing trained, exported, quantized, scored or timed again; the same figures
    assert not any("fine-tuning" in m or "resuming" in m or "distilling" in m for m in messages)
    assert "  teacher: exported and quantized files from the cache" in messages
    assert "  L1: exported and quantized files from the cache" in messages
    first = {row["name"]: (row["metrics"], row["latency_ms"]["p95"]) for row in report.files}
    assert {row["name"]: (row["metrics"], row["latency_ms"]["p95"]) for row in again.files} == first
    assert all(row["latency_ms"]["cached"] for row in again.files)
    assert "retimed_with_students_ms" not in again.data["budget"]["teacher"]  # nothing new was timed
    for row in again.files:  # the files themselves are the same bytes
        assert (tmp_path / "again" / row["onnx"]).read_bytes() == (root / "run" / row["onnx"]).read_bytes()


def test_a_relative_budget_is_the_teachers_measured_latency_over_the_speedup(tiny_run, tiny_bert, tmp_path):
    # setup: a tiny student is not much faster than a tiny teacher: a speed-up of 0.5 (twice as slow as the
    # teacher is fine) fits every file, one of 1e6 none
    _, root = tiny_run
    # execute
    loose = distill_and_export(tiny_recipe(tiny_bert, budget={"speedup": 0.5}), out=tmp_path / "loose",
                               cache_dir=root / "cache", echo=print)
    swept = sweep(tiny_recipe(tiny_bert), ["x1000000", "x0.5"], out=tmp_path / "sweep", cache_dir=root / "cache",
                  echo=print)
    # assert: the limit is derived from the teacher's fp32 file as measured (here: from the cache)
    budget = loose.data["budget"]
    teacher_ms = loose.files[0]["latency_ms"]["p95"]
    assert budget["speedup"] == 0.5 and budget["label"] == "x0.5" and budget["teacher"]["ms"] == teacher_ms
    assert budget["ms"] == teacher_ms / 0.5 and budget["limit_ms"] == pytest.approx(teacher_ms / 0.5 * 0.9)
    assert all(row["meets_budget"] == (row["latency_ms"]["p95"] <= budget["limit_ms"]) for row in loose.files)
    assert loose.selected is not None
    assert "x0.5 faster than the teacher's fp32 file (teacher/model.onnx" in (tmp_path / "loose/report.md").read_text()
    # a sweep mixes relative budgets; the tight one says which speed-up would fit
    tight, easy = swept.data["sweep"]
    assert (tight["budget"], easy["budget"]) == ("x1e+06", "x0.5") and tight["ms"] < easy["ms"]
    assert tight["pick"] is None and "lower budget.speedup to at most" in tight["why"]
    assert easy["pick"] is not None


def test_impossible_budget_names_the_fastest_and_the_fix(tiny_bert, warm_cache, tmp_path):
    # setup: on a copy of the finished tiny run's cache (its teacher's files and the probes' timings)
    recipe = tiny_recipe(tiny_bert, budget={"ms": 0.0001})
    # execute
    with pytest.raises(BudgetNotMet) as error:
        distill_and_export(recipe, out=tmp_path / "run", cache_dir=warm_cache("impossible"), echo=print)
    # assert
    message = str(error.value)
    assert "The fastest, L1" in message and "raise budget.ms to at least" in message
    assert "Nothing was trained" in message and not (tmp_path / "run").exists()


def test_missing_data_file_is_found_before_any_work(tiny_bert, tmp_path):
    # setup
    recipe = tiny_recipe(tiny_bert, tasks=[{"name": "s", "kind": "classification",
                                            "data": {"source": str(tmp_path / "reviews.csv")}}])
    # execute
    with pytest.raises(RecipeError, match="reviews.csv"):
        distill_and_export(recipe, out=tmp_path / "run", cache_dir=tmp_path / "cache", echo=print)
    # assert
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()


def test_image_teacher_trained_here_and_distilled(tmp_path):
    # setup
    from edgekit.stages.loading import recipe_from_dict

    recipe = recipe_from_dict({
        "name": "digits-tiny",
        "target": "arm64-phone",
        "teacher": {"model": "edgekit:cnn", "kind": "image-classifier", "head": "finetune", "width": 8, "depth": 2,
                    "epochs": 3, "lr": 3e-3, "batch_size": 64},
        "tasks": [{"name": "digits", "kind": "image-classification", "data": {"source": "digits"}}],
        "students": {"widths": [4], "depths": [1]},
        "budget": {"ms": 1000, "min_runs": 50, "min_seconds": 0},
        "distill": {"losses": [{"name": "kl"}, {"name": "ce"}], "epochs": 2, "batch_size": 64, "lr": 3e-3},
        "quantize": {"variants": []},
    })
    # execute
    report = distill_and_export(recipe, out=tmp_path / "run", cache_dir=tmp_path / "cache", echo=print)
    # assert
    teacher_row, student = report.files
    teacher = teacher_row["metrics"]["digits"]["value"]
    assert teacher > 0.5  # trained from scratch: far above chance (0.1) after 3 epochs
    assert student["name"] == "cnn-w4-d1-fp32" and student["metrics"]["digits"]["value"] > 0.1
    assert report.data["teacher"]["prepared"]["digits"]["head"] == "finetune"
    # the phone bundle of an image model: fixed batch, preprocessing spec, and it verifies
    from edgekit.trust.verify import verify_bundle

    bundle = tmp_path / "run" / "bundle"
    assert verify_bundle(bundle)["models"] == ["model.onnx", "model.fixed.onnx", "model.ort"]
    spec = json.loads((bundle / "preprocessing.json").read_text())
    assert spec["input"] == "pixel_values" and spec["layout"] == "NCHW"
    fixed = ort.InferenceSession(str(bundle / "model.fixed.onnx")).get_inputs()[0]
    assert fixed.shape == [1, 1, 8, 8]


def test_cli_runs_a_recipe_file_and_reports_budget_misses(run_cli, tiny_bert, warm_cache, tmp_path):
    # setup: on a copy of the finished tiny run's cache
    recipe = tiny_recipe(tiny_bert, budget={"ms": 0.0001}).model_dump(mode="json")
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(recipe))
    # execute
    result = run_cli("distill-and-export", path, "--out", tmp_path / "run", "--cache-dir", warm_cache("cli-miss"))
    # assert
    assert result.exit_code == 2
    assert "error: no candidate meets p95 <= 0.0001 ms" in result.output and "Traceback" not in result.output


def test_killed_during_distillation_resumes_to_the_same_result(tiny_bert, warm_cache, tmp_path):
    # setup: a recipe long enough to kill mid-way, run as a real process; the killed and the straight run each on a
    # copy of the finished tiny run's cache (its teacher's outputs, files and timings, and the probes: their 6-epoch
    # student is not in it, so distillation runs, is killed, resumes, and runs straight through)
    import signal
    import subprocess
    import sys
    import time

    recipe = tiny_recipe(tiny_bert, distill={"epochs": 6, "checkpoint_every": 5}).model_dump(mode="json")
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(recipe))
    cache, other_cache = warm_cache("killed"), warm_cache("straight")
    command = [sys.executable, "-m", "edgekit.cli", "distill-and-export", str(path), "--cache-dir", str(cache)]
    # execute: kill as soon as the first checkpoint is on disk, then rerun
    process = subprocess.Popen([*command, "--out", str(tmp_path / "killed")], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not list(cache.glob("students/*/checkpoint.pt")) and time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read()
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    resumed = subprocess.run([*command, "--out", str(tmp_path / "resumed")], capture_output=True, text=True,
                             check=False)
    subprocess.run([*command[:-1], str(other_cache), "--out", str(tmp_path / "straight")],
                   capture_output=True, check=True)
    # assert
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming distilling L1 at step" in resumed.stderr
    assert not (tmp_path / "killed").exists()

    def metrics(run):
        rows = json.loads((tmp_path / run / "report.json").read_text())["files"]
        return {row["name"]: row["metrics"] for row in rows}

    assert metrics("resumed") == metrics("straight")


def test_fine_tuned_classifier_teacher_with_logit_distillation_at_task_lengths(tiny_bert, tmp_path):
    # setup: the minilm-sentiment recipe's path, on the tiny model and texts it can learn
    sentiment, _ = tiny_task_files(tmp_path / "tasks")
    recipe = tiny_recipe(
        tiny_bert,
        teacher={"kind": "sequence-classifier", "head": "finetune", "epochs": 4, "lr": 3e-3, "batch_size": 16},
        tasks=[{"name": "sentiment", "kind": "classification", "data": {"source": str(sentiment)},
                "split": {"max_train": 200, "max_test": 80}}],
        budget={"seq_len": "task"}, quantize={"variants": []},
        distill={"losses": [{"name": "kl", "temperature": 2.0}, {"name": "ce", "weight": 0.5}]})
    # execute
    report = distill_and_export(recipe, out=tmp_path / "run", cache_dir=tmp_path / "cache", echo=print)
    # assert
    assert report.data["teacher"]["prepared"]["sentiment"]["head"] == "finetune"
    _, candidate = report.files
    session = ort.InferenceSession(str(tmp_path / "run" / candidate["onnx"]))
    assert [o.name for o in session.get_outputs()] == ["sentiment_logits"]
    timing = json.loads((tmp_path / "run" / candidate["onnx"]).with_suffix(".bench.json").read_text())
    assert timing["inputs"]["mode"] == "lengths_from" and timing["inputs"]["truncated_at"] == 64
    assert len(candidate["latency_ms"]["rounds"]) == 3


def test_gap_report_matches_an_independent_recomputation(tiny_run):
    # setup: plain onnxruntime scoring of the files the gap report compares (bench/check_run.py)
    from transformers import AutoTokenizer

    from bench.check_run import check_gap, score_file
    from edgekit.data.tasks import load_task_data
    from edgekit.stages.loading import recipe_from_dict

    report, root = tiny_run
    run = root / "run"
    tasks = [load_task_data(spec) for spec in recipe_from_dict(report.data["recipe"]).tasks]
    tokenizer = AutoTokenizer.from_pretrained(run / "bundle")
    # execute
    scored = {row["name"]: score_file(run / row["onnx"], tasks, tokenizer, 64, 1) for row in report.files}
    checks = check_gap(report.data, scored, tasks)
    # assert: flips (both causes when the pick is quantized) and the hardest slice agree
    assert checks and all(c["ok"] for c in checks), checks



REAL_TASKS = [{"name": "sentiment", "kind": "classification", "data": {"source": "rotten_tomatoes"},
               "split": {"max_train": 300, "max_test": 120}},
              {"name": "lee", "kind": "similarity", "data": {"source": "lee"}, "split": {"eval_only": True}}]


def test_a_teacher_no_better_than_chance_stops_the_run_before_any_training(tiny_bert, tmp_path):
    # setup: on real reviews and Lee, the tiny random teacher answers one class and its similarities have no
    # relation to the human scores
    recipe = tiny_recipe(tiny_bert, tasks=REAL_TASKS)
    messages = []
    # execute
    with pytest.raises(TeacherTooWeak) as error:
        distill_and_export(recipe, out=tmp_path / "run", cache_dir=tmp_path / "cache", echo=messages.append)
    # assert: named per task with the trivial predictor's score, before any probe or training, nothing written
    message = str(error.value)
    assert "lee: the teacher's spearman is" in message and "not above a score with no relation" in message
    assert "teacher.allow_weak: true" in message and "Nothing was distilled" in message
    assert not any(m.startswith("[3/7") or "distilling" in m for m in messages)
    assert not (tmp_path / "run").exists()


def test_with_allow_weak_a_file_no_better_than_trivial_still_never_ships(tiny_bert, tmp_path):
    # setup: the same random teacher on real data, run anyway (a smoke test), with the fewest timed runs the budget
    # allows (every file meets its loose latency however timed)
    recipe = tiny_recipe(tiny_bert, tasks=REAL_TASKS, teacher={"allow_weak": True},
                         budget={"min_runs": 20, "rounds": 1})
    messages = []
    # execute
    with pytest.raises(BudgetNotMet) as error:
        distill_and_export(recipe, out=tmp_path / "run", cache_dir=tmp_path / "cache", echo=messages.append)
    # assert: every file meets the latency, none ships, and the report shows the baseline beside each metric
    assert "no better than the trivial answer on some task, and such a file never ships" in str(error.value)
    assert any("warning (teacher.allow_weak): lee:" in m for m in messages)
    data = json.loads((tmp_path / "run" / "report.json").read_text())
    assert data["selected"] is None and data["files"] and not any(row["meets_budget"] for row in data["files"])
    assert all(not row["trivial"]["lee"]["ships"] for row in data["files"])
    assert data["files"][0]["retention"]["lee"] is None  # the teacher scores <= 0: a ratio means nothing
    lee = next(t for t in data["tasks"] if t["name"] == "lee")
    assert lee["trivial"] == {"value": 0.0, "who": "a score with no relation to the gold scores"}
    markdown = (tmp_path / "run" / "report.md").read_text()
    assert "lee spearman [95% CI] (retention); trivial 0.000" in markdown and "- no better than trivial" in markdown
    assert "Teacher on lee:" in markdown


def test_a_quality_floor_keeps_files_that_lost_too_much_from_shipping(tiny_run, tiny_bert, tmp_path):
    # setup: the single run's cache is warm; a floor no file can meet, and one per task that they all meet
    _, root = tiny_run
    # execute
    with pytest.raises(BudgetNotMet) as error:
        distill_and_export(tiny_recipe(tiny_bert, budget={"min_retention": 101}), out=tmp_path / "strict",
                           cache_dir=root / "cache", echo=print)
    loose = distill_and_export(tiny_recipe(tiny_bert, budget={"min_retention": {"sentiment": 1}}),
                               out=tmp_path / "loose", cache_dir=root / "cache", echo=print)
    # assert: the teacher's own files keep 100% < 101%, students less: nothing fits, the run folder says why
    message = str(error.value)
    assert "none keeps budget.min_retention on every task" in message and "% < 101%" in message
    assert "distill.epochs" in message and "lower budget.min_retention" in message
    strict = json.loads((tmp_path / "strict/report.json").read_text())
    assert strict["selected"] is None and not any(row["meets_budget"] for row in strict["files"])
    assert loose.selected is not None
