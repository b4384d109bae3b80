"""Task data: local files and offline built-ins, read into plain Python/numpy.

A source is a path to a file or the name of a built-in data set
(`rotten_tomatoes`, `lee`, `lee_background`, `digits`). Recipe tasks (labelled
examples split into train and test) are loaded by `edgekit.data.tasks`.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from edgekit.data.builtin import BUILTIN_NAMES, digits, lee_background, lee_documents, rotten_tomatoes
from edgekit.errors import DataError

TEXT_SUFFIXES = (".txt", ".csv", ".tsv", ".jsonl")
IMAGE_SUFFIXES = (".npy",)


def _unknown_source(source: str, suffixes: tuple[str, ...]) -> DataError:
    return DataError(
        f"data source '{source}' is neither an existing file nor a built-in data set. "
        f"Pass a file ({', '.join(suffixes)}) or one of: {', '.join(BUILTIN_NAMES)}."
    )


def _read_column(path: Path, column: str) -> list[str]:
    """The `column` of a CSV/TSV file, or the `column` field of each JSONL record."""
    try:
        if path.suffix == ".jsonl":
            with path.open(encoding="utf-8") as f:
                rows = [json.loads(line) for line in f if line.strip()]
        else:
            with path.open(encoding="utf-8", newline="") as f:
                rows = list(csv.DictReader(f, delimiter="\t" if path.suffix == ".tsv" else ","))
    except (UnicodeDecodeError, json.JSONDecodeError, csv.Error) as e:
        raise DataError(f"{path}: cannot be read as {path.suffix[1:].upper()} ({e}); "
                        "save it as UTF-8 with one record per row.") from None
    if rows and column not in rows[0]:
        raise DataError(f"{path}: no column '{column}' (it has: {', '.join(map(str, rows[0]))}); "
                        "pass --text-column NAME.")
    return [str(row.get(column) or "") for row in rows]


def load_texts(source: str, column: str = "text") -> list[str]:
    """Non-empty texts from a file or built-in data set (file order, no shuffling)."""
    path = Path(source)
    if path.is_file():
        if path.suffix not in TEXT_SUFFIXES:
            raise DataError(f"{path}: unsupported text file type '{path.suffix}'; "
                            f"use one of {', '.join(TEXT_SUFFIXES)}.")
        if path.suffix == ".txt":
            try:
                texts = path.read_text(encoding="utf-8").splitlines()
            except UnicodeDecodeError as e:
                raise DataError(f"{path}: not UTF-8 text ({e}); re-save it as UTF-8.") from None
        else:
            texts = _read_column(path, column)
    elif source == "rotten_tomatoes":
        texts = [row["text"] for row in rotten_tomatoes()]
    elif source == "lee":
        texts = lee_documents()
    elif source == "lee_background":
        texts = lee_background()
    else:
        raise _unknown_source(source, TEXT_SUFFIXES)
    texts = [t.strip() for t in texts if t and t.strip()]
    if not texts:
        raise DataError(f"data source '{source}' holds no non-empty text.")
    return texts


def load_images(source: str):
    """(N, C, H, W) float32 images from a .npy file or the `digits` built-in."""
    import numpy as np

    path = Path(source)
    if path.is_file():
        if path.suffix not in IMAGE_SUFFIXES:
            raise DataError(f"{path}: images must be a .npy array of shape (N, C, H, W).")
        try:
            images = np.load(path, allow_pickle=False)
        except ValueError as e:
            raise DataError(f"{path}: not a numpy array file ({e}).") from None
        if images.ndim != 4:
            raise DataError(f"{path}: images have shape {images.shape}; expected (N, C, H, W).")
        return images.astype(np.float32)
    if source == "digits":
        return digits()[0]
    raise _unknown_source(source, IMAGE_SUFFIXES)
