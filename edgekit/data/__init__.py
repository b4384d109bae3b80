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
from edgekit.names import IMAGE_ARRAY_SUFFIXES

TEXT_SUFFIXES = (".txt", ".csv", ".tsv", ".jsonl")


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
    """(N, C, H, W) float32 images, values as stored: a .npy array, the `images` (or `image`) array of an
    .npz archive (as task data stores them, beside `labels`), or the `digits` built-in ([0, 1]).
    (N, H, W) and (N, H, W, C) arrays are moved channels-first by edgekit.preprocessing's layout rule (a 4-d
    array it cannot tell is taken as (N, C, H, W), the layout these files always had).
    For `export --inputs` and `quantize --calibration`: a recipe's task data is also scaled and normalized
    (edgekit.data.tasks), these are fed to the file as they are."""
    import numpy as np

    from edgekit.data.files import DEFAULT_ARRAYS, IMAGE_KINDS
    from edgekit.preprocessing import channels_first, check_finite, layout_of

    path = Path(source)
    if path.is_file():
        if path.suffix not in IMAGE_ARRAY_SUFFIXES:
            raise DataError(f"{path}: images must be a .npy array of shape (N, C, H, W), (N, H, W, C) or (N, H, W), "
                            "or an .npz archive with an 'images' array.")
        if path.suffix == ".npz":
            with open_npz(path) as arrays:
                name = next((n for n in DEFAULT_ARRAYS["image"] if n in arrays.files), None)
                if name is None:
                    raise DataError(f"{path}: no array 'images' (it has: {', '.join(arrays.files) or 'none'}); "
                                    "save the images as numpy.savez(path, images=...).")
                images = arrays[name]
        else:
            try:
                images = np.load(path, allow_pickle=False)
            except ValueError as e:
                raise DataError(f"{path}: not a numpy array file ({e}).") from None
            if not isinstance(images, np.ndarray):  # numpy.savez's archive under a .npy name
                raise DataError(f"{path}: is an .npz archive, not one array; rename it to .npz.")
        if images.dtype.kind not in IMAGE_KINDS:
            raise DataError(f"{path}: the images are {images.dtype} values; save them as uint8 or float numbers.")
        layout, problem = layout_of(images.shape)
        if problem and images.ndim == 4:  # no data.layout here: (N, C, H, W), as these files always were
            layout, problem = "NCHW", None
        if problem:
            raise DataError(f"{path}: {problem}.")
        problem = check_finite(images, str(path))
        if problem:
            raise DataError(problem + ".")
        return np.ascontiguousarray(channels_first(images, layout), dtype=np.float32)
    if source == "digits":
        return digits()[0]
    raise _unknown_source(source, IMAGE_ARRAY_SUFFIXES)
