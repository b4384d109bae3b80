"""Where a shipped file came from: sha256 of the teacher's files and of every data source.

Digests are of file bytes, so anyone can recompute them with `sha256sum`. A folder's
digest is the sha256 of its `sha256sum`-style listing ("<hex>  <relative path>\\n" per
file, sorted by path), so it changes when any file is added, removed or altered.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

CHUNK = 1 << 20


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def folder_sha256(folder: str | Path) -> tuple[str, dict[str, str]]:
    """(digest of the folder, {relative path: sha256}) over every file below `folder`."""
    folder = Path(folder)
    files = {p.relative_to(folder).as_posix(): sha256_file(p) for p in sorted(folder.rglob("*")) if p.is_file()}
    listing = "".join(f"{digest}  {name}\n" for name, digest in sorted(files.items()))
    return hashlib.sha256(listing.encode()).hexdigest(), files


def _hub_snapshot(model_id: str) -> Path | None:
    """The local snapshot folder of a hub model, when it was downloaded before."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(model_id, local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached, or huggingface_hub missing: recorded as unknown
        return None


def teacher_provenance(model: str, location: str | None, prepared_sha256: str) -> dict:
    """The teacher's source files (a folder, a file, or a hub snapshot in the local cache) and
    the digest of the weights edgekit distilled from (heads fitted here included)."""
    record = {"model": model, "prepared_weights_sha256": prepared_sha256}
    path = Path(location) if location else None
    if path is None or not path.exists():
        path = _hub_snapshot(location) if location else None
    if path is None:
        return record | {"sha256": None, "why": "no local files (a built-in or an uncached hub model)"}
    if path.is_file():
        return record | {"path": str(path), "sha256": sha256_file(path), "files": {path.name: sha256_file(path)}}
    digest, files = folder_sha256(path)
    return record | {"path": str(path), "sha256": digest, "files": files}


def source_files(source: str) -> list[Path]:
    """The files a data source reads: a local file, or a built-in's files in its package."""
    from edgekit.data import builtin

    if source.startswith("hf:"):
        return []
    if source in builtin.BUILTIN_FILES:
        return [builtin.package_file(key) for key in builtin.BUILTIN_FILES[source]]
    return [Path(source)]


def data_provenance(recipe, tasks) -> dict:
    """Per task and per unlabeled corpus: the source, sha256 of each file it reads (a task's own test
    file, split.test_file, among them, and named by `test_file`), and (tasks) the digest of the examples
    after deduplication and the split (TaskData.digest)."""

    def files(source: str) -> dict:
        return {str(path): sha256_file(path) for path in source_files(source)}

    record = {}
    for task in tasks:
        test_file = task.spec.split.test_file
        record[task.name] = {"source": task.spec.data.source,
                             **({"test_file": test_file} if test_file is not None else {}),
                             "files": files(task.spec.data.source) | (files(test_file) if test_file else {}),
                             "examples_sha256": task.digest}
    for i, spec in enumerate(recipe.distill.unlabeled):
        record[f"unlabeled[{i}]"] = {"source": spec.source, "files": files(spec.source)}
    return record


# ---------------------------------------------------------------------------- paths in what ships

def _package_roots() -> list[tuple[Path, str]]:
    """(import folder, 'distribution==version') of every installed top-level package, longest folder first: the
    names a path inside site-packages (or an editable install's source folder) is shown by."""
    import importlib.metadata
    import importlib.util

    roots = []
    for top, dists in importlib.metadata.packages_distributions().items():
        try:
            spec = importlib.util.find_spec(top)
        except (ImportError, ValueError):
            continue
        folders = list(spec.submodule_search_locations or []) if spec else []
        if spec and not folders and spec.origin:
            folders = [str(Path(spec.origin).parent)]  # a single-module distribution: its file's folder
            top = Path(spec.origin).name
        for folder in folders:
            try:
                roots.append((Path(folder).resolve(), f"{dists[0]}=={importlib.metadata.version(dists[0])}"))
            except importlib.metadata.PackageNotFoundError:
                continue
    return sorted(roots, key=lambda root: -len(root[0].parts))


def portable_path(path: str, relative_to: tuple[Path, ...] = (), roots: list | None = None) -> str:
    """An absolute path as a bundle may carry it, naming no folder of the machine that built it: a file inside an
    installed package as 'distribution==version:package/relative/path' (e.g. 'gensim==4.4.0:gensim/test/
    test_data/lee.cor'), one under a folder of `relative_to` relative to it, anything else by its file name
    alone (its sha256 beside it says which file it was)."""
    if not Path(path).is_absolute():
        return path
    resolved = Path(path).resolve()
    for folder, dist in (roots if roots is not None else _package_roots()):
        if resolved.is_relative_to(folder):
            return f"{dist}:{Path(folder.name, resolved.relative_to(folder)).as_posix()}"
    for folder in relative_to:
        if resolved.is_relative_to(folder.resolve()):
            return resolved.relative_to(folder.resolve()).as_posix() or "."
    return resolved.name


def portable(record, relative_to: tuple[Path, ...] = ()):
    """`record` (JSON-like) with every absolute path in it, as a value or as a key, made portable_path's: what
    ships says which package, version and digest a file was, never where it lay on the machine that built it."""
    roots = _package_roots()

    def walk(value):
        if isinstance(value, dict):
            return {walk(key): walk(item) for key, item in value.items()}
        if isinstance(value, list):
            return [walk(item) for item in value]
        if isinstance(value, str) and (value.startswith(("/", "\\")) or _windows_absolute(value)):
            return portable_path(value, relative_to, roots)
        return value

    return walk(record)


def _windows_absolute(value) -> bool:
    return isinstance(value, str) and len(value) > 2 and value[1] == ":" and value[2] in "/\\" and value[0].isalpha()
