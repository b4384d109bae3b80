"""similarity: pairs of texts with a gold similarity score, scored by the cosine of their embeddings.

Columns: text_a, text_b (str), score (float64). The graph output is the `embedding` (batch, hidden);
the predictions record each pair's cosine. The metrics are rank correlations over all pairs, so no
single pair is right or wrong: the gap report calls a pair flipped when its rank moves far.
"""

from __future__ import annotations

from edgekit.names import EMBEDDING
from edgekit.tasks.base import TaskKind


def _ranks(values):
    from scipy.stats import rankdata  # as edgekit.metrics: scipy comes with scikit-learn

    return rankdata(values)


class Similarity(TaskKind):
    name = "similarity"
    input_columns = ("text_a", "text_b")
    target_column = "score"
    text_columns = ("text_a", "text_b")
    metrics = ("spearman", "pearson")
    what = ("pair", "score")
    description = "pairs of texts with a similarity score"
    builtins = ("lee",)

    slice_metric = "spearman"  # Pearson on a small slice would say more about the slice's size than the models
    prediction = "cosine"
    correlation = True
    agreement_rule = "Spearman correlation between the student's and the teacher's cosines"
    hardest_rule = "pairs whose teacher-cosine rank is farthest from their gold-score rank (|rank difference| / n)"

    def output(self, task_name: str) -> str:
        return EMBEDDING

    def length_texts(self, columns: dict) -> list[str]:
        return list(columns["text_a"])

    def example_lengths(self, columns: dict, lengths):
        import numpy as np

        return np.maximum(lengths(columns["text_a"]), lengths(columns["text_b"]))  # a pair: its longer side

    def evaluate(self, session, task, tokenizer, max_length: int, batch_size: int) -> tuple[dict, dict]:
        import numpy as np

        from edgekit.graph_io import embed_texts, unit

        a, b = list(task.test["text_a"]), list(task.test["text_b"])
        # One pass over both sides: sorting the union by length batches better than two passes.
        emb = embed_texts(session, tokenizer, a + b, max_length, batch_size)
        cosine = (unit(emb[:len(a)]) * unit(emb[len(a):])).sum(axis=1)
        return {"x": cosine, "y": np.asarray(task.test["score"], dtype=np.float64)}, {"cosine": cosine.tolist()}

    # --- the gap report ---------------------------------------------------------------------------

    def gold(self, test: dict):
        import numpy as np

        return np.asarray(test["score"], dtype=np.float64)

    def outcome(self, values):
        return values.astype("float64")

    def score(self, metric: str, outcome, gold) -> float:
        from edgekit import metrics

        return {"spearman": metrics.spearman, "pearson": metrics.pearson}[metric](outcome, gold)

    def teacher_loss(self, gold, teacher: dict):
        import numpy as np

        cosine = np.asarray(teacher["cosine"], dtype=np.float64)
        return np.abs(_ranks(cosine) - _ranks(gold)) / len(gold)

    def agreement(self, outcome, teacher):
        from edgekit import metrics

        return metrics.spearman(outcome, teacher)

    def resampled(self, outcome, gold, rows):
        import numpy as np
        from scipy.stats import rankdata

        x, y = rankdata(outcome[rows], axis=1), rankdata(gold[rows], axis=1)  # Spearman = Pearson of the ranks
        x, y = x - x.mean(axis=1, keepdims=True), y - y.mean(axis=1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            return (x * y).sum(axis=1) / np.sqrt((x * x).sum(axis=1) * (y * y).sum(axis=1))

    def answer(self, value):
        return float(value)

    def gold_answer(self, gold, i: int):
        return float(gold[i])


KIND = Similarity()
