"""Running an ONNX session on texts or images, batch by batch, in the order given.

Graph conventions (set by edgekit's exports, edgekit.names): text graphs take `input_ids`,
`attention_mask` and maybe `token_type_ids` (batch, seq); image graphs take `pixel_values`
(N, C, H, W). A static-shape graph gets batches of exactly its batch size and length.

The bottom of evaluation: the task kinds (edgekit.data.kinds) run their graphs through this module,
which knows nothing of tasks. numpy and edgekit.runtime.feeds only; the session is any ONNX Runtime
InferenceSession (or an object with its get_inputs and run).
"""

from __future__ import annotations

import numpy as np

from edgekit.errors import DataError, UnknownTask
from edgekit.names import EMBEDDING, IMAGE_INPUT, TEXT_INPUTS
from edgekit.runtime.feeds import text_feeds


def fixed_axes(session, input_name: str) -> tuple[int | None, int | None]:
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


def run_batch(session, output: str, feed: dict, fixed_batch: int | None) -> np.ndarray:
    """One session run; a static-batch graph gets its last, short batch padded with repeats of the last row."""
    rows = len(next(iter(feed.values())))
    if fixed_batch and rows < fixed_batch:
        feed = {k: np.concatenate([v, np.repeat(v[-1:], fixed_batch - rows, axis=0)]) for k, v in feed.items()}
    return session.run([output], feed)[0][:rows]


def text_feed(session, tokenizer, texts: list[str], max_length: int, padding: str = "longest") -> dict:
    """edgekit.runtime.feeds.text_feeds for exactly the inputs the graph declares, in the graph's integer type."""
    inputs = session.get_inputs()
    unknown = next((meta.name for meta in inputs if meta.name not in TEXT_INPUTS), None)
    if unknown is not None:
        raise UnknownTask(f"the graph takes an input '{unknown}' that the tokenizer does not produce; "
                          f"edgekit text graphs take {', '.join(TEXT_INPUTS)}. Fix: re-export the model "
                          "with `edgekit export`, or pass the tokenizer it was exported with.")
    feed = text_feeds(tokenizer, texts, max_length, padding, tuple(meta.name for meta in inputs))
    return {meta.name: feed[meta.name].astype(np.int32 if meta.type == "tensor(int32)" else np.int64, copy=False)
            for meta in inputs}


def run_texts(session, tokenizer, texts: list[str], output: str, max_length: int, batch_size: int = 64) -> np.ndarray:
    """One output of the graph for every text, in the order of `texts`."""
    fixed_batch, fixed_length = fixed_axes(session, "input_ids")
    size = fixed_batch or batch_size
    # Batches of similar lengths pad less; characters are a cheap proxy for tokens.
    order = np.argsort([len(t) for t in texts], kind="stable")
    pieces = []
    for start in range(0, len(texts), size):
        chunk = [texts[i] for i in order[start:start + size]]
        # A static-length graph takes exactly its length, whatever max_length says.
        feed = text_feed(session, tokenizer, chunk, fixed_length or max_length,
                         "max_length" if fixed_length else "longest")
        pieces.append(run_batch(session, output, feed, fixed_batch))
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
    fixed_batch, _ = fixed_axes(session, IMAGE_INPUT)
    size = fixed_batch or batch_size
    images = np.asarray(images, dtype=np.float32)
    pieces = [run_batch(session, output, {IMAGE_INPUT: images[start:start + size]}, fixed_batch)
              for start in range(0, len(images), size)]
    if not pieces:
        raise DataError(f"no images to run through the graph's '{output}' output; check the task's test split.")
    return np.concatenate(pieces)


# What the task kinds make of the outputs.


def unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (float64), so that dot products are cosines."""
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of (N, classes) logits."""
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)
