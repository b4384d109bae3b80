"""retrieval: queries, each with the one document it should find, scored by the rank of that document.

Columns: query, document (str); row i's query matches row i's document, and every document of the test
split is a candidate for every query. The graph output is the `embedding`; the predictions record each
query's gold rank (1: its document is the most similar), which MRR and recall@k are computed from.
"""

from __future__ import annotations

from edgekit.names import EMBEDDING
from edgekit.tasks.base import TaskKind


class Retrieval(TaskKind):
    name = "retrieval"
    input_columns = ("query",)
    target_column = "document"
    text_columns = ("query", "document")
    metrics = ("mrr", "recall@1", "recall@5")
    what = ("query", "document")
    description = "queries with the document each should find"

    slice_metric = "mrr"
    prediction = "gold_rank"
    agreement_rule = ("share of queries where the student finds the gold document first exactly when the "
                      "teacher does")
    hardest_rule = "queries whose gold document the teacher ranks lowest (teacher loss = the gold rank)"
    flip_rule = "whether the gold document ranks first differs"

    def output(self, task_name: str) -> str:
        return EMBEDDING

    def length_texts(self, columns: dict) -> list[str]:
        return list(columns["query"])

    def example_lengths(self, columns: dict, lengths):
        return lengths(columns["query"])

    def evaluate(self, session, task, tokenizer, max_length: int, batch_size: int) -> tuple[dict, dict]:
        import numpy as np

        from edgekit.graph_io import embed_texts, unit
        from edgekit.metrics import gold_ranks

        queries, documents = list(task.test["query"]), list(task.test["document"])
        emb = embed_texts(session, tokenizer, queries + documents, max_length, batch_size)
        similarity = unit(emb[:len(queries)]) @ unit(emb[len(queries):]).T
        gold = np.arange(len(queries))
        return {"similarity": similarity, "gold_index": gold}, {"gold_rank": gold_ranks(similarity, gold).tolist()}

    # --- the gap report: outcomes are gold ranks, and query i's gold is document i ----------------

    def gold(self, test: dict):
        return None

    def outcome(self, values):
        return values.astype("int64")

    def score(self, metric: str, outcome, gold) -> float:
        import numpy as np

        from edgekit import metrics

        # The predictions carry each query's gold rank (edgekit.metrics.gold_ranks), not the similarity matrix.
        return float(np.mean(metrics.rank_scores(metric, outcome)))

    def teacher_loss(self, gold, teacher: dict):
        import numpy as np

        return np.asarray(teacher["gold_rank"], dtype=np.float64)

    def agreement(self, outcome, teacher):
        import numpy as np

        return np.mean((outcome == 1) == (teacher == 1))

    def resampled(self, outcome, gold, rows):
        from edgekit import metrics

        return metrics.rank_scores(self.slice_metric, outcome)[rows].mean(axis=1)

    def right(self, outcome, gold):
        return outcome == 1

    def differs(self, a, b):
        return (a == 1) != (b == 1)

    def answer(self, value):
        return int(value)

    def gold_answer(self, gold, i: int):
        return 1  # the gold document should rank 1st


KIND = Retrieval()
