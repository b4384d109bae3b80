"""Budget fit, Pareto frontier and pick on hand-made rows whose answers are known."""

import pytest

from edgekit.fits import meets_budget
from edgekit.recipe import Budget
from edgekit.select import closest_miss, pareto_front, pick, to_train
from edgekit.students import Candidate

BUDGET = Budget(ms=10, headroom=0.1)


def _row(name, p95, size, sentiment, lee, teacher=(0.8, 0.5)):
    metrics = {"sentiment": {"value": sentiment}, "lee": {"value": lee}}
    return {"name": name, "latency_ms": {"p95": p95}, "size_bytes": size, "metrics": metrics,
            "retention": {"sentiment": 100 * sentiment / teacher[0], "lee": 100 * lee / teacher[1]}}


ROWS = [
    _row("teacher-fp32", 15.0, 90, 0.80, 0.50),
    _row("teacher-int8", 7.0, 23, 0.79, 0.50),
    _row("L3-fp32", 8.5, 70, 0.76, 0.62),
    _row("L3-int8", 3.4, 18, 0.75, 0.63),
    _row("L2-int8", 2.3, 16, 0.73, 0.61),
    _row("L2-slow", 3.5, 19, 0.73, 0.61),  # dominated by L2-int8: same accuracy, slower, larger
    _row("L1-int8", 1.2, 13, 0.60, 0.40),
]


def test_pareto_front_drops_exactly_the_dominated_rows():
    assert pareto_front(ROWS, BUDGET) == {r["name"] for r in ROWS} - {"L2-slow"}


def test_pick_is_the_best_worst_task_among_fitting_rows_and_on_the_front():
    # teacher-fp32 is over the 9 ms limit; teacher-int8 keeps 98.75% on its worst task, L3-fp32 95%
    chosen = pick(ROWS, BUDGET)
    assert chosen["name"] == "teacher-int8"
    assert chosen["name"] in pareto_front(ROWS, BUDGET)
    tight = pick(ROWS, BUDGET.model_copy(update={"ms": 3}))
    assert tight["name"] == "L2-int8" and meets_budget(tight, BUDGET.model_copy(update={"ms": 3}))


def test_ties_go_to_the_faster_then_the_smaller_file():
    twins = [_row("a", 2.0, 20, 0.7, 0.5), _row("b", 2.0, 10, 0.7, 0.5), _row("c", 3.0, 5, 0.7, 0.5)]
    assert pick(twins, BUDGET)["name"] == "b"
    assert pareto_front(twins, BUDGET) == {"b", "c"}


def test_closest_miss_names_the_fastest_and_the_fixes():
    message = closest_miss(ROWS, BUDGET.model_copy(update={"ms": 1}), "file", int8=False)
    assert "The fastest, L1-int8, measures p95 1.2 ms" in message
    assert "raise budget.ms to at least 1.33" in message and "quantize.variants" in message


@pytest.mark.parametrize(("budgets", "max_students", "expected"), [
    ([10.0], 2, ["L5", "L4"]),
    ([2.0, 4.0, 8.0, 16.0], 2, ["L1", "L3", "L5"]),  # a sweep: the largest feasible per budget, once each
    ([0.5], 2, []),
])
def test_students_to_train(budgets, max_students, expected):
    candidates = [Candidate(f"L{k}", {"layers": k}) for k in range(1, 6)]
    probes = {c.name: {"params": c.arch["layers"], "variants": {
        "int8": {"latency_ms": {"p95": 1.2 * c.arch["layers"]}, "size_bytes": 1}}} for c in candidates}
    budgets = [BUDGET.model_copy(update={"ms": ms}) for ms in budgets]
    assert [c.name for c in to_train(candidates, probes, budgets, max_students)] == expected


def test_a_teachers_file_can_be_the_closest_miss():
    # the teacher's rows carry architecture None
    rows = [{**ROWS[1], "architecture": None}]
    assert "The fastest, teacher-int8" in closest_miss(rows, BUDGET.model_copy(update={"ms": 1}), "file", True)


def test_pick_never_takes_a_dominated_file_when_a_task_has_no_retention():
    # lee's teacher score is <= 0, so retention ignores it: a and b tie on every rank key but b is better on lee
    a = {**_row("a", 2.0, 10, 0.7, -0.1), "retention": {"sentiment": 90.0, "lee": None}}
    b = {**_row("b", 2.0, 10, 0.7, 0.2), "retention": {"sentiment": 90.0, "lee": None}}
    assert pick([a, b], BUDGET)["name"] == "b" and pick([b, a], BUDGET)["name"] == "b"
