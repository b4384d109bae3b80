"""Task metrics, and bootstrap 95% intervals for them (numpy and scipy only: no torch here).

Each metric has a row-wise form over (resamples, n) arrays, so that one vectorized call
scores every bootstrap resample: 1,000 resamples of 2.5k examples take milliseconds.
A test split of ~2.5k examples carries an interval of about +-2 accuracy points, as
large as the differences between students: report the interval next to the value.
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
    statistic, n = _statistic(metric_name, **arrays)
    value = float(statistic(np.arange(n)[None])[0])
    samples = _bootstrap(statistic, n, seed, resamples)
    samples = samples[~np.isnan(samples)]  # resamples where a correlation is undefined (constant side)
    lo, hi = np.percentile(samples, [2.5, 97.5]) if samples.size else (np.nan, np.nan)
    return {"value": value, "ci95": [float(lo), float(hi)], "n": n}


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


def _statistic(metric_name: str, **arrays):
    """(statistic, n): statistic maps (resamples, n) example indices to each resample's metric."""
    if metric_name in ("accuracy", "macro_f1"):
        pred, gold = _pair(arrays["pred"], arrays["gold"], "pred", "gold")
        if metric_name == "accuracy":
            per_example = (pred == gold).astype(np.float64)
        else:
            pred_codes, gold_codes, n_classes = _codes(pred, gold)
            return (lambda index: _macro_f1_rows(pred_codes[index], gold_codes[index], n_classes)), len(pred)
    elif metric_name in ("spearman", "pearson"):
        x, y = _pair(arrays["x"], arrays["y"], "x", "y")
        x, y = x.astype(np.float64), y.astype(np.float64)
        rows = _spearman_rows if metric_name == "spearman" else _pearson_rows
        return (lambda index: rows(x[index], y[index])), len(x)
    else:
        per_example = rank_scores(metric_name, gold_ranks(arrays["similarity"], arrays["gold_index"]))
    return (lambda index: per_example[index].mean(axis=1)), len(per_example)


def _bootstrap(statistic, n: int, seed: int, resamples: int) -> np.ndarray:
    """The statistic on `resamples` resamples (with replacement) of the n examples, in chunks to bound memory."""
    rng = np.random.default_rng(seed)
    chunk = max(1, _CELLS_PER_CHUNK // n)
    values = [statistic(rng.integers(0, n, size=(min(chunk, resamples - start), n)))
              for start in range(0, resamples, chunk)]
    return np.concatenate(values)
