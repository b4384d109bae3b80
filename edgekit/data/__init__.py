"""Task data: local files and offline built-ins, read into plain Python/numpy.

A source is a path to a file or the name of a built-in data set
(`rotten_tomatoes`, `rotten_tomatoes_plots`, `lee`, `lee_background`, `digits`). Recipe tasks (labelled
examples split into train and test) are loaded by `edgekit.data.tasks`.
"""

from __future__ import annotations

from pathlib import Path

from edgekit.data.builtin import BUILTIN_NAMES, UNLABELED_TEXTS, digits
from edgekit.data.files import open_npz, read_lines, read_table
from edgekit.errors import DataError

TEXT_SUFFIXES = (".txt", ".csv", ".tsv", ".jsonl")
IMAGE_SUFFIXES = (".npy", ".npz")


def _unknown_source(source: str, suffixes: tuple[str, ...]) -> DataError:
    return DataError(
        f"data source '{source}' is neither an existing file nor a built-in data set. "
        f"Pass a file ({', '.join(suffixes)}) or one of: {', '.join(BUILTIN_NAMES)}."
    )


def _read_column(path: Path, column: str) -> list[str]:
    """The `column` of a CSV/TSV file, or the `column` field of each JSONL record."""
    names, data = read_table(path, [column])
    if names and column not in names:
        raise DataError(f"{path}: no column '{column}' (it has: {', '.join(map(str, names))}); "
                        "pass --text-column NAME.")
    return [str(value or "") for value in data.get(column, [])]


def load_texts(source: str, column: str = "text") -> list[str]:
    """Non-empty texts from a file or built-in data set (file order, no shuffling)."""
    path = Path(source)
    if path.is_file():
        if path.suffix not in TEXT_SUFFIXES:
            raise DataError(f"{path}: unsupported text file type '{path.suffix}'; "
                            f"use one of {', '.join(TEXT_SUFFIXES)}.")
        if path.suffix == ".txt":
            texts = read_lines(path)
        else:
            texts = _read_column(path, column)
    elif source in UNLABELED_TEXTS:
        texts = UNLABELED_TEXTS[source]()
    else:
        raise _unknown_source(source, TEXT_SUFFIXES)
    texts = [t.strip() for t in texts if t and t.strip()]
    if not texts:
        raise DataError(f"data source '{source}' holds no non-empty text.")
    return texts


def load_images(source: str):
    """(N, C, H, W) float32 images from a .npy file, the `images` array of an .npz archive (as task
    data stores them, beside `labels`), or the `digits` built-in."""
    import numpy as np

    path = Path(source)
    if path.is_file():
        if path.suffix not in IMAGE_SUFFIXES:
            raise DataError(f"{path}: images must be a .npy array of shape (N, C, H, W), or an .npz archive "
                            "with an 'images' array.")
        if path.suffix == ".npz":
            with open_npz(path) as arrays:
                if "images" not in arrays.files:
                    raise DataError(f"{path}: no array 'images' (it has: {', '.join(arrays.files) or 'none'}); "
                                    "save the images as numpy.savez(path, images=...).")
                images = arrays["images"]
        else:
            try:
                images = np.load(path, allow_pickle=False)
            except ValueError as e:
                raise DataError(f"{path}: not a numpy array file ({e}).") from None
        if images.ndim == 3:  # (N, H, W): one channel
            images = images[:, None]
        if images.ndim != 4:
            raise DataError(f"{path}: images have shape {images.shape}; expected (N, C, H, W).")
        return images.astype(np.float32)
    if source == "digits":
        return digits()[0]
    raise _unknown_source(source, IMAGE_SUFFIXES)
