"""Task metrics, and bootstrap 95% intervals for them (numpy and scipy only: no torch here).

Each metric has a row-wise form over (resamples, n) arrays, so that one vectorized call
scores every bootstrap resample: 1,000 resamples of 2.5k examples take milliseconds.
A test split of ~2.5k examples carries an interval of about +-2 accuracy points, as
large as the differences between students: report the interval next to the value.

Two models scored on the same examples are compared by a paired bootstrap (paired_difference):
both are scored on the same resampled examples, so what the two share (the easy and the hard
examples drawn) cancels, and the interval of their difference is far narrower than two separate
intervals suggest: two files disagreeing on 3 of 2,550 texts differ by +-0.002, not +-0.02.
What a paired comparison reads per example, its outcome: the predicted label (accuracy,
macro_f1, against gold labels), the score (spearman, pearson, against gold scores) or the gold
document's rank (mrr, recall@k; no gold array: query i's gold is document i).
"""

from __future__ import annotations

import numpy as np

# metric -> the keyword arrays score_with_ci takes for it
METRIC_ARRAYS = {
    "accuracy": ("pred", "gold"),
    "macro_f1": ("pred", "gold"),
    "spearman": ("x", "y"),
    "pearson": ("x", "y"),
    "mrr": ("similarity", "gold_index"),
    "recall@1": ("similarity", "gold_index"),
    "recall@5": ("similarity", "gold_index"),
}
_CELLS_PER_CHUNK = 4_000_000  # resampled values held at once (a few arrays of this many float64)


def accuracy(pred, gold) -> float:
    """Share of examples whose prediction equals the gold label."""
    pred, gold = _pair(pred, gold, "pred", "gold")
    return float(np.mean(pred == gold))


def macro_f1(pred, gold) -> float:
    """F1 averaged over the classes in `gold` or `pred`, each class weighing the same (as sklearn's macro)."""
    pred, gold = _pair(pred, gold, "pred", "gold")
    pred_codes, gold_codes, n_classes = _codes(pred, gold)
    return float(_macro_f1_rows(pred_codes[None], gold_codes[None], n_classes)[0])


def spearman(x, y) -> float:
    """Spearman's rank correlation; tied values share their average rank. NaN when either side is constant."""
    x, y = _pair(x, y, "x", "y")
    return float(_spearman_rows(x[None].astype(np.float64), y[None].astype(np.float64))[0])


def pearson(x, y) -> float:
    """Pearson's linear correlation. NaN when either side is constant."""
    x, y = _pair(x, y, "x", "y")
    return float(_pearson_rows(x[None].astype(np.float64), y[None].astype(np.float64))[0])


def mrr(similarity, gold_index) -> float:
    """Mean reciprocal rank of each query's gold document; `similarity` is (n_queries, n_docs)."""
    return float(np.mean(rank_scores("mrr", gold_ranks(similarity, gold_index))))


def recall_at_k(similarity, gold_index, k: int) -> float:
    """Share of queries whose gold document ranks in the top `k`; `similarity` is (n_queries, n_docs)."""
    if k < 1:
        raise ValueError(f"recall@k needs k >= 1 (got {k})")
    return float(np.mean(rank_scores(f"recall@{k}", gold_ranks(similarity, gold_index))))


def rank_scores(metric_name: str, ranks) -> np.ndarray:
    """Each query's score under a rank metric from its 1-based gold rank: 1/rank (mrr) or
    rank <= k (recall@k)."""
    ranks = np.asarray(ranks, dtype=np.float64)
    if metric_name == "mrr":
        return 1.0 / ranks
    return (ranks <= int(metric_name.split("@")[1])).astype(np.float64)


def score_with_ci(metric_name: str, seed: int = 0, resamples: int = 1000, **arrays) -> dict:
    """{"value", "ci95": [lo, hi], "n"}: a metric and its percentile bootstrap 95% interval.

    Examples (rows of the arrays; queries for mrr and recall@k) are resampled with
    replacement `resamples` times with a seeded generator, so the interval is reproducible.
    Arrays by metric: pred/gold (accuracy, macro_f1), x/y (spearman, pearson),
    similarity/gold_index (mrr, recall@1, recall@5).
    """
    if metric_name not in METRIC_ARRAYS:
        raise ValueError(f"unknown metric '{metric_name}'; choose one of: {', '.join(METRIC_ARRAYS)}")
    needed = METRIC_ARRAYS[metric_name]
    if set(arrays) != set(needed):
        raise TypeError(f"{metric_name} takes the arrays {' and '.join(needed)} (got: {', '.join(arrays) or 'none'})")
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1 (got {resamples})")
    if metric_name in ("accuracy", "macro_f1"):
        outcome, gold = _pair(arrays["pred"], arrays["gold"], "pred", "gold")
    elif metric_name in ("spearman", "pearson"):
        outcome, gold = _pair(arrays["x"], arrays["y"], "x", "y")
    else:
        outcome, gold = gold_ranks(arrays["similarity"], arrays["gold_index"]), None
    statistic = _statistic(metric_name, outcome, gold)
    n = len(outcome)
    value = float(statistic(np.arange(n)[None])[0])
    samples = _bootstrap({"model": statistic}, np.arange(n), seed, resamples)["model"]
    lo, hi = interval95(samples) or (np.nan, np.nan)
    return {"value": value, "ci95": [float(lo), float(hi)], "n": n}


def paired_scores(metric_name: str, outcomes: dict, gold=None, index=None, seed: int = 0,
                  resamples: int = 1000) -> dict[str, np.ndarray]:
    """{model: its metric on each of `resamples` bootstrap resamples (resamples,)}, every model scored on
    the SAME resampled examples (the paired bootstrap: see the module docstring).

    `outcomes`: {model: per-example outcome (n,)}, `gold` (n,) or None (rank metrics); `index`: resample
    only these example indices (a slice), all by default. A resample where a correlation is undefined
    (a constant side) scores NaN.
    """
    if metric_name not in METRIC_ARRAYS:
        raise ValueError(f"unknown metric '{metric_name}'; choose one of: {', '.join(METRIC_ARRAYS)}")
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1 (got {resamples})")
    statistics, n = {}, None
    for name, outcome in outcomes.items():
        outcome = np.asarray(outcome)
        if outcome.ndim != 1 or not len(outcome) or (n is not None and len(outcome) != n) \
                or (gold is not None and len(gold) != len(outcome)):
            raise ValueError(f"every outcome (and gold) must be a non-empty 1-D array of one length "
                             f"(got {name}: {outcome.shape})")
        n = len(outcome)
        statistics[name] = _statistic(metric_name, outcome, None if gold is None else np.asarray(gold))
    index = np.arange(n) if index is None else np.asarray(index, dtype=np.int64)
    if not len(index):
        raise ValueError("index must name at least one example")
    return _bootstrap(statistics, index, seed, resamples)


def paired_difference(metric_name: str, a, b, gold=None, index=None, seed: int = 0, resamples: int = 1000) -> dict:
    """{"value": metric(a) - metric(b), "ci95": [lo, hi] or None, "n"}: the difference of two models scored
    on the same examples, with its paired percentile bootstrap 95% interval (both resampled on the same
    examples; None when every resample is undefined). `a`, `b`: per-example outcomes (see the module
    docstring), `gold` as paired_scores takes it; `index`: only these examples."""
    a, b = np.asarray(a), np.asarray(b)
    scores = paired_scores(metric_name, {"a": a, "b": b}, gold, index, seed, resamples)
    rows = (np.arange(len(a)) if index is None else np.asarray(index, dtype=np.int64))[None]
    gold = None if gold is None else np.asarray(gold)
    value = _statistic(metric_name, a, gold)(rows)[0] - _statistic(metric_name, b, gold)(rows)[0]
    return {"value": float(value), "ci95": interval95(scores["a"] - scores["b"]), "n": rows.shape[1]}


def interval95(samples) -> list[float] | None:
    """The percentile 95% interval of bootstrap samples, leaving out NaN (resamples where a correlation is
    undefined); None when nothing is left."""
    samples = np.asarray(samples, dtype=np.float64)
    samples = samples[~np.isnan(samples)]
    return [float(v) for v in np.percentile(samples, [2.5, 97.5])] if samples.size else None


# --- shared pieces ------------------------------------------------------------------------------


def _pair(a, b, name_a: str, name_b: str) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a), np.asarray(b)
    if a.ndim != 1 or b.ndim != 1 or len(a) != len(b) or not len(a):
        raise ValueError(f"{name_a} and {name_b} must be non-empty 1-D arrays of the same length "
                         f"(got shapes {a.shape} and {b.shape})")
    return a, b


def _codes(pred: np.ndarray, gold: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Labels of any type as indices 0..k-1 into their union."""
    classes, codes = np.unique(np.concatenate([pred, gold]), return_inverse=True)
    codes = codes.reshape(-1)
    return codes[:len(pred)], codes[len(pred):], len(classes)


def gold_ranks(similarity, gold_index) -> np.ndarray:
    """1-based rank of each query's gold document (n_queries,).

    Ties count against the model: the rank is the number of documents scoring at least
    as high as the gold one, so a constant scorer earns nothing. Pass distinct documents.
    """
    similarity, gold_index = np.asarray(similarity, dtype=np.float64), np.asarray(gold_index)
    if similarity.ndim != 2 or gold_index.shape != (len(similarity),) or not len(similarity):
        raise ValueError("similarity must be (n_queries, n_docs) and gold_index (n_queries,) "
                         f"(got shapes {similarity.shape} and {gold_index.shape})")
    if not np.issubdtype(gold_index.dtype, np.integer) or gold_index.min() < 0 \
            or gold_index.max() >= similarity.shape[1]:
        raise ValueError(f"gold_index must hold document indices in [0, {similarity.shape[1]})")
    gold = similarity[np.arange(len(similarity)), gold_index]  # (n_queries,)
    return (similarity >= gold[:, None]).sum(axis=1)


def _pearson_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson's r of each row pair of (rows, n) float arrays -> (rows,)."""
    x = x - x.mean(axis=1, keepdims=True)
    y = y - y.mean(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (x * y).sum(axis=1) / np.sqrt((x * x).sum(axis=1) * (y * y).sum(axis=1))
    return np.clip(r, -1.0, 1.0)  # rounding can step just past +-1


def _spearman_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata  # scipy comes with scikit-learn

    return _pearson_rows(rankdata(x, axis=1), rankdata(y, axis=1))


def _macro_f1_rows(pred: np.ndarray, gold: np.ndarray, n_classes: int) -> np.ndarray:
    """Macro F1 of each row of (rows, n) class indices -> (rows,), over the classes present in that row."""
    rows = len(pred)
    # One bincount gives every row's confusion matrix: cell (row, gold, pred).
    cells = (np.arange(rows)[:, None] * n_classes + gold) * n_classes + pred
    confusion = np.bincount(cells.ravel(), minlength=rows * n_classes * n_classes)
    confusion = confusion.reshape(rows, n_classes, n_classes)
    tp = np.diagonal(confusion, axis1=1, axis2=2)
    errors = confusion.sum(axis=2) + confusion.sum(axis=1) - 2 * tp  # fn + fp
    present = (tp + errors) > 0  # the class occurs in gold or pred
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(present, 2 * tp / (2 * tp + errors), 0.0)
    return f1.sum(axis=1) / present.sum(axis=1)


def _statistic(metric_name: str, outcome: np.ndarray, gold: np.ndarray | None):
    """statistic: maps (resamples, n) example indices to each resample's metric of the per-example `outcome`
    (predicted labels, scores or gold ranks; see the module docstring)."""
    if metric_name in ("accuracy", "macro_f1"):
        if gold is None:
            raise ValueError(f"{metric_name} needs the gold labels")
        if metric_name == "macro_f1":
            pred_codes, gold_codes, n_classes = _codes(outcome, gold)
            return lambda index: _macro_f1_rows(pred_codes[index], gold_codes[index], n_classes)
        per_example = (outcome == gold).astype(np.float64)
    elif metric_name in ("spearman", "pearson"):
        if gold is None:
            raise ValueError(f"{metric_name} needs the gold scores")
        x, y = outcome.astype(np.float64), gold.astype(np.float64)
        rows = _spearman_rows if metric_name == "spearman" else _pearson_rows
        return lambda index: rows(x[index], y[index])
    else:
        per_example = rank_scores(metric_name, outcome)
    return lambda index: per_example[index].mean(axis=1)


def _bootstrap(statistics: dict, index: np.ndarray, seed: int, resamples: int) -> dict[str, np.ndarray]:
    """Each statistic on the same `resamples` resamples (with replacement) of the examples in `index`, in
    chunks to bound memory."""
    rng, n = np.random.default_rng(seed), len(index)
    chunk = max(1, _CELLS_PER_CHUNK // n)
    values = {name: [] for name in statistics}
    for start in range(0, resamples, chunk):
        rows = index[rng.integers(0, n, size=(min(chunk, resamples - start), n))]  # (chunk, n) example indices
        for name, statistic in statistics.items():
            values[name].append(statistic(rows))
    return {name: np.concatenate(parts) for name, parts in values.items()}
