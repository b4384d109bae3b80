"""classification: texts with class labels, scored by the argmax of a logits head.

Columns: text (str), label (int64 class index; TaskData.labels names them). The graph output is
`<task>_logits` (batch, classes); the predictions record the argmax, its softmax probability and
the whole softmax (the gap report needs margins and calibration).

The hardest examples are those the teacher is least sure of: the lowest margin between its top two
probabilities, whether its top class is right or wrong. So the slice holds the teacher's close calls,
its near misses and its narrow wins alike, and both models are scored on it as they come; ranking by the
teacher's loss on the gold label instead picks its errors by construction (the teacher scored 0.000 on
that slice, a student 0.122: a student "better on the hardest cases" by definition). On the default
recipe's sentiment the 255 lowest-margin texts score 0.553 for the teacher and 0.561 for L2-int8-dynamic
(paired 95% of the change -0.075 to +0.090: no significant difference).
"""

from __future__ import annotations

from edgekit.data.kinds.base import TaskKind
from edgekit.names import logits_name


class Classification(TaskKind):
    name = "classification"
    input_columns = ("text",)
    target_column = "label"
    text_columns = ("text",)
    metrics = ("accuracy", "macro_f1")
    what = ("text", "label")
    description = "texts with class labels"
    labelled = True
    builtins = ("rotten_tomatoes",)

    # Accuracy within a class is that class's recall; macro F1 on a small slice says more about its size.
    slice_metric = "accuracy"
    slice_metric_why = ("a class slice holds one gold class, where macro F1 is not defined (accuracy there is the "
                        "class's recall), and on a slice of a few dozen examples macro F1 moves with which classes "
                        "happen to be in it more than with the models")
    prediction = "pred"
    agreement_rule = "share of examples where the student predicts the teacher's class"
    hardest_rule = ("examples with the lowest teacher margin (its top-1 minus its top-2 probability), whether "
                    "its top class is right or wrong")
    hardest_by = "lowest teacher margin"
    hardness_key = "teacher_margin"
    flip_rule = "the predicted class differs"

    def output(self, task_name: str) -> str:
        return logits_name(task_name)

    def length_texts(self, columns: dict) -> list[str]:
        return list(columns["text"])

    def example_lengths(self, columns: dict, lengths):
        return lengths(columns["text"])

    def run_logits(self, session, columns: dict, output: str, tokenizer, max_length: int, batch_size: int):
        """The graph's logits for every example of `columns`, (N, classes)."""
        from edgekit.runtime.graph_io import run_texts

        return run_texts(session, tokenizer, list(columns["text"]), output, max_length, batch_size)

    def evaluate(self, session, task, tokenizer, max_length: int, batch_size: int) -> tuple[dict, dict]:
        import numpy as np

        from edgekit.errors import DataError
        from edgekit.runtime.graph_io import softmax

        output = self.output(task.name)
        logits = self.run_logits(session, task.test, output, tokenizer, max_length, batch_size).astype(np.float64)
        gold = np.asarray(task.test["label"], dtype=np.int64)
        if gold.max() >= logits.shape[1] or gold.min() < 0:
            raise DataError(f"task '{task.name}' has labels {gold.min()}..{gold.max()} but the graph's "
                            f"'{output}' has {logits.shape[1]} classes; evaluate the model trained "
                            "for these labels, or check the label column.")
        pred = logits.argmax(axis=1)
        probs = softmax(logits)
        # The full distribution, not just its max: edgekit.stages.gap needs margins, gold-label losses and calibration.
        return {"pred": pred, "gold": gold}, {"pred": pred.tolist(), "confidence": probs.max(axis=1).tolist(),
                                              "probs": probs.tolist()}

    # --- the gap report ---------------------------------------------------------------------------

    def gold(self, test: dict):
        import numpy as np

        return np.asarray(test["label"], dtype=np.int64)

    def outcome(self, values):
        return values.astype("int64")

    def score(self, metric: str, outcome, gold) -> float:
        from edgekit.data import metrics

        return {"accuracy": metrics.accuracy, "macro_f1": metrics.macro_f1}[metric](outcome, gold)

    def hardness(self, test: dict, gold, teacher: dict):
        import numpy as np

        probs = np.asarray(teacher["probs"], dtype=np.float64)  # (n, classes)
        if probs.shape[1] < 2:
            return probs[:, 0]
        top = np.sort(probs, axis=1)
        return top[:, -1] - top[:, -2]  # the margin: the gold label plays no part

    def agreement(self, outcome, teacher):
        import numpy as np

        return np.mean(outcome == teacher)

    def right(self, outcome, gold):
        return outcome == gold

    def differs(self, a, b):
        return a != b

    def answer(self, value):
        return int(value)

    def gold_answer(self, gold, i: int):
        return int(gold[i])


KIND = Classification()
