"""Numpy feeds for ONNX graphs, built from texts the one way every stage builds them.

numpy only (no torch, no onnxruntime): `edgekit verify` and the bundle's own checks use it too.
"""

from __future__ import annotations

import numpy as np

from edgekit.names import TEXT_INPUTS


def text_feeds(tokenizer, texts: list[str], max_length: int, padding: str = "longest",
               names: tuple[str, ...] = TEXT_INPUTS) -> dict[str, np.ndarray]:
    """One (len(texts), seq) int64 batch per graph input in `names`, padded to the longest text
    (padding="longest") or to max_length ("max_length"), truncated at max_length. Single texts:
    every token is segment 0, whatever the tokenizer would say about pairs."""
    encoded = tokenizer(list(texts), padding=padding, truncation=True, max_length=max_length, return_tensors="np")
    ids = encoded["input_ids"].astype(np.int64)
    columns = {"input_ids": ids, "attention_mask": encoded["attention_mask"].astype(np.int64),
               "token_type_ids": np.zeros_like(ids)}
    return {name: columns[name] for name in names}


def token_lengths(tokenizer, texts: list[str], max_length: int) -> np.ndarray:
    """Each text's token count, special tokens included, truncated at max_length."""
    if not texts:
        return np.zeros(0, dtype=np.int64)
    ids = tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
    return np.array([len(i) for i in ids], dtype=np.int64)


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


def app_encoder(tokenizer, max_length: int, names: tuple[str, ...] = TEXT_INPUTS):
    """(encode, what it is): `encode(texts)` turns a batch of texts into the graph's feeds the way an app
    does per request, with the tokenizer the bundle ships. A fast tokenizer is its tokenizer.json, run
    through the Rust `tokenizers` library that the Python, Node, Swift and Kotlin bindings wrap,
    without the transformers wrapper around it (0.19-0.38 ms per call on its own, FIELD-NOTES, and an
    app does not ship it). A slow (Python) tokenizer has no tokenizer.json: the transformers call is what
    there is. Same ids as text_feeds: truncated at max_length, padded to the longest text of the batch,
    every token segment 0."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return (lambda texts: text_feeds(tokenizer, texts, max_length, names=names)), "transformers (slow tokenizer)"
    from tokenizers import Tokenizer

    rust = Tokenizer.from_str(backend.to_str())  # a copy: the shared tokenizer's settings stay as they are
    rust.enable_truncation(max_length)
    rust.enable_padding(pad_id=tokenizer.pad_token_id or 0, pad_token=tokenizer.pad_token or "[PAD]")

    def encode(texts: list[str]) -> dict[str, np.ndarray]:
        encodings = rust.encode_batch(list(texts)) if len(texts) > 1 else [rust.encode(texts[0])]
        ids = np.array([e.ids for e in encodings], dtype=np.int64)  # (batch, seq)
        columns = {"input_ids": ids, "token_type_ids": np.zeros_like(ids),
                   "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64)}
        return {name: columns[name] for name in names}

    return encode, "tokenizers (tokenizer.json)"
