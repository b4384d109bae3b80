"""Loading .npy and .npz files someone else wrote, defensively.

numpy sizes what it allocates from the array header: a 100-byte .npy (or .npz member) declaring a
shape of (10**11, 10**3) float32 makes np.load ask for hundreds of gigabytes before it reads a byte of
data; an object array is a pickle (np.load(..., allow_pickle=False) refuses it with a bare ValueError);
a FIFO in a file's place blocks the read forever. So both loaders here:

- refuse anything but a regular file before it is opened (edgekit.trust.reading.regular_file), and open it
  without blocking, checking again on the open descriptor;
- read each array's header first and refuse object dtypes, a declared size larger than the bytes the file
  (or the .npz member) holds, and one larger than this machine's memory (edgekit.trust.reading.check_allocation),
  all before numpy allocates anything;
- load with allow_pickle=False, and turn every failure into `error` naming the file, what is wrong and `fix`.

    arrays = load_npz(path, "reference file", "rebuild the bundle with `edgekit bundle RUN NAME`", BundleMismatch)
    images = load_npy(path, "reference images", "rerun the run", BundleError)
"""

from __future__ import annotations

import io
import math
import os
import zipfile
import zlib
from pathlib import Path

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.trust.reading import check_allocation, gigabytes, open_regular, shown

# How many arrays an .npz may hold: far more than any edgekit file (a bundle's reference.npz holds a few
# hundred), far fewer than a hostile archive of millions of empty members would make us walk.
MAX_NPZ_MEMBERS = 100_000
# numpy's own default limit on a header's length (numpy.lib.format._MAX_HEADER_SIZE).
MAX_HEADER_BYTES = 10_000
# What reading an array may fail with, beyond what is checked up front: a truncated or corrupt file.
_READ_ERRORS = (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error, NotImplementedError, RuntimeError,
                KeyError, TypeError, SyntaxError, OverflowError, MemoryError)


def _label(path: Path, what: str) -> str:
    return f"{what} {shown(path)}".strip()


def _header(stream, where: str, fix: str, error: type[EdgekitError]) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, data offset) from the .npy header at the start of `stream`, the stream left at the data.
    The header's length is checked before it is read (a forged length would otherwise be read whole)."""
    from numpy.lib import format as npy

    def wrong(why: str):
        return error(f"{where}: not a readable .npy array ({why}); {fix}.")

    start = stream.read(8)
    if len(start) < 8 or start[:6] != b"\x93NUMPY":
        raise wrong("no .npy magic string at its start")
    width = {1: 2, 2: 4, 3: 4}.get(start[6])
    if width is None:
        raise wrong(f"unknown .npy format version {start[6]}.{start[7]}")
    length_bytes = stream.read(width)
    length = int.from_bytes(length_bytes, "little") if len(length_bytes) == width else -1
    if not 0 <= length <= MAX_HEADER_BYTES:
        raise wrong(f"a header length of {length:,} bytes" if length >= 0 else "truncated in its header")
    header = stream.read(length)
    if len(header) < length:
        raise wrong("truncated in its header")
    buffer = io.BytesIO(start + length_bytes + header)
    try:
        npy.read_magic(buffer)
        read = npy.read_array_header_1_0 if start[6] == 1 else npy.read_array_header_2_0
        shape, _, dtype = read(buffer, max_header_size=MAX_HEADER_BYTES)
    except _READ_ERRORS as e:
        raise wrong(f"{type(e).__name__}: {_first_line(e)}") from None
    if not all(isinstance(d, int) and d >= 0 for d in shape):
        raise error(f"{where}: its header declares the shape {shown(shape)}, which no array has; {fix}.")
    if dtype.hasobject:
        raise error(f"{where}: holds Python objects (dtype {shown(dtype)}), which only unpickling could load, and "
                    f"edgekit never unpickles a file it is handed; save numbers or fixed-width strings instead: "
                    f"{fix}.")
    return shape, dtype, len(start) + width + length


def _first_line(e: BaseException) -> str:
    lines = str(e).splitlines()
    return shown(lines[0][:160]) if lines else ""


def _declared_bytes(shape: tuple[int, ...], dtype: np.dtype) -> int:
    return math.prod(shape) * dtype.itemsize


def _check_size(where: str, shape, dtype, declared: int, available: int, fix: str,
                error: type[EdgekitError]) -> None:
    if declared > available:
        raise error(f"{where}: its header declares a {shown(dtype)} array of shape {tuple(shape)} "
                    f"({declared:,} bytes, {gigabytes(declared)}) but holds only {available:,} bytes of data: "
                    f"it is truncated or forged; {fix}.")


def load_npy(path: str | Path, what: str = "", fix: str = "restore it from its original source",
             error: type[EdgekitError] = EdgekitError) -> np.ndarray:
    """The array in the .npy file `path`, or `error` naming it ("{what} {path}: what is wrong; fix."): not a
    regular file, not an .npy, an object array, a header declaring more than the file holds or than this
    machine's memory. Nothing is allocated before those checks pass."""
    path = Path(path)
    where = _label(path, what)
    with open_regular(path, what, fix, error) as f:
        shape, dtype, offset = _header(f, where, fix, error)
        declared, available = _declared_bytes(shape, dtype), os.fstat(f.fileno()).st_size - offset
        _check_size(where, shape, dtype, declared, available, fix, error)
        check_allocation(declared, f"{where} (an array of shape {tuple(shape)})", fix, error)
        f.seek(0)
        try:
            return np.lib.format.read_array(f, allow_pickle=False, max_header_size=MAX_HEADER_BYTES)
        except _READ_ERRORS as e:
            raise error(f"{where}: unreadable .npy ({type(e).__name__}: "
                        f"{_first_line(e)}); {fix}.") from None


def npz_headers(path: str | Path, what: str = "", fix: str = "restore it from its original source",
                error: type[EdgekitError] = EdgekitError) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """{array name: (shape, dtype)} of the .npz `path`, from the headers alone, with load_npz's checks."""
    path = Path(path)
    with open_regular(path, what, fix, error) as f:
        return {name: (shape, dtype) for name, (shape, dtype, _) in _npz_members(f, path, what, fix, error).items()}


def _npz_members(f, path: Path, what: str, fix: str, error: type[EdgekitError]) -> dict[str, tuple]:
    """{array name: (shape, dtype, zip member)} of the archive open as `f`, every header checked, and the total
    the arrays declare checked against this machine's memory."""
    where = _label(path, what)
    try:
        archive = zipfile.ZipFile(f)
        infos = archive.infolist()
    except _READ_ERRORS as e:
        raise error(f"{where}: not a numpy .npz archive ({type(e).__name__}: "
                    f"{_first_line(e)}); {fix}.") from None
    if len(infos) > MAX_NPZ_MEMBERS:
        raise error(f"{where}: holds {len(infos):,} members, more than the {MAX_NPZ_MEMBERS:,} an .npz edgekit "
                    f"reads can; {fix}.")
    members, total = {}, 0
    for info in infos:
        if info.is_dir():
            continue
        name = info.filename.removesuffix(".npy")
        member = f"{where}, array '{shown(name)}'"
        try:
            with archive.open(info) as stream:
                shape, dtype, offset = _header(stream, member, fix, error)
        except EdgekitError:
            raise
        except _READ_ERRORS as e:
            raise error(f"{member}: unreadable ({type(e).__name__}: "
                        f"{_first_line(e)}); {fix}.") from None
        declared = _declared_bytes(shape, dtype)
        _check_size(member, shape, dtype, declared, info.file_size - offset, fix, error)
        total += declared
        members[name] = (shape, dtype, info)
    check_allocation(total, f"{where} (its {len(members)} arrays)", fix, error)
    return members


def load_npz(path: str | Path, what: str = "", fix: str = "restore it from its original source",
             error: type[EdgekitError] = EdgekitError) -> dict[str, np.ndarray]:
    """{array name: array} of the .npz archive `path`, or `error` naming it ("{what} {path}[, array 'x']: what
    is wrong; fix."): not a regular file, not a zip, a member that is not an .npy, an object array, a header
    declaring more than its member holds, or arrays adding up to more than this machine's memory. Every header
    is checked before any array is allocated."""
    path = Path(path)
    where = _label(path, what)
    arrays = {}
    with open_regular(path, what, fix, error) as f:
        members = _npz_members(f, path, what, fix, error)
        archive = zipfile.ZipFile(f)
        for name, (_, _, info) in members.items():
            try:
                with archive.open(info) as stream:
                    arrays[name] = np.lib.format.read_array(stream, allow_pickle=False,
                                                            max_header_size=MAX_HEADER_BYTES)
            except _READ_ERRORS as e:
                raise error(f"{where}, array '{shown(name)}': unreadable ({type(e).__name__}: "
                            f"{_first_line(e)}); {fix}.") from None
    return arrays
