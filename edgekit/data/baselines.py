"""What a model that learnt nothing scores on each task: the floor every file must clear to be worth shipping.

A teacher trained to chance (an image CNN whose loss never moved, labels that do not match their
texts) still yields students, files, a pick and a retention above 100%: every number is relative to a
teacher that is itself no better than guessing. And a student can keep "94%" of a good teacher by
answering the most frequent class for 378 of 379 test examples: retention hides it, the trivial answer
does not. So every task's metric, the teacher's and every file's, is compared with the best trivial
predictor's:
  accuracy   always answering the most frequent test class (>= chance, 1/K);
  macro_f1   the better of that and answering uniformly at random;
  spearman, pearson   0 (a constant score has no relation to the gold scores);
  mrr, recall@k       a random ranking of the n documents: H_n / n, k / n.
A metric *stands* against that floor in one of three ways:
  clear      the lower end of its bootstrap 95% interval lies above the floor;
  unproven   its value is above the floor, but its interval reaches it: the test set is too small to
             tell that lead from chance;
  none       its value is not above the floor (NaN, an undefined correlation, counts as none).
The teacher: `none` stops the run before any student is trained (teacher.allow_weak runs anyway, a
smoke test); `unproven` runs with a warning naming the test-set size. A file ships only where it stands
`clear`, or, on a task where the teacher itself is `unproven` (a small test set that cannot make anyone
clear), where its value is above the floor by at least LEAD_SHARE of the teacher's lead: it keeps a real
part of what the teacher knows beyond the trivial answer. A file that stands `none` never ships,
whatever teacher.allow_weak says.
"""

from __future__ import annotations

import numpy as np

# On a task where not even the teacher clears the trivial answer's score with 95% confidence, a file must keep
# at least this share of the teacher's lead over it: a student that answers the majority class for all but one
# example (0.657 against 0.654, the teacher 0.69) keeps 8% of that lead and does not ship.
LEAD_SHARE = 0.5


def trivial_baseline(task) -> tuple[float, str]:
    """(the metric a trivial predictor scores on the task's test split, what that predictor is)."""
    metric = task.spec.metric
    if metric in ("accuracy", "macro_f1"):
        labels = np.asarray(task.test["label"], dtype=np.int64)
        k = max(len(task.labels), 1)
        shares = np.bincount(labels, minlength=k) / len(labels)
        majority = int(shares.argmax())
        name = task.labels[majority] if majority < len(task.labels) else str(majority)
        if metric == "accuracy":
            return float(shares.max()), f"always answering the most frequent class ('{name}')"
        majority_f1 = 2 * shares.max() / (1 + shares.max()) / k  # F1 of that class, 0 for the others
        uniform_f1 = float(np.mean([2 * p / k / (p + 1 / k) if p else 0.0 for p in shares]))
        if uniform_f1 > majority_f1:
            return uniform_f1, f"answering one of the {k} classes at random"
        return float(majority_f1), f"always answering the most frequent class ('{name}')"
    if metric in ("spearman", "pearson"):
        return 0.0, "a score with no relation to the gold scores"
    n = len(task.test["query"])
    if metric == "mrr":
        return float(np.sum(1.0 / np.arange(1, n + 1)) / n), f"a random ranking of the {n} documents"
    k = int(metric.split("@")[1])
    return min(k / n, 1.0), f"a random ranking of the {n} documents"


def standing(metric: dict, floor: float) -> str:
    """'clear', 'unproven' or 'none': how a metric record (value, ci95) stands against the trivial floor."""
    value, interval = metric["value"], metric.get("ci95") or [None, None]
    if not value > floor:  # NaN too
        return "none"
    return "clear" if interval[0] is not None and interval[0] > floor else "unproven"


def _test_examples(task) -> int:
    return len(next(iter(task.test.values()), []))


def floors(tasks) -> dict[str, dict]:
    """{task: {"value": the trivial predictor's metric, "who": what that predictor is, "test_examples": n}}."""
    found = {}
    for task in tasks:
        value, who = trivial_baseline(task)
        found[task.name] = {"value": value, "who": who, "test_examples": _test_examples(task)}
    return found


def against_trivial(metrics: dict, teacher_metrics: dict, trivial: dict) -> dict[str, dict]:
    """Per task, how a file's metrics stand against the trivial answer (`trivial`: floors()) and whether that
    lets it ship: {"baseline", "standing", "lead_kept" (% of the teacher's lead over the baseline, None where
    the teacher has none), "ships", "why" (None when it ships)}."""
    found = {}
    for task, metric in metrics.items():
        floor, who = trivial[task]["value"], trivial[task]["who"]
        mine, teacher = standing(metric, floor), standing(teacher_metrics[task], floor)
        teacher_lead = teacher_metrics[task]["value"] - floor
        kept = 100.0 * (metric["value"] - floor) / teacher_lead if teacher_lead > 0 else None
        why = None
        if mine == "none":
            why = f"{metric['value']:.3f}, no better than {who} ({floor:.3f})"
        elif mine == "unproven" and teacher != "unproven":
            why = (f"{metric['value']:.3f}, whose 95% interval reaches the {floor:.3f} of {who}: not clearly better "
                   "than that" + (" (the teacher is)" if teacher == "clear" else ""))
        elif mine == "unproven" and kept is not None and kept < 100 * LEAD_SHARE:
            why = (f"{metric['value']:.3f}: {kept:.0f}% of the teacher's lead over {who} ({floor:.3f}), under the "
                   f"{100 * LEAD_SHARE:.0f}% a file keeps where the test set cannot make anyone clearly better")
        found[task] = {"baseline": floor, "standing": mine, "lead_kept": kept, "ships": why is None, "why": why}
    return found


def weak_tasks(tasks, metrics: dict) -> list[str]:
    """One line per task on which the teacher (its `metrics`: evaluate's records with ci95) is no better than the
    trivial predictor: its value is not above that predictor's."""
    lines = []
    for task in tasks:
        record = metrics[task.name]
        floor, who = trivial_baseline(task)
        if standing(record, floor) == "none":
            lines.append(f"{task.name}: the teacher's {record['metric']} is {record['value']:.4f}, not above {who}, "
                         f"which scores {floor:.4f}")
    return lines


def unproven_tasks(tasks, metrics: dict) -> list[str]:
    """One warning per task on which the teacher is above the trivial predictor but its interval reaches it:
    the test set is too small to tell its lead from chance."""
    lines = []
    for task in tasks:
        record = metrics[task.name]
        floor, who = trivial_baseline(task)
        if standing(record, floor) == "unproven":
            low, high = record["ci95"]
            lines.append(f"{task.name}: the teacher's {record['metric']} {record['value']:.3f} is above {who} "
                         f"({floor:.3f}), but on {_test_examples(task)} test examples its 95% interval "
                         f"[{low:.3f}, {high:.3f}] reaches that score: a lead of {record['value'] - floor:.3f} "
                         "that this test set cannot tell from chance. The run goes on; a file ships on this task "
                         f"only if it keeps at least {100 * LEAD_SHARE:.0f}% of that lead. A larger test split "
                         "(split.test_size, or more rows in the test file) would narrow the interval.")
    return lines
