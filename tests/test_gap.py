"""edgekit.stages.gap on synthetic predictions whose answers are known or recomputed here independently."""

import itertools
import json
import math
import re
from types import SimpleNamespace

import numpy as np
import pytest
from scipy.stats import rankdata, spearmanr

from edgekit.data.tasks import TaskData
from edgekit.errors import DataError
from edgekit.recipe import DataSpec, TaskSpec
from edgekit.runtime.evaluate import evaluate_task
from edgekit.stages import gap

LABELS = ["neg", "neu", "pos"]


def _task(kind, test, train=None, labels=None, metric=None, name="demo"):
    return TaskData(spec=TaskSpec(name=name, kind=kind, data=DataSpec(source="unused.csv"), metric=metric),
                    train=train or {}, test=test, labels=labels or [])


def _class_predictions(probs):
    probs = np.asarray(probs, dtype=np.float64)
    return {"pred": probs.argmax(1).tolist(), "confidence": probs.max(1).tolist(), "probs": probs.tolist()}


def _probs_with_gold_mass(gold, mass, classes=3):
    """Rows putting `mass` on the gold class and the rest 70/30 on the next two (no ties for the argmax)."""
    probs = np.zeros((len(gold), classes))
    for i, (g, m) in enumerate(zip(gold, mass)):
        probs[i, g] = m
        probs[i, (g + 1) % classes] = 0.7 * (1 - m)
        probs[i, (g + 2) % classes] = 0.3 * (1 - m)
    return probs


def _one_hot_probs(pred, classes=3, top=0.8):
    probs = np.full((len(pred), classes), (1 - top) / (classes - 1))
    probs[np.arange(len(pred)), pred] = top
    return probs


@pytest.fixture
def classification():
    """50 examples of 3 classes (25/15/10); teacher wrong where its gold mass is under 0.4, student on a fixed set."""
    rng = np.random.default_rng(0)
    gold = rng.permutation(np.repeat([0, 1, 2], [25, 15, 10]))
    mass = rng.permutation(np.linspace(0.2, 0.95, 50))  # distinct: the hardest order has no ties
    teacher_probs = _probs_with_gold_mass(gold, mass)
    student_pred = gold.copy()
    wrong = [1, 4, 7, 10, 20, 33, 41, 42, 49]
    student_pred[wrong] = (gold[wrong] + 1) % 3
    quantized_pred = student_pred.copy()
    quantized_pred[[2, 3, 4]] = (gold[[2, 3, 4]] + 2) % 3  # 2 and 3 become wrong; 4 changes from wrong to wrong
    texts = [f"example {i} " + "word " * (i % 13) for i in range(50)]
    task = _task("classification", {"text": texts, "label": gold},
                 train={"text": ["t"] * 40, "label": np.repeat([0, 1, 2], [20, 15, 5])}, labels=LABELS)
    return SimpleNamespace(task=task, gold=gold, teacher_probs=teacher_probs,
                           teacher=_class_predictions(teacher_probs),
                           student=_class_predictions(_one_hot_probs(student_pred)),
                           quantized=_class_predictions(_one_hot_probs(quantized_pred)),
                           lengths=np.array([3 + i % 13 for i in range(50)]))


def _slices(result, group):
    return [s for s in result["slices"] if s["group"] == group]


def test_classification_hardest_classes_and_flips_match_a_recomputation(classification):
    # setup
    c = classification
    gold = c.gold
    teacher_pred, student_pred = np.array(c.teacher["pred"]), np.array(c.student["pred"])
    margin = [max(row) - sorted(row)[-2] for row in c.teacher_probs.tolist()]
    hardest = sorted(range(50), key=lambda i: margin[i])[:10]  # 0.2 of 50, the teacher's closest calls first
    # execute
    result = gap.task_gap(c.task, c.teacher, c.student, hardest_fraction=0.2, max_examples=50)
    # assert: overall and agreement
    assert result["n"] == 50 and result["metric"] == "accuracy" and result["kind"] == "classification"
    assert result["overall"]["teacher"] == pytest.approx(np.mean(teacher_pred == gold))
    assert result["overall"]["student"] == pytest.approx(41 / 50)
    assert result["agreement"]["value"] == pytest.approx(np.mean(teacher_pred == student_pred))
    # hardest: the 10 lowest teacher margins, hardest first
    examples = result["hardest"]["examples"]
    assert [e["index"] for e in examples] == hardest
    assert [e["teacher_margin"] for e in examples] == pytest.approx([margin[i] for i in hardest])
    first = hardest[0]
    assert examples[0]["gold"] == LABELS[gold[first]] and examples[0]["teacher"] == LABELS[teacher_pred[first]]
    assert examples[0]["text"] == c.task.test["text"][first]
    assert result["hardest"]["n"] == 10
    assert result["hardest"]["teacher"] == pytest.approx(np.mean(teacher_pred[hardest] == gold[hardest]))
    # close calls either way: the teacher is right on some of them and wrong on others, not wrong by construction
    # (the 10 highest teacher losses are exactly the teacher's errors here: it would score 0.000 on them)
    assert 0 < result["hardest"]["teacher"] < 1
    loss = [-math.log(c.teacher_probs[i, gold[i]]) for i in range(50)]
    assert np.mean([teacher_pred[i] == gold[i] for i in sorted(range(50), key=lambda i: -loss[i])[:10]]) == 0
    assert result["hardest"]["student"] == pytest.approx(np.mean(student_pred[hardest] == gold[hardest]))
    assert _slices(result, "hardest")[0]["n"] == 10
    # per class: recall within the gold class, by name
    for row in _slices(result, "class"):
        members = gold == LABELS.index(row["slice"])
        assert row["n"] == members.sum()
        assert row["teacher"] == pytest.approx(np.mean(teacher_pred[members] == gold[members]))
        assert row["student"] == pytest.approx(np.mean(student_pred[members] == gold[members]))
        assert row["change"] == pytest.approx(row["student"] - row["teacher"])
    assert [row["slice"] for row in _slices(result, "class")] == LABELS
    # distillation flips: every example whose class changes, losses first
    flips = result["flips"]["distillation"]
    changed = [i for i in range(50) if teacher_pred[i] != student_pred[i]]
    losses = [i for i in changed if teacher_pred[i] == gold[i]]
    gains = [i for i in changed if student_pred[i] == gold[i]]
    assert changed and flips["count"] == len(changed)
    assert flips["a_right_b_wrong"] == len(losses) and flips["b_right_a_wrong"] == len(gains)
    assert [e["index"] for e in flips["examples"]][:len(losses)] == losses
    assert sorted(e["index"] for e in flips["examples"]) == changed
    assert result["flips"]["quantization"] is None
    # the worst slice is the most negative change among slices of at least MIN_SLICE examples (the smaller ones
    # are named as left out), and the sentence quotes the hardest slice's numbers
    changes = [s["change"] for s in result["slices"] if s["n"] >= gap.MIN_SLICE]
    assert result["worst_slice"]["change"] == min(changes)
    small = [s for s in result["slices"] if s["n"] < gap.MIN_SLICE]
    assert small and result["worst_slice_ignores"]["slices"] == [f"{gap._slice_name(s)} (n={s['n']})"
                                                                for s in small]
    assert "too small to rank for the largest drop" in result["statement"]
    assert f"{result['hardest']['teacher']:.3f}" in result["statement"]
    assert "hardest 20% of demo (n=10, by lowest teacher margin)" in result["statement"]


def test_quantized_file_is_the_student_and_its_own_flips_are_listed(classification):
    # setup
    c = classification
    fp32, int8 = np.array(c.student["pred"]), np.array(c.quantized["pred"])
    # execute
    result = gap.task_gap(c.task, c.teacher, c.student, c.quantized, max_examples=50)
    # assert
    assert result["overall"]["student"] == pytest.approx(np.mean(int8 == c.gold))
    assert result["overall"]["student_fp32"] == pytest.approx(np.mean(fp32 == c.gold))
    assert result["overall"]["change"] == pytest.approx(result["overall"]["student"] - result["overall"]["teacher"])
    flips = result["flips"]["quantization"]
    assert (flips["count"], flips["a_right_b_wrong"], flips["b_right_a_wrong"]) == (3, 2, 0)
    assert [e["index"] for e in flips["examples"]] == [2, 3, 4]
    assert flips["examples"][0]["before"] == LABELS[fp32[2]] and flips["examples"][0]["after"] == LABELS[int8[2]]
    assert result["flips"]["distillation"]["b"] == "student fp32"
    assert all("student_fp32" in row for row in result["slices"])
    assert "shipped quantized student" in result["statement"]
    json.dumps(result, allow_nan=False)


def test_length_buckets_cover_every_example_exactly_once(classification):
    # setup
    c = classification
    # execute
    result = gap.task_gap(c.task, c.teacher, c.student, lengths=c.lengths)
    rows = _slices(result, "length")
    # assert: the buckets' token ranges are disjoint and hold every example once
    assert 2 <= len(rows) <= 4
    bounds = [list(map(int, re.fullmatch(r"tokens (\d+)(?:-(\d+))?", r["slice"]).groups())) for r in rows
              if re.fullmatch(r"tokens \d+-\d+", r["slice"])]  # the toy's buckets each span several lengths
    assert len(bounds) == len(rows)
    ranges = [tuple(b) for b in bounds]
    assert all(hi < lo for (_, hi), (lo, _) in itertools.pairwise(ranges))
    assert sum(r["n"] for r in rows) == 50
    student = np.array(c.student["pred"])
    for row, (lo, hi) in zip(rows, ranges):
        inside = (c.lengths >= lo) & (c.lengths <= hi)
        assert row["n"] == inside.sum()
        assert row["student"] == pytest.approx(np.mean(student[inside] == c.gold[inside]))


@pytest.mark.parametrize("lengths", [np.arange(40), np.repeat([5, 9], [30, 10]), np.full(40, 7),
                                     np.array([1, 100] * 20), np.random.default_rng(1).integers(1, 6, 40)])
def test_length_buckets_dedupe_edges_and_never_drop_or_repeat_an_example(lengths):
    # execute
    buckets = gap._length_buckets(lengths)
    # assert
    assert 1 <= len(buckets) <= 4
    assert sorted(np.concatenate([index for _, index in buckets]).tolist()) == list(range(40))
    assert len({label for label, _ in buckets}) == len(buckets)


def test_rarest_class_counts_training_examples(classification):
    # setup: training counts are 20/15/5, so 'pos' is the rarest; test has 10 'pos'
    c = classification
    student = np.array(c.student["pred"])
    pos = c.gold == 2
    # execute
    result = gap.task_gap(c.task, c.teacher, c.student)
    # assert
    (rarest,) = _slices(result, "rarest")
    assert rarest["slice"] == "pos (5 training examples)" and rarest["n"] == 10
    assert rarest["student"] == pytest.approx(np.mean(student[pos] == 2))
    assert "rarest class, pos (5 training examples)" in result["statement"]


def test_rarest_class_without_a_training_split_uses_test_counts_and_says_so(classification):
    # setup
    c = classification
    task = _task("classification", c.task.test, labels=LABELS)
    balanced = _task("classification", c.task.test, train={"text": ["t"] * 6, "label": np.array([0, 1, 2] * 2)},
                     labels=LABELS)
    # execute
    rarest = _slices(gap.task_gap(task, c.teacher, c.student), "rarest")
    none = _slices(gap.task_gap(balanced, c.teacher, c.student), "rarest")
    # assert: test counts are 25/15/10; a balanced training split has no rarest class
    assert [r["slice"] for r in rarest] == ["pos (10 test examples; the task has no training split)"]
    assert none == []


def test_calibration_error_is_zero_when_calibrated_and_positive_when_overconfident():
    # setup: 80% of the examples are 'a'; the teacher says 0.8 every time, the student 0.99
    gold = np.array([0] * 8 + [1] * 2)
    teacher = _class_predictions(np.tile([0.8, 0.2], (10, 1)))
    student = _class_predictions(np.tile([0.99, 0.01], (10, 1)))
    task = _task("image-classification", {"image": np.zeros((10, 1, 2, 2), np.float32), "label": gold},
                 labels=["a", "b"])
    # execute
    result = gap.task_gap(task, teacher, student, lengths=None)
    # assert
    assert result["calibration"]["teacher"] == pytest.approx(0.0, abs=1e-12)
    assert result["calibration"]["student"] == pytest.approx(0.19)
    assert gap.expected_calibration_error([0.8] * 5 + [0.6] * 5, [1, 1, 1, 1, 0, 1, 1, 1, 0, 0]) == pytest.approx(0.0)
    assert gap.expected_calibration_error([0.95] * 4, [1, 0, 1, 0]) == pytest.approx(0.45)
    assert gap.expected_calibration_error([1.0, 0.0], [1, 0]) == pytest.approx(0.0)  # both ends have a bin
    assert result["hardest"]["examples"][0]["text"] is None  # images have no text
    assert _slices(result, "length") == []


def test_similarity_hardest_flips_and_agreement_match_a_recomputation():
    # setup: the teacher's cosines follow the gold scores with noise; the student moves 3 pairs far
    rng = np.random.default_rng(2)
    n = 40
    score = rng.permutation(np.linspace(0, 5, n))
    teacher = score / 5 + rng.normal(scale=0.15, size=n)
    student = teacher + rng.normal(scale=0.02, size=n)
    student[[3, 17, 25]] = [1.5, -0.5, 1.2]
    task = _task("similarity", {"text_a": [f"a{i}" for i in range(n)], "text_b": [f"b{i}" for i in range(n)],
                                "score": score})
    lengths = np.repeat([3, 7, 40], [12, 25, 3])  # quartiles: [3, 7] holds 37 pairs, (7, 40] only 3
    rank_t, rank_s, rank_g = rankdata(teacher), rankdata(student), rankdata(score)
    middle = (score.min() + score.max()) / 2
    hardest = sorted(range(n), key=lambda i: abs(score[i] - middle))[:10]  # the gold scores nearest mid-range
    move = np.abs(rank_t - rank_s)
    flipped = sorted((i for i in range(n) if move[i] > 0.1 * n), key=lambda i: -move[i])
    # execute
    result = gap.task_gap(task, {"cosine": teacher.tolist()}, {"cosine": student.tolist()}, lengths=lengths,
                          max_examples=n)
    # assert
    assert result["overall"]["teacher"] == pytest.approx(spearmanr(teacher, score)[0])
    assert result["agreement"]["value"] == pytest.approx(spearmanr(student, teacher)[0])
    assert [e["index"] for e in result["hardest"]["examples"]] == hardest
    assert result["hardest"]["examples"][0]["gold"] == pytest.approx(score[hardest[0]])
    assert result["hardest"]["examples"][0]["gold_distance_from_midpoint"] == pytest.approx(abs(score[hardest[0]]
                                                                                               - middle))
    assert result["hardest"]["student"] == pytest.approx(spearmanr(student[hardest], score[hardest])[0])
    flips = result["flips"]["distillation"]
    assert flipped and [e["index"] for e in flips["examples"]] == flipped and flips["count"] == len(flipped)
    closer_t = sum(abs(rank_t[i] - rank_g[i]) < abs(rank_s[i] - rank_g[i]) for i in flipped)
    # no pair is right or wrong: a large rank move is counted by which way it went against the gold rank
    assert flips["further_from_gold"] == closer_t and flips["closer_to_gold"] == sum(
        abs(rank_s[i] - rank_g[i]) < abs(rank_t[i] - rank_g[i]) for i in flipped)
    assert "a_right_b_wrong" not in flips and "right" not in flips["rule"]
    assert flips["examples"][0]["text"] == f"a{flipped[0]} || b{flipped[0]}"
    assert [s["slice"] for s in _slices(result, "length")] == ["tokens 3-7"]  # 3 pairs: no rank correlation
    assert result["calibration"] is None
    json.dumps(result, allow_nan=False)


def _lexical_margins(queries, documents):
    """Share of each query's words in its own document less the largest share in another, by plain sets."""
    def words(text):
        return set(re.findall(r"\w+", text.lower()))

    def share(q, d):
        return len(words(q) & words(d)) / max(len(words(q)), 1)

    return [share(q, documents[i]) - max(share(q, d) for j, d in enumerate(documents) if j != i)
            for i, q in enumerate(queries)]


def test_retrieval_uses_hit_at_one_for_flips_and_the_lexical_margin_for_hardness():
    # setup: queries of 3 words and documents of 5 from a 9-word vocabulary, so overlaps vary and tie
    teacher = np.array([1, 1, 2, 1, 5, 1, 3, 1, 1, 8, 1, 1])
    student = np.array([1, 2, 1, 1, 9, 1, 3, 4, 1, 8, 1, 2])
    rng = np.random.default_rng(4)
    vocabulary = np.array([f"w{k}" for k in range(9)])
    queries = [" ".join(rng.choice(vocabulary, 3, replace=False)) for _ in range(12)]
    documents = [" ".join(rng.choice(vocabulary, 5, replace=False)).upper() for _ in range(12)]  # case ignored
    task = _task("retrieval", {"query": queries, "document": documents}, metric="recall@1")
    margin = _lexical_margins(queries, documents)
    # execute
    result = gap.task_gap(task, {"gold_rank": teacher.tolist()}, {"gold_rank": student.tolist()},
                          lengths=np.arange(12), max_examples=12)
    # assert
    assert result["overall"]["teacher"] == pytest.approx(np.mean(teacher == 1))
    assert result["overall"]["student"] == pytest.approx(np.mean(student == 1))
    assert result["agreement"]["value"] == pytest.approx(np.mean((teacher == 1) == (student == 1)))
    flips = result["flips"]["distillation"]
    assert [e["index"] for e in flips["examples"]] == [1, 7, 11, 2]  # losses, then the gain
    assert (flips["count"], flips["a_right_b_wrong"], flips["b_right_a_wrong"]) == (4, 3, 1)
    hardest = sorted(range(12), key=lambda i: margin[i])[:10]  # ties in test order
    assert len(set(margin)) > 3 and [e["index"] for e in result["hardest"]["examples"]] == hardest
    first = hardest[0]
    assert result["hardest"]["examples"][0] == {
        "index": first, "text": f"{queries[first]} || {documents[first]}", "gold": 1, "teacher": int(teacher[first]),
        "student": int(student[first]), "lexical_margin": pytest.approx(margin[first])}
    buckets = _slices(result, "length")
    assert sum(b["n"] for b in buckets) == 12
    assert buckets[0]["teacher"] == pytest.approx(np.mean(1 / teacher[:3]))  # lengths 0-2: the first quartile


def test_gap_report_takes_evaluate_records_and_rejects_a_missing_quantized_task(classification):
    # setup
    c = classification
    name = c.task.name
    # execute
    report = gap.gap_report([c.task], {name: {"predictions": c.teacher}}, {name: c.student}, None,
                            {name: c.lengths})
    # assert
    assert report[name] == gap.task_gap(c.task, c.teacher, c.student, lengths=c.lengths)
    with pytest.raises(DataError, match="quantized"):
        gap.gap_report([c.task], {name: c.teacher}, {name: c.student}, {"other": c.quantized}, {})


def test_predictions_that_do_not_fit_are_data_errors(classification):
    # setup
    c = classification
    no_probs = {k: v for k, v in c.teacher.items() if k != "probs"}
    # execute / assert
    with pytest.raises(DataError, match="probs"):
        gap.task_gap(c.task, no_probs, c.student)
    with pytest.raises(DataError, match="50 test examples"):
        gap.task_gap(c.task, c.teacher, {"pred": [0] * 49})
    with pytest.raises(DataError, match="lengths"):
        gap.task_gap(c.task, c.teacher, c.student, lengths=np.arange(3))


class _Session:
    """The two calls evaluate_task makes on an image graph, answering with fixed logits."""

    def __init__(self, logits):
        self.logits, self.row = logits, 0

    def get_inputs(self):
        return [SimpleNamespace(name="pixel_values", shape=["batch", 1, 2, 2], type="tensor(float)")]

    def run(self, outputs, feed):
        rows = len(feed["pixel_values"])
        self.row += rows
        return [self.logits[self.row - rows:self.row]]


def test_evaluate_records_the_softmax_that_the_gap_analysis_reads():
    # setup
    logits = np.random.default_rng(3).normal(size=(7, 4)).astype(np.float32)
    gold = np.array([0, 1, 2, 3, 0, 1, 2])
    task = _task("image-classification", {"image": np.zeros((7, 1, 2, 2), np.float32), "label": gold})
    expected = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    # execute: batches of 3, so the rows come back in pieces
    predictions = evaluate_task(_Session(logits), task, None, 8, batch_size=3)["predictions"]
    # assert
    np.testing.assert_allclose(predictions["probs"], expected, rtol=1e-6)
    assert predictions["pred"] == expected.argmax(1).tolist()
    np.testing.assert_allclose(predictions["confidence"], expected.max(1), rtol=1e-6)
    result = gap.task_gap(task, predictions, predictions)
    assert result["overall"]["change"] == 0 and result["flips"]["distillation"]["count"] == 0


def test_shipped_gap_compares_the_shipped_file_with_the_teachers_on_its_provider(classification):
    # setup: evaluate_onnx's records by (row name, provider), as the run keeps them; an image teacher (no tokenizer)
    c = classification
    name = c.task.name
    predictions = {(row, provider): {name: {"predictions": found}}
                   for row, found in (("teacher-fp32", c.teacher), ("L2-fp32", c.student),
                                      ("L2-int8-dynamic", c.quantized))
                   for provider in ("cpu", "cuda")}
    teacher = SimpleNamespace(tokenizer=None, max_length=8, images=True)
    shipped = {"name": "L2-int8-dynamic", "student": "L2", "variant": "int8-dynamic", "provider": "cuda"}
    # execute
    quantized = gap.shipped_gap(shipped, predictions, [c.task], teacher)
    fp32 = gap.shipped_gap({**shipped, "name": "L2-fp32", "variant": "fp32"}, predictions, [c.task], teacher)
    # assert
    assert quantized == {name: gap.task_gap(c.task, c.teacher, c.student, c.quantized)}
    assert fp32 == {name: gap.task_gap(c.task, c.teacher, c.student)}
    assert gap.example_lengths([c.task], teacher) == {name: None}


def _binary_task(n=400, seed=5):
    """n examples of 2 classes; the teacher's probability of class 1 spread over (0, 1), so margins vary."""
    rng = np.random.default_rng(seed)
    gold = rng.integers(0, 2, n)
    p1 = rng.uniform(0.02, 0.98, n)
    teacher = _class_predictions(np.stack([1 - p1, p1], axis=1))
    task = _task("classification", {"text": [f"t{i}" for i in range(n)], "label": gold}, labels=["neg", "pos"])
    return task, gold, np.array(teacher["pred"]), teacher


def test_the_statement_calls_a_change_significant_only_where_the_paired_interval_excludes_zero():
    # setup: students that fix 2, or 80, of the teacher's errors, and one that breaks 80 of its right answers
    task, gold, teacher_pred, teacher = _binary_task()
    errors, right = np.flatnonzero(teacher_pred != gold), np.flatnonzero(teacher_pred == gold)

    def student(fixed=(), broken=()):
        pred = teacher_pred.copy()
        pred[list(fixed)] = gold[list(fixed)]
        pred[list(broken)] = 1 - gold[list(broken)]
        return _class_predictions(_one_hot_probs(pred, classes=2))

    # execute
    near = gap.task_gap(task, teacher, student(fixed=errors[:2]))
    better = gap.task_gap(task, teacher, student(fixed=errors[:80]))
    worse = gap.task_gap(task, teacher, student(broken=right[:80]))
    # assert: 2 of 400 is inside the paired interval, 80 of 400 far outside it, either way
    lo, hi = near["overall"]["change_ci95"]
    assert near["overall"]["change"] == pytest.approx(2 / 400) and lo <= 0 <= hi < 0.02
    assert "(+0.005, 95% CI" in near["statement"] and "significantly" not in near["statement"]
    assert "no significant difference" in near["statement"]
    assert better["overall"]["change_ci95"][0] > 0 and worse["overall"]["change_ci95"][1] < 0
    overall_better, overall_worse = better["statement"].split(";")[0], worse["statement"].split(";")[0]
    assert overall_better.endswith("significantly higher for the student)")
    assert overall_worse.endswith("significantly lower for the student)")
    # every slice's sentence follows the same rule as its own interval
    for result in (near, better, worse):
        hardest = result["hardest"]
        verdict = ("significantly higher" if hardest["change_ci95"][0] > 0 else
                   "significantly lower" if hardest["change_ci95"][1] < 0 else "no significant difference")
        clause = next(part for part in result["statement"].split("; ") if "on the hardest" in part)
        assert verdict in clause


def test_the_hardest_slice_holds_the_teachers_close_calls_right_and_wrong():
    # setup: the teacher's probability of class 1 spread evenly, so its lowest margins sit at 0.5 from both sides
    task, _, _, teacher = _binary_task(n=1000)
    p1 = np.array(teacher["probs"])[:, 1]
    # execute
    result = gap.task_gap(task, teacher, teacher, hardest_fraction=0.1)
    # assert: the 100 probabilities nearest 0.5, of either sign; the teacher is right on about half of them
    index = [e["index"] for e in result["hardest"]["examples"]]
    nearest = np.argsort(np.abs(p1 - 0.5), kind="stable")[:100]
    assert result["hardest"]["n"] == 100 and index == nearest[:10].tolist()
    assert 0.3 < result["hardest"]["teacher"] < 0.7
    assert "no significant difference" in result["statement"] and result["hardest"]["change"] == 0


def _gap_text(result) -> str:
    """The report's gap section of one task, as text (report.md's blocks, tables flattened)."""
    from edgekit.stages.report import _gap

    blocks = _gap({"selected": {"name": "L1-int8"}, "gap": {result["task"]: result}})
    return "\n".join(" | ".join(map(str, block[1])) if block[0] == "table" else str(block[1]) for block in blocks)


@pytest.mark.parametrize("metric", ["macro_f1", "accuracy"])
def test_slices_under_a_macro_f1_headline_say_they_are_accuracy_and_why(classification, metric):
    # setup: the same predictions, the task scored by macro F1 or by accuracy; the fixture's student as the
    # teacher, so the other side loses on a slice
    c = classification
    task = _task("classification", c.task.test, train=c.task.train, labels=LABELS, metric=metric)
    # execute
    result = gap.task_gap(task, c.student, c.teacher, quantized=c.quantized)
    text = _gap_text(result)
    # assert: the headline is the task's metric, every slice figure names accuracy
    assert result["metric"] == metric and result["slice_metric"] == "accuracy"
    assert result["hardest"]["metric"] == "accuracy" and all(s["metric"] == "accuracy" for s in result["slices"])
    assert "teacher accuracy [95% CI] | shipped accuracy [95% CI] | change in accuracy [95% CI]" in text
    assert re.search(r"Hardest cases \(.*; n=\d+\), accuracy: teacher ", text)
    assert f"overall {metric} is" in result["statement"]
    worst = re.search(r"the largest drop is on [^:]*: (\w+) ", result["statement"])
    assert worst and worst.group(1) == "accuracy"
    if metric == "macro_f1":  # said once, with the reason: a class slice has one gold class
        assert "macro F1 is not defined" in result["slice_metric_note"]
        assert "Slices and hardest cases are scored by accuracy, not the task's macro_f1: a class slice" in text
    else:
        assert result["slice_metric_note"] is None and "not the task's" not in text


def test_similarity_flips_are_rank_moves_closer_to_or_further_from_the_gold_in_the_report():
    # setup: 40 pairs; the quantized file moves 2 pairs far toward their gold rank and 1 far away from it
    n = 40
    score = np.linspace(0, 5, n)
    student = score / 5
    quantized = student.copy()
    quantized[[0, 39]] = quantized[[39, 0]]  # two pairs swap ends: both away from their gold ranks
    teacher = quantized.copy()  # ...as the teacher had them, so distillation moved them back
    task = _task("similarity", {"text_a": [f"a{i}" for i in range(n)], "text_b": [f"b{i}" for i in range(n)],
                                "score": score})
    # execute
    result = gap.task_gap(task, {"cosine": teacher.tolist()}, {"cosine": student.tolist()},
                          quantized={"cosine": quantized.tolist()})
    text = _gap_text(result)
    old = json.loads(json.dumps(result))  # a report from before the rename: the same counts under the old keys
    for flips in old["flips"].values():
        flips["a_right_b_wrong"], flips["b_right_a_wrong"] = flips.pop("further_from_gold"), flips.pop("closer_to_gold")
    # assert: distillation moved 2 pairs closer to the gold rank, quantization the same 2 further away
    distilled, quantized_flips = result["flips"]["distillation"], result["flips"]["quantization"]
    assert (distilled["count"], distilled["closer_to_gold"], distilled["further_from_gold"]) == (2, 2, 0)
    assert (quantized_flips["count"], quantized_flips["closer_to_gold"], quantized_flips["further_from_gold"]) == \
        (2, 0, 2)
    assert "Rank moves by distillation: 2 pairs (the pair's rank among all 40 moves by more than 10% of n (4 " \
           "places) from teacher to student fp32;" in text
    assert "2 moved further from the gold rank, 0 closer to it." in text
    assert "right before" not in text and "wrong" not in text
    assert _gap_text(old) == text
