"""Reading text and table files (.txt, .csv, .tsv, .jsonl, .parquet) into columns, and image arrays (.npz, .npy).

Shared by task data (recipes) and the plain text sources of `export --inputs` and
`bench --lengths-from`, so every reader accepts the same files (UTF-8 with or without
a BOM, as Excel's "CSV UTF-8" writes) and fails with the same clear errors.
"""

from __future__ import annotations

import csv
import io
import json
import os
import stat
from pathlib import Path

from edgekit.errors import DataError
from edgekit.trust.reading import MAX_DEPTH, check_allocation, depth, kind_of, open_regular, shown

PYARROW_MISSING = "reading Parquet files needs pyarrow: run `pip install pyarrow`"
# The longest line a text, CSV, TSV or JSONL file may have: far beyond any example (a long document is a few
# hundred thousand characters), and a bound on what one read allocates: a file of gigabytes without a line
# break would otherwise be read whole as one line.
MAX_LINE_CHARS = 8 << 20
TEXT_FIX = "save it as UTF-8 text, one example per line"
NPZ_FIX = "save it with numpy.savez(path, images=..., labels=...)"


def not_a_file_problem(path: Path) -> str | None:
    """Why `path`, which exists, is not a file edgekit can read as data (a folder, a FIFO, a device), or None.
    Checked before anything opens it: a FIFO would block the read forever, /dev/zero never end."""
    try:
        mode = path.stat().st_mode
    except OSError as e:
        return f"'{shown(path)}' cannot be read ({e.strerror}); fix the path or the file's permissions"
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return f"'{shown(path)}' is a folder; point to a file in it"
    return (f"'{shown(path)}' is {kind_of(mode)}, not a regular file; edgekit reads data only from files: save the "
            "data to one")


def _open_binary(path: Path):
    """`path` open for binary reading, or a DataError when it is not a regular file (reading.open_regular)."""
    if problem := not_a_file_problem(path):
        raise DataError(f"{problem}.")
    return open_regular(path, "", "fix the path or its permissions, or save the data to a file", DataError)


def _open_text(path: Path, errors: str = "strict"):
    """`path` as UTF-8 text (a BOM dropped), lines left as written (newline=""), after _open_binary's checks and
    one on its size: everything a text file holds is kept in memory, so it must fit there."""
    f = _open_binary(path)
    try:
        check_allocation(os.fstat(f.fileno()).st_size, f"{shown(path)} (read whole into memory)",
                         "split it into smaller files, or sample it", DataError)
    except DataError:
        f.close()
        raise
    return io.TextIOWrapper(f, encoding="utf-8-sig", errors=errors, newline="")


def bounded_lines(f, path: Path):
    """The lines of the text file `f`, each refused when longer than MAX_LINE_CHARS (before more is read) or
    when it holds a NUL character (binary data, or UTF-16 text, which decodes as UTF-8 with a NUL in every
    other byte)."""
    number = 0
    while True:
        line = f.readline(MAX_LINE_CHARS + 1)
        if not line:
            return
        number += 1
        if len(line) > MAX_LINE_CHARS:
            raise DataError(f"{shown(path)}: line {number} is longer than {MAX_LINE_CHARS:,} characters (a file "
                            f"without line breaks, or not a text file at all); {_fix_of(path)}.")
        if "\0" in line:
            raise DataError(f"{shown(path)}: line {number} holds a NUL byte, which text does not (a binary file, or "
                            f"UTF-16 text); re-save it as UTF-8 text.")
        yield line


def _fix_of(path: Path) -> str:
    return _REWRITE.get(path.suffix.lower(), "save it as UTF-8 text with a header row"
                        if path.suffix.lower() in (".csv", ".tsv") else TEXT_FIX)


def read_lines(path: Path) -> list[str]:
    try:
        with _open_text(path) as f:
            return [part for line in bounded_lines(f, path) for part in line.splitlines()]
    except UnicodeDecodeError as e:
        raise DataError(f"{shown(path)}: not UTF-8 text ({e}); re-save it as UTF-8.") from None


_REWRITE = {".parquet": "write it again (pyarrow.parquet.write_table or pandas' DataFrame.to_parquet)",
            ".jsonl": "save it as UTF-8 text with one JSON object per line"}


def _unreadable(path: Path, error: Exception) -> DataError:
    fix = _REWRITE.get(path.suffix.lower(), "save it as UTF-8 text with a header row")
    if isinstance(error, csv.Error) and "field larger than field limit" in str(error):
        return DataError(f"{shown(path)}: a field is longer than {csv.field_size_limit():,} characters (an unclosed "
                         f"quote makes the rest of the file one field); close the quote or shorten the field, and "
                         f"{fix}.")
    if isinstance(error, UnicodeDecodeError):
        return DataError(f"{shown(path)}: not UTF-8 text (byte 0x{error.object[error.start]:02x}: {error.reason}); "
                         "re-save it as UTF-8.")
    return DataError(f"{shown(path)}: cannot be read as {path.suffix[1:].upper()} ({shown(error)}); {fix}.")


_TOO_DEEP = object()  # a JSONL line Python's parser gave up on (RecursionError)


def _jsonl_records(lines, path: Path) -> list[dict]:
    records = []
    fix = 'write one JSON object per line, such as {"text": "...", "label": "..."}'
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{shown(path)}: line {number} is not valid JSON ({e.msg}); write one JSON object per "
                            "line.") from None
        except RecursionError:  # Python's parser recurses once per level
            record = _TOO_DEEP
        if record is _TOO_DEEP or depth(record) > MAX_DEPTH:
            raise DataError(f"{shown(path)}: line {number} nests lists or objects more than {MAX_DEPTH} deep, as no "
                            f"example does; {fix}.")
        if not isinstance(record, dict):
            raise DataError(f"{shown(path)}: line {number} is a JSON {type(record).__name__}, not an object; {fix}.")
        records.append(record)
    return records


def read_parquet(path: Path, wanted: list[str] | None = None) -> tuple[list[str], dict[str, list]]:
    """(column names, {name: values} of the `wanted` names present); reads only those columns."""
    try:
        import pyarrow
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(PYARROW_MISSING) from None
    _open_binary(path).close()  # a FIFO or device is refused before pyarrow opens it
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
        with _open_text(path, "surrogateescape") as f:
            lines = bounded_lines(f, path)
            if suffix == ".jsonl":
                first = next((line for line in lines if line.strip()), "")
                return list(_jsonl_records([first], path)[0]) if first else []
            return next(csv.reader(lines, delimiter="\t" if suffix == ".tsv" else ","), [])
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
        with _open_text(path, "surrogateescape" if keep_undecodable else "strict") as f:
            lines = bounded_lines(f, path)
            if suffix == ".jsonl":
                records = _jsonl_records(lines, path)
                names = list(dict.fromkeys(name for record in records for name in record))
            else:
                reader = csv.DictReader(lines, delimiter="\t" if suffix == ".tsv" else ",")
                records, names = list(reader), list(reader.fieldnames or [])
    except (UnicodeDecodeError, csv.Error) as e:
        raise _unreadable(path, e) from None
    return names, {name: [record.get(name) for record in records] for name in wanted if name in names}


# DataSpec.image and DataSpec.label name an .npz's arrays as `text` and `label` name a table's columns;
# left at their defaults they also find the plural names (`images`, `labels`) edgekit's .npz layout
# always used, so archives saved as numpy.savez(path, images=..., labels=...) need no keys.
DEFAULT_ARRAYS = {"image": ("image", "images"), "label": ("label", "labels")}
IMAGE_KINDS = "uif"  # unsigned, signed, float: numbers a network can take (not bool, complex, strings, objects)


def npz_headers(path: Path) -> dict[str, tuple[tuple, object]]:
    """{array name: (shape, dtype)} of an .npz archive, from each array's header (nothing is loaded); a DataError
    for a file that is not an .npz of plain arrays (edgekit.trust.arrays: object arrays, forged headers refused)."""
    from edgekit.trust.arrays import npz_headers as headers

    return headers(path, "", NPZ_FIX, DataError)


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
    from edgekit.data.preprocessing import layout_of

    try:
        headers = npz_headers(path)
    except DataError as e:
        return "source", str(e).rstrip(".")
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
    DataError naming the fix. Layout, scaling and normalization are edgekit.data.preprocessing's, after the split."""
    from edgekit.data.preprocessing import check_finite

    problem = image_file_problem(path, image, label, layout)
    if problem:
        raise DataError(problem[1] + ".")
    from edgekit.trust.arrays import load_npz

    # Headers checked before anything is allocated; object arrays (pickles, which could run code) refused.
    arrays = load_npz(path, "", NPZ_FIX, DataError)
    names, _ = array_names(path, list(arrays), image, label)
    images, labels = arrays[names["image"]], arrays[names["label"]]
    problem = check_finite(images, str(path))
    if problem:
        raise DataError(problem + ".")
    return {"image": images, "label": list(labels)}
