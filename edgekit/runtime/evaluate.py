"""Accuracy of an ONNX file on task data, measured with ONNX Runtime.

The file that ships is what gets scored (not the PyTorch model it came from), so
export and quantization errors show up in the numbers. Graph conventions (set by
edgekit's exports): text graphs take `input_ids`, `attention_mask` and maybe
`token_type_ids`; image graphs take `pixel_values` (N, C, H, W). Outputs are
`embedding` (batch, hidden) for sentence encoders and `<task>_logits`
(batch, classes) per classification task.

Each task kind scores its own (edgekit.data.kinds; running the graph: edgekit.runtime.graph_io):
  classification, image-classification: argmax of `<task>_logits` against the label
                                        (predictions: pred, confidence, and the softmax `probs`)
  similarity:  cosine of the embeddings of text_a and text_b against the gold score
  retrieval:   cosine of each query to every document; query i's gold is document i
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from edgekit.data.metrics import score_with_ci
from edgekit.data.tasks import TaskData
from edgekit.errors import DataError, UnknownTask
from edgekit.names import IMAGE_INPUT
from edgekit.runtime.providers import SessionSettings, create_session


def check_graph(session, tasks: list[TaskData], where: str = "the ONNX file") -> None:
    """Fail before any work if the graph lacks an output or input a task needs."""
    outputs = [o.name for o in session.get_outputs()]
    inputs = [i.name for i in session.get_inputs()]
    for task in tasks:
        wanted = task.output
        if wanted not in outputs:
            raise UnknownTask(f"task '{task.name}' ({task.spec.kind}) needs the output '{wanted}', but {where} has "
                              f"outputs: {', '.join(outputs)}. Fix: evaluate the tasks this file was exported for, "
                              f"or re-export it with that task's head named '{wanted}'.")
        image = task.kind.images
        if (IMAGE_INPUT if image else "input_ids") not in inputs:
            raise UnknownTask(f"task '{task.name}' ({task.spec.kind}) needs {'an image' if image else 'a text'} "
                              f"graph, but {where} takes: {', '.join(inputs)}. Fix: evaluate it on "
                              f"{'text' if image else 'image'} tasks, or pick the model exported for this one.")


def run_logits(session, task: TaskData, tokenizer, max_length: int, batch_size: int = 64,
               split: str = "test") -> np.ndarray:
    """`<task>_logits` for every example of a classification task's split, (N, classes)."""
    return task.kind.run_logits(session, getattr(task, split), task.output, tokenizer, max_length,
                                              batch_size)


def _check_columns(task: TaskData) -> int:
    """The number of test examples, after checking the columns the kind needs are there and agree."""
    wanted = task.kind.columns
    missing = [c for c in wanted if c not in task.test]
    if missing:
        raise DataError(f"task '{task.name}' ({task.spec.kind}) test data lacks column(s) {', '.join(missing)} "
                        f"(has: {', '.join(task.test) or 'none'}); check the task's data columns in the recipe.")
    sizes = {c: len(task.test[c]) for c in wanted}
    if len(set(sizes.values())) != 1 or not next(iter(sizes.values())):
        raise DataError(f"task '{task.name}' test columns must be non-empty and of equal length, got {sizes}; "
                        "check the data source and the split's max_test.")
    return next(iter(sizes.values()))


def evaluate_task(session, task: TaskData, tokenizer, max_length: int, batch_size: int = 64) -> dict:
    """{"metric", "value", "ci95", "n", "predictions"} of one task's test split on an open session."""
    _check_columns(task)
    arrays, predictions = task.kind.evaluate(session, task, tokenizer, max_length, batch_size)
    score = score_with_ci(task.spec.metric, **arrays)
    return {"metric": task.spec.metric, "value": score["value"], "ci95": score["ci95"], "n": score["n"],
            "predictions": predictions}


def evaluate_onnx(onnx_path: str | Path, tasks: list[TaskData], tokenizer, max_length: int, provider: str = "cpu",
                  threads: int | None = None, batch_size: int = 64,
                  options: dict[str, str] | None = None) -> dict[str, dict]:
    """Score the ONNX file on every task's test split: {task name: evaluate_task's record}.

    `threads` defaults to every core: this is throughput, not a latency measurement. `options`: the
    provider's own ORT options (a recipe's budget.provider_options), as the file is timed with them.
    """
    # No spinning: the workers would compete with tokenization between runs for the same cores.
    settings = SessionSettings(provider=provider, threads=threads or os.cpu_count() or 1, allow_spinning=False,
                               options=tuple(sorted((options or {}).items())))
    session, _ = create_session(onnx_path, settings)
    # Every check before any run: a wrong output name or column should not cost a full pass first.
    check_graph(session, tasks, f"'{onnx_path}'")
    for task in tasks:
        _check_columns(task)
    return {task.name: evaluate_task(session, task, tokenizer, max_length, batch_size) for task in tasks}
