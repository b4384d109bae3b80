"""Data and tasks: where examples come from and what a task is.

This module reads task data: local files and offline built-ins, read into plain Python/numpy. The folder also
holds tasks.py (recipe tasks loaded and split), kinds/ (one module per task kind: columns, metrics, heads),
metrics.py and baselines.py (scores and what chance scores), inputs.py (tokenized model inputs) and
preprocessing.py (image preprocessing).

A source is a path to a file or the name of a built-in data set
(`rotten_tomatoes`, `rotten_tomatoes_plots`, `lee`, `lee_background`, `digits`). Recipe tasks (labelled
examples split into train and test) are loaded by `edgekit.data.tasks`.
"""

from __future__ import annotations

from pathlib import Path

from edgekit.data.builtin import BUILTIN_NAMES, UNLABELED_TEXTS, digits
from edgekit.data.files import NPZ_FIX, not_a_file_problem, read_lines, read_table
from edgekit.errors import DataError
from edgekit.names import IMAGE_ARRAY_SUFFIXES
from edgekit.trust.reading import shown

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
        raise DataError(f"{path}: no column '{column}' (it has: {', '.join(map(shown, names)) or 'none'}); "
                        "pass --text-column NAME.")
    return [str(value or "") for value in data.get(column, [])]


def _starts_zip(path: Path) -> bool:
    from edgekit.data.files import _open_binary

    with _open_binary(path) as f:  # a FIFO or device refused, unopened
        return f.read(4) == b"PK\x03\x04"


def _refuse_non_files(path: Path) -> None:
    """A DataError for a path that exists but is no file (a FIFO, a device): before anything opens it, and
    instead of "neither a file nor a built-in"."""
    try:
        exists = path.exists() and not path.is_dir()
    except OSError:  # a name the file system refuses: the caller's own messages say so
        return
    if exists and (problem := not_a_file_problem(path)):
        raise DataError(f"{problem}.")


def load_texts(source: str, column: str = "text") -> list[str]:
    """Non-empty texts from a file or built-in data set (file order, no shuffling)."""
    path = Path(source)
    _refuse_non_files(path)
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
    (N, H, W) and (N, H, W, C) arrays are moved channels-first by edgekit.data.preprocessing's layout rule (a 4-d
    array it cannot tell is taken as (N, C, H, W), the layout these files always had).
    For `export --inputs` and `quantize --calibration`: a recipe's task data is also scaled and normalized
    (edgekit.data.tasks), these are fed to the file as they are."""
    import numpy as np

    from edgekit.data.files import DEFAULT_ARRAYS, IMAGE_KINDS
    from edgekit.data.preprocessing import channels_first, check_finite, layout_of
    from edgekit.trust.arrays import load_npy, load_npz

    path = Path(source)
    _refuse_non_files(path)
    if path.is_file():
        if path.suffix not in IMAGE_ARRAY_SUFFIXES:
            raise DataError(f"{path}: images must be a .npy array of shape (N, C, H, W), (N, H, W, C) or (N, H, W), "
                            "or an .npz archive with an 'images' array.")
        # edgekit.trust.arrays: headers checked before anything is allocated (a 100-byte file declaring 784 GB is
        # refused, not allocated), object arrays (pickles) refused, every failure a DataError naming the file.
        if path.suffix == ".npz":
            arrays = load_npz(path, "", NPZ_FIX, DataError)
            name = next((n for n in DEFAULT_ARRAYS["image"] if n in arrays), None)
            if name is None:
                raise DataError(f"{path}: no array 'images' (it has: {', '.join(arrays) or 'none'}); "
                                "save the images as numpy.savez(path, images=...).")
            images = arrays[name]
        else:
            if _starts_zip(path):  # numpy.savez's archive under a .npy name
                raise DataError(f"{path}: is an .npz archive, not one array; rename it to .npz.")
            images = load_npy(path, "", "save the images with numpy.save(path, images)", DataError)
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
