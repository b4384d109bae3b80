"""Accuracy of an ONNX file on task data, measured with ONNX Runtime.

The file that ships is what gets scored (not the PyTorch model it came from), so
export and quantization errors show up in the numbers. Graph conventions (set by
edgekit's exports): text graphs take `input_ids`, `attention_mask` and maybe
`token_type_ids`; image graphs take `pixel_values` (N, C, H, W). Outputs are
`embedding` (batch, hidden) for sentence encoders and `<task>_logits`
(batch, classes) per classification task.

Per task kind:
  classification, image-classification: argmax of `<task>_logits` against the label
                                        (predictions: pred, confidence, and the softmax `probs`)
  similarity:  cosine of the embeddings of text_a and text_b against the gold score
  retrieval:   cosine of each query to every document; query i's gold is document i
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from edgekit.data.tasks import COLUMNS, EMBEDDING, TaskData, logits_name
from edgekit.errors import DataError, UnknownTask
from edgekit.metrics import gold_ranks, score_with_ci
from edgekit.providers import SessionSettings, create_session

TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
IMAGE_INPUT = "pixel_values"


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
        image = task.spec.kind == "image-classification"
        if (IMAGE_INPUT if image else "input_ids") not in inputs:
            raise UnknownTask(f"task '{task.name}' ({task.spec.kind}) needs {'an image' if image else 'a text'} "
                              f"graph, but {where} takes: {', '.join(inputs)}. Fix: evaluate it on "
                              f"{'text' if image else 'image'} tasks, or pick the model exported for this one.")


def _fixed_axes(session, input_name: str) -> tuple[int | None, int | None]:
    """(batch, length) of a static-shape graph's input; None where the axis is dynamic."""
    shapes = {i.name: i.shape for i in session.get_inputs()}
    if input_name not in shapes:
        raise UnknownTask(f"the graph has no input '{input_name}' (it takes: {', '.join(shapes)}); edgekit feeds "
                          f"text graphs {', '.join(TEXT_INPUTS)} and image graphs {IMAGE_INPUT}. Fix: pick the "
                          "model exported for this kind of data, or re-export it with `edgekit export`.")
    shape = shapes[input_name]
    batch = shape[0] if isinstance(shape[0], int) else None
    length = shape[1] if len(shape) == 2 and isinstance(shape[1], int) else None
    return batch, length


def _run_batch(session, output: str, feed: dict, fixed_batch: int | None) -> np.ndarray:
    """One session run; a static-batch graph gets its last, short batch padded with repeats of the last row."""
    rows = len(next(iter(feed.values())))
    if fixed_batch and rows < fixed_batch:
        feed = {k: np.concatenate([v, np.repeat(v[-1:], fixed_batch - rows, axis=0)]) for k, v in feed.items()}
    return session.run([output], feed)[0][:rows]


def _text_feed(session, encoded) -> dict:
    """The tokenizer's arrays for exactly the inputs the graph declares, in the graph's integer type."""
    feed = {}
    for meta in session.get_inputs():
        if meta.name in encoded:
            value = np.asarray(encoded[meta.name])
        elif meta.name == "token_type_ids":  # BERT graphs take them; some tokenizers do not return them
            value = np.zeros_like(np.asarray(encoded["input_ids"]))
        else:
            raise UnknownTask(f"the graph takes an input '{meta.name}' that the tokenizer does not produce; "
                              f"edgekit text graphs take {', '.join(TEXT_INPUTS)}. Fix: re-export the model "
                              "with `edgekit export`, or pass the tokenizer it was exported with.")
        feed[meta.name] = value.astype(np.int32 if meta.type == "tensor(int32)" else np.int64, copy=False)
    return feed


def run_texts(session, tokenizer, texts: list[str], output: str, max_length: int, batch_size: int = 64) -> np.ndarray:
    """One output of the graph for every text, in the order of `texts`."""
    fixed_batch, fixed_length = _fixed_axes(session, "input_ids")
    size = fixed_batch or batch_size
    # Batches of similar lengths pad less; characters are a cheap proxy for tokens.
    order = np.argsort([len(t) for t in texts], kind="stable")
    pieces = []
    for start in range(0, len(texts), size):
        chunk = [texts[i] for i in order[start:start + size]]
        # A static-length graph takes exactly its length, whatever max_length says.
        encoded = tokenizer(chunk, padding="max_length" if fixed_length else "longest", truncation=True,
                            max_length=fixed_length or max_length, return_tensors="np")
        pieces.append(_run_batch(session, output, _text_feed(session, encoded), fixed_batch))
    if not pieces:
        raise DataError(f"no texts to run through the graph's '{output}' output; check the task's test split.")
    sorted_values = np.concatenate(pieces)
    values = np.empty_like(sorted_values)
    values[order] = sorted_values
    return values


def embed_texts(session, tokenizer, texts: list[str], max_length: int, batch_size: int = 64) -> np.ndarray:
    """The graph's `embedding` for every text, (len(texts), hidden). Each distinct text is embedded once:
    a similarity task's pairs repeat their texts (Lee: 2,450 sides, 50 documents)."""
    distinct = list(dict.fromkeys(texts))
    position = {text: i for i, text in enumerate(distinct)}
    embedded = run_texts(session, tokenizer, distinct, EMBEDDING, max_length, batch_size)
    return embedded[[position[text] for text in texts]]


def run_images(session, images: np.ndarray, output: str, batch_size: int = 64) -> np.ndarray:
    """One output of an image graph for every image of an (N, C, H, W) array."""
    fixed_batch, _ = _fixed_axes(session, IMAGE_INPUT)
    size = fixed_batch or batch_size
    images = np.asarray(images, dtype=np.float32)
    pieces = [_run_batch(session, output, {IMAGE_INPUT: images[start:start + size]}, fixed_batch)
              for start in range(0, len(images), size)]
    if not pieces:
        raise DataError(f"no images to run through the graph's '{output}' output; check the task's test split.")
    return np.concatenate(pieces)


def run_logits(session, task: TaskData, tokenizer, max_length: int, batch_size: int = 64,
               split: str = "test") -> np.ndarray:
    """`<task>_logits` for every example of a classification task's split, (N, classes)."""
    columns = getattr(task, split)
    output = logits_name(task.name)
    if task.spec.kind == "image-classification":
        return run_images(session, columns["image"], output, batch_size)
    return run_texts(session, tokenizer, list(columns["text"]), output, max_length, batch_size)


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def _check_columns(task: TaskData) -> int:
    """The number of test examples, after checking the columns the kind needs are there and agree."""
    wanted = COLUMNS[task.spec.kind]
    missing = [c for c in wanted if c not in task.test]
    if missing:
        raise DataError(f"task '{task.name}' ({task.spec.kind}) test data lacks column(s) {', '.join(missing)} "
                        f"(has: {', '.join(task.test) or 'none'}); check the task's data columns in the recipe.")
    sizes = {c: len(task.test[c]) for c in wanted}
    if len(set(sizes.values())) != 1 or not next(iter(sizes.values())):
        raise DataError(f"task '{task.name}' test columns must be non-empty and of equal length, got {sizes}; "
                        "check the data source and the split's max_test.")
    return next(iter(sizes.values()))


def _classification(session, task, tokenizer, max_length, batch_size) -> tuple[dict, dict]:
    logits = run_logits(session, task, tokenizer, max_length, batch_size).astype(np.float64)
    gold = np.asarray(task.test["label"], dtype=np.int64)
    if gold.max() >= logits.shape[1] or gold.min() < 0:
        raise DataError(f"task '{task.name}' has labels {gold.min()}..{gold.max()} but the graph's "
                        f"'{logits_name(task.name)}' has {logits.shape[1]} classes; evaluate the model trained "
                        "for these labels, or check the label column.")
    pred = logits.argmax(axis=1)
    probs = _softmax(logits)
    # The full distribution, not just its max: edgekit.gap needs margins, gold-label losses and calibration.
    return {"pred": pred, "gold": gold}, {"pred": pred.tolist(), "confidence": probs.max(axis=1).tolist(),
                                          "probs": probs.tolist()}


def _similarity(session, task, tokenizer, max_length, batch_size) -> tuple[dict, dict]:
    a, b = list(task.test["text_a"]), list(task.test["text_b"])
    # One pass over both sides: sorting the union by length batches better than two passes.
    emb = embed_texts(session, tokenizer, a + b, max_length, batch_size)
    cosine = (_unit(emb[:len(a)]) * _unit(emb[len(a):])).sum(axis=1)
    return {"x": cosine, "y": np.asarray(task.test["score"], dtype=np.float64)}, {"cosine": cosine.tolist()}


def _retrieval(session, task, tokenizer, max_length, batch_size) -> tuple[dict, dict]:
    queries, documents = list(task.test["query"]), list(task.test["document"])
    emb = embed_texts(session, tokenizer, queries + documents, max_length, batch_size)
    similarity = _unit(emb[:len(queries)]) @ _unit(emb[len(queries):]).T
    gold = np.arange(len(queries))
    return {"similarity": similarity, "gold_index": gold}, {"gold_rank": gold_ranks(similarity, gold).tolist()}


_BY_KIND = {
    "classification": _classification,
    "image-classification": _classification,
    "similarity": _similarity,
    "retrieval": _retrieval,
}


def evaluate_task(session, task: TaskData, tokenizer, max_length: int, batch_size: int = 64) -> dict:
    """{"metric", "value", "ci95", "n", "predictions"} of one task's test split on an open session."""
    _check_columns(task)
    arrays, predictions = _BY_KIND[task.spec.kind](session, task, tokenizer, max_length, batch_size)
    score = score_with_ci(task.spec.metric, **arrays)
    return {"metric": task.spec.metric, "value": score["value"], "ci95": score["ci95"], "n": score["n"],
            "predictions": predictions}


def evaluate_onnx(onnx_path: str | Path, tasks: list[TaskData], tokenizer, max_length: int, provider: str = "cpu",
                  threads: int | None = None, batch_size: int = 64) -> dict[str, dict]:
    """Score the ONNX file on every task's test split: {task name: evaluate_task's record}.

    `threads` defaults to every core: this is throughput, not a latency measurement.
    """
    # No spinning: the workers would compete with tokenization between runs for the same cores.
    settings = SessionSettings(provider=provider, threads=threads or os.cpu_count() or 1, allow_spinning=False)
    session, _ = create_session(onnx_path, settings)
    # Every check before any run: a wrong output name or column should not cost a full pass first.
    check_graph(session, tasks, f"'{onnx_path}'")
    for task in tasks:
        _check_columns(task)
    return {task.name: evaluate_task(session, task, tokenizer, max_length, batch_size) for task in tasks}
