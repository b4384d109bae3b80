"""The kinds of task a recipe can name, one module each: what a kind's examples hold (columns), the metrics
that score it, the graph output it reads, how an ONNX file is evaluated on it and what the gap report
compares. See edgekit.data.kinds.base.TaskKind for the interface.

Adding a kind: a module here with a TaskKind subclass, and a line in KINDS below.

Light on purpose: importing the registry imports no numpy, onnxruntime or torch (edgekit.recipe validates
a recipe's kinds and metrics with it), and at import time no edgekit module but edgekit.names and
edgekit.errors; the kinds' methods import what they compute with (edgekit.runtime.graph_io, edgekit.data.metrics).
"""

from __future__ import annotations

from edgekit.data.kinds import classification, image_classification, retrieval, similarity
from edgekit.data.kinds.base import TaskKind
from edgekit.errors import UnknownTask

# In the order recipes and messages list them.
KINDS: dict[str, TaskKind] = {kind.name: kind for kind in (
    classification.KIND,
    similarity.KIND,
    retrieval.KIND,
    image_classification.KIND,
)}
TASK_KINDS = tuple(KINDS)


def kind_of(name: str) -> TaskKind:
    """The task kind called `name`; UnknownTask naming the known kinds otherwise."""
    try:
        return KINDS[name]
    except (KeyError, TypeError):
        known = "; ".join(f"{kind.name} ({kind.description})" for kind in KINDS.values())
        raise UnknownTask(f"unknown task kind {name!r}; the kinds are: {known}.") from None


def image_shape(tasks) -> tuple[int, ...] | None:
    """(C, H, W) of the first image task's images (loaded TaskData): what each input of a timed image batch is
    (the exported graph fixes it); None when no task reads images."""
    for task in tasks or ():
        if task.kind.images:
            images = task.test["image"] if len(task.test["image"]) else task.train["image"]
            return tuple(int(d) for d in images.shape[1:])
    return None


__all__ = ["KINDS", "TASK_KINDS", "TaskKind", "image_shape", "kind_of"]
