"""Reading text and table files (.txt, .csv, .tsv, .jsonl, .parquet) into columns, and image arrays (.npz, .npy).

Shared by task data (recipes) and the plain text sources of `export --inputs` and
`bench --lengths-from`, so every reader accepts the same files (UTF-8 with or without
a BOM, as Excel's "CSV UTF-8" writes) and fails with the same clear errors.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from edgekit.errors import DataError

PYARROW_MISSING = "reading Parquet files needs pyarrow: run `pip install pyarrow`"


def read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e}); re-save it as UTF-8.") from None


_REWRITE = {".parquet": "write it again (pyarrow.parquet.write_table or pandas' DataFrame.to_parquet)",
            ".jsonl": "save it as UTF-8 text with one JSON object per line"}


def _unreadable(path: Path, error: Exception) -> DataError:
    fix = _REWRITE.get(path.suffix.lower(), "save it as UTF-8 text with a header row")
    return DataError(f"{path}: cannot be read as {path.suffix[1:].upper()} ({error}); {fix}.")


def _jsonl_records(lines, path: Path) -> list[dict]:
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            fix = "write one JSON object per line"
            raise DataError(f"{path}: line {number} is not valid JSON ({e.msg}); {fix}.") from None
        if not isinstance(record, dict):
            raise DataError(f"{path}: line {number} is a JSON {type(record).__name__}, not an object; write one "
                            'object per line, such as {"text": "...", "label": "..."}.')
        records.append(record)
    return records


def read_parquet(path: Path, wanted: list[str] | None = None) -> tuple[list[str], dict[str, list]]:
    """(column names, {name: values} of the `wanted` names present); reads only those columns."""
    try:
        import pyarrow
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(PYARROW_MISSING) from None
    try:
        names = list(pq.read_schema(path).names)
        if not wanted:
            return names, {}
        return names, pq.read_table(path, columns=[name for name in wanted if name in names]).to_pydict()
    except (pyarrow.ArrowException, OSError) as e:  # not a Parquet file, truncated
        raise _unreadable(path, e) from None


def read_header(path: Path) -> list[str]:
    """The column names of a CSV/TSV/JSONL/Parquet file, from its header or first record only
    (bytes that are not UTF-8 further down are the rows' problem, not the header's)."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return read_parquet(path)[0]
    try:
        with path.open(encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
            if suffix == ".jsonl":
                first = next((line for line in f if line.strip()), "")
                return list(_jsonl_records([first], path)[0]) if first else []
            return next(csv.reader(f, delimiter="\t" if suffix == ".tsv" else ","), [])
    except (UnicodeDecodeError, csv.Error) as e:
        raise _unreadable(path, e) from None


def read_table(path: Path, wanted: list[str], keep_undecodable: bool = False) -> tuple[list[str], dict[str, list]]:
    """(every column name, {name: values} for the `wanted` names present) of a table file.
    `keep_undecodable`: bytes that are not UTF-8 become lone surrogates (U+DC80-U+DCFF) in the values
    instead of failing the read, so a caller can tell which rows hold them."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return read_parquet(path, wanted)
    try:
        with path.open(encoding="utf-8-sig", errors="surrogateescape" if keep_undecodable else "strict",
                       newline="") as f:
            if suffix == ".jsonl":
                records = _jsonl_records(f, path)
                names = list(dict.fromkeys(name for record in records for name in record))
            else:
                reader = csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ",")
                records, names = list(reader), list(reader.fieldnames or [])
    except (UnicodeDecodeError, csv.Error) as e:
        raise _unreadable(path, e) from None
    return names, {name: [record.get(name) for record in records] for name in wanted if name in names}


def open_npz(path: Path):
    """A numpy .npz archive (use as a context manager), or a DataError naming how to save one."""
    import zipfile

    import numpy as np

    try:
        arrays = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"{path}: not a numpy .npz archive ({e}); save it with numpy.savez(path, images=..., "
                        "labels=...).") from None
    if not hasattr(arrays, "files"):  # a single .npy array under an .npz name
        raise DataError(f"{path}: holds one array, not an .npz archive; save it with numpy.savez(path, "
                        "images=..., labels=...).")
    return arrays


# DataSpec.image and DataSpec.label name an .npz's arrays as `text` and `label` name a table's columns;
# left at their defaults they also find the plural names (`images`, `labels`) edgekit's .npz layout
# always used, so archives saved as numpy.savez(path, images=..., labels=...) need no keys.
DEFAULT_ARRAYS = {"image": ("image", "images"), "label": ("label", "labels")}
IMAGE_KINDS = "uif"  # unsigned, signed, float: numbers a network can take (not bool, complex, strings, objects)


def npz_headers(path: Path) -> dict[str, tuple[tuple, object]]:
    """{array name: (shape, dtype)} of an .npz archive, from each array's header (nothing is loaded)."""
    import numpy as np

    headers = {}
    with open_npz(path) as arrays:
        for name in arrays.files:
            member = name if name in arrays.zip.namelist() else f"{name}.npy"
            try:
                with arrays.zip.open(member) as f:
                    version = np.lib.format.read_magic(f)
                    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                        np.lib.format.read_array_header_2_0
                    shape, _, dtype = read(f)
            except (ValueError, OSError, KeyError) as e:  # a member that is not a .npy array
                raise DataError(f"{path}: array '{name}' cannot be read ({e}); save the file with numpy.savez(path, "
                                "images=..., labels=...).") from None
            headers[name] = (shape, dtype)
    return headers


def array_names(path: Path, present: list[str], image: str, label: str) -> tuple[dict[str, str], str | None]:
    """({"image": array name, "label": array name}, None), or ({}, the problem naming the key to set and
    listing the arrays the file has). `image`/`label` are the DataSpec values."""
    names, asked = {}, {"image": image, "label": label}
    for column, name in asked.items():
        default, plural = DEFAULT_ARRAYS[column]
        if name in present:
            names[column] = name
        elif name == default and plural in present:
            names[column] = plural
        else:
            looked = f"'{name}'" + (f" or '{plural}'" if name == default else "")
            has = ", ".join(present) or "none"
            return {}, (f"file '{path}' has no array {looked} for the {column}s (it has: {has}); set data.{column} "
                        "to the array that holds them, or save them as numpy.savez(path, images=..., labels=...)")
    return names, None


def image_file_problem(path: Path, image: str, label: str, layout: str) -> tuple[str, str] | None:
    """(DataSpec key, problem) of an .npz task file, from its arrays' names, types and shapes, or None.
    Reads headers only: what `edgekit recipe check` can afford before any work."""
    from edgekit.preprocessing import layout_of

    try:
        headers = npz_headers(path)
    except DataError as e:
        return "source", str(e)
    names, problem = array_names(path, list(headers), image, label)
    if problem:
        missing = next(column for column in ("image", "label") if column not in names)
        return missing, problem
    (shape, dtype), (label_shape, _) = headers[names["image"]], headers[names["label"]]
    if dtype.kind not in IMAGE_KINDS:
        return "image", (f"file '{path}': array '{names['image']}' holds {dtype} values; save the images as uint8 "
                         "(0-255) or float numbers")
    _, problem = layout_of(shape, layout)
    if problem:
        return "layout", f"file '{path}': {problem}"
    if len(label_shape) != 1 or label_shape[0] != shape[0]:
        return "label", (f"file '{path}': {shape[0] if shape else 0} images but labels of shape {label_shape}; "
                         f"save one label per image, as a 1-d array")
    return None


def read_npz_images(path: Path, image: str, label: str, layout: str) -> dict:
    """{"image": the images as stored (N, ...), "label": list of labels} of an .npz task file, or a
    DataError naming the fix. Layout, scaling and normalization are edgekit.preprocessing's, after the split."""
    from edgekit.preprocessing import check_finite

    problem = image_file_problem(path, image, label, layout)
    if problem:
        raise DataError(problem[1] + ".")
    with open_npz(path) as arrays:
        names, _ = array_names(path, list(arrays.files), image, label)
        try:
            images, labels = arrays[names["image"]], arrays[names["label"]]
        except ValueError as e:  # object arrays need pickle, which could run code
            raise DataError(f"{path}: {e}; save plain numeric images and numeric or string labels.") from None
    problem = check_finite(images, str(path))
    if problem:
        raise DataError(problem + ".")
    return {"image": images, "label": list(labels)}
