"""The `edgekit export` command's tasks: which PyTorch model serves a task, the real inputs its
export is checked on, and which output values must match.

A task checks that a model source can serve it, loads the PyTorch model, builds
parity batches from real data, runs PyTorch on a batch and says which output
positions are real (not padding), and gives the exporter the model with its ONNX inputs
and dynamic axes (`{name: {axis: "batch_size"}}`, as optimum declares them).

These are export tasks (named as optimum names them), not a recipe's task kinds (edgekit.data.kinds).
"""

from __future__ import annotations

from edgekit.errors import UnknownTask
from edgekit.names import EXPORT_TASKS

TASK_NAMES = EXPORT_TASKS


def get_task(name: str):
    """The task object for an export task name."""
    from edgekit.runtime.export.image import ImageClassification
    from edgekit.runtime.export.text import TextTask

    tasks = {
        "feature-extraction": TextTask("feature-extraction", "AutoModel", "last_hidden_state"),
        "text-classification": TextTask("text-classification", "AutoModelForSequenceClassification", "logits"),
        "image-classification": ImageClassification(),
    }
    if name not in tasks:
        raise UnknownTask(f"unknown task '{name}'. Choose one of: {', '.join(TASK_NAMES)}.")
    return tasks[name]
