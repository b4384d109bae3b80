"""The cosine scale (edgekit.stages.score_scale): the shift of a file's cosines from the teacher's, the thresholds matched
on pairs that are not test pairs, and what the report and the bundle state of them."""

import json
import shutil
from types import SimpleNamespace

import numpy as np
import onnx
import pytest

from edgekit.data.kinds import kind_of
from edgekit.errors import BundleError
from edgekit.stages import score_scale
from edgekit.stages.score_scale import (
    ABOVE,
    MIN_FIT_PAIRS,
    decisions,
    distribution,
    fit_pairs,
    fit_scale,
    matched_threshold,
    sample_pairs,
    scale_problems,
    task_scale,
    teacher_thresholds,
)


def _squeezed(teacher):
    """A file whose cosine is the teacher's squeezed up: same order, other scale (what the issue saw on Lee)."""
    return 0.6 * np.asarray(teacher) + 0.43


@pytest.fixture
def cosines():
    rng = np.random.default_rng(1)
    teacher_test, teacher_fit = np.clip(rng.normal(0.4, 0.15, 800), -1, 1), np.clip(rng.normal(0.4, 0.15, 3000), -1, 1)
    return teacher_test, _squeezed(teacher_test), teacher_fit, _squeezed(teacher_fit)


# --- the numbers, where the answer is known -----------------------------------------------------------------


def test_distribution_of_known_cosines():
    # execute
    d = distribution([0.1, 0.4, 0.5, 0.9])
    # assert
    assert d["n"] == 4 and d["mean"] == pytest.approx(0.475) and d["above_0.5"] == 0.5  # 0.5 itself is at or above
    assert d["p50"] == pytest.approx(0.45) and d["std"] == pytest.approx(np.std([0.1, 0.4, 0.5, 0.9]))


def test_a_squeezed_file_keeps_the_teachers_decisions_only_at_the_matched_threshold(cosines):
    # setup
    teacher_test, file_test, teacher_fit, file_fit = cosines
    # execute
    entry = task_scale(teacher_test, file_test, (teacher_fit, file_fit), "synthetic pairs")
    # assert: the map is exactly file = 0.6 teacher + 0.43, so the line inverts it and every matched threshold is
    # the teacher's mapped through it
    assert entry["linear"]["slope"] == pytest.approx(1 / 0.6) and entry["linear"]["intercept"] == pytest.approx(
        -0.43 / 0.6) and entry["linear"]["r2"] == pytest.approx(1)
    at_half = next(t for t in entry["thresholds"] if t["teacher"] == ABOVE)
    assert entry["headline"] == ABOVE
    assert at_half["file"] == pytest.approx(0.6 * 0.5 + 0.43, abs=0.005)
    assert at_half["file_linear"] == pytest.approx(0.73)
    # the shift the issue describes: most pairs above 0.5 for the file, a quarter for the teacher
    assert entry["shift"]["file"]["mean"] - entry["shift"]["teacher"]["mean"] == pytest.approx(0.43 - 0.4 * 0.4,
                                                                                                abs=0.02)
    assert entry["shift"]["teacher"]["above_0.5"] < 0.3 and entry["shift"]["file"]["above_0.5"] > 0.9
    # raw, the file calls alike what the teacher calls apart; matched, it decides (nearly) every pair alike
    assert at_half["agree_raw"] < 0.35
    assert at_half["agree_matched"] > 0.98 and at_half["agree_linear"] == pytest.approx(1)
    assert at_half["teacher_above"] == pytest.approx(np.mean(teacher_test >= 0.5))
    assert "at the teacher's 0.5" in score_scale.statement(entry) and "0.730" in score_scale.statement(entry)


def test_matched_threshold_keeps_the_share_of_pairs_above():
    # setup: any monotone map, here a square: the match is by rank, not by a line
    teacher = np.linspace(0, 1, 1001)
    file = teacher ** 2
    # execute
    t = matched_threshold(teacher, file, 0.7)
    # assert
    assert t == pytest.approx(0.49, abs=0.002)
    assert np.mean(file >= t) == pytest.approx(np.mean(teacher >= 0.7), abs=0.002)


def test_teacher_thresholds_are_round_split_the_pairs_and_include_one_half():
    # execute
    found = teacher_thresholds(np.linspace(0.2, 0.8, 601))
    # assert
    assert ABOVE in found and found == sorted(found)
    assert all(abs(t / 0.05 - round(t / 0.05)) < 1e-9 for t in found)
    assert found == [0.25, 0.35, 0.5, 0.65, 0.75]


def test_a_teacher_with_every_pair_above_one_half_gets_no_0_5_and_unrounded_thresholds_where_needed():
    # setup: a tiny random teacher's cosines, all in [0.91, 0.93]: rounding to 0.05 would leave nothing to split
    fit = np.linspace(0.91, 0.93, 201)
    # execute
    found = teacher_thresholds(fit)
    # assert
    assert ABOVE not in found and found
    assert all(0 < np.mean(fit >= t) < 1 for t in found)


def test_without_fit_pairs_only_the_raw_agreement_at_one_half_is_stated(cosines):
    # setup
    teacher_test, file_test, _, _ = cosines
    # execute
    entry = task_scale(teacher_test, file_test, None, "task 'x' has no training pairs and no distillation texts")
    # assert
    assert entry["fitted_on"] is None and entry["knots"] is None and entry["linear"] is None
    assert [t["teacher"] for t in entry["thresholds"]] == [ABOVE]
    assert entry["thresholds"][0]["file"] is None and entry["thresholds"][0]["agree_matched"] is None
    assert "no threshold matched: task 'x' has no training pairs" in score_scale.statement(entry)


def test_decisions_count_agreement_both_ways():
    # setup: teacher says alike, apart, alike, apart; the file at 0.5: alike, alike, apart, apart
    teacher, file = np.array([0.6, 0.4, 0.7, 0.1]), np.array([0.9, 0.8, 0.3, 0.2])
    # execute
    d = decisions(teacher, file, 0.5, 0.85, None)
    # assert
    assert d["agree_raw"] == 0.5  # pairs 0 and 3
    assert d["agree_matched"] == 0.75  # at 0.85 the file says alike, apart, apart, apart: pairs 0, 1 and 3
    assert d["agree_linear"] is None and d["teacher_above"] == 0.5 and d["file_above_matched"] == 0.25


def test_fit_scale_knots_are_a_monotone_map(cosines):
    # setup
    _, _, teacher_fit, file_fit = cosines
    # execute
    knots = fit_scale(teacher_fit, file_fit)["knots"]
    # assert: np.interp through them maps the file's cosine back to the teacher's
    assert len(knots["file"]) == len(knots["teacher"]) == score_scale.KNOTS
    assert np.all(np.diff(knots["file"]) >= 0)
    assert np.interp(0.73, knots["file"], knots["teacher"]) == pytest.approx(0.5, abs=0.005)


# --- which pairs ----------------------------------------------------------------------------------------------


def _task(kind: str, train: dict, test: dict, name: str = "t"):
    return SimpleNamespace(name=name, spec=SimpleNamespace(kind=kind), kind=kind_of(kind), train=train, test=test)


def test_a_task_with_training_pairs_is_fitted_on_them_never_on_test_pairs():
    # setup
    train = {"text_a": [f"a{i}" for i in range(200)], "text_b": [f"b{i}" for i in range(200)], "score": np.ones(200)}
    test = {"text_a": ["test a"], "text_b": ["test b"], "score": np.ones(1)}
    # execute
    (left, right, cross), words = fit_pairs(_task("similarity", train, test), ["d1", "d2"])
    # assert
    assert not cross and len(left) == 200 and left[0] == "a0" and right[0] == "b0"
    assert "200 training pairs of task 't'" in words


def test_a_task_without_training_pairs_is_fitted_on_pairs_of_distillation_texts():
    # setup: eval_only: no training split
    texts = [f"text {i}" for i in range(300)]
    test = {"text_a": ["test a"], "text_b": ["test b"], "score": np.ones(1)}
    # execute
    (left, right, cross), words = fit_pairs(_task("similarity", {}, test), texts)
    # assert: two disjoint halves crossed
    assert cross and len(left) == len(right) == score_scale.FIT_TEXTS // 2 and not set(left) & set(right)
    assert set(left) | set(right) <= set(texts)
    assert "2,304 pairs of distillation texts" in words and "has no training pairs" in words


def test_too_few_texts_to_fit_on_say_so():
    # execute
    pairs, why = fit_pairs(_task("similarity", {}, {}), ["one", "two", "three"])
    # assert
    assert pairs is None and "too few texts (3)" in why
    assert MIN_FIT_PAIRS > 2


def test_retrieval_thresholds_every_query_against_every_document_sampled():
    # setup
    from edgekit.data.kinds import kind_of

    columns = {"query": [f"q{i}" for i in range(300)], "document": [f"d{i}" for i in range(300)]}
    # execute
    left, right, cross = sample_pairs(kind_of("retrieval").cosine_pairs(columns))
    # assert: the same rows on both sides, so each sampled query's own document is among the candidates
    assert cross and len(left) == len(right) == score_scale.MAX_SIDE
    assert [q[1:] for q in left] == [d[1:] for d in right]
    assert kind_of("classification").cosine_pairs({"text": ["x"], "label": [0]}) is None


def test_pair_cosines_run_the_file_and_are_cached(finished_run, tmp_path):
    # setup: the run's teacher file (its `embedding` output) and tokenizer
    from transformers import AutoTokenizer

    from edgekit.trust.cache import Cache

    run = finished_run / "run"
    data = json.loads((run / "report.json").read_text(encoding="utf-8"))
    teacher = run / next(r["onnx"] for r in data["files"] if r["name"] == "teacher-fp32")
    scoring = SimpleNamespace(measurement=SimpleNamespace(options_for=lambda provider: {}), max_length=32, batch=2,
                              tokenizer=AutoTokenizer.from_pretrained(run / "tokenizer"))
    cache = Cache(tmp_path / "cache")
    texts = ["a good film", "a bad film", "the plot is thin"]
    # execute
    same = score_scale.pair_cosines(teacher, "cpu", (texts, texts, False), scoring, cache)
    cross = score_scale.pair_cosines(teacher, "cpu", (texts[:2], texts, True), scoring, cache)
    again = score_scale.pair_cosines(teacher, "cpu", (texts[:2], texts, True), scoring, cache)
    # assert
    assert same == pytest.approx(np.ones(3), abs=1e-5)
    assert cross.shape == (6,) and cross[0] == pytest.approx(1, abs=1e-5) and cross[4] == pytest.approx(1, abs=1e-5)
    assert np.array_equal(cross, again) and len(list((tmp_path / "cache" / "cosines").iterdir())) == 2


def test_scale_problems_name_what_a_bundle_cannot_read():
    # assert
    assert scale_problems(None) == []
    assert scale_problems([1]) == ["score_scale is neither null nor an object {what, file, provider, teacher, tasks}"]
    bad = {"what": "w", "file": "f", "provider": "cpu", "teacher": "t", "tasks": {"lee": {"thresholds": [{}]}}}
    assert scale_problems(bad) == ["score_scale.tasks.lee.thresholds is not an array of {teacher, file} cosines"]


# --- a finished run: the report and the bundle --------------------------------------------------------------


def _scale(finished_run) -> tuple[dict, dict]:
    data = json.loads((finished_run / "run" / "report.json").read_text(encoding="utf-8"))
    return data, data["score_scale"]


def test_the_report_shows_the_shipped_files_cosine_shift_per_similarity_task(finished_run):
    # setup
    data, scale = _scale(finished_run)
    similarity = [t["name"] for t in data["tasks"] if t["kind"] == "similarity"]
    # assert: one entry per similarity task, of the shipped file against the teacher's fp32 file
    assert similarity and sorted(scale["tasks"]) == sorted(similarity)
    assert scale["file"] == data["selected"]["name"] and scale["provider"] == data["selected"]["provider"]
    assert scale["teacher"] == "teacher-fp32"
    for entry in scale["tasks"].values():
        files = {f["file"]: f for f in entry["files"]}
        # the shift is the recorded test cosines of those very files
        assert files["teacher-fp32"]["mean"] == pytest.approx(entry["shift"]["teacher"]["mean"])
        assert files["teacher-fp32"]["agree_raw"] == 1
        assert files[scale["file"]]["mean"] == pytest.approx(entry["shift"]["file"]["mean"])
        # fitted on distillation texts (the tiny similarity task is eval_only), never the test pairs
        assert "distillation texts" in entry["fitted_on"] and entry["pairs"] >= MIN_FIT_PAIRS
        thresholds = entry["thresholds"]
        assert thresholds and [t["teacher"] for t in thresholds] == sorted(t["teacher"] for t in thresholds)
        assert [t["file"] for t in thresholds] == sorted(t["file"] for t in thresholds)  # a monotone match
        for t in thresholds:
            assert 0 < t["teacher_above_fit"] < 1 and 0 <= t["agree_raw"] <= 1 and 0 <= t["agree_matched"] <= 1
        assert entry["headline"] in [t["teacher"] for t in thresholds]
    report = (finished_run / "run" / "report.md").read_text(encoding="utf-8")
    for task, entry in scale["tasks"].items():
        assert f"Cosine scale on {task}: {entry['statement']}." in report
    assert "## What a cosine means" in report and "file's matched threshold" in report


def test_the_bundle_states_the_thresholds_matching_the_teachers(finished_run):
    # setup
    _, scale = _scale(finished_run)
    bundle = finished_run / "run" / "bundle"
    manifest = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
    readme = (bundle / "README.md").read_text(encoding="utf-8")
    # assert: the manifest keeps the report's thresholds, the line and the knots
    stated = manifest["score_scale"]
    assert stated["teacher"] == "teacher-fp32" and sorted(stated["tasks"]) == sorted(scale["tasks"])
    for task, entry in stated["tasks"].items():
        assert [(t["teacher"], t["file"]) for t in entry["thresholds"]] == [
            (t["teacher"], t["file"]) for t in scale["tasks"][task]["thresholds"]]
        assert entry["linear"] == scale["tasks"][task]["linear"] and entry["knots"] == scale["tasks"][task]["knots"]
    # the model file itself states them
    props = {p.key: p.value for p in onnx.load(str(bundle / "model.onnx"), load_external_data=False).metadata_props}
    assert props["edgekit.cosine_thresholds"] == manifest["metadata_props"]["edgekit.cosine_thresholds"]
    thresholds = json.loads(props["edgekit.cosine_thresholds"])
    for task, entry in stated["tasks"].items():
        assert thresholds[task] == {f"{t['teacher']:g}": round(t["file"], 4) for t in entry["thresholds"]}
    # and the README, for the person writing the app
    assert "## Cosine thresholds" in readme
    for task, entry in stated["tasks"].items():
        for t in entry["thresholds"]:
            assert f"| {task} | {t['teacher']:g} | {t['file']:.4f} |" in readme


def test_another_file_bundled_after_the_run_says_its_thresholds_were_not_matched(run_copy, tmp_path):
    # setup
    from edgekit.stages.bundle import bundle_from_run

    data = json.loads((run_copy / "report.json").read_text(encoding="utf-8"))
    other = next(r["name"] for r in data["files"] if r["name"] != data["selected"]["name"]
                 and r["provider"] == data["selected"]["provider"] and r["student"] != "teacher")
    # execute
    folder, _ = bundle_from_run(run_copy, other, out=tmp_path / "other")
    # assert
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["score_scale"] is None and "edgekit.cosine_thresholds" not in manifest["metadata_props"]
    assert f"were measured for {data['selected']['name']}, the file the run shipped" in (
        folder / "README.md").read_text(encoding="utf-8")


def test_a_report_with_a_malformed_score_scale_is_refused_naming_it(run_copy, tmp_path):
    # setup
    from edgekit.stages.bundle import bundle_from_run

    report = run_copy / "report.json"
    data = json.loads(report.read_text(encoding="utf-8"))
    task = next(iter(data["score_scale"]["tasks"]))
    data["score_scale"]["tasks"][task]["thresholds"] = "0.5"
    report.write_text(json.dumps(data), encoding="utf-8")
    shutil.rmtree(tmp_path / "out", ignore_errors=True)
    # execute / assert
    with pytest.raises(BundleError, match=f"score_scale.tasks.{task}.thresholds"):
        bundle_from_run(run_copy, data["selected"]["name"], out=tmp_path / "out")
