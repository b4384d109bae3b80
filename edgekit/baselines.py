"""What a model that learnt nothing scores on each task: the floor a teacher must clear to be worth distilling.

A teacher trained to chance (an image CNN whose loss never moved, labels that do not match their
texts) still yields students, files, a pick and a retention above 100%: every number is relative to a
teacher that is itself no better than guessing. So before any student is trained, each task's teacher
metric is compared with the best trivial predictor's:
  accuracy   always answering the most frequent test class (>= chance, 1/K);
  macro_f1   the better of that and answering uniformly at random;
  spearman, pearson   0 (no relation to the gold scores);
  mrr, recall@k       a random ranking of the n documents: H_n / n, k / n.
A teacher is weak on a task when the lower end of its bootstrap 95% interval does not clear that floor.
"""

from __future__ import annotations

import numpy as np


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


def weak_tasks(tasks, metrics: dict) -> list[str]:
    """One line per task on which the teacher (its `metrics`: evaluate's records with ci95) is not clearly
    better than the trivial predictor."""
    lines = []
    for task in tasks:
        record = metrics[task.name]
        floor, who = trivial_baseline(task)
        low = record["ci95"][0]
        if not low > floor:  # NaN (an undefined correlation) counts as weak too
            lines.append(f"{task.name}: the teacher's {record['metric']} is {record['value']:.3f} (95% interval from "
                         f"{low:.3f}), no better than {who}, which scores {floor:.3f}")
    return lines
