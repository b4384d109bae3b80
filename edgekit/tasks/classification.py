"""classification: texts with class labels, scored by the argmax of a logits head.

Columns: text (str), label (int64 class index; TaskData.labels names them). The graph output is
`<task>_logits` (batch, classes); the predictions record the argmax, its softmax probability and
the whole softmax (the gap report needs margins, gold-label losses and calibration).
"""

from __future__ import annotations

from edgekit.names import logits_name
from edgekit.tasks.base import TaskKind


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
    prediction = "pred"
    agreement_rule = "share of examples where the student predicts the teacher's class"
    hardest_rule = "examples whose gold label has the highest cross-entropy under the teacher's probabilities"
    flip_rule = "the predicted class differs"

    def output(self, task_name: str) -> str:
        return logits_name(task_name)

    def length_texts(self, columns: dict) -> list[str]:
        return list(columns["text"])

    def example_lengths(self, columns: dict, lengths):
        return lengths(columns["text"])

    def run_logits(self, session, columns: dict, output: str, tokenizer, max_length: int, batch_size: int):
        """The graph's logits for every example of `columns`, (N, classes)."""
        from edgekit.graph_io import run_texts

        return run_texts(session, tokenizer, list(columns["text"]), output, max_length, batch_size)

    def evaluate(self, session, task, tokenizer, max_length: int, batch_size: int) -> tuple[dict, dict]:
        import numpy as np

        from edgekit.errors import DataError
        from edgekit.graph_io import softmax

        output = self.output(task.name)
        logits = self.run_logits(session, task.test, output, tokenizer, max_length, batch_size).astype(np.float64)
        gold = np.asarray(task.test["label"], dtype=np.int64)
        if gold.max() >= logits.shape[1] or gold.min() < 0:
            raise DataError(f"task '{task.name}' has labels {gold.min()}..{gold.max()} but the graph's "
                            f"'{output}' has {logits.shape[1]} classes; evaluate the model trained "
                            "for these labels, or check the label column.")
        pred = logits.argmax(axis=1)
        probs = softmax(logits)
        # The full distribution, not just its max: edgekit.gap needs margins, gold-label losses and calibration.
        return {"pred": pred, "gold": gold}, {"pred": pred.tolist(), "confidence": probs.max(axis=1).tolist(),
                                              "probs": probs.tolist()}

    # --- the gap report ---------------------------------------------------------------------------

    def gold(self, test: dict):
        import numpy as np

        return np.asarray(test["label"], dtype=np.int64)

    def outcome(self, values):
        return values.astype("int64")

    def score(self, metric: str, outcome, gold) -> float:
        from edgekit import metrics

        return {"accuracy": metrics.accuracy, "macro_f1": metrics.macro_f1}[metric](outcome, gold)

    def teacher_loss(self, gold, teacher: dict):
        import numpy as np

        probs = np.asarray(teacher["probs"], dtype=np.float64)
        return -np.log(np.clip(probs[np.arange(len(gold)), gold], 1e-12, None))  # cross-entropy of the gold label

    def agreement(self, outcome, teacher):
        import numpy as np

        return np.mean(outcome == teacher)

    def resampled(self, outcome, gold, rows):
        return (outcome[rows] == gold[rows]).mean(axis=1)

    def right(self, outcome, gold):
        return outcome == gold

    def differs(self, a, b):
        return a != b

    def answer(self, value):
        return int(value)

    def gold_answer(self, gold, i: int):
        return int(gold[i])


KIND = Classification()
