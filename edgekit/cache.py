"""A content-addressed cache on disk: teacher outputs, trained weights, probe timings.

Entries live under `<root>/<kind>/<key>/`, where the key hashes everything the entry
depends on (teacher weights, data, settings, machine), so reruns and sweeps reuse
them and a change anywhere misses the cache instead of reading a stale entry. Arrays
are stored with their sha256; an entry that fails its hash is recomputed.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

from edgekit.provenance import sha256_file


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


def write_checked(path: Path, write: Callable[[Path], None]) -> None:
    """Write `path` through `write(tmp)` and record its sha256 beside it (`<name>.sha256`).

    The sidecar is replaced before the data: a kill between the two leaves a pair that
    `file_problem` rejects (and the caller recomputes), never an old hash that a new (or
    half-written) file happens to pass."""
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    write(tmp)
    sidecar = path.with_name(path.name + ".sha256")
    sidecar_tmp = sidecar.with_name(f"{sidecar.name}.tmp-{os.getpid()}")
    sidecar_tmp.write_text(sha256_file(tmp) + "\n")
    os.replace(sidecar_tmp, sidecar)
    os.replace(tmp, path)


def file_problem(path: Path) -> str | None:
    """Why `path` cannot be trusted ("absent", or a phrase for the user), or None when it matches the
    sha256 recorded beside it."""
    if not path.is_file():
        return "absent"
    sidecar = path.with_name(path.name + ".sha256")
    if not sidecar.is_file():
        return "has no sha256 beside it (written by an older edgekit, or by hand)"
    if sidecar.read_text().strip() != sha256_file(path):
        return "fails its sha256 (corrupt or truncated)"
    return None


class Cache:
    """Entries are checked against their sha256 on every read: a corrupt or truncated entry
    (a full disk, a killed copy, an edit) is reported through `echo` and recomputed."""

    def __init__(self, root: str | Path, echo: Callable[[str], None] | None = None):
        self.root = Path(root)
        self.echo = echo or (lambda message: None)

    def folder(self, kind: str, key: str) -> Path:
        path = self.root / kind / key
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _verified(self, path: Path) -> bool:
        problem = file_problem(path)
        if problem and problem != "absent":
            self.echo(f"  cache entry {path} {problem}: recomputing it")
        return problem is None

    def load_arrays(self, kind: str, key: str) -> dict | None:
        """The arrays saved under (kind, key), or None if absent or corrupt."""
        import numpy as np

        path = self.root / kind / key / "arrays.npz"
        if not self._verified(path):
            return None
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}

    def save_arrays(self, kind: str, key: str, arrays: dict) -> None:
        import numpy as np

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:  # a file object: np.savez would append .npz to a name
                np.savez(f, **arrays)

        write_checked(self.folder(kind, key) / "arrays.npz", write)

    def load_json(self, kind: str, key: str) -> dict | None:
        path = self.root / kind / key / "entry.json"
        if not self._verified(path):
            return None
        return json.loads(path.read_text(encoding="utf-8"))

    def save_json(self, kind: str, key: str, value: dict) -> None:
        text = json.dumps(value, indent=1) + "\n"
        write_checked(self.folder(kind, key) / "entry.json", lambda tmp: tmp.write_text(text, encoding="utf-8"))
