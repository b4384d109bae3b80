"""The trivial answer every file is compared with: how a metric stands against it, and which files may ship."""

import numpy as np
import pytest

from edgekit.data.baselines import LEAD_SHARE, against_trivial, standing, trivial_baseline, unproven_tasks, weak_tasks
from edgekit.data.tasks import TaskData
from edgekit.recipe import Budget, DataSpec, TaskSpec
from edgekit.stages.fits import below_trivial, meets_budget


def _reviews(n=379, majority=248):
    """A 3-class review test split whose most frequent class ('positive') is 248 of 379 rows: 0.654."""
    labels = np.array([2] * majority + [0] * ((n - majority) // 2) + [1] * (n - majority - (n - majority) // 2))
    spec = TaskSpec(name="reviews", kind="classification", data=DataSpec(source="unused.csv"))
    return TaskData(spec=spec, train={}, test={"text": ["t"] * n, "label": labels},
                    labels=["negative", "neutral", "positive"])


def _metric(value, low, high, name="accuracy"):
    return {"metric": name, "value": value, "ci95": [low, high]}


def test_the_trivial_answer_of_an_imbalanced_task_is_its_majority_class():
    value, who = trivial_baseline(_reviews())
    assert value == pytest.approx(248 / 379) and "'positive'" in who


@pytest.mark.parametrize(("metric", "expected"), [
    (_metric(0.80, 0.76, 0.84), "clear"), (_metric(0.69, 0.645, 0.735), "unproven"),
    (_metric(0.654, 0.61, 0.70), "none"), (_metric(float("nan"), 0.1, 0.2), "none")])
def test_a_metric_stands_clear_unproven_or_not_at_all(metric, expected):
    assert standing(metric, 0.654) == expected


def test_a_student_answering_the_majority_class_never_ships_though_it_keeps_95_percent():
    # setup: the case: 379 test reviews, the teacher 0.69 [0.645, 0.735] against a majority of 0.654 (its
    # interval reaches it: a small test set); one student said "positive" for 378 of 379 (0.657), one learnt
    floor = {"reviews": {"value": 0.654, "who": "always 'positive'", "test_examples": 379}}
    teacher = {"reviews": _metric(0.69, 0.645, 0.735)}
    majority = {"reviews": _metric(0.657, 0.61, 0.70)}
    learnt = {"reviews": _metric(0.685, 0.64, 0.73)}
    # execute
    refused, kept = against_trivial(majority, teacher, floor)["reviews"], against_trivial(learnt, teacher, floor)
    # assert: 95% retention, but 8% of the teacher's lead over the trivial answer: no ship
    assert 100 * 0.657 / 0.69 > 95 and refused["standing"] == "unproven" and not refused["ships"]
    assert refused["lead_kept"] == pytest.approx(100 * 0.003 / 0.036) and refused["lead_kept"] < 100 * LEAD_SHARE
    assert "8% of the teacher's lead over always 'positive' (0.654)" in refused["why"]
    assert kept["reviews"]["ships"] and kept["reviews"]["lead_kept"] == pytest.approx(100 * 0.031 / 0.036)


def test_where_the_teacher_is_clearly_better_a_file_must_be_too():
    floor = {"reviews": {"value": 0.654, "who": "always 'positive'", "test_examples": 2000}}
    teacher = {"reviews": _metric(0.80, 0.78, 0.82)}
    # execute
    unclear = against_trivial({"reviews": _metric(0.67, 0.65, 0.69)}, teacher, floor)["reviews"]
    clear = against_trivial({"reviews": _metric(0.70, 0.68, 0.72)}, teacher, floor)["reviews"]
    at = against_trivial({"reviews": _metric(0.654, 0.63, 0.67)}, teacher, floor)["reviews"]
    # assert
    assert not unclear["ships"] and "the teacher is" in unclear["why"]
    assert clear["ships"] and clear["why"] is None
    assert not at["ships"] and at["standing"] == "none" and "no better than always 'positive'" in at["why"]


def test_a_file_no_better_than_trivial_never_meets_a_budget():
    # setup: a fast file with full retention, but no better than the trivial answer on one task
    floor = {"lee": {"value": 0.0, "who": "a constant score", "test_examples": 1225}}
    row = {"name": "S64-int8", "latency_ms": {"p95": 0.1}, "size_bytes": 10, "retention": {"lee": 100.0},
           "metrics": {"lee": _metric(-0.01, -0.06, 0.04, "spearman")}}
    row["trivial"] = against_trivial(row["metrics"], row["metrics"], floor)
    budget = Budget(ms=10, min_retention=None)
    # assert
    assert below_trivial(row) == {"lee": "-0.010, no better than a constant score (0.000)"}
    assert not meets_budget(row, budget)
    assert meets_budget({k: v for k, v in row.items() if k != "trivial"}, budget)  # a probe: latency and size only


def test_the_teacher_rule_tells_no_better_from_a_small_test_set():
    # setup: the same reviews, a teacher at the majority score, and one above it whose interval reaches it
    task = _reviews()
    at, above = {"reviews": _metric(0.6535, 0.60, 0.70)}, {"reviews": _metric(0.69, 0.645, 0.735)}
    # execute / assert: the first stops the run, the second warns, naming the test-set size and the interval
    (weak,) = weak_tasks([task], at)
    assert "0.6535, not above always answering the most frequent class ('positive'), which scores 0.6544" in weak
    assert weak_tasks([task], above) == [] and unproven_tasks([task], at) == []
    (warning,) = unproven_tasks([task], above)
    assert "on 379 test examples its 95% interval [0.645, 0.735] reaches that score" in warning
    assert f"at least {100 * LEAD_SHARE:.0f}% of that lead" in warning and "split.test_size" in warning
