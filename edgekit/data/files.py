"""Reading text and table files (.txt, .csv, .tsv, .jsonl, .parquet) into columns, and .npz archives.

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
