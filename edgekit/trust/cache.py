"""A content-addressed cache on disk: teacher outputs, trained weights, probe timings.

Entries live under `<root>/<kind>/<key>/`, where the key hashes everything the entry
depends on (teacher weights, data, settings, machine), so reruns and sweeps reuse
them and a change anywhere misses the cache instead of reading a stale entry. Arrays
are stored with their sha256; an entry that fails its hash is recomputed.

The cache is shared storage: another run (or whoever can write the folder) may have written any entry, hash
included. So an entry is read defensively, and whatever is wrong with it is reported through the cache's echo
and recomputed, never fatal: a file that is a FIFO, a device or a symlink is refused before it is opened (a read
would block forever or leave the cache); JSON is parsed behind a size and depth limit and must be an object;
arrays are loaded by edgekit.trust.arrays (no pickles, headers checked before allocation); and the names an entry
lists (an export's files) must be plain file names inside the entry's folder. A file is hashed through the
descriptor it is then read from, so what is used is what was verified, even while another run replaces it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import stat
from collections.abc import Callable
from pathlib import Path

from edgekit.errors import EdgekitError
from edgekit.trust.reading import MAX_JSON_BYTES, kind_of, open_file, parse_json, shown

CHUNK = 1 << 20
_SHA256 = re.compile(r"[0-9a-f]{64}")
# A name an entry lists: one plain file name (no folder part, no '..', no control characters).
_MAX_NAME = 255


class CorruptEntry(EdgekitError):
    """A cache entry that cannot be used as it is (the cache reports it and recomputes it; never reaches a user)."""


def cache_key(*parts) -> str:
    """A short stable hash of JSON-serializable parts."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def digest_texts(texts) -> str:
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode("utf-8", "surrogatepass"))
        digest.update(b"\0")
    return digest.hexdigest()


def digest_feeds(feeds: list[dict] | None) -> str | None:
    """sha256 of a list of numpy feeds (input name -> array): names, dtypes, shapes and values."""
    if feeds is None:
        return None
    import numpy as np

    digest = hashlib.sha256()
    for feed in feeds:
        for name, value in sorted(feed.items()):
            value = np.ascontiguousarray(value)
            digest.update(f"|{name}|{value.dtype.str}{value.shape}".encode())
            digest.update(value.tobytes())
    return digest.hexdigest()


def name_problem(name) -> str | None:
    """Why `name`, listed by a cache entry, is not one plain file name inside the entry's folder, or None."""
    if not isinstance(name, str):
        return f"lists {shown(repr(name)[:80])}, which is not a file name"
    if not name or name in (".", "..") or len(name) > _MAX_NAME:
        return f"lists '{shown(name[:80])}', which is not a file name"
    if "/" in name or "\\" in name or (os.altsep and os.altsep in name) or not name.isprintable():
        return f"lists '{shown(name[:200])}', which is not a plain file name inside its folder"
    return None


def _open_file(path: Path):
    """(the regular file `path` open for binary reading, None) or (None, why not: "absent" or a phrase).
    A symlink, FIFO or device is refused before it is opened, and again on the open descriptor (reading.open_file:
    non-blocking, not through a symlink, so one swapped in between cannot block or lead outside)."""
    f, why = open_file(path, follow_symlinks=False)
    if why is not None and why.startswith("is "):
        why += ", not a file the cache wrote"
    return f, why


def _sha256_of(f) -> str:
    digest = hashlib.sha256()
    while chunk := f.read(CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def _recorded(path: Path) -> tuple[str | None, str | None]:
    """(the sha256 recorded beside `path`, None) or (None, why there is none to trust)."""
    sidecar = path.with_name(path.name + ".sha256")
    f, problem = _open_file(sidecar)
    if f is None:
        if problem == "absent":
            return None, "has no sha256 beside it (written by an older edgekit, or by hand)"
        return None, f"has a sha256 file that {problem}"
    with f:
        text = f.read(200)
    recorded = text.decode("ascii", "replace").strip()
    if not _SHA256.fullmatch(recorded):
        return None, "has a sha256 file that holds no sha256"
    return recorded, None


def open_checked(path: Path):
    """(`path` open for binary reading at its start, None) when it matches the sha256 recorded beside it; else
    (None, why: "absent", or a phrase for the user). The file is hashed through the descriptor returned, so what
    the caller reads is what was verified, even if another run replaces the entry meanwhile."""
    f, problem = _open_file(path)
    if f is None:
        return None, problem
    recorded, problem = _recorded(path)
    if problem is None and _sha256_of(f) != recorded:
        problem = "fails its sha256 (corrupt or truncated)"
    if problem is not None:
        f.close()
        return None, problem
    f.seek(0)
    return f, None


def file_problem(path: Path) -> str | None:
    """Why `path` cannot be trusted ("absent", or a phrase for the user), or None when it is a regular file that
    matches the sha256 recorded beside it."""
    f, problem = open_checked(path)
    if f is not None:
        f.close()
    return problem


def _make_way(path: Path) -> None:
    """Clear what is not a file at `path` (a folder or anything else a hostile or broken cache left) so that
    os.replace can put the new file there; a symlink is removed, never followed."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISDIR(mode):
        shutil.rmtree(path)
    elif not stat.S_ISREG(mode):
        path.unlink()


def _reserve(path: Path) -> None:
    """Create `path` empty, failing if anything (a planted symlink included) is already there."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644))


def write_checked(path: Path, write: Callable[[Path], None]) -> None:
    """Write `path` through `write(tmp)` and record its sha256 beside it (`<name>.sha256`).

    The sidecar is replaced before the data: a kill between the two leaves a pair that
    `file_problem` rejects (and the caller recomputes), never an old hash that a new (or
    half-written) file happens to pass. Temporaries are named by process and a random token (two runs,
    or two threads, never share one) and are removed when the write fails (a full disk)."""
    token = f"{os.getpid()}-{secrets.token_hex(4)}"
    tmp = path.with_name(f"{path.name}.tmp-{token}")
    sidecar = path.with_name(path.name + ".sha256")
    sidecar_tmp = sidecar.with_name(f"{sidecar.name}.tmp-{token}")
    try:
        _reserve(tmp)
        write(tmp)
        f, problem = _open_file(tmp)
        if f is None:
            raise OSError(f"the cache's temporary file {tmp} {problem} after it was written")
        with f:
            digest = _sha256_of(f)
        _reserve(sidecar_tmp)
        with open(sidecar_tmp, "w", encoding="ascii") as out:
            out.write(digest + "\n")
        _make_way(sidecar)
        os.replace(sidecar_tmp, sidecar)
        _make_way(path)
        os.replace(tmp, path)
    except BaseException:
        for leftover in (tmp, sidecar_tmp):
            with contextlib.suppress(OSError):
                leftover.unlink()
        raise



def rows_problem(keys: str, values: str, arrays: dict) -> str | None:
    """What a memo entry lacks ({keys: 1-D, values: 2-D float, one row per key}), or None: the shape the teacher's
    per-text embeddings and the static student's per-token vectors are kept in."""
    key, value = arrays.get(keys), arrays.get(values)
    if key is None or value is None or key.ndim != 1 or value.ndim != 2 or value.dtype.kind != "f" \
            or len(key) != len(value):
        return f"does not hold a 1-D '{keys}' and a float 2-D '{values}' with one row per key"
    return None


class Cache:
    """Entries are checked against their sha256 on every read: a corrupt or truncated entry
    (a full disk, a killed copy, an edit) is reported through `echo` and recomputed."""

    def __init__(self, root: str | Path, echo: Callable[[str], None] | None = None):
        self.root = Path(root)
        self.echo = echo or (lambda message: None)

    def _outside(self, kind: str, key: str) -> str | None:
        """Why the entry folder (kind, key) is not a folder inside the cache, or None (absent is fine)."""
        for path in (self.root / kind, self.root / kind / key):
            try:
                mode = os.lstat(path).st_mode
            except FileNotFoundError:
                return None
            except OSError as e:
                return f"cannot be read ({e.strerror})"
            if not stat.S_ISDIR(mode):
                return f"is {kind_of(mode)}, not a folder inside the cache"
        return None

    def folder(self, kind: str, key: str) -> Path:
        path = self.root / kind / key
        if problem := self._outside(kind, key):  # a symlink out of the cache, a file in a folder's place
            self.echo(f"  cache folder {shown(path)} {problem}: replacing it")
            for part in (self.root / kind, path):
                with contextlib.suppress(FileNotFoundError):
                    if not stat.S_ISDIR(os.lstat(part).st_mode):
                        part.unlink()
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _report(self, path: Path, problem: str | None) -> None:
        if problem and problem != "absent":
            self.echo(f"  cache entry {shown(path)} {problem}: recomputing it")

    def _open(self, kind: str, key: str, name: str):
        """The entry file open at its start when it is inside the cache and matches its sha256, else None
        (what is wrong reported)."""
        path = self.root / kind / key / name
        if problem := self._outside(kind, key):
            self.echo(f"  cache folder {shown(path.parent)} {problem}: recomputing its entry")
            return None
        f, problem = open_checked(path)
        self._report(path, problem)
        return f

    def _verified(self, path: Path) -> bool:
        problem = file_problem(path)
        self._report(path, problem)
        return problem is None

    def load_arrays(self, kind: str, key: str, check: Callable[[dict], str | None] | None = None) -> dict | None:
        """The arrays saved under (kind, key), or None if absent or corrupt: fails its sha256, not an .npz of
        plain arrays (object arrays, pickles, are never loaded), a header declaring more than the file holds or
        the machine has, or (`check`: a phrase for what is wrong with them, or None) not what its reader needs."""
        from edgekit.trust.arrays import load_npz

        path = self.root / kind / key / "arrays.npz"
        f = self._open(kind, key, "arrays.npz")
        if f is None:
            return None
        with f:
            try:
                arrays = load_npz(path, "", "edgekit recomputes it", CorruptEntry)
            except CorruptEntry as e:
                self.echo(f"  corrupt cache entry: {e}")
                return None
            if not _same_file(f, path):  # replaced by another run since it was verified: read what was verified
                self.echo(f"  cache entry {shown(path)} was replaced while being read: recomputing it")
                return None
        if check is not None and (problem := check(arrays)):
            self.echo(f"  corrupt cache entry: {shown(path)} {problem}; edgekit recomputes it.")
            return None
        return arrays

    def save_arrays(self, kind: str, key: str, arrays: dict) -> None:
        import numpy as np

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:  # a file object: np.savez would append .npz to a name
                np.savez(f, **arrays)

        write_checked(self.folder(kind, key) / "arrays.npz", write)

    def load_json(self, kind: str, key: str, check: Callable[[dict], str | None] | None = None) -> dict | None:
        """The JSON object saved under (kind, key), or None if absent or corrupt: fails its sha256, too large,
        not JSON, nested too deep, not an object, or (`check`: a phrase for what is wrong with it, or None) not
        shaped as its reader needs."""
        path = self.root / kind / key / "entry.json"
        f = self._open(kind, key, "entry.json")
        if f is None:
            return None
        with f:
            data = f.read(MAX_JSON_BYTES + 1)
        try:
            if len(data) > MAX_JSON_BYTES:
                raise CorruptEntry(f"{shown(path)} is larger than the {MAX_JSON_BYTES:,} bytes an entry can be; "
                                   "edgekit recomputes it.")
            value = parse_json(data, shown(path), "edgekit recomputes it", CorruptEntry, dict)
            problem = check(value) if check is not None else None
            if problem:
                raise CorruptEntry(f"{shown(path)} {problem}; edgekit recomputes it.")
        except CorruptEntry as e:
            self.echo(f"  corrupt cache entry: {e}")
            return None
        return value

    def save_json(self, kind: str, key: str, value: dict) -> None:
        text = json.dumps(value, indent=1) + "\n"
        write_checked(self.folder(kind, key) / "entry.json", lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _same_file(f, path: Path) -> bool:
    """Whether `path` still names the file open as `f` (the cache replaces entries, never edits them in place:
    the same inode is the same bytes)."""
    try:
        now, was = os.lstat(path), os.fstat(f.fileno())
    except OSError:
        return False
    return (now.st_dev, now.st_ino) == (was.st_dev, was.st_ino)
