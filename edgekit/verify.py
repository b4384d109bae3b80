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

import json
from pathlib import Path

from edgekit.bundle import MANIFEST, MANIFEST_FORMAT, compare, manifest_digest_ok, reference_session, run_reference
from edgekit.errors import BundleMismatch, OutsideFolder
from edgekit.paths import external_data_inside, inside
from edgekit.provenance import sha256_file
from edgekit.signing import SIGNATURE, signature_problems


def _load_manifest(folder: Path) -> dict:
    path = folder / MANIFEST
    if not folder.is_dir():
        raise BundleMismatch(f"'{folder}' is not a folder; pass the bundle folder a run wrote (RUN/bundle).")
    if not path.is_file():
        raise BundleMismatch(f"{path} is missing: '{folder}' is not an edgekit bundle, or its manifest was "
                             "deleted; rebuild it with `edgekit bundle RUN NAME`.")
    raw = path.read_bytes()
    try:
        manifest = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BundleMismatch(f"{MANIFEST}: corrupt, not JSON ({e}); the bundle cannot be trusted: rebuild it "
                             "with `edgekit bundle RUN NAME`.") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise BundleMismatch(f"{MANIFEST}: format {manifest.get('format') if isinstance(manifest, dict) else None}"
                             f" is not {MANIFEST_FORMAT}; verify it with the edgekit version that wrote it.")
    if not manifest_digest_ok(raw):
        raise BundleMismatch(f"{MANIFEST}: its content does not match its own digest (manifest_sha256): it was "
                             "edited or corrupted; rebuild the bundle with `edgekit bundle RUN NAME`.")
    return manifest


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
            problems.append(str(e))
        seen.add(name if isinstance(name, str) else None)
    if problems:
        raise BundleMismatch(f"bundle {folder} does not verify ({len(problems)} problem(s); nothing it names was "
                             "read):\n" + "\n".join(f"  {p}" for p in dict.fromkeys(problems)))


def _file_problems(folder: Path, manifest: dict) -> list[str]:
    problems = []
    for name, record in manifest["files"].items():
        path = folder / name
        if not path.is_file():
            problems.append(f"{name}: missing")
        elif path.stat().st_size != record["bytes"]:
            problems.append(f"{name}: {path.stat().st_size:,} bytes, the manifest records {record['bytes']:,}")
        elif sha256_file(path) != record["sha256"]:
            problems.append(f"{name}: sha256 differs from the manifest (the file was changed or corrupted)")
    # The signature (edgekit/signing.py) sits beside the files it covers and is checked by --key, not here.
    extra = sorted(p.name for p in folder.iterdir()
                   if p.name not in (MANIFEST, SIGNATURE) and p.name not in manifest["files"])
    problems += [f"{name}: not in the manifest (added after the bundle was written)" for name in extra]
    return problems


def _reference(folder: Path, manifest: dict) -> tuple[dict, dict]:
    """{role: [feeds]}, {file: [outputs]} from reference.npz."""
    import numpy as np

    from edgekit.data.files import open_npz

    inputs, outputs = {}, {}
    with open_npz(folder / manifest["reference"]["file"]) as arrays:
        for key in arrays.files:
            kind, owner, index, name = key.split("/", 3)
            table = inputs if kind == "in" else outputs
            batches = table.setdefault(owner, {})
            batches.setdefault(int(index), {})[name] = np.asarray(arrays[key])
    as_lists = {owner: [batches[i] for i in sorted(batches)] for owner, batches in inputs.items()}
    return as_lists, {owner: [batches[i] for i in sorted(batches)] for owner, batches in outputs.items()}


def _model_problems(folder: Path, manifest: dict) -> list[str]:
    """Reload every model file and rerun it on the recorded inputs."""
    import onnx

    reference = manifest["reference"]
    try:
        inputs, outputs = _reference(folder, manifest)
    except Exception as e:  # noqa: BLE001 - a corrupt archive is a finding, not a crash
        return [f"{reference['file']}: unreadable ({type(e).__name__}: {e})"]
    problems, ran = [], {}
    for file, spec in reference["models"].items():
        try:
            actual = ran[file] = run_reference(reference_session(folder / file), inputs[spec["inputs"]])
        except Exception as e:  # noqa: BLE001 - ORT rejects a damaged file with assorted errors
            problems.append(f"{file}: ONNX Runtime cannot load or run it ({type(e).__name__}: "
                            f"{str(e).splitlines()[0][:200]})")
            continue
        problems += [f"{file}: {p}" for p in compare(outputs.get(file, []), actual, reference["tolerance"])]
        if file.endswith(".onnx"):
            props = {p.key: p.value for p in onnx.load(str(folder / file), load_external_data=False).metadata_props}
            wrong = sorted(k for k, v in manifest["metadata_props"].items() if props.get(k) != v)
            if wrong:
                problems.append(f"{file}: metadata_props {', '.join(wrong)} differ from the manifest")
    return problems + _app_problems(folder, manifest, inputs, outputs, ran)


def _app_problems(folder: Path, manifest: dict, inputs: dict, outputs: dict, ran: dict) -> list[str]:
    """The app graph against the two-step path it replaces: its outputs on the recorded texts against
    model.onnx's recorded outputs on the same texts (tokenized by tokenizer.json), and its tokenizer's ids
    against tokenizer.json's, exactly: reference.npz's 'text' batches are its 'dynamic' batches untokenized."""
    app = manifest.get("app") or {}
    file = app.get("file")
    if not file:
        return []
    if manifest["reference"]["models"].get(file, {}).get("inputs") != "text" or "text" not in inputs:
        return [f"{file}: the manifest records no reference texts for it"]
    if file not in ran:  # it did not load or run: said above
        return []
    from edgekit.app_graph import TEXT_INPUT, token_problems, tokenizer_session

    problems = [f"{file}: against model.onnx's recorded outputs: {p}"
                for p in compare(outputs.get("model.onnx", []), ran[file], manifest["reference"]["tolerance"])]
    batches = [[str(t) for t in feed[TEXT_INPUT]] for feed in inputs["text"]]
    try:
        session = tokenizer_session(folder / file, list(inputs["dynamic"][0]))
        problems += [f"{file}: token ids: {p}" for p in token_problems(session, batches, inputs["dynamic"])]
    except Exception as e:  # noqa: BLE001 - a graph whose tokenizer part was damaged fails in assorted ways
        problems.append(f"{file}: its tokenizer part cannot run on its own ({type(e).__name__}: "
                        f"{str(e).splitlines()[0][:200]})")
    return problems


def retime(folder: Path, manifest: dict) -> dict:
    """Time the deployed file as it was measured (provider, threads, shape, run counts)."""
    from edgekit.bench import BenchConfig, run_benchmark

    recorded = manifest["latency"]["config"]
    budget = manifest["budget"]
    # As recorded, except: a fixed-shape file has its batch and length in the graph, and where the run
    # followed the task's text lengths (texts the bundle does not hold) the file is timed at max_length.
    fixed = manifest["fixed_shape"] is not None and manifest["model"]["deploy"] == manifest["fixed_shape"]["file"]
    seq_len = manifest["max_length"] if recorded["lengths_from"] else recorded["seq_len"]
    config = BenchConfig(**{**recorded, "tokenizer": str(folder), "lengths_from": None,
                            "batch": None if fixed else recorded["batch"], "seq_len": None if fixed else seq_len})
    result = run_benchmark(folder / manifest["model"]["deploy"], config)
    percentile = budget["percentile"]
    now, then = result["latency_ms"][percentile], manifest["latency"]["summary"][percentile]
    return {"file": manifest["model"]["deploy"], "percentile": percentile, "ms": now, "recorded_ms": then,
            "ratio": now / then, "budget_ms": budget["ms"], "over_budget": now > budget["ms"],
            "p50": result["latency_ms"]["p50"], "p95": result["latency_ms"]["p95"],
            "p99": result["latency_ms"]["p99"], "cpu": result["cpu"]["name"]}


def verify_bundle(folder: str | Path, time: bool = False, key: str | Path | None = None,
                  signature: str | Path | None = None) -> dict:
    """Check a bundle against its manifest; returns what was checked, raises BundleMismatch on any problem.
    With `key` (a trusted public key), its signature is checked too (edgekit/signing.py)."""
    folder = Path(folder)
    manifest = _load_manifest(folder)
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
        raise BundleMismatch(f"bundle {folder} does not verify ({len(problems)} problem(s)):\n"
                             + "\n".join(f"  {p}" for p in problems))
    return {"folder": str(folder), "files": len(manifest["files"]),
            "models": list(manifest["reference"]["models"]), "timing": timing, "name": manifest["model"]["name"],
            "signed_by": None if key is None else str(key)}
