"""`edgekit verify BUNDLE`: is this folder still exactly what edgekit wrote, and does it still run?

Checks, all of them before reporting (a user fixes everything in one go):
1. manifest.json parses and matches its own digest;
2. every file it lists exists with its sha256 and size, and no unlisted file sits beside them;
3. every model file loads in ONNX Runtime and reproduces the outputs recorded in reference.npz
   on the recorded real inputs (within the manifest's tolerance);
4. the ONNX files' metadata_props are the ones the manifest records;
5. the app graph (model.app.onnx, the tokenizer inside) gives model.onnx's recorded outputs on the same
   texts, and its tokenizer gives exactly the token ids tokenizer.json gave on them and on the probe texts;
6. optionally (`--time`), the deployed file is re-timed with the recorded session options, and a
   percentile over the budget is a failure.
Any failure raises BundleMismatch, whose message names each file at fault.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from edgekit.errors import BundleMismatch, EdgekitError, OutsideFolder
from edgekit.stages.bundle import (
    MANIFEST,
    MANIFEST_FORMAT,
    compare,
    manifest_digest_ok,
    reference_session,
    run_reference,
)
from edgekit.trust.paths import external_data_inside, files_below, inside
from edgekit.trust.provenance import sha256_file
from edgekit.trust.reading import not_regular, parse_json, read_bytes, shown
from edgekit.trust.signing import SIGNATURE, signature_problems

# What a bundle whose own files are damaged, edited or not edgekit's gets told.
REBUILD = ("the bundle cannot be trusted: rebuild it with `edgekit bundle RUN NAME` (or get it again from whoever "
           "made it)")
SHA256 = re.compile(r"[0-9a-f]{64}")
PERCENTILES = ("p50", "p95", "p99")


def _load_manifest(folder: Path, time: bool = False) -> dict:
    path = folder / MANIFEST
    if not folder.is_dir():
        raise BundleMismatch(f"'{shown(folder)}' is not a folder; pass the bundle folder a run wrote (RUN/bundle).")
    if not (path.exists() or path.is_symlink()):
        raise BundleMismatch(f"{shown(path)} is missing: '{shown(folder)}' is not an edgekit bundle, or its manifest "
                             "was deleted; rebuild it with `edgekit bundle RUN NAME`.")
    raw = read_bytes(path, what="", fix=REBUILD, error=BundleMismatch)  # a FIFO, a device, gigabytes: refused unread
    manifest = parse_json(raw, f"{MANIFEST}:", REBUILD, BundleMismatch)  # "manifest.json: is not valid JSON (...)"
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else f"absent (it holds a JSON {_kind(manifest)})"
        raise BundleMismatch(f"{MANIFEST}: format {shown(found)[:80]} is not {MANIFEST_FORMAT}; verify it with the "
                             "edgekit version that wrote it, or rebuild the bundle with `edgekit bundle RUN NAME`.")
    if not manifest_digest_ok(raw):
        raise BundleMismatch(f"{MANIFEST}: its content does not match its own digest (manifest_sha256): it was "
                             "edited or corrupted; rebuild the bundle with `edgekit bundle RUN NAME`.")
    problems = manifest_problems(manifest, time)
    if problems:
        raise BundleMismatch(f"{MANIFEST}: not a manifest edgekit wrote ({len(problems)} problem(s); nothing it names "
                             f"was read):\n" + "\n".join(f"  {p}" for p in problems)
                             + f"\n{REBUILD[0].upper()}{REBUILD[1:]}.")
    return manifest


# ---------------------------------------------------------------------------- the manifest's structure

_MISSING = object()


def _kind(value) -> str:
    if value is _MISSING:
        return "missing"
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null", int: "number",
            float: "number"}.get(type(value), type(value).__name__)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _wrong(field: str, value, expected: str) -> str:
    if value is _MISSING:
        return f"{MANIFEST}: field {field} is missing; edgekit writes {expected} there"
    text = shown(repr(value) if not isinstance(value, (dict, list)) else _kind(value))
    return f"{MANIFEST}: field {field} is {text[:80]} ({_kind(value)}), not {expected}"


def _get(value, key):
    return value.get(key, _MISSING) if isinstance(value, dict) else _MISSING


def manifest_problems(manifest: dict, time: bool = False) -> list[str]:
    """Every field verify reads that is missing or of the wrong type, one line each naming the field and what it
    should hold (empty when the manifest has the structure edgekit writes): checked before any file it names is
    read, so a hand-made or damaged manifest is a clear error, not a KeyError half-way through."""
    problems = []

    def need(field: str, value, ok, expected: str) -> bool:
        if value is _MISSING or not ok(value):
            problems.append(_wrong(field, value, expected))
            return False
        return True

    is_dict = lambda v: isinstance(v, dict)
    is_name = lambda v: isinstance(v, str) and v != ""
    files = _get(manifest, "files")
    if need("files", files, is_dict, "an object of {file name: {sha256, bytes}}"):
        for name, record in files.items():
            where = f"files['{shown(name)}']"
            if need(where, record, is_dict, "an object {sha256, bytes}"):
                need(f"{where}.sha256", _get(record, "sha256"), lambda v: isinstance(v, str) and SHA256.fullmatch(v),
                     "64 lowercase hex digits (a sha256)")
                need(f"{where}.bytes", _get(record, "bytes"),
                     lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, "a whole number of bytes")
    reference = _get(manifest, "reference")
    if need("reference", reference, is_dict, "an object {file, models, tolerance}"):
        need("reference.file", _get(reference, "file"), is_name, "a file name (reference.npz)")
        models = _get(reference, "models")
        if need("reference.models", models, lambda v: is_dict(v) and v, "an object of {model file: {inputs}}"):
            for name, spec in models.items():
                need(f"reference.models['{shown(name)}'].inputs", _get(spec, "inputs"), is_name,
                     "the name of an input role (dynamic, fixed, text)")
        tolerance = _get(reference, "tolerance")
        if need("reference.tolerance", tolerance, is_dict, "an object {atol, rtol}"):
            for key in ("atol", "rtol"):
                need(f"reference.tolerance.{key}", _get(tolerance, key), lambda v: _is_number(v) and v >= 0,
                     "a number >= 0")
    props = _get(manifest, "metadata_props")
    if need("metadata_props", props, is_dict, "an object of {key: text}"):
        for key, value in props.items():
            need(f"metadata_props['{shown(key)}']", value, lambda v: isinstance(v, str), "a string")
    model = _get(manifest, "model")
    if need("model", model, is_dict, "an object {name, deploy, ...}"):
        need("model.name", _get(model, "name"), lambda v: isinstance(v, str), "the bundled file's name")
        need("model.deploy", _get(model, "deploy"), is_name, "the deployed file's name")
    app = _get(manifest, "app")
    if app is not _MISSING and app is not None and need("app", app, is_dict, "null or an object {file, ...}"):
        need("app.file", _get(app, "file"), lambda v: v is None or is_name(v), "null or a file name")
    if time:
        problems += _timing_problems(manifest, need)
    return problems


def _timing_problems(manifest: dict, need) -> list[str]:
    """What `--time` reads beyond the rest: the recorded benchmark settings, summary and budget."""
    is_dict = lambda v: isinstance(v, dict)
    latency, budget = _get(manifest, "latency"), _get(manifest, "budget")
    percentile = _get(budget, "percentile")
    if need("budget", budget, is_dict, "an object {percentile, ms, ...}"):
        need("budget.percentile", percentile, lambda v: v in PERCENTILES, f"one of {', '.join(PERCENTILES)}")
        need("budget.ms", _get(budget, "ms"), lambda v: _is_number(v) and v > 0, "a number of milliseconds > 0")
    if need("latency", latency, is_dict, "an object {config, summary, ...}"):
        config = _get(latency, "config")
        if need("latency.config", config, is_dict, "the benchmark settings edgekit recorded"):
            for key in ("lengths_from", "seq_len", "batch"):
                need(f"latency.config.{key}", _get(config, key), lambda v: v is None or isinstance(v, (int, str)),
                     "null, a number or a name")
        summary = _get(latency, "summary")
        if need("latency.summary", summary, is_dict, "an object {p50, p95, p99}") and percentile in PERCENTILES:
            need(f"latency.summary.{percentile}", _get(summary, percentile), lambda v: _is_number(v) and v > 0,
                 "a number of milliseconds > 0")
    fixed = _get(manifest, "fixed_shape")
    need("fixed_shape", fixed, lambda v: v is None or isinstance(_get(v, "file"), str),
         "null or an object {file, batch, seq_len}")
    need("max_length", _get(manifest, "max_length"), lambda v: v is None or (
        isinstance(v, int) and not isinstance(v, bool) and v > 0), "null or a whole number of tokens > 0")
    return []  # `need` appended to the caller's list


# What a name that leads out of the bundle gets told: the manifest was edited, or files were linked in.
OUTSIDE_FIX = "a bundle names only its own files; rebuild it with `edgekit bundle RUN NAME`"


def _named_files(manifest: dict) -> list[tuple[str, object]]:
    """(field, name) of every file verify reads because the manifest names it."""
    files, reference, model = (manifest.get(key) for key in ("files", "reference", "model"))
    named = [("files", name) for name in (files if isinstance(files, dict) else [])]
    if isinstance(reference, dict):
        named.append(("reference.file", reference.get("file")))
        models = reference.get("models")
        named += [("reference.models", name) for name in (models if isinstance(models, dict) else [])]
    if isinstance(model, dict):
        named.append(("model.deploy", model.get("deploy")))
    return named


def _refuse_outside(folder: Path, manifest: dict) -> None:
    """BundleMismatch, before any file is read, if a name in the manifest leads outside the bundle
    ('..', an absolute path, a symlink in the folder pointing elsewhere), or an ONNX file keeps
    external data outside it: hashing or loading such a file would read something that is not the bundle's."""
    problems, seen = [], set()
    for field, name in _named_files(manifest):
        try:
            path = inside(folder, name, f"manifest.json lists {field}:", OUTSIDE_FIX)
            if name not in seen and name.endswith(".onnx"):
                external_data_inside(path, f"{name} (listed in manifest.json)", OUTSIDE_FIX)
        except OutsideFolder as e:
            problems.append(shown(str(e)))
        seen.add(name if isinstance(name, str) else None)
    if problems:
        raise BundleMismatch(f"bundle {shown(folder)} does not verify ({len(problems)} problem(s); nothing it names "
                             "was read):\n" + "\n".join(f"  {p}" for p in dict.fromkeys(problems)))


def _file_problems(folder: Path, manifest: dict) -> list[str]:
    problems = []
    for name, record in manifest["files"].items():
        path = folder / name
        kind = not_regular(path)
        if kind:  # refused unopened: hashing a FIFO would never return, a device never end
            problems.append(f"{shown(name)}: is {kind}, not a regular file; edgekit bundles hold only regular "
                            "files: remove it and rebuild the bundle with `edgekit bundle RUN NAME`")
        elif not path.is_file():
            problems.append(f"{shown(name)}: missing")
        elif path.stat().st_size != record["bytes"]:
            problems.append(f"{shown(name)}: {path.stat().st_size:,} bytes, the manifest records {record['bytes']:,}")
        elif sha256_file(path) != record["sha256"]:
            problems.append(f"{shown(name)}: sha256 differs from the manifest (the file was changed or corrupted)")
    # The signature (edgekit/trust/signing.py) sits beside the files it covers and is checked by --key, not here.
    extra = [name for name in files_below(folder, links=True)
             if name not in (MANIFEST, SIGNATURE) and name not in manifest["files"]]
    problems += [f"{shown(name)}: not in the manifest (added after the bundle was written)" for name in extra]
    return problems


def _first_line(e: BaseException) -> str:
    lines = str(e).splitlines()
    return shown(lines[0][:200]) if lines else ""


def _reference(folder: Path, manifest: dict) -> tuple[dict, dict]:
    """{role: [feeds]}, {file: [outputs]} from reference.npz; BundleMismatch naming it when it is not a regular
    file, not an .npz, holds object arrays or arrays larger than it (edgekit/trust/arrays.py), or keys edgekit does
    not write (in|out/OWNER/INDEX/NAME)."""
    from edgekit.trust.arrays import load_npz

    name = manifest["reference"]["file"]
    arrays = load_npz(folder / name, "", REBUILD, BundleMismatch)
    inputs, outputs = {}, {}
    for key, value in arrays.items():
        parts = key.split("/", 3)
        if len(parts) != 4 or parts[0] not in ("in", "out") or not parts[2].isdigit() or len(parts[2]) > 6:
            raise BundleMismatch(f"{shown(name)}: holds an array '{shown(key)[:120]}', not one edgekit writes "
                                 f"(in/ROLE/BATCH/INPUT or out/FILE/BATCH/OUTPUT); {REBUILD}.")
        kind, owner, index, array = parts
        table = inputs if kind == "in" else outputs
        table.setdefault(owner, {}).setdefault(int(index), {})[array] = value
    as_lists = {owner: [batches[i] for i in sorted(batches)] for owner, batches in inputs.items()}
    return as_lists, {owner: [batches[i] for i in sorted(batches)] for owner, batches in outputs.items()}


def _unloadable(folder: Path, file: str) -> str | None:
    """Why `file` (or a file its tensors keep their data in) must not be handed to ONNX Runtime: not a regular
    file (ORT would block on a FIFO), or None."""
    kind = not_regular(folder / file)
    if kind:
        return f"is {kind}, not a regular file (said above); not loaded"
    if not file.endswith(".onnx"):
        return None
    import onnx

    from edgekit.trust.paths import _tensors

    try:
        model = onnx.load(str(folder / file), load_external_data=False)
    except Exception:  # noqa: BLE001 - not an ONNX protobuf: the session check says so
        return None
    for tensor in _tensors(model.graph):
        for entry in tensor.external_data:
            if entry.key == "location":
                kind = not_regular((folder / file).parent / entry.value)
                if kind:
                    return (f"keeps tensor '{shown(tensor.name)}' in '{shown(entry.value)}', which is {kind}, not a "
                            f"regular file; not loaded: {REBUILD}")
    return None


class _QuietOrt:
    """ONNX Runtime's own log silenced while a bundle's models run: it writes to the terminal directly, in color,
    and quotes node names from the file, which a hostile file could fill with escape sequences. Its failures still
    reach verify as exceptions, whose text is shown escaped."""

    def __enter__(self):
        import onnxruntime

        onnxruntime.set_default_logger_severity(4)  # fatal only

    def __exit__(self, *exc):
        import onnxruntime

        onnxruntime.set_default_logger_severity(2)  # ORT's default: warnings and above
        return False


def _model_problems(folder: Path, manifest: dict) -> list[str]:
    """Reload every model file and rerun it on the recorded inputs (ONNX Runtime's log silenced)."""
    with _QuietOrt():
        return _run_models(folder, manifest)


def _run_models(folder: Path, manifest: dict) -> list[str]:
    import onnx

    reference = manifest["reference"]
    try:
        inputs, outputs = _reference(folder, manifest)
    except BundleMismatch as e:
        return [str(e)]
    except Exception as e:  # noqa: BLE001 - a corrupt archive is a finding, not a crash
        return [f"{shown(reference['file'])}: unreadable ({type(e).__name__}: {_first_line(e)}); {REBUILD}"]
    problems, ran = [], {}
    for file, spec in reference["models"].items():
        why = _unloadable(folder, file)
        if why:
            problems.append(f"{shown(file)}: {why}")
            continue
        if spec["inputs"] not in inputs:
            problems.append(f"{shown(file)}: {shown(reference['file'])} holds no inputs of the role "
                            f"'{shown(spec['inputs'])}' manifest.json's reference.models names for it; {REBUILD}")
            continue
        try:
            actual = ran[file] = run_reference(reference_session(folder / file), inputs[spec["inputs"]])
        except Exception as e:  # noqa: BLE001 - a corrupt archive is a finding, not a crash
            problems.append(f"{shown(file)}: ONNX Runtime cannot load or run it ({type(e).__name__}: "
                            f"{_first_line(e)}); {REBUILD}")
            continue
        problems += [f"{shown(file)}: {p}" for p in compare(outputs.get(file, []), actual, reference["tolerance"])]
        if file.endswith(".onnx"):
            try:
                meta = onnx.load(str(folder / file), load_external_data=False).metadata_props
            except Exception as e:  # noqa: BLE001 - a damaged file is a finding, not a crash
                problems.append(f"{shown(file)}: onnx cannot read its metadata_props ({type(e).__name__}: "
                                f"{_first_line(e)}); {REBUILD}")
                continue
            props = {p.key: p.value for p in meta}
            wrong = sorted(k for k, v in manifest["metadata_props"].items() if props.get(k) != v)
            if wrong:
                problems.append(f"{shown(file)}: metadata_props {shown(', '.join(wrong))} differ from the manifest")
    try:
        return problems + _app_problems(folder, manifest, inputs, outputs, ran)
    except Exception as e:  # noqa: BLE001 - a damaged file is a finding, not a crash
        app = (manifest.get("app") or {}).get("file")
        return [*problems, (f"{shown(app)}: cannot be checked against {shown(reference['file'])} "
                            f"({type(e).__name__}: {_first_line(e)}); {REBUILD}")]


def _app_problems(folder: Path, manifest: dict, inputs: dict, outputs: dict, ran: dict) -> list[str]:
    """The app graph against the two-step path it replaces: its outputs on the recorded texts against
    model.onnx's recorded outputs on the same texts (tokenized by tokenizer.json), and its tokenizer's ids
    against tokenizer.json's, exactly: reference.npz's 'text' batches are its 'dynamic' batches untokenized."""
    app = manifest.get("app") or {}
    file = app.get("file")
    if not file:
        return []
    if manifest["reference"]["models"].get(file, {}).get("inputs") != "text" or "text" not in inputs:
        return [f"{shown(file)}: the manifest records no reference texts for it"]
    if file not in ran:  # it did not load or run: said above
        return []
    from edgekit.runtime.app_graph import TEXT_INPUT, token_problems, tokenizer_session

    problems = [f"{shown(file)}: against model.onnx's recorded outputs: {p}"
                for p in compare(outputs.get("model.onnx", []), ran[file], manifest["reference"]["tolerance"])]
    try:
        batches = [[str(t) for t in feed[TEXT_INPUT]] for feed in inputs["text"]]
        session = tokenizer_session(folder / file, list(inputs["dynamic"][0]))
        problems += [f"{shown(file)}: token ids: {p}" for p in token_problems(session, batches, inputs["dynamic"])]
    except Exception as e:  # noqa: BLE001 - a damaged tokenizer graph fails in assorted ways
        problems.append(f"{shown(file)}: its tokenizer part cannot run on its own ({type(e).__name__}: "
                        f"{_first_line(e)})")
    return problems


def retime(folder: Path, manifest: dict) -> dict:
    """Time the deployed file as it was measured (provider, threads, shape, run counts)."""
    from edgekit.runtime.bench import BenchConfig, run_benchmark

    recorded = manifest["latency"]["config"]
    budget = manifest["budget"]
    deploy = manifest["model"]["deploy"]
    # As recorded, except: a fixed-shape file has its batch and length in the graph, and where the run
    # followed the task's text lengths (texts the bundle does not hold) the file is timed at max_length.
    fixed = manifest["fixed_shape"] is not None and deploy == manifest["fixed_shape"]["file"]
    seq_len = manifest["max_length"] if recorded["lengths_from"] else recorded["seq_len"]
    try:
        config = BenchConfig(**{**recorded, "tokenizer": str(folder), "lengths_from": None,
                                "batch": None if fixed else recorded["batch"], "seq_len": None if fixed else seq_len})
    except Exception as e:  # noqa: BLE001 - recorded settings of the wrong type fail validation in assorted ways
        raise BundleMismatch(f"{MANIFEST}: latency.config is not a benchmark configuration this edgekit can rerun "
                             f"({type(e).__name__}: {_first_line(e)}); time it with the edgekit version that "
                             f"wrote it, or {REBUILD}.") from None
    try:
        result = run_benchmark(folder / deploy, config)
    except EdgekitError:
        raise
    except Exception as e:  # noqa: BLE001 - re-timing a damaged file fails in assorted ways
        raise BundleMismatch(f"{shown(deploy)}: cannot be re-timed: ONNX Runtime or its tokenizer failed "
                             f"({type(e).__name__}: {_first_line(e)}); {REBUILD}.") from None
    percentile = budget["percentile"]
    now, then = result["latency_ms"][percentile], manifest["latency"]["summary"][percentile]
    return {"file": shown(deploy), "percentile": percentile, "ms": now, "recorded_ms": then,
            "ratio": now / then, "budget_ms": budget["ms"], "over_budget": now > budget["ms"],
            "p50": result["latency_ms"]["p50"], "p95": result["latency_ms"]["p95"],
            "p99": result["latency_ms"]["p99"], "cpu": shown(result["cpu"]["name"])}


def verify_bundle(folder: str | Path, time: bool = False, key: str | Path | None = None,
                  signature: str | Path | None = None) -> dict:
    """Check a bundle against its manifest; returns what was checked, raises BundleMismatch on any problem.
    With `key` (a trusted public key), its signature is checked too (edgekit/trust/signing.py).

    The bundle is someone else's: its manifest is read with a size and depth limit and its structure checked
    before any file it names is touched; a FIFO or device in a file's place is refused unopened; every name in a
    message goes through `shown` (a file name holding terminal escapes is printed escaped)."""
    folder = Path(folder)
    manifest = _load_manifest(folder, time)
    _refuse_outside(folder, manifest)  # before any file it names is read
    problems = signature_problems(folder, key, signature) if key is not None else []
    problems += _file_problems(folder, manifest)
    problems += _model_problems(folder, manifest)
    timing = None
    if time and not problems:
        timing = retime(folder, manifest)
        if timing["over_budget"]:
            problems.append(f"{timing['file']}: {timing['percentile']} {timing['ms']:.2f} ms on {timing['cpu']} is "
                            f"over the budget of {timing['budget_ms']:g} ms (recorded: {timing['recorded_ms']:.2f} "
                            "ms on the machine that built it)")
    if problems:
        raise BundleMismatch(f"bundle {shown(folder)} does not verify ({len(problems)} problem(s)):\n"
                             + "\n".join(f"  {shown(line)}" for p in problems for line in p.splitlines()))
    return {"folder": str(folder), "files": len(manifest["files"]),
            "models": [shown(m) for m in manifest["reference"]["models"]], "timing": timing,
            "name": shown(manifest["model"]["name"]), "signed_by": None if key is None else str(key)}
