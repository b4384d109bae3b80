"""retrieval: queries, each with the one document it should find, scored by the rank of that document.

Columns: query, document (str); row i's query matches row i's document, and every document of the test
split is a candidate for every query. The graph output is the `embedding`; the predictions record each
query's gold rank (1: its document is the most similar), which MRR and recall@k are computed from.

The hardest queries are those whose words point away from their document: the lowest lexical margin,
the share of the query's words found in its gold document less the largest share found in any other test
document. Word overlap is what a keyword search would go by; where another document shares more of the
query's words, a model has to retrieve by meaning. The rule reads the texts alone, so the slice is the
same whichever model is compared and neither model's errors pick it; ranking queries by the teacher's
gold rank picked the teacher's misses by construction. (The predictions keep each query's gold rank, not
the similarities a teacher margin would need.)
"""

from __future__ import annotations

from edgekit.data.kinds.base import TaskKind
from edgekit.names import EMBEDDING


class Retrieval(TaskKind):
    name = "retrieval"
    input_columns = ("query",)
    target_column = "document"
    text_columns = ("query", "document")
    metrics = ("mrr", "recall@1", "recall@5")
    what = ("query", "document")
    description = "queries with the document each should find"

    slice_metric = "mrr"
    slice_metric_why = ("MRR reads how far down every query's gold document ranks, recall@k only whether it is in "
                        "the top k: on a slice of a few dozen queries it tells the models apart with fewer queries")
    prediction = "gold_rank"
    agreement_rule = ("share of queries where the student finds the gold document first exactly when the "
                      "teacher does")
    hardest_rule = ("queries with the lowest lexical margin (the share of the query's words in its gold document "
                    "less the largest share in any other test document)")
    hardest_by = "lowest lexical margin"
    hardness_key = "lexical_margin"
    flip_rule = "whether the gold document ranks first differs"

    def output(self, task_name: str) -> str:
        return EMBEDDING

    def cosine_pairs(self, columns: dict) -> tuple[list[str], list[str], bool]:
        # An app keeping "documents with cosine >= t" decides on every query x document pair, most of them misses.
        return list(columns["query"]), list(columns["document"]), True

    def length_texts(self, columns: dict) -> list[str]:
        return list(columns["query"])

    def example_lengths(self, columns: dict, lengths):
        return lengths(columns["query"])

    def evaluate(self, session, task, tokenizer, max_length: int, batch_size: int) -> tuple[dict, dict]:
        import numpy as np

        from edgekit.data.metrics import gold_ranks
        from edgekit.runtime.graph_io import embed_texts, unit

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

        from edgekit.data import metrics

        # The predictions carry each query's gold rank (edgekit.data.metrics.gold_ranks), not the similarity matrix.
        return float(np.mean(metrics.rank_scores(metric, outcome)))

    def hardness(self, test: dict, gold, teacher: dict):
        return lexical_margin(list(test["query"]), list(test["document"]))

    def agreement(self, outcome, teacher):
        import numpy as np

        return np.mean((outcome == 1) == (teacher == 1))

    def right(self, outcome, gold):
        return outcome == 1

    def differs(self, a, b):
        return (a == 1) != (b == 1)

    def answer(self, value):
        return int(value)

    def gold_answer(self, gold, i: int):
        return 1  # the gold document should rank 1st


_ROWS_PER_CHUNK_CELLS = 4_000_000  # (queries, documents) overlaps held at once


def lexical_margin(queries: list[str], documents: list[str]):
    """Per query i, the share of its distinct words (lowercased \\w+) found in document i less the largest share
    found in any other document (n,): 1 when only its own document has its words, below 0 when another has more;
    0 for a query without words."""
    import re

    import numpy as np
    from scipy.sparse import csr_matrix

    vocabulary: dict[str, int] = {}

    def words(texts: list[str]):
        """(texts, vocabulary) 0/1 matrix of which words each text has."""
        rows, cols = [], []
        for i, text in enumerate(texts):
            found = {vocabulary.setdefault(w, len(vocabulary)) for w in re.findall(r"\w+", str(text).lower())}
            rows += [i] * len(found)
            cols += sorted(found)
        return rows, cols

    q_rows, q_cols = words(queries)
    d_rows, d_cols = words(documents)
    shape = len(vocabulary) or 1
    q = csr_matrix((np.ones(len(q_rows)), (q_rows, q_cols)), shape=(len(queries), shape))
    d = csr_matrix((np.ones(len(d_rows)), (d_rows, d_cols)), shape=(len(documents), shape))
    sizes = np.maximum(np.asarray(q.sum(axis=1)).ravel(), 1)  # a query without words shares nothing
    margin = np.zeros(len(queries))
    chunk = max(1, _ROWS_PER_CHUNK_CELLS // max(len(documents), 1))
    for start in range(0, len(queries), chunk):
        stop = min(start + chunk, len(queries))
        shared = (q[start:stop] @ d.T).toarray() / sizes[start:stop, None]  # (chunk, documents)
        own = np.arange(start, stop)
        mine = shared[own - start, own]
        shared[own - start, own] = -np.inf
        best_other = shared.max(axis=1) if shared.shape[1] > 1 else np.zeros(stop - start)
        margin[start:stop] = mine - best_other
    return margin


KIND = Retrieval()
