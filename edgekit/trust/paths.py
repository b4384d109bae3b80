"""Names read from files edgekit is handed stay inside their folder.

A bundle's manifest.json, a run's report.json and an ONNX file's external data all name other files
by a path relative to their folder. Those names are data someone else wrote: joined to the folder
unchecked, '../../x', '/etc/passwd' or a symlink placed in the folder would make `edgekit verify`
read, `edgekit bundle` copy, or ONNX Runtime load a file outside the folder the user pointed at.
So every such join goes through `inside`, which resolves the path the way the read would (symlinks
followed) and refuses it before anything is opened.
"""

from __future__ import annotations

import os
from pathlib import Path

from edgekit.errors import OutsideFolder
from edgekit.trust.reading import shown

GENERIC_FIX = "edgekit reads only files inside the folder it is given"


def inside(folder: str | Path, name, what: str, fix: str = GENERIC_FIX) -> Path:
    """`folder / name`, resolved, if it stays strictly inside `folder` (after following symlinks);
    otherwise OutsideFolder: "{what} '{name}', which is outside {folder} ({why}): {fix}".

    `what` says who names it, e.g. "manifest.json lists files:"."""
    root = Path(folder).resolve()
    if not isinstance(name, str) or not name or "\0" in name:
        raise OutsideFolder(f"{what} {shown(repr(name))}, which is not a file name inside {shown(root)}: {fix}.")
    shown_name, shown_root = shown(name), shown(root)  # names read from files: escaped before they are printed
    try:
        target = (root / name).resolve()
    except (OSError, RuntimeError) as e:  # a symlink loop (RuntimeError before Python 3.13), a name too long
        raise OutsideFolder(f"{what} '{shown_name}', which does not resolve inside {shown_root} ({shown(e)}): "
                            f"{fix}.") from None
    if target == root:
        raise OutsideFolder(f"{what} '{shown_name}', which is {shown_root} itself, not a file inside it: {fix}.")
    if target.is_relative_to(root):
        return target
    if Path(name).is_absolute():
        why = "an absolute path"
    elif os.path.normpath(name).split(os.sep)[0] == os.pardir:
        why = f"it climbs out with '..' to {shown(target)}"
    else:
        why = f"through a symlink it is {shown(target)}"
    raise OutsideFolder(f"{what} '{shown_name}', which is outside {shown_root} ({why}): {fix}.")


def _tensors(graph):
    """Every TensorProto of a graph that may hold external data: initializers (dense and sparse) and
    tensor attributes of its nodes, subgraphs (If/Loop/Scan bodies) included."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield from (sparse.values, sparse.indices)
    for node in graph.node:
        yield from _attribute_tensors(node)


def _attribute_tensors(node):
    for attribute in node.attribute:
        if attribute.HasField("t"):
            yield attribute.t
        yield from attribute.tensors
        sparse = list(attribute.sparse_tensors)
        if attribute.HasField("sparse_tensor"):
            sparse.append(attribute.sparse_tensor)
        for tensor in sparse:
            yield from (tensor.values, tensor.indices)
        for graph in list(attribute.graphs) + ([attribute.g] if attribute.HasField("g") else []):
            yield from _tensors(graph)


def external_data_inside(path: str | Path, what: str | None = None, fix: str = GENERIC_FIX):
    """Refuse an ONNX file whose tensors keep their data in a file outside the ONNX file's own folder,
    before onnx or ONNX Runtime would read it: OutsideFolder names the tensor and its location.

    Reads the graph only (load_external_data=False) and returns it, for further checks without a second
    parse. A file that does not parse (or an .ort flatbuffer) is left to the loader, which reports it with
    its own message (None is returned)."""
    import onnx

    path = Path(path)
    if path.suffix == ".ort" or not path.is_file():
        return None
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - not an ONNX protobuf: ORT's error says so better
        return None
    who = what or f"'{path.name}'"
    tensors = list(_tensors(model.graph))
    tensors += [t for function in model.functions for node in function.node for t in _attribute_tensors(node)]
    for tensor in tensors:
        for entry in tensor.external_data:
            if entry.key == "location":
                inside(path.parent, entry.value, f"{who} keeps tensor '{tensor.name}' in", fix)
    return model


def files_below(folder: str | Path, links: bool = False) -> list[str]:
    """The regular files below `folder` as sorted relative posix paths ('hf/onnx/model.onnx'), found without
    following a symlink; `links`: every entry that is neither a folder nor a regular file (a symlink, a FIFO) too,
    named the same way: what a check of a folder's contents must see rather than step into or over."""
    found = []
    for root, folders, files in os.walk(folder, followlinks=False):
        base = Path(root).relative_to(folder)
        for name in files + ([f for f in folders if (Path(root) / f).is_symlink()] if links else []):
            path = Path(root) / name
            if links or (path.is_file() and not path.is_symlink()):
                found.append((base / name).as_posix())
    return sorted(found)
