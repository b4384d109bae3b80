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
