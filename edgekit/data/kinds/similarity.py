"""similarity: pairs of texts with a gold similarity score, scored by the cosine of their embeddings.

Columns: text_a, text_b (str), score (float64). The graph output is the `embedding` (batch, hidden);
the predictions record each pair's cosine. The metrics are rank correlations over all pairs, so no
single pair is right or wrong: the gap report calls a pair flipped when its rank moves far.

The hardest pairs are those whose gold score lies nearest the middle of the test split's gold range
(halfway between its lowest and highest score): neither clearly alike nor clearly unrelated, where human
raters agree least and a model must order pairs whose gold scores differ little. The rule reads the gold
scores alone, so the slice is the same whichever model is compared, and neither model's errors pick it;
ranking pairs by how far the teacher's cosine rank is from the gold rank picked the teacher's errors by
construction. There is no per-pair confidence to take a margin of, as classification does: a cosine's
size is not the model's certainty.
"""

from __future__ import annotations

from edgekit.data.kinds.base import TaskKind
from edgekit.names import EMBEDDING


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
    slice_metric_why = ("Pearson on a slice of a few dozen pairs follows its few extreme pairs; a rank correlation "
                        "holds up")
    prediction = "cosine"
    correlation = True
    agreement_rule = "Spearman correlation between the student's and the teacher's cosines"
    hardest_rule = ("pairs whose gold score is nearest the middle of the gold range (|score - midpoint|, the "
                    "midpoint halfway between the lowest and highest gold score)")
    hardest_by = "gold score nearest mid-range"
    hardness_key = "gold_distance_from_midpoint"
    pair_cosines = "cosine"

    def output(self, task_name: str) -> str:
        return EMBEDDING

    def cosine_pairs(self, columns: dict) -> tuple[list[str], list[str], bool]:
        return list(columns["text_a"]), list(columns["text_b"]), False  # each pair is one decision

    def length_texts(self, columns: dict) -> list[str]:
        return list(columns["text_a"])

    def example_lengths(self, columns: dict, lengths):
        import numpy as np

        return np.maximum(lengths(columns["text_a"]), lengths(columns["text_b"]))  # a pair: its longer side

    def evaluate(self, session, task, tokenizer, max_length: int, batch_size: int) -> tuple[dict, dict]:
        import numpy as np

        from edgekit.runtime.graph_io import embed_texts, unit

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
        from edgekit.data import metrics

        return {"spearman": metrics.spearman, "pearson": metrics.pearson}[metric](outcome, gold)

    def hardness(self, test: dict, gold, teacher: dict):
        import numpy as np

        gold = np.asarray(gold, dtype=np.float64)
        return np.abs(gold - (gold.min() + gold.max()) / 2)

    def agreement(self, outcome, teacher):
        from edgekit.data import metrics

        return metrics.spearman(outcome, teacher)

    def answer(self, value):
        return float(value)

    def gold_answer(self, gold, i: int):
        return float(gold[i])


KIND = Similarity()
