"""Where a student loses to its teacher: per class, per input length, on the hardest and the rarest examples.

One overall score hides what a small student gives up. The loss is rarely uniform: it gathers
where the inputs are hard, long or rare, and quantization adds flips of its own. This module
compares the predictions `edgekit.runtime.evaluate.evaluate_onnx` records for the teacher, the student's
fp32 file and the quantized file that ships, and says where they differ.

It works on recorded predictions only (numpy, and scipy's rankdata as edgekit.data.metrics uses it):
no model and no ONNX Runtime, so a report can be redone from saved results in milliseconds.
Every value returned is a plain int, float, str, list, dict or None (an undefined correlation),
so the result goes to json.dumps as is.

Every slice carries 95% intervals: a Wilson score interval for each model's accuracy (sound at any n
and at 0% or 100%, where a bootstrap collapses to a point), a bootstrap for a Spearman or MRR, and a
paired bootstrap of the change (edgekit.data.metrics.paired_scores: teacher and student resampled on the same
examples, the interval of the difference, which two separate intervals overstate); the overall change
has one too. A slice under MIN_SLICE examples is listed but never called "the largest drop", and the
statement says which slices it left out for that. The statement calls the student better or worse on a
slice only where the paired interval of the change excludes zero; elsewhere it says "no significant
difference".

The hardest slice is the kind's (TaskKind.hardness): the examples whose hardness value is lowest, by a
rule that does not pick the teacher's errors by construction (classification: the lowest teacher margin,
right or wrong). "Hardest by teacher loss" did: the teacher scored 0.000 there by definition and any
student looked better on the hardest cases, which says nothing about the student.

What differs by task kind (the gold answers, how an outcome is scored, the slice metric, what counts as a
flip and the words for it) is the kind's, in edgekit.data.kinds; this module only composes it.
"""

from __future__ import annotations

import math

import numpy as np

from edgekit.data import metrics
from edgekit.data.kinds import TaskKind, kind_of
from edgekit.data.tasks import TaskData
from edgekit.errors import DataError
from edgekit.runtime.feeds import token_lengths

TEXT_CHARS = 160  # examples are for a person to read, not to reproduce the data set
ECE_BINS = 10
MIN_HARDEST = 10  # a "hardest" slice smaller than this says nothing
MIN_CORRELATION_SLICE = 10  # rank correlation on fewer pairs is noise
FLIP_MOVE = 0.1  # a correlation kind has no label to flip: a rank move beyond this share of n counts as a flip
# Fewer examples than this and a slice's change says more about chance than about the student: one flipped
# example of 10 moves accuracy by 0.1, and the paired interval of a 10-example slice spans about +-0.2.
MIN_SLICE = 20
RESAMPLES = 1000  # paired bootstrap of each slice's change
Z95 = 1.959963984540054  # two-sided 95% normal quantile (the Wilson interval's z)
# The metric of a slice is the kind's slice_metric: accuracy within a class is that class's recall; macro F1
# or Pearson on a small slice would say more about the slice's size than about the models.


def task_gap(task: TaskData, teacher: dict, student: dict, quantized: dict | None = None,
             lengths: np.ndarray | None = None, hardest_fraction: float = 0.1, max_examples: int = 10) -> dict:
    """Where the shipped student differs from the teacher on one task's test split (see the module docstring).

    `teacher`, `student` and `quantized` are evaluate_onnx's "predictions" for this task on the teacher's
    fp32 file, the student's fp32 file and the student's shipped quantized file (None when fp32 ships).
    `lengths`: tokens of each test example (pairs: the longer side); None for images or when unknown.
    """
    kind, metric = task.kind, task.spec.metric
    if not 0 < hardest_fraction <= 1:
        raise ValueError(f"hardest_fraction must be in (0, 1] (got {hardest_fraction})")
    n = len(task.test[kind.columns[0]])
    gold = _gold(task)
    # The gap is of the file that ships: with a quantized pick, "student" is the quantized file.
    shipped = student if quantized is None else quantized
    models = {"teacher": _outcome(task, teacher, "teacher", n), "student": _outcome(task, shipped, "student", n)}
    if quantized is not None:
        models["student_fp32"] = _outcome(task, student, "student fp32", n)
    fp32 = models.get("student_fp32", models["student"])
    if kind.labelled and teacher.get("probs") is None:
        raise DataError(f"task '{task.name}': the teacher's predictions have no 'probs', which the gap analysis "
                        "needs for losses and margins; re-evaluate the teacher with edgekit.runtime.evaluate.evaluate_onnx, "
                        "which records them for classification tasks.")
    if lengths is not None and len(lengths) != n:
        raise DataError(f"task '{task.name}': {len(lengths)} lengths for {n} test examples; pass one token "
                        "length per test example, in test order.")

    hardness = np.asarray(kind.hardness(task.test, gold, teacher), dtype=np.float64)  # (n,): lower is harder
    # Stable: equal values keep test order, so the slice is reproducible.
    hardest = np.argsort(hardness, kind="stable")[:min(n, max(MIN_HARDEST, round(hardest_fraction * n)))]
    rarest, unmeasured = _rarest(task, gold) if kind.labelled else ([], [])
    slices = _slices(task, gold, models, lengths, hardest, rarest)
    ranked = [s for s in slices if s["change"] is not None and s["n"] >= MIN_SLICE]
    worst = min(ranked, key=lambda s: s["change"], default=None)
    small = [f"{_slice_name(s)} (n={s['n']})" for s in slices if s["n"] < MIN_SLICE]
    hardest_slice = next(s for s in slices if s["group"] == "hardest")
    overall = {name: _task_metric(kind, metric, gold, outcome) for name, outcome in models.items()}
    paired = metrics.paired_difference(metric, models["student"], models["teacher"], gold, seed=0,
                                       resamples=RESAMPLES)
    result = {
        "task": task.name, "kind": kind.name, "metric": metric, "n": n,
        "overall": {"teacher": overall["teacher"], "student": overall["student"],
                    "change": _change(overall["teacher"], overall["student"]), "change_ci95": paired["ci95"],
                    **({"student_fp32": overall["student_fp32"]} if quantized is not None else {})},
        "agreement": _agreement(kind, models),
        "slices": slices,
        # Slices (and the hardest cases) are scored by the kind's slice metric; where the task's metric is
        # another (macro F1, Pearson, recall@k), the note says why, and the report names both.
        "slice_metric": kind.slice_metric,
        "slice_metric_note": None if metric == kind.slice_metric else kind.slice_metric_why,
        "hardest": {"rule": _hardest_rule(kind, len(hardest), n),
                    **{k: hardest_slice[k] for k in ("metric", "n", "teacher", "student", "change", "change_ci95")},
                    "examples": [_hardest_example(task, gold, models, hardness, int(i))
                                 for i in hardest[:max_examples]]},
        "flips": {"distillation": _flips(task, gold, models["teacher"], fp32, "teacher", "student fp32",
                                         max_examples),
                  "quantization": None if quantized is None else _flips(
                      task, gold, fp32, models["student"], "student fp32", "student quantized", max_examples)},
        "calibration": _calibration(gold, models, teacher, student, quantized) if kind.labelled else None,
        "worst_slice": None if worst is None else dict(worst),  # a copy: editing it must not edit the slice
        "worst_slice_ignores": {"min_n": MIN_SLICE, "slices": small},
        "intervals": _interval_rule(kind),
        # classes the test split lacks: named, since no slice can show them
        "classes_without_test_examples": _missing_classes(task, gold) if kind.labelled else [],
        "rarest_without_test_examples": unmeasured,
    }
    result["statement"] = _statement(task.name, metric, result, quantized is not None, hardest_fraction)
    return result


def gap_report(tasks, teacher: dict[str, dict], student: dict[str, dict], quantized: dict[str, dict] | None,
               lengths: dict[str, np.ndarray | None], hardest_fraction: float = 0.1,
               max_examples: int = 10) -> dict[str, dict]:
    """task_gap for every task: {task name: its gap}. Each dict maps a task name to its predictions.

    evaluate_onnx's whole records (with a "predictions" key) are accepted too, so its result can be passed as is.
    `quantized` None: fp32 ships for every task. A task missing from `lengths` gets no length slices.
    """
    report = {}
    for task in tasks:
        sources = {"teacher": teacher, "student": student, **({"quantized": quantized} if quantized else {})}
        missing = [side for side, predictions in sources.items() if task.name not in predictions]
        if missing:
            # A missing quantized entry must not pass for "fp32 ships": the report would blame the wrong file.
            raise DataError(f"task '{task.name}' has no predictions for: {', '.join(missing)}; evaluate every "
                            "file on the same tasks before comparing them.")
        report[task.name] = task_gap(task, _predictions(teacher[task.name]), _predictions(student[task.name]),
                                     _predictions(quantized[task.name]) if quantized else None,
                                     (lengths or {}).get(task.name), hardest_fraction, max_examples)
    return report


def example_lengths(tasks, teacher) -> dict[str, np.ndarray | None]:
    """Per task, the token length of each test example under the teacher's tokenizer (pairs: the longer side),
    for the length slices; None for every task of an image teacher (no tokenizer) and for image tasks."""
    if teacher.images:
        return {task.name: None for task in tasks}
    tokenizer = teacher.tokenizer

    def lengths(texts) -> np.ndarray:
        return token_lengths(tokenizer, list(texts), teacher.max_length)

    return {task.name: task.kind.example_lengths(task.test, lengths) for task in tasks}


def shipped_gap(shipped: dict, predictions: dict, tasks, teacher) -> dict[str, dict]:
    """gap_report of the file that ships against the teacher's fp32 file on the same provider.

    `shipped`: its report row ("name", "student", "variant", "provider"); `predictions`: evaluate_onnx's results
    by (row name, provider), the teacher's fp32 file and the shipped student's fp32 file among them; `teacher`:
    the prepared teacher (edgekit.stages.teacher.Teacher), whose tokenizer measures the examples' lengths."""
    provider = shipped["provider"]
    quantized = None if shipped["variant"] == "fp32" else predictions[(shipped["name"], provider)]
    return gap_report(tasks, predictions[("teacher-fp32", provider)],
                      predictions[(f"{shipped['student']}-fp32", provider)], quantized, example_lengths(tasks, teacher))


def expected_calibration_error(confidence, correct, bins: int = ECE_BINS) -> float:
    """|accuracy - mean confidence| per equal-width confidence bin, weighted by the bin's share of examples.

    0 when the model is right exactly as often as it claims; an overconfident model scores above 0.
    """
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    if confidence.shape != correct.shape or confidence.ndim != 1 or not len(confidence):
        raise ValueError(f"confidence and correct must be non-empty 1-D arrays of the same length "
                         f"(got shapes {confidence.shape} and {correct.shape})")
    index = np.minimum((confidence * bins).astype(np.int64), bins - 1)  # a confidence of 1.0 is in the top bin
    # Per bin, n_b/n * |acc_b - conf_b| = |sum of correct - sum of confidence| / n.
    gap = np.abs(np.bincount(index, correct, bins) - np.bincount(index, confidence, bins))
    return float(gap.sum() / len(confidence))


# --- per-model outcomes and metrics ---------------------------------------------------------------


def _predictions(record: dict) -> dict:
    return record.get("predictions", record)


def _gold(task: TaskData) -> np.ndarray | None:
    """Gold labels (classification), gold scores (similarity); None for retrieval (query i's gold is doc i)."""
    return task.kind.gold(task.test)


def _outcome(task: TaskData, predictions: dict, who: str, n: int) -> np.ndarray:
    """The one array each kind's metrics read: predicted classes, cosines, or gold ranks."""
    kind = task.kind
    key = kind.prediction
    if key not in predictions:
        raise DataError(f"task '{task.name}' ({task.spec.kind}): the {who} predictions lack '{key}' (they have: "
                        f"{', '.join(predictions) or 'none'}); pass evaluate_onnx's predictions for this task.")
    values = np.asarray(predictions[key])
    if values.shape != (n,):
        raise DataError(f"task '{task.name}': the {who} predictions hold {values.shape} '{key}' values for {n} "
                        "test examples; evaluate every file on the same test split.")
    return kind.outcome(values)


def _num(value) -> float | None:
    """A plain float; None for NaN (a correlation of a constant side), so the output stays strict JSON."""
    value = float(value)
    return None if math.isnan(value) else value


def _change(before: float | None, after: float | None) -> float | None:
    return None if before is None or after is None else after - before


def _task_metric(kind: TaskKind, metric: str, gold, outcome: np.ndarray, index=None) -> float | None:
    """`metric` of one model on the examples in `index` (all by default)."""
    index = slice(None) if index is None else index
    return _num(kind.score(metric, outcome[index], None if gold is None else gold[index]))


def _ranks(values: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata  # as edgekit.data.metrics: scipy comes with scikit-learn

    return rankdata(values)


def _agreement(kind: TaskKind, models: dict) -> dict:
    def value(outcome):
        return _num(kind.agreement(outcome, models["teacher"]))

    return {"what": kind.agreement_rule, "value": value(models["student"]),
            **({"student_fp32": value(models["student_fp32"])} if "student_fp32" in models else {})}


# --- slices ----------------------------------------------------------------------------------------


def _length_buckets(lengths) -> list[tuple[str, np.ndarray]]:
    """Up to 4 buckets at the quartiles of the lengths; each example in exactly one, empty buckets dropped."""
    lengths = np.asarray(lengths, dtype=np.float64)
    edges = np.unique(np.quantile(lengths, [0.0, 0.25, 0.5, 0.75, 1.0]))
    # Bucket 0 is [edge0, edge1], bucket j is (edge_j, edge_j+1]: searchsorted over the inner edges.
    bucket = np.searchsorted(edges[1:-1], lengths, side="left")
    buckets = []
    for b in range(max(len(edges) - 1, 1)):
        index = np.flatnonzero(bucket == b)
        if len(index):
            lo, hi = lengths[index].min(), lengths[index].max()  # the lengths there are, not quantile fractions
            buckets.append((f"tokens {lo:g}-{hi:g}" if lo != hi else f"tokens {lo:g}", index))
    return buckets


def _missing_classes(task: TaskData, gold: np.ndarray) -> list[str]:
    present = set(np.unique(gold).tolist())
    return [_label(task, c) for c in range(len(task.labels)) if c not in present]


def _rarest(task: TaskData, gold: np.ndarray) -> tuple[list[tuple[str, np.ndarray]], list[str]]:
    """(the test examples of the class(es) with the fewest training examples, labelled with that count; the
    labels of those rarest classes that have no test example, which no slice can score but the statement names)."""
    train = task.train.get("label") if task.train else None
    if train is not None and len(train):
        source = np.asarray(train, dtype=np.int64)
        where = "training examples"
    else:
        source = gold
        where = "test examples; the task has no training split"
    # Every class counts, those without a test example too: the rarest is often the one the test split lacks.
    classes = int(max(len(task.labels), gold.max() + 1, source.max() + 1))
    counts = np.bincount(source, minlength=classes)
    if counts.min() == counts.max():
        return [], []  # balanced: no class is rarer than the others
    rarest = np.flatnonzero(counts == counts.min())

    def label(c: int) -> str:
        count = int(counts[c])
        return f"{_label(task, c)} ({count} {where if count != 1 else where.replace('examples', 'example')})"

    measured = [(label(int(c)), np.flatnonzero(gold == c)) for c in rarest if np.any(gold == c)]
    return measured, [label(int(c)) for c in rarest if not np.any(gold == c)]


def _slices(task: TaskData, gold, models: dict, lengths, hardest: np.ndarray, rarest: list) -> list[dict]:
    kind = task.kind
    slice_metric = kind.slice_metric
    rows = []

    def add(group: str, label: str, index: np.ndarray) -> None:
        values = {name: _task_metric(kind, slice_metric, gold, outcome, index) for name, outcome in models.items()}
        intervals, change = _intervals(kind, gold, models, index, len(rows))
        rows.append({"group": group, "slice": label, "n": len(index), "metric": slice_metric,
                     "teacher": values["teacher"], "student": values["student"],
                     "change": _change(values["teacher"], values["student"]),
                     **({"student_fp32": values["student_fp32"]} if "student_fp32" in values else {}),
                     **{f"{name}_ci95": interval for name, interval in intervals.items()}, "change_ci95": change})

    if kind.labelled:
        for c in np.unique(gold):
            add("class", _label(task, int(c)), np.flatnonzero(gold == c))
    if lengths is not None and not kind.images:
        for label, index in _length_buckets(lengths):
            if not kind.correlation or len(index) >= MIN_CORRELATION_SLICE:
                add("length", label, index)
    add("hardest", f"hardest {len(hardest)} by {kind.hardest_by}", hardest)
    for label, index in rarest:
        add("rarest", label, index)
    return rows


# --- intervals -------------------------------------------------------------------------------------


def _interval_rule(kind: TaskKind) -> str:
    # A labelled kind's slice metric is accuracy: a proportion, which has the Wilson interval.
    each = "a Wilson score interval for each model's accuracy" if kind.labelled else \
        f"a bootstrap ({RESAMPLES} resamples) for each model's {kind.slice_metric}"
    return (f"95%: {each}; a paired bootstrap ({RESAMPLES} resamples of the slice's examples, the same for both "
            "models) for the change")


def _wilson(successes: int, n: int) -> list[float]:
    """95% Wilson score interval of a proportion."""
    p, z2 = successes / n, Z95 * Z95
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return [max(0.0, centre - half), min(1.0, centre + half)]


def _intervals(kind: TaskKind, gold, models: dict, index: np.ndarray, seed: int) -> tuple[dict, list[float] | None]:
    """({model: its 95% interval on the slice}, the paired 95% interval of student - teacher); seeded by the
    slice's position, so a report is reproducible."""
    index = np.asarray(index, dtype=np.int64)
    if not len(index):
        return {name: None for name in models}, None
    # Every model on the same resampled examples: the change's interval is the paired one.
    scores = metrics.paired_scores(kind.slice_metric, models, gold, index, seed, RESAMPLES)
    if kind.labelled:
        intervals = {name: _wilson(int(np.sum(outcome[index] == gold[index])), len(index))
                     for name, outcome in models.items()}
    else:
        intervals = {name: metrics.interval95(values) for name, values in scores.items()}
    return intervals, metrics.interval95(scores["student"] - scores["teacher"])


# --- examples, flips, calibration ------------------------------------------------------------------


def _label(task: TaskData, index: int) -> str:
    return task.labels[index] if index < len(task.labels) else str(index)


def _text(task: TaskData, i: int) -> str | None:
    """What the model read for example i (pairs and queries with their documents: joined by ||), cut to
    TEXT_CHARS; None for images."""
    columns = task.kind.text_columns
    if not columns:
        return None
    text = " || ".join(str(task.test[column][i]) for column in columns)
    return text if len(text) <= TEXT_CHARS else text[:TEXT_CHARS - 1] + "…"


def _value(task: TaskData, outcome: np.ndarray, i: int):
    """One model's answer for example i, as a person reads it: a class name, a cosine, or a gold rank."""
    kind = task.kind
    answer = kind.answer(outcome[i])
    return _label(task, answer) if kind.labelled else answer


def _gold_value(task: TaskData, gold, i: int):
    kind = task.kind
    answer = kind.gold_answer(gold, i)
    return _label(task, answer) if kind.labelled else answer


def _hardest_rule(kind: TaskKind, k: int, n: int) -> str:
    return f"the {k} of {n} test {kind.hardest_rule}"


def _hardest_example(task: TaskData, gold, models: dict, hardness: np.ndarray, i: int) -> dict:
    return {"index": i, "text": _text(task, i), "gold": _gold_value(task, gold, i),
            **{name: _value(task, outcome, i) for name, outcome in models.items()},
            task.kind.hardness_key: float(hardness[i])}


def _flips(task: TaskData, gold, a: np.ndarray, b: np.ndarray, name_a: str, name_b: str, max_examples: int) -> dict:
    """Examples whose outcome changes from model a to model b, losses (a right, b wrong) listed first.

    A correlation kind's example is never right or wrong: its flips are the large rank moves, counted as
    `further_from_gold` (b's rank ends further from the gold score's rank than a's) and `closer_to_gold`, not as
    a_right_b_wrong / b_right_a_wrong (reports before this used those keys for the same counts)."""
    kind, n = task.kind, len(a)
    extra: dict[int, dict] = {}
    if kind.correlation:
        rank_a, rank_b, rank_gold = _ranks(a), _ranks(b), _ranks(gold)
        move = np.abs(rank_a - rank_b)
        flipped = move > FLIP_MOVE * n
        closer_a, closer_b = np.abs(rank_a - rank_gold), np.abs(rank_b - rank_gold)
        a_only, b_only = flipped & (closer_a < closer_b), flipped & (closer_b < closer_a)
        order = np.flatnonzero(flipped)[np.argsort(-move[flipped], kind="stable")]  # largest moves first
        rule = (f"the {kind.what[0]}'s rank among all {n} moves by more than {FLIP_MOVE:.0%} of n "
                f"({FLIP_MOVE * n:.3g} places) from {name_a} to {name_b}; further from or closer to the gold: "
                f"whether {name_b}'s rank ends further from or closer to the gold score's rank than {name_a}'s")
        extra = {int(i): {"before_rank": float(rank_a[i]), "after_rank": float(rank_b[i]),
                          "gold_rank": float(rank_gold[i])} for i in order[:max_examples]}
    else:
        right_a, right_b = kind.right(a, gold), kind.right(b, gold)
        flipped = kind.differs(a, b)
        a_only, b_only = flipped & right_a & ~right_b, flipped & right_b & ~right_a
        order = np.concatenate([np.flatnonzero(a_only), np.flatnonzero(b_only),
                                np.flatnonzero(flipped & ~right_a & ~right_b)])
        rule = kind.flip_rule
    examples = [{"index": int(i), "text": _text(task, int(i)), "gold": _gold_value(task, gold, int(i)),
                 "before": _value(task, a, int(i)), "after": _value(task, b, int(i)), **extra.get(int(i), {})}
                for i in order[:max_examples]]
    counts = ({"further_from_gold": int(a_only.sum()), "closer_to_gold": int(b_only.sum())} if kind.correlation
              else {"a_right_b_wrong": int(a_only.sum()), "b_right_a_wrong": int(b_only.sum())})
    return {"a": name_a, "b": name_b, "rule": rule, "count": int(flipped.sum()), **counts, "examples": examples}


def _calibration(gold, models: dict, teacher: dict, student: dict, quantized: dict | None) -> dict:
    sources = {"teacher": teacher, "student": student if quantized is None else quantized,
               **({"student_fp32": student} if quantized is not None else {})}
    result = {"what": f"{ECE_BINS}-bin expected calibration error of the top class's probability (0: as often "
                      "right as it claims)", "bins": ECE_BINS}
    for name, predictions in sources.items():
        probs = predictions.get("probs")
        confidence = np.max(probs, axis=1) if probs is not None else predictions.get("confidence")
        result[name] = None if confidence is None else expected_calibration_error(confidence, models[name] == gold)
    return result


# --- the sentence --------------------------------------------------------------------------------


def _fmt(value: float | None, sign: bool = False) -> str:
    if value is None:
        return "undefined"
    return f"{value:+.3f}" if sign else f"{value:.3f}"


def _numbers(row: dict) -> tuple:
    return row["n"], row["teacher"], row["student"]


def _slice_name(row: dict) -> str:
    """'class neg', 'length tokens 3-5', 'hardest 10 by lowest teacher margin',
    'rarest class pos (5 training examples)'."""
    if row["group"] == "hardest":
        return row["slice"]
    return f"{'rarest class' if row['group'] == 'rarest' else row['group']} {row['slice']}"


def _ci(row: dict) -> str:
    interval = row.get("change_ci95")
    return f", 95% CI {_fmt(interval[0], True)} to {_fmt(interval[1], True)}" if interval else ""


def _verdict(row: dict) -> str:
    """What the paired interval of a change allows to say: better or worse only where it excludes zero."""
    interval = row.get("change_ci95")
    if interval and interval[0] > 0:
        return "significantly higher for the student"
    if interval and interval[1] < 0:
        return "significantly lower for the student"
    return "no significant difference"


def _change_text(row: dict) -> str:
    """'+0.122, 95% CI -0.02 to +0.25: no significant difference'."""
    return f"{_fmt(row['change'], True)}{_ci(row)}: {_verdict(row)}"


def _statement(name: str, metric: str, result: dict, quantized: bool, fraction: float) -> str:
    """One sentence a reader can act on, every number from `result`."""
    who = "the shipped quantized student" if quantized else "the student"
    overall, n = result["overall"], result["n"]
    parts = [(f"overall {metric} is {_fmt(overall['teacher'])} for the teacher and {_fmt(overall['student'])} "
              f"for {who} ({_change_text(overall)})")]
    mentioned = []
    for row in result["slices"]:
        if row["group"] == "hardest":
            k = row["n"]
            # A slice raised to MIN_HARDEST examples is not "10%" of the task: say what it is.
            by = kind_of(result["kind"]).hardest_by
            where = (f"on the hardest {fraction:.0%} of {name} (n={k}, by {by})" if k == round(fraction * n)
                     else f"on the hardest {k} of the {n} examples of {name} (by {by})")
        elif row["group"] == "rarest":
            where = f"on the rarest class, {row['slice']}, over its {row['n']} test examples"
        else:
            continue
        mentioned.append(_numbers(row))
        parts.append(f"{where} the teacher's {row['metric']} is {_fmt(row['teacher'])} and the student's "
                     f"{_fmt(row['student'])} ({_change_text(row)})")
    for label in result.get("rarest_without_test_examples", []):
        parts.append(f"the rarest class, {label}, has no test examples, so how the student does on it is not "
                     "measured")
    missing = [c for c in result.get("classes_without_test_examples", [])
               if not any(label.startswith(f"{c} (") for label in result.get("rarest_without_test_examples", []))]
    if missing:
        parts.append(f"class(es) {', '.join(missing)} have no test examples and are not measured")
    worst = result["worst_slice"]
    # The worst slice is often the rarest class again, under its "class" row: the same numbers twice say nothing.
    if worst is not None and worst["change"] < 0 and _numbers(worst) not in mentioned:
        parts.append(f"the largest drop is on {_slice_name(worst)} (n={worst['n']}): {worst['metric']} "
                     f"{_fmt(worst['teacher'])} to {_fmt(worst['student'])} ({_change_text(worst)})")
    elif worst is None or worst["change"] >= 0:
        parts.append(f"no slice of at least {MIN_SLICE} examples scores lower for the student than for the teacher"
                     if result["worst_slice_ignores"]["slices"] else
                     "no slice scores lower for the student than for the teacher")
    small = result["worst_slice_ignores"]["slices"]
    if small:
        shown = ", ".join(small[:4]) + (f" and {len(small) - 4} more" if len(small) > 4 else "")
        parts.append(f"slices under {MIN_SLICE} examples are too small to rank for the largest drop: {shown}")
    return "The student is not guaranteed to match the teacher on rare or hardest cases: " + "; ".join(parts) + "."
