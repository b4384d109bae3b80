"""Export tasks: what a model's ONNX graph takes and returns, and the real inputs
its export is checked on.

Each task declares its ONNX inputs and outputs with their dynamic axes (as
optimum's OnnxConfig does: `{name: {axis: "batch_size"}}`), loads the PyTorch
model, builds parity batches from real data, and runs PyTorch on a batch.
"""

from __future__ import annotations

from edgekit.errors import UnknownTask

TASK_NAMES = ("feature-extraction", "text-classification", "image-classification")


def get_task(name: str):
    """The task object for an export task name."""
    from edgekit.tasks.image import ImageClassification
    from edgekit.tasks.text import TextTask

    tasks = {
        "feature-extraction": TextTask("feature-extraction", "AutoModel", "last_hidden_state"),
        "text-classification": TextTask("text-classification", "AutoModelForSequenceClassification", "logits"),
        "image-classification": ImageClassification(),
    }
    if name not in tasks:
        raise UnknownTask(f"unknown task '{name}'. Choose one of: {', '.join(TASK_NAMES)}.")
    return tasks[name]


def spread_sample(items: list, n: int, key=len) -> list:
    """n items spread evenly over the sorted order of `key`: shortest and longest
    included, so parity covers the whole length range, deterministically."""
    ordered = sorted(set(items), key=key) if isinstance(items[0], str) else sorted(items, key=key)
    if len(ordered) <= n:
        return ordered
    step = (len(ordered) - 1) / (n - 1) if n > 1 else 0
    return [ordered[round(i * step)] for i in range(n)]


def batched(items: list, size: int, exact: bool = False) -> list[list]:
    """Consecutive chunks of `size`; with `exact`, a short last chunk is dropped
    (a static-shape graph accepts only full batches)."""
    chunks = [items[i:i + size] for i in range(0, len(items), size)]
    return [c for c in chunks if len(c) == size] if exact else chunks
