"""Export tasks: which PyTorch model serves a task, the real inputs its export is
checked on, and which output values must match.

A task checks that a model source can serve it, loads the PyTorch model, builds
parity batches from real data, runs PyTorch on a batch and says which output
positions are real (not padding). Hugging Face models take their ONNX inputs and
dynamic axes from optimum's OnnxConfig; plain torch modules from the task's
`inputs` (`{name: {axis: "batch_size"}}`, as optimum declares them).
"""

from __future__ import annotations

from edgekit.errors import UnknownTask

TASK_NAMES = ("feature-extraction", "text-classification", "image-classification")


def get_task(name: str):
    """The task object for an export task name."""
    from edgekit.tasks.image import ImageClassification
    from edgekit.tasks.text import TextTask

    tasks = {
        "feature-extraction": TextTask("feature-extraction", "AutoModel"),
        "text-classification": TextTask("text-classification", "AutoModelForSequenceClassification"),
        "image-classification": ImageClassification(),
    }
    if name not in tasks:
        raise UnknownTask(f"unknown task '{name}'. Choose one of: {', '.join(TASK_NAMES)}.")
    return tasks[name]


def spread_sample(texts: list[str], n: int) -> list[str]:
    """n distinct texts spread evenly over the length order, shortest and longest
    included, so parity covers the whole length range, deterministically."""
    ordered = sorted(set(texts), key=lambda t: (len(t), t))
    if len(ordered) <= n:
        return ordered
    step = (len(ordered) - 1) / (n - 1) if n > 1 else 0
    return [ordered[round(i * step)] for i in range(n)]


def batched(items: list, size: int, exact: bool = False) -> list[list]:
    """Consecutive chunks of `size`; with `exact`, a short last chunk is dropped
    (a static-shape graph accepts only full batches)."""
    chunks = [items[i:i + size] for i in range(0, len(items), size)]
    return [c for c in chunks if len(c) == size] if exact else chunks
