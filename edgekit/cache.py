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
from pathlib import Path


def cache_key(*parts) -> str:
    """A short stable hash of JSON-serializable parts."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def digest_texts(texts) -> str:
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode("utf-8", "surrogatepass"))
        digest.update(b"\0")
    return digest.hexdigest()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class Cache:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    def folder(self, kind: str, key: str) -> Path:
        path = self.root / kind / key
        path.mkdir(parents=True, exist_ok=True)
        return path

    def load_arrays(self, kind: str, key: str) -> dict | None:
        """The arrays saved under (kind, key), or None if absent or corrupt."""
        import numpy as np

        path = self.root / kind / key / "arrays.npz"
        checksum = path.with_suffix(".sha256")
        if not path.is_file() or not checksum.is_file() or checksum.read_text().strip() != _sha256(path):
            return None
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}

    def save_arrays(self, kind: str, key: str, arrays: dict) -> None:
        import numpy as np

        path = self.folder(kind, key) / "arrays.npz"
        tmp = path.with_name(f"arrays.tmp-{os.getpid()}.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
        path.with_suffix(".sha256").write_text(_sha256(path) + "\n")

    def load_json(self, kind: str, key: str) -> dict | None:
        path = self.root / kind / key / "entry.json"
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def save_json(self, kind: str, key: str, value: dict) -> None:
        path = self.folder(kind, key) / "entry.json"
        tmp = path.with_name(f"entry.tmp-{os.getpid()}.json")
        tmp.write_text(json.dumps(value, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, path)
