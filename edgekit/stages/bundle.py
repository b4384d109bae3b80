"""A deployable bundle: the file to ship, what an app needs beside it, and a manifest that
lets anyone check it later (`edgekit verify`, edgekit/trust/verify.py).

    model.onnx                       the chosen file; metadata_props carry the recipe hash, metrics,
                                     budget and measured latency
    model.fixed.onnx                 (export.shapes: fixed) batch and sequence fixed, for NNAPI / CoreML
    model.app.onnx                   (export.tokenizer_in_graph) model.onnx with its tokenizer inside: texts in
                                     (edgekit/runtime/app_graph.py), checked against tokenizer.json; no .ort of it
    model.ort                        ONNX Runtime Mobile format of the deployed file (export.ort)
    model.required_operators.config  the operators a reduced ORT build needs for model.ort
    tokenizer files | preprocessing.json, labels.json, config.json
    reference.npz                    real inputs, and the outputs every model file gave on them here
    README.md                        usage in Python, inputs and outputs, metrics, latency
    manifest.json                    sha256 of every file, the recipe, teacher and data digests,
                                     versions, CPU, provider and session options, raw latency samples

A bundle is written only from a run folder and its report.json (`write_bundle`), so the
pipeline and `edgekit bundle RUN NAME` (any candidate, after the run) make the same thing.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import time
from pathlib import Path

from edgekit import __version__
from edgekit.errors import BundleError, OutsideFolder
from edgekit.records import Report, Row
from edgekit.trust.paths import external_data_inside, inside
from edgekit.trust.provenance import portable, sha256_file
from edgekit.trust.reading import read_json, regular_file, shown
from edgekit.units import class_list, timed_shape

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "edgekit.manifest/1"
REFERENCE = "reference.npz"
REFERENCE_BATCH = 8
# The manifest's own digest is computed over the file with this value in place of the digest.
SELF_DIGEST_FIELD = "manifest_sha256"
SELF_DIGEST_PLACEHOLDER = "0" * 64
# What a name that leads out of the run folder gets told: report.json was edited, or files were linked in.
RUN_FIX = ("a run names only its own files, and a bundle copies only those: rerun `edgekit distill-and-export` "
           "(the cache makes it quick) rather than editing report.json or linking files in")
# What a run folder whose files are damaged, edited or not edgekit's gets told.
REPORT_FIX = ("rerun `edgekit distill-and-export` into a new folder (the cache makes it quick): report.json and the "
              "files beside it are edgekit's record of the run, not files to edit")


# How far a rerun may drift from the recorded outputs: fp32 differs across CPUs and ORT builds only by
# summation order; int8 kernels differ more across instruction sets (u8s8 vs VNNI, saturation).
TOLERANCE = {"fp32": {"atol": 1e-4, "rtol": 1e-3}, "quantized": {"atol": 2e-2, "rtol": 2e-2}}


# ---------------------------------------------------------------------------- pieces of a bundle

def metadata_props(data: dict, row: dict, recipe, recipe_sha256: str) -> dict[str, str]:
    """What every bundled ONNX file carries in its metadata_props (ORT: session.get_modelmeta()); `recipe_sha256`:
    the digest of the recipe as the manifest records it (recipe_digest)."""
    props = {
        "edgekit.version": __version__,
        "edgekit.recipe": recipe.name,
        "edgekit.recipe_sha256": recipe_sha256,
        "edgekit.model": row["name"],
        "edgekit.data.metrics": json.dumps({task: {"metric": m["metric"], "value": m["value"]}
                                       for task, m in row["metrics"].items()}, sort_keys=True),
        "edgekit.budget": json.dumps({k: data["budget"].get(k) for k in ("percentile", "ms", "speedup", "batch",
                                                                         "seq_len", "threads")}, sort_keys=True),
        "edgekit.latency_ms": json.dumps({"provider": row["provider"], **{k: row["latency_ms"][k]
                                                                          for k in ("p50", "p95", "p99")}},
                                         sort_keys=True),
    }
    from edgekit.stages import score_scale  # numpy: not at import (verify's --help stays fast)

    # The file states its own cosine thresholds matched to the teacher's: an app reading only the model sees them.
    thresholds = score_scale.metadata_thresholds(score_scale.bundle_record(data.get("score_scale"), row["name"],
                                                                           row["provider"]))
    return props | ({"edgekit.cosine_thresholds": thresholds} if thresholds else {})


def recipe_digest(record: dict) -> str:
    """sha256 of a recipe record as canonical JSON (sorted keys), as Recipe.sha256 computes it of a validated one."""
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


def _write_with_metadata(src: Path, dst: Path, props: dict[str, str]) -> None:
    import onnx

    model = onnx.load(str(src))
    kept = [p for p in model.metadata_props if not p.key.startswith("edgekit.")]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(dst))


def _reference_examples(run: Path, batch: int, probe: list[str] | None = None) -> list:
    """The run's real evaluation inputs (texts, or an image array) in whole batches of `batch` (a
    fixed-shape file takes nothing else), at least one, in the order every role of reference.npz uses;
    then `probe` as one more batch (the app graph's probe texts, edgekit/runtime/app_graph.py)."""
    import numpy as np

    examples = reference_inputs(run)
    repeat = -(-batch // len(examples))
    examples = examples * repeat if isinstance(examples, list) else np.concatenate([examples] * repeat)
    examples = examples[:len(examples) - len(examples) % batch]
    return [examples[start:start + batch] for start in range(0, len(examples), batch)] + ([probe] if probe else [])


def _present(path: Path) -> bool:
    """Whether anything is at `path` (a FIFO or a dangling symlink too: the read refuses it, naming it)."""
    return path.exists() or path.is_symlink()


def reference_inputs(run: Path):
    """The run's reference/texts.json (a list of texts) or reference/images.npy (an array of images, numbers),
    read defensively: BundleError naming the file when it is not a regular file, too large, malformed, empty, or
    (images) an object array or one whose header declares more than the file holds."""
    from edgekit.trust.arrays import load_npy

    texts, images = run / "reference" / "texts.json", run / "reference" / "images.npy"
    if _present(texts):
        examples = read_json(texts, list, fix=REPORT_FIX, error=BundleError)
        bad = next((i for i, t in enumerate(examples) if not isinstance(t, str)), None)
        if bad is not None:
            raise BundleError(f"{shown(texts)}: item {bad} is a JSON {type(examples[bad]).__name__}, not a text; "
                              f"{REPORT_FIX}.")
    elif _present(images):
        examples = load_npy(images, fix=REPORT_FIX, error=BundleError)
        if examples.ndim < 1 or examples.dtype.kind not in "uif":
            raise BundleError(f"{shown(images)}: holds a {shown(examples.dtype)} array of shape {examples.shape}, "
                              f"not images (an array of numbers, one image per row); {REPORT_FIX}.")
    else:
        raise BundleError(f"{shown(run / 'reference')}: holds neither texts.json nor images.npy, the real inputs a "
                          f"bundle's reference outputs are computed on; {REPORT_FIX}.")
    if len(examples) == 0:
        raise BundleError(f"{shown(texts if _present(texts) else images)}: holds no examples; {REPORT_FIX}.")
    return examples


def _reference_feeds(run: Path, folder: Path, recipe, inputs: list, shape: tuple[int, int] | None,
                     probe: list[str] | None = None) -> list[dict]:
    """Real evaluation inputs as feeds for `inputs` (ORT input metadata): tokenized with the bundle's
    tokenizer, padded to the longest text per batch, or to the fixed shape's length in batches of its size;
    `probe` (dynamic shapes only) as a last batch."""
    names = [i.name for i in inputs]
    batches = _reference_examples(run, shape[0] if shape else REFERENCE_BATCH, probe)
    if not _present(run / "reference" / "texts.json"):
        return [{names[0]: images} for images in batches]
    from edgekit.runtime.feeds import text_feeds

    tokenizer = load_tokenizer(folder, run / "tokenizer")
    return [text_feeds(tokenizer, texts, shape[1] if shape else recipe.teacher.max_length,
                       padding="max_length" if shape else "longest", names=tuple(names))
            for texts in batches]


def _score(run: Path, recipe, path: Path) -> dict:
    """Every task's metric on a fixed-shape file, which sees every text padded to its length: an
    int8-dynamic file quantizes the padding too, so it may score below the file it was made from."""
    import os

    from edgekit.data.tasks import load_task_data
    from edgekit.runtime.evaluate import evaluate_onnx

    tokenizer = load_tokenizer(run / "tokenizer") if (run / "tokenizer").is_dir() else None
    tasks = [load_task_data(spec) for spec in recipe.tasks]
    results = evaluate_onnx(path, tasks, tokenizer, recipe.teacher.max_length, threads=os.cpu_count() or 1,
                            batch_size=recipe.budget.batch)
    return {task: {k: v for k, v in r.items() if k != "predictions"} for task, r in results.items()}


def check_tokenizer(folder: Path) -> None:
    """The run's tokenizer/ folder holds only regular files, and its JSON files parse within edgekit's size and
    depth limits: BundleError naming the file otherwise (before transformers or tokenizers read them)."""
    for file in sorted(folder.iterdir()):
        regular_file(file, "the run's tokenizer file", REPORT_FIX, BundleError)
        if file.suffix == ".json":
            read_json(file, None, fix=REPORT_FIX, error=BundleError)


def load_tokenizer(folder: Path, origin: Path | None = None):
    """AutoTokenizer of `folder` (the run's tokenizer/, or the bundle its files were copied to); BundleError
    naming `origin` (default: `folder`) when its files do not make a tokenizer."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
    except Exception as e:  # noqa: BLE001 - transformers and tokenizers fail on damaged files in assorted ways
        lines = str(e).splitlines()
        raise BundleError(f"{shown(origin or folder)}: its files do not load as a tokenizer ({type(e).__name__}: "
                          f"{shown(lines[0][:200]) if lines else ''}); {REPORT_FIX}.") from None


def reference_session(path: Path):
    """The session reference outputs come from: ORT's CPU provider, one thread (what verify reruns)."""
    from edgekit.runtime.providers import SessionSettings, create_session

    return create_session(path, SessionSettings(provider="cpu", threads=1))[0]


def run_reference(session, feeds: list[dict]) -> list[dict]:
    """{output name: array} of `session` on each feed."""
    names = [o.name for o in session.get_outputs()]
    return [dict(zip(names, session.run(None, feed))) for feed in feeds]


def compare(expected: list[dict], actual: list[dict], tolerance: dict) -> list[str]:
    """Every output that differs beyond `tolerance`, with its largest absolute difference."""
    import numpy as np

    problems = []
    if len(expected) != len(actual):  # a reference that lost (or gained) batches checks nothing of them
        problems.append(f"{len(actual)} batch(es) ran, the reference records outputs of {len(expected)}")
    for i, (want, got) in enumerate(zip(expected, actual)):
        for name, value in want.items():
            other = got.get(name)
            if other is None or getattr(other, "shape", None) != value.shape:
                problems.append(f"output '{shown(name)}' of batch {i}: shape "
                                f"{None if other is None else getattr(other, 'shape', None)} instead of {value.shape}")
                continue
            try:
                close = np.allclose(other, value, atol=tolerance["atol"], rtol=tolerance["rtol"])
                diff = None if close else float(np.abs(other - value).max())
            except (TypeError, ValueError):  # a recorded array of strings or another kind than the output's
                problems.append(f"output '{shown(name)}' of batch {i}: recorded as {shown(value.dtype)}, which cannot "
                                f"be compared with the {shown(getattr(other, 'dtype', type(other).__name__))} output")
                continue
            if not close:
                problems.append(f"output '{shown(name)}' of batch {i}: max |diff| {diff:.3g}"
                                f" > atol {tolerance['atol']:g} + rtol {tolerance['rtol']:g}")
    return problems


def _signature(path: Path) -> dict:
    """Inputs and outputs of a model file: name, dtype and shape (symbolic axes by name)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)

    def values(items):
        return [{"name": v.name, "dtype": onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type).name,
                 "shape": [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]} for v in items]

    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    return {"opset": opset, "inputs": values(model.graph.input), "outputs": values(model.graph.output)}


def timing_record(run: Path, row: dict) -> dict:
    """The row's timing record (candidates/.../bench*.json), read defensively and checked to hold what a bundle
    copies from it: BundleError naming the file otherwise."""
    path = run / row["bench"]
    result = read_json(path, dict, what="timing record", fix=REPORT_FIX, error=BundleError)
    wanted = {"session": dict, "config": dict, "inputs": (dict, list), "samples_ms": list}
    wrong = [key for key, kind in wanted.items() if not isinstance(result.get(key), kind)]
    if wrong:
        raise BundleError(f"timing record {shown(path)}: field(s) {', '.join(wrong)} missing or of another type than "
                          f"edgekit writes; {REPORT_FIX}.")
    return result


def _latency_record(run: Path, row: dict) -> dict:
    """The row's timing as measured: summary, raw samples of the round that counts, session record."""
    result = timing_record(run, row)
    return {"summary": row["latency_ms"], "session": result["session"], "config": result["config"],
            "inputs": result["inputs"], "samples_ms": result["samples_ms"]}


# ---------------------------------------------------------------------------- README

def _session_line(manifest: dict, deploy: str) -> str:
    """The InferenceSession an app opens: on the provider the file was measured on, with the options it was
    measured with (TensorRT's cache paths left for the app to choose), the CPU provider after it."""
    from edgekit.runtime.web_runtime import is_web

    session = manifest["latency"]["session"]
    provider = session.get("provider", "CPUExecutionProvider")
    if is_web(provider):  # measured in the browser (the Browser section); Python runs it on native onnxruntime
        return (f'session = ort.InferenceSession("{deploy}", providers=["CPUExecutionProvider"])  # measured on '
                f'{provider} in the browser: see "Browser"')
    if provider == "CPUExecutionProvider":
        return f'session = ort.InferenceSession("{deploy}", providers=["CPUExecutionProvider"])'
    options = {k: v for k, v in (session.get("options") or {}).items() if not k.endswith("_path")}
    return (f'session = ort.InferenceSession("{deploy}", providers=["{provider}", "CPUExecutionProvider"], '
            f"provider_options=[{options!r}, {{}}])  # as measured")


def _readme(manifest: dict, labels: dict, mobile_text: str | None) -> str:
    from edgekit.runtime.profiles import elsewhere_note

    model, recipe = manifest["model"], manifest["recipe"]
    text_model = any(i["name"] == "input_ids" for i in model["inputs"])
    deploy = model["deploy"]
    lines = [f"# {model['name']}: {recipe['name']}", "",
             (f"Made by edgekit {manifest['edgekit_version']} on {manifest['created']}. "
             "Check this folder with `edgekit verify .` (hashes, reload, outputs against reference.npz)."), "",
             "## Files", ""]
    lines += [f"- `{name}` ({record['bytes']:,} bytes)" for name, record in manifest["files"].items()]
    lines += ["- `README.md` (this file) and `manifest.json` (sha256 of every file, provenance, raw latency samples)"]
    lines += ["", "## Inputs and outputs", "", "| | name | dtype | shape |", "|---|---|---|---|"]
    for kind in ("inputs", "outputs"):
        lines += [f"| {kind[:-1]} | `{v['name']}` | {v['dtype']} | {v['shape']} |" for v in model[kind]]
    clients = manifest.get("clients")
    outputs = {task: spec["output"] for task, spec in manifest["tasks"].items()}
    if not (text_model and clients):  # (a text bundle's section on what comes out says all this and more)
        lines += ["", "Outputs per task: " + ", ".join(f"{task} -> `{name}`" for task, name in outputs.items()) + "."]
        if labels:
            lines += ["Class names (index i is label i) are in `labels.json`: "
                      + "; ".join(f"{task}: {class_list(names)}" for task, names in labels.items()) + "."]
    roles = ("role `dynamic`: model.onnx's inputs, batches of 8 texts padded to the longest; `fixed`: "
             "model.fixed.onnx's; `text`: model.app.onnx's strings" if text_model else
             "role `dynamic`: model.onnx's inputs, batches of 8 images; `fixed`: model.fixed.onnx's")
    lines += ["", (f"`{REFERENCE}` is what `edgekit verify` checks against: numpy arrays `in/<role>/<batch>/<input>` "
                   f"({roles}) and `out/<file>/<batch>/<output>`, each file's outputs on them (ONNX Runtime's CPU "
                   "provider, one thread).")]
    if text_model and clients:
        from edgekit.stages.app_clients import browser_lines, contract_lines, node_lines, python_lines

        threads = manifest["budget"].get("threads") or 1
        lines += ["", *contract_lines(manifest, labels, clients["contract"]),
                  *python_lines(manifest, labels, _session_line(manifest, deploy)),
                  *node_lines(manifest, labels, clients["contract"], threads),
                  *browser_lines(manifest, labels, clients["contract"], manifest.get("web"))]
    else:
        lines += ["", "## Use it from Python", "", "```python", "import numpy as np", "import onnxruntime as ort"]
        if (manifest.get("preprocessing") or {}).get("source"):  # images: from stored pixels, as the run's were
            from edgekit.data.preprocessing import usage_lines

            batch = (manifest["fixed_shape"] or {}).get("batch", 1)  # model.fixed.onnx takes exactly its batch
            lines += ["import json", "",
                      _session_line(manifest, deploy),
                      *usage_lines(manifest["preprocessing"], model["inputs"][0]["name"], batch)]
        else:
            lines += ["", _session_line(manifest, deploy),
                      "images = np.zeros(" + str([1, *model["inputs"][0]["shape"][1:]]) + ", dtype=np.float32)"
                      "  # see preprocessing.json",
                      f'feeds = {{"{model["inputs"][0]["name"]}": images}}']
        lines += ["outputs = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))",
                  "print(session.get_modelmeta().custom_metadata_map[\"edgekit.data.metrics\"])", "```", ""]
    if manifest.get("layouts"):
        from edgekit.stages.layouts import readme_lines

        lines += readme_lines(manifest["layouts"])
    lines += _app_readme(manifest.get("app"))
    if manifest["ort"]:
        lines += [(f"On Android / iOS, ONNX Runtime Mobile loads `{manifest['ort']['file']}` (made from "
                  f"`{manifest['ort']['from']}`); a reduced ORT build takes `{manifest['ort']['required_operators']}` "
                  "(`build.py --include_ops_by_config`)."), ""]
    fixed = manifest["fixed_shape"]
    lines += ["## Measured", "", "| task | metric | model.onnx | of the teacher |"
              + (" model.fixed.onnx |" if fixed else ""), "|---|---|---:|---:|" + ("---:|" if fixed else "")]
    for task, metric in manifest["metrics"].items():
        kept = manifest["retention"].get(task)
        lines.append(f"| {task} | {metric['metric']} | {metric['value']:.4f} | "
                     + (f"{kept:.1f}%" if kept is not None else "n/a") + " |"
                     + (f" {fixed['metrics'][task]['value']:.4f} |" if fixed else ""))
    if fixed and fixed.get("seq_len") is not None:  # (an image has no length to pad)
        lines += ["", (f"model.fixed.onnx sees every input padded to {fixed['seq_len']} tokens; an int8-dynamic file "
                      "quantizes the padding too, which is why it can score differently.")]
    lat, budget = manifest["latency"]["summary"], manifest["budget"]
    lines += ["", (f"Latency on {manifest['provider']} ({manifest['machine']['name']}, {budget['threads']} thread(s), "
                  f"{timed_shape(budget['batch'], budget.get('seq_len'), budget.get('image_shape'), not text_model)}"
                  f"): p50 {lat['p50']:.2f} / p95 {lat['p95']:.2f} / "
                  f"p99 {lat['p99']:.2f} ms, against a budget of {budget['percentile']} <= {budget['ms']:.3g} ms"
                  + (f" (x{budget['speedup']:g}: the teacher's fp32 file took {budget['teacher']['ms']:.3g} ms there)"
                     if budget.get("speedup") else "") + ". "
                  "Other hardware gives other milliseconds: re-time with `edgekit verify . --time`.")]
    note = elsewhere_note(manifest["target"], manifest["machine"])
    if note:
        lines += ["", f"**{note}**"]
    lines += _scale_readme(manifest.get("score_scale"), manifest.get("scale_measured_for"))
    if mobile_text:
        lines += ["", "## NNAPI / CoreML (ONNX Runtime's usability check)", "",
                  *[f"- {line}" for line in mobile_text.splitlines()]]
    return "\n".join(lines) + "\n"


def _scale_readme(scale: dict | None, measured_for: str | None) -> list[str]:
    """The README's section on the cosine thresholds matched to the teacher's (edgekit.stages.score_scale), or the line
    saying the run matched them for another file."""
    if not scale:
        return ["", (f"Cosine thresholds matched to the teacher's were measured for {measured_for}, the file the run "
                     "shipped, not for this one: compare its cosines with the teacher's on your own pairs before "
                     "reusing a threshold.")] if measured_for else []
    lines = ["", "## Cosine thresholds", "",
             ("A student's cosine need not sit where the teacher's did, though it ranks pairs alike. Where an app "
              "thresholds the teacher's cosine (\"alike when >= 0.5\"), use this file's matched threshold: the same "
              "share of pairs lies above it (matched on pairs that are not test pairs; agreement measured on the "
              "test pairs)."), "",
             ("| task | teacher's threshold | this file's | test pairs decided as the teacher: same threshold "
              "| matched |"),
             "|---|---:|---:|---:|---:|"]
    for task, entry in scale["tasks"].items():
        lines += [f"| {task} | {t['teacher']:g} | " + ("-" if t["file"] is None else f"{t['file']:.4f}")
                  + f" | {t['agree_raw']:.0%} | " + ("-" if t["agree_matched"] is None else f"{t['agree_matched']:.0%}")
                  + " |" for t in entry["thresholds"]]
    lines.append("")
    for task, entry in scale["tasks"].items():
        line = entry.get("linear") or {}
        fit = (f" Matched on {entry['fitted_on']}." if entry.get("fitted_on") else
               f" No threshold matched: {entry.get('why_not_fitted')}.")
        lines.append(f"- {task}: {entry['statement']}.{fit}"
                     + (f" Line: teacher cosine ~ {line['slope']:.4f} x cosine {line['intercept']:+.4f}."
                        if line.get("slope") is not None else ""))
    lines += ["", ("Any cosine on the teacher's scale: `np.interp(cosine, knots[\"file\"], knots[\"teacher\"])` with "
                   "`score_scale.tasks.<task>.knots` of manifest.json. The model file states the matched thresholds "
                   "too (metadata_props `edgekit.cosine_thresholds`: {task: {teacher's: this file's}}).")]
    return lines


def _app_readme(app: dict | None) -> list[str]:
    """The README's lines on model.app.onnx, or on why the bundle has none (export.tokenizer_in_graph)."""
    if not app:
        return []
    if not app["file"]:
        return ["## No app graph (tokenizer inside the model)", "",
                f"export.tokenizer_in_graph asked for one, but {app['reason']}. {app['fix']}.", ""]
    tokenizer, verified = app["tokenizer"], app.get("verified") or {}
    lines = ["## From an app: texts in (the tokenizer inside the graph)", "",
             (f"`{app['file']}` is `{app['from']}` with its tokenizer inside (onnxruntime-extensions "
              f"{tokenizer['onnxruntime_extensions']}, {tokenizer['op']}): it takes `{app['input']['name']}`, a "
              f"string tensor of texts (batch: {app['batch']}), truncates each at {tokenizer['max_length']} tokens "
              f"and gives the same outputs as `{app['from']}`."), "",
             "```python", "import numpy as np", "import onnxruntime as ort",
             "from onnxruntime_extensions import get_library_path  # pip install onnxruntime-extensions", "",
             "options = ort.SessionOptions()",
             "options.register_custom_ops_library(get_library_path())  # the tokenizer's operator",
             f'session = ort.InferenceSession("{app["file"]}", options, providers=["CPUExecutionProvider"])',
             (f'outputs = session.run(None, {{"{app["input"]["name"]}": np.array(["an example sentence"], '
              'dtype=object)})'), "```", ""]
    if verified:
        lines += [(f"Checked when the bundle was written: token ids identical to tokenizer.json's on "
                   f"{verified['texts']} real texts and {verified['probe_texts']} probe texts (accents, "
                   f"punctuation, unknown words, truncated ones); outputs within atol "
                   f"{verified['outputs']['tolerance']['atol']:g} of {verified['outputs']['against']}'s "
                   "(`edgekit verify .` checks both again).")]
    if app.get("measured_path"):
        lines += ["", f"**The measured path.** {app['measured_path']['statement']}"]
    latency = app.get("latency_ms")
    if latency:
        lines += ["", (f"Text in -> outputs out, batch {latency['batch']}, {latency['threads']} thread(s) on "
                       f"{latency['cpu']}: p50 {latency['app']['p50']:.3f} / p95 {latency['app']['p95']:.3f} ms "
                       f"with the tokenizer inside, p50 {latency['two_step']['p50']:.3f} / p95 "
                       f"{latency['two_step']['p95']:.3f} ms with {latency['two_step_tokenizer']} then "
                       f"`{app['from']}`, on {latency['texts']} test texts"
                       + (f" ({latency['moved']})." if latency.get("moved") else "."))]
    return lines + ["", f"{app['ort'][0].upper()}{app['ort'][1:]}.", ""]


# ---------------------------------------------------------------------------- manifest

def _dump_manifest(manifest: dict) -> bytes:
    """manifest.json's bytes, with its own digest filled in (see SELF_DIGEST_FIELD)."""
    text = json.dumps({SELF_DIGEST_FIELD: SELF_DIGEST_PLACEHOLDER, **manifest}, indent=1) + "\n"
    digest = hashlib.sha256(text.encode()).hexdigest()
    return text.replace(f'"{SELF_DIGEST_FIELD}": "{SELF_DIGEST_PLACEHOLDER}"',
                        f'"{SELF_DIGEST_FIELD}": "{digest}"', 1).encode()


def manifest_digest_ok(raw: bytes) -> bool:
    """Whether manifest.json's bytes match the digest recorded in them."""
    match = re.search(rb'"' + SELF_DIGEST_FIELD.encode() + rb'": "([0-9a-f]{64})"', raw)
    if match is None:
        return False
    blank = raw[:match.start(1)] + SELF_DIGEST_PLACEHOLDER.encode() + raw[match.end(1):]
    return hashlib.sha256(blank).hexdigest() == match.group(1).decode()


# ---------------------------------------------------------------------------- writing

def find_row(data: dict, name: str, provider: str | None = None) -> dict:
    provider = provider or data["providers"]["measured"][0]
    for row in data["files"]:
        if row["name"] == name and row["provider"] == provider:
            return row
    names = sorted({r["name"] for r in data["files"] if r["provider"] == provider})
    raise BundleError(f"the run has no file '{shown(name)}' measured on {shown(provider)}; choose one of: "
                      f"{shown(', '.join(names))}.")


def _is_number(value) -> bool:
    import math

    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _field_problems(value, fields: dict, where: str) -> list[str]:
    """`fields` maps a key of the mapping `value` to (check, what edgekit writes there); a line per key that is
    missing or fails its check."""
    problems = []
    for key, (ok, expected) in fields.items():
        item = value.get(key) if isinstance(value, dict) else None
        if not isinstance(value, dict) or key not in value:
            problems.append(f"{where}{key} is missing (edgekit writes {expected} there)")
        elif not ok(item):
            kind = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
                type(item), "a number")
            problems.append(f"{where}{key} is {kind}, not {expected}")
    return problems


def _is_dict(v) -> bool:
    return isinstance(v, dict)


def _is_text(v) -> bool:
    return isinstance(v, str) and v != ""


def report_problems(data: dict) -> list[str]:
    """What a bundle reads from report.json, beyond the file's row (row_problems), that is missing or of another
    type than edgekit writes: one line per field."""
    problems = _field_problems(data, {
        "providers": (_is_dict, "an object {measured: [provider, ...]}"),
        "files": (lambda v: isinstance(v, list) and all(isinstance(r, dict) for r in v), "an array of file rows"),
        "recipe": (_is_dict, "the recipe (an object)"),
        "tasks": (lambda v: isinstance(v, list) and all(isinstance(t, dict) for t in v), "an array of tasks"),
        "budget": (_is_dict, "an object {percentile, ms, ...}"),
        "provenance": (_is_dict, "an object {teacher, data}"),
        "versions": (_is_dict, "an object of package versions"),
        "machine": (_is_dict, "an object {name, ...}"),
    }, "")
    if problems:
        return problems
    problems += _field_problems(data["providers"], {"measured": (
        lambda v: isinstance(v, list) and v and all(_is_text(p) for p in v), "a non-empty array of provider names")},
        "providers.")
    for i, row in enumerate(data["files"]):
        problems += _field_problems(row, {"name": (lambda v: isinstance(v, str), "the file's name"),
                                          "provider": (lambda v: isinstance(v, str), "a provider name")},
                                    f"files[{i}].")
    for i, task in enumerate(data["tasks"]):
        problems += _field_problems(task, {key: (_is_text, "a name") for key in ("name", "kind", "metric", "output")},
                                    f"tasks[{i}].")
        if task.get("labels") is not None and not isinstance(task.get("labels"), list):
            problems.append(f"tasks[{i}].labels is not an array of class names")
    problems += _field_problems(data["budget"], {"percentile": (_is_text, "a percentile (p50, p95, p99)"),
                                                 "ms": (_is_number, "a number of milliseconds")}, "budget.")
    if data["budget"].get("speedup") and not _is_number((data["budget"].get("teacher") or {}).get("ms")):
        problems.append("budget.teacher.ms is not a number of milliseconds (a speedup budget needs it)")
    problems += _field_problems(data["provenance"], {"teacher": (lambda v: True, "the teacher's provenance"),
                                                     "data": (lambda v: True, "the data's provenance")},
                                "provenance.")
    problems += _field_problems(data["machine"], {"name": (lambda v: isinstance(v, str), "the CPU's name")},
                                "machine.")
    if data.get("target") is not None and not isinstance(data.get("target"), dict):
        problems.append("target is neither null nor an object")
    from edgekit.stages.score_scale import scale_problems

    return problems + scale_problems(data.get("score_scale"))


def row_problems(row: dict) -> list[str]:
    """What a bundle reads from the file's row of report.json that is missing or of another type."""
    where = f"the row of {shown(row.get('name'))} on {shown(row.get('provider'))}: "
    problems = _field_problems(row, {
        "onnx": (_is_text, "the ONNX file's path in the run"),
        "bench": (_is_text, "the timing record's path in the run"),
        "variant": (_is_text, "a variant name (fp32, int8-dynamic, ...)"),
        "student": (lambda v: True, "the student's name"),
        "metrics": (lambda v: isinstance(v, dict) and all(
            isinstance(m, dict) and isinstance(m.get("metric"), str) and _is_number(m.get("value"))
            for m in v.values()), "an object of {task: {metric, value}}"),
        "retention": (lambda v: isinstance(v, dict) and all(r is None or _is_number(r) for r in v.values()),
                      "an object of {task: percent}"),
        "latency_ms": (lambda v: isinstance(v, dict) and all(_is_number(v.get(p)) for p in ("p50", "p95", "p99")),
                       "an object {p50, p95, p99} of milliseconds"),
    }, where)
    return problems


def _refuse_report(report: Path, problems: list[str]) -> None:
    if problems:
        raise BundleError(f"{shown(report)}: not a report a bundle can be made from ({len(problems)} problem(s)):\n"
                          + "\n".join(f"  {shown(p)}" for p in problems) + f"\nFix: {REPORT_FIX}.")


def _checked_source(run: Path, row: dict) -> Path:
    """The row's ONNX file, once everything write_bundle reads from the run is known to be inside it:
    that file and its external data, its timing record, the config.json beside it, and tokenizer/ and
    reference/ (whose files are copied or read whatever they are named: a symlink to elsewhere is refused)."""
    what = f"report.json's row {row['name']} on {row['provider']} names"
    source = inside(run, row["onnx"], f"{what} the ONNX file", RUN_FIX)
    try:
        external_data_inside(source, f"{row['onnx']} (named by report.json)", RUN_FIX)
    except OutsideFolder as e:
        raise OutsideFolder(shown(str(e))) from None
    inside(run, row["bench"], f"{what} the timing record", RUN_FIX)
    if (source.parent / "config.json").exists() or (source.parent / "config.json").is_symlink():
        inside(source.parent, "config.json", "the run holds", RUN_FIX)
        regular_file(source.parent / "config.json", "the student's", REPORT_FIX, BundleError)
    for sub in ("tokenizer", "reference"):
        if (run / sub).is_dir():
            for file in sorted((run / sub).iterdir()):
                inside(run, f"{sub}/{file.name}", "the run holds", RUN_FIX)
                regular_file(file, "the run's", REPORT_FIX, BundleError)  # copied or read: a FIFO would block
    # What is read before anything is written: none of it a FIFO (which would block onnx's read forever)
    regular_file(source, "the ONNX file", REPORT_FIX, BundleError)
    for location in _external_locations(source):
        regular_file(source.parent / location, f"the external data of {shown(row['onnx'])}:", REPORT_FIX,
                     BundleError)
    if (run / "tokenizer").is_dir():
        check_tokenizer(run / "tokenizer")
    timing_record(run, row)
    reference_inputs(run)
    return source


def _external_locations(path: Path) -> list[str]:
    """The files the ONNX file `path` keeps tensors in (external data), from its graph alone."""
    import onnx

    from edgekit.trust.paths import _tensors

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # noqa: BLE001 - protobuf's DecodeError and friends
        lines = str(e).splitlines()
        raise BundleError(f"{shown(path)}: not an ONNX file onnx can read ({type(e).__name__}: "
                          f"{shown(lines[0][:200]) if lines else ''}); {REPORT_FIX}.") from None
    return list(dict.fromkeys(entry.value for tensor in _tensors(model.graph) for entry in tensor.external_data
                              if entry.key == "location"))


def keep_for_bundles(run: Path, examples, teacher) -> None:
    """What any bundle of this run needs beyond its model file: the tokenizer, and real inputs
    its reference outputs are computed on (`edgekit bundle` works from the run folder alone)."""
    import numpy as np

    folder = run / "reference"
    folder.mkdir()
    if teacher.images:
        np.save(folder / "images.npy", examples)
        return
    teacher.tokenizer.save_pretrained(run / "tokenizer")
    (folder / "texts.json").write_text(json.dumps(examples, ensure_ascii=False, indent=0) + "\n", encoding="utf-8")


def ship(run: Path, data: Report, row: Row, signing_key: str | None, echo) -> dict:
    """The run's bundle of `row` in run/bundle, signed with `signing_key` when the recipe names one (inside
    the run folder: the bundle appears signed, or not at all); returns report.json's `bundle` record."""
    (run / "bundle").mkdir()
    record = write_bundle(run, data, row, run / "bundle")
    if record["app"] and not record["app"]["file"]:
        echo(f"  no app graph (model.app.onnx): {record['app']['reason']}. {record['app']['fix']}")
    if signing_key is not None:
        from edgekit.trust.signing import sign_bundle

        record["signature"] = sign_bundle(run / "bundle", signing_key).name
        echo(f"  signed the bundle with {signing_key} (bundle/{record['signature']})")
    return record


def write_bundle(run: Path, data: dict, row: dict, folder: Path, layouts: list[str] | None = None) -> dict:
    """Write the bundle of `row` (a row of data['files']) from the run folder `run` into the empty
    `folder`; returns the summary report.json keeps under 'bundle'. `layouts`: the layouts other tools load to
    write beside model.onnx (edgekit.stages.layouts), over the recipe's export.layouts."""
    from edgekit.recipe import Recipe
    from edgekit.runtime.mobile import fix_shapes, mobile_usability, to_ort, usability_text
    from edgekit.stages import score_scale

    source = _checked_source(run, row)  # before anything is read from the run
    try:
        recipe = Recipe.model_validate(data["recipe"])
    except Exception as e:  # noqa: BLE001 - pydantic's ValidationError, or a recipe check of the recipe module
        lines = str(e).splitlines()
        raise BundleError(f"{shown(run / 'report.json')}: its recipe does not validate ({type(e).__name__}: "
                          f"{shown(' '.join(lines[:3])[:300]) if lines else ''}); {REPORT_FIX}.") from None
    spec = recipe.export
    # The recipe as the bundle records it: paths in it made portable (a teacher folder the user named by an absolute
    # path is shown by its name); recipe_sha256 is of this record, run_recipe_sha256 of the recipe as run.
    recipe_record = portable(data["recipe"], (run,))
    props = metadata_props(data, row, recipe, recipe_digest(recipe_record))
    _write_with_metadata(source, folder / "model.onnx", props)
    models = {"model.onnx": "dynamic"}  # model file -> the reference inputs it takes
    fixed = None
    if spec.shapes == "fixed":
        seq_len = recipe.budget.seq_len if not recipe.teacher.images else None
        shapes = fix_shapes(folder / "model.onnx", folder / "model.fixed.onnx", recipe.budget.batch, seq_len)
        fixed = {"file": "model.fixed.onnx", "batch": recipe.budget.batch, "seq_len": seq_len, "inputs": shapes,
                 "metrics": _score(run, recipe, folder / "model.fixed.onnx")}
        models["model.fixed.onnx"] = "fixed"
    deploy = "model.fixed.onnx" if fixed else "model.onnx"
    ort = to_ort(folder / deploy, folder, spec.ort_platform) if spec.ort else None
    if ort:
        models["model.ort"] = models[deploy]

    signature = _signature(folder / "model.onnx")
    tokenizer, preprocessing = run / "tokenizer", None
    if tokenizer.is_dir():
        from edgekit.stages.app_clients import ship_tokenizer

        ship_tokenizer(tokenizer, folder, recipe.teacher.max_length, load_tokenizer(tokenizer))
    else:  # the run's image preprocessing (edgekit.data.preprocessing), with this bundle's graph input
        from edgekit.data.preprocessing import bundle_record

        preprocessing = bundle_record(run / "preprocessing.json", signature["inputs"][0])
        (folder / "preprocessing.json").write_text(json.dumps(preprocessing, indent=1) + "\n", encoding="utf-8")
    labels = {t["name"]: t["labels"] for t in data["tasks"] if t.get("labels")}
    (folder / "labels.json").write_text(json.dumps(labels, indent=1) + "\n", encoding="utf-8")
    if (source.parent / "config.json").is_file():  # the student's architecture (and its vocab size)
        shutil.copy2(source.parent / "config.json", folder / "config.json")
    # The app graph ships when asked for, and when the pick met an end-to-end budget through it (select.decide's
    # end_to_end_path): then it is the file whose latency was measured, whatever export.tokenizer_in_graph says.
    measured = recipe.budget.scope == "end-to-end" and row.get("end_to_end_path") == "app graph"
    app = _app_graph(run, folder, recipe, signature, row) if spec.tokenizer_in_graph or measured else None
    if app and app["file"]:
        models[app["file"]] = "text"

    reference, verified = _write_reference(run, folder, recipe, models, row["variant"])
    if app and app["file"]:
        app["verified"] = verified
        app["latency_ms"] = _app_latency(run, folder, recipe, row)
        app["measured_path"] = _measured_path(row, recipe) if measured else None
    # The run's reference texts, distinct and in order: what reference.json and the layouts' checks run on.
    texts = list(dict.fromkeys(reference_inputs(run))) if tokenizer.is_dir() else []
    clients = (_app_clients(run, folder, recipe, data, labels, reference["tolerance"], row["provider"], texts)
               if tokenizer.is_dir() else None)
    extra = _layouts(folder, recipe, row, layouts, texts) if tokenizer.is_dir() else None
    mobile = mobile_usability(folder / deploy) if spec.mobile_check else None
    manifest = {
        "format": MANIFEST_FORMAT,
        "edgekit_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "model": {"file": "model.onnx", "deploy": deploy, "name": row["name"], "student": row["student"],
                  "variant": row["variant"], "architecture": row.get("architecture"), "params": row.get("params"),
                  **signature, "source": {"path": row["onnx"], "sha256": sha256_file(source)}},
        "metadata_props": props,
        "tasks": {t["name"]: {"kind": t["kind"], "metric": t["metric"], "output": t["output"]}
                  for t in data["tasks"]},
        "max_length": recipe.teacher.max_length,
        # The `embedding` output is already pooled (and normalized) in the graph: an app uses it as is.
        "embedding": ({"pooling": recipe.teacher.pooling, "normalized": recipe.teacher.normalize}
                      if recipe.teacher.kind == "sentence-encoder" else None),
        "recipe": recipe_record,
        "recipe_sha256": props["edgekit.recipe_sha256"],
        "run_recipe_sha256": recipe.sha256(),
        "target": data.get("target"),
        "teacher": data["provenance"]["teacher"],
        "data": data["provenance"]["data"],
        "versions": data["versions"],
        "machine": data["machine"],
        "provider": row["provider"],
        "budget": data["budget"],
        "metrics": row["metrics"],
        "retention": row["retention"],
        "latency": _latency_record(run, row),
        "reference": reference,
        "fixed_shape": fixed,
        "ort": ort,
        "mobile": mobile,
        "app": app,
        # edgekit.stages.app_clients: the tokenization as measured, checked; reference.json; the client packages
        "clients": clients,
        # this file as the run measured it in onnxruntime-web, where it did (None: not run in a browser)
        "web": _web_record(run, data, row),
        # edgekit.stages.layouts: hf/ (transformers.js, sentence-transformers), model2vec/, static-npy/: what was written
        # and checked, and what applies on request
        "layouts": extra,
        # edgekit.stages.score_scale: this file's cosine thresholds matched to the teacher's (None: not measured for it)
        "score_scale": score_scale.bundle_record(data.get("score_scale"), row["name"], row["provider"]),
    }
    # What ships names packages, versions and digests, never a folder of the machine that built it.
    manifest = portable(manifest, (run, folder))
    readme = _readme(manifest | {"files": _file_records(folder), "preprocessing": preprocessing,
                                 "scale_measured_for": (data.get("score_scale") or {}).get("file")}, labels,
                     usability_text(mobile) if mobile else None)
    (folder / "README.md").write_text(readme, encoding="utf-8")
    manifest["files"] = _file_records(folder)
    (folder / MANIFEST).write_bytes(_dump_manifest(manifest))
    return {"name": row["name"], "provider": row["provider"], "files": sorted(manifest["files"]),
            "bytes": sum(f["bytes"] for f in manifest["files"].values()), "deploy": deploy,
            "fixed_shape": fixed, "ort": ort, "mobile": mobile, "target": manifest.get("target"),
            "app": app and {k: app.get(k) for k in ("file", "reason", "fix", "latency_ms", "measured_path")}}


def bundle_from_run(run: str | Path, name: str, provider: str | None = None, out: str | Path | None = None,
                    force: bool = False, layouts: list[str] | None = None) -> tuple[Path, dict]:
    """Bundle any file of a finished run (`edgekit bundle RUN NAME`): (the bundle folder, its summary).
    Default folder: RUN/bundles/NAME[-PROVIDER]."""
    from edgekit.trust.atomic import atomic_dir

    run = Path(run)
    report = run / "report.json"
    if not _present(report):
        raise BundleError(f"'{shown(run)}' has no report.json: pass the folder a finished `edgekit distill-and-export` "
                          "or `edgekit sweep` wrote.")
    # someone else's file: a FIFO, gigabytes, JSON cut in half or nested a million deep are refused, named
    data = read_json(report, dict, fix=REPORT_FIX, error=BundleError)
    _refuse_report(report, report_problems(data))
    row = find_row(data, name, provider)
    _refuse_report(report, row_problems(row))
    if not (run / "reference").is_dir():
        raise BundleError(f"'{shown(run)}' was written by an edgekit without bundles of any candidate (no reference/ "
                          "folder): rerun it (the cache makes that quick) to bundle from it.")
    suffix = "" if row["provider"] == data["providers"]["measured"][0] else f"-{row['provider']}"
    if out is None:  # the name is also report.json's: the default folder must stay under RUN/bundles
        inside(run / "bundles", f"{name}{suffix}", "report.json's file name", RUN_FIX)
    out = Path(out) if out else run / "bundles" / f"{name}{suffix}"
    with atomic_dir(out, foreign_bundle_entries, replace=force) as folder:
        summary = write_bundle(run, data, row, folder, layouts)
    return out, summary


def foreign_bundle_entries(folder: Path) -> list[str]:
    """The entries of an existing output folder that no edgekit bundle holds (all of them, unless its manifest.json
    is an intact edgekit manifest; else the files it does not list): what keeps --force from replacing it."""
    from edgekit.trust.atomic import unexpected_entries
    from edgekit.trust.reading import parse_json, read_bytes
    from edgekit.trust.signing import SIGNATURE

    try:
        raw = read_bytes(folder / MANIFEST, error=BundleError)
        manifest = parse_json(raw, MANIFEST, "", BundleError, dict)
    except BundleError:
        manifest = {}
    files = manifest.get("files")
    if manifest.get("format") != MANIFEST_FORMAT or not isinstance(files, dict) or not manifest_digest_ok(raw):
        return [entry.name for entry in folder.iterdir()]
    return unexpected_entries(folder, {MANIFEST, SIGNATURE, *(name.split("/")[0] for name in files)})


def _file_records(folder: Path) -> dict:
    """{relative path: {sha256, bytes}} of every file below `folder` (a layout's subfolders too), but the manifest."""
    from edgekit.trust.paths import files_below

    return {name: {"sha256": sha256_file(folder / name), "bytes": (folder / name).stat().st_size}
            for name in files_below(folder) if name != MANIFEST}


def _write_reference(run: Path, folder: Path, recipe, models: dict[str, str], variant: str) -> tuple[dict, dict | None]:
    """reference.npz: the inputs of each shape role and the outputs each model file gave on them, and the app
    graph's check (None without one). The .ort file must reproduce its source's outputs, and the app graph
    model.onnx's outputs and tokenizer.json's ids, or the bundle is not written."""
    import numpy as np

    from edgekit.runtime.app_graph import PROBE_TEXTS, TEXT_INPUT, text_array

    # With an app graph, model.onnx's feeds end with the probe texts too: the app graph's "text" feeds are
    # the same texts, batch for batch, so every text's token ids and outputs can be set side by side.
    probe = list(PROBE_TEXTS) if "text" in models.values() else None
    arrays, feeds_by_role, outputs_by_file = {}, {}, {}
    for file, role in models.items():
        session = reference_session(folder / file)
        if role not in feeds_by_role:
            if role == "text":
                feeds_by_role[role] = [{TEXT_INPUT: text_array(texts)}
                                       for texts in _reference_examples(run, REFERENCE_BATCH, probe)]
            else:
                shape = None if role == "dynamic" else (recipe.budget.batch, recipe.budget.seq_len)
                feeds_by_role[role] = _reference_feeds(run, folder, recipe, session.get_inputs(), shape,
                                                       probe if role == "dynamic" else None)
            for i, feed in enumerate(feeds_by_role[role]):
                arrays.update({f"in/{role}/{i}/{name}": value for name, value in feed.items()})
        outputs_by_file[file] = run_reference(session, feeds_by_role[role])
        for i, outputs in enumerate(outputs_by_file[file]):
            arrays.update({f"out/{file}/{i}/{name}": value for name, value in outputs.items()})
    tolerance = TOLERANCE["fp32" if variant == "fp32" else "quantized"]
    if "model.ort" in models:
        source = "model.fixed.onnx" if models["model.ort"] == "fixed" else "model.onnx"
        problems = compare(outputs_by_file[source], outputs_by_file["model.ort"], TOLERANCE["fp32"])
        if problems:
            raise BundleError(f"model.ort does not reproduce {source} on real inputs: " + "; ".join(problems)
                                 + ". Set export.ort: false to ship ONNX only, or report this ORT version's bug.")
    verified = None
    app = next((file for file, role in models.items() if role == "text"), None)
    if app:
        verified = _check_app(folder, app, feeds_by_role, outputs_by_file)
    np.savez(folder / REFERENCE, **arrays)
    return {"file": REFERENCE, "models": {file: {"inputs": role, "batches": len(feeds_by_role[role])}
                                          for file, role in models.items()},
            "provider": "cpu", "threads": 1, "tolerance": tolerance}, verified


# ---------------------------------------------------------------------------- the app graph

def _app_graph(run: Path, folder: Path, recipe, signature: dict, row: dict) -> dict:
    """model.app.onnx in `folder` (edgekit/runtime/app_graph.py) and its manifest record, or a record of why there is
    none and how to get one: the bundle is the same either way, less that file."""
    from edgekit.runtime.app_graph import APP_FILE, build_app_graph, extensions_version, why_not
    from edgekit.runtime.providers import EXTENSIONS_FIX

    tokenizer = run / "tokenizer" if (run / "tokenizer").is_dir() else None
    reason = why_not(tokenizer, [i["name"] for i in signature["inputs"]], recipe.teacher.max_length)
    if reason:
        fix = (f"{EXTENSIONS_FIX}, then rebuild the bundle: `edgekit bundle {run} {row['name']}`"
               if extensions_version() is None else
               "an app tokenizes with this bundle's tokenizer.json (the Python snippet in README.md shows how) "
               "and feeds model.onnx")
        return {"file": None, "reason": reason, "fix": fix}
    return build_app_graph(folder / "model.onnx", tokenizer, recipe.teacher.max_length, folder / APP_FILE)


def _check_app(folder: Path, app: str, feeds_by_role: dict, outputs_by_file: dict) -> dict:
    """The app graph against the two-step path on the same texts (the run's real ones, then PROBE_TEXTS):
    outputs within fp32 tolerance of model.onnx's, and token ids, mask and padding identical to the
    tokenizer.json feeds model.onnx got. BundleError naming every text that differs."""
    import numpy as np

    from edgekit.runtime.app_graph import PROBE_TEXTS, TEXT_INPUT, token_problems, tokenizer_session

    names = list(feeds_by_role["dynamic"][0])
    texts = [[str(t) for t in feed[TEXT_INPUT]] for feed in feeds_by_role["text"]]
    problems = token_problems(tokenizer_session(folder / app, names), texts, feeds_by_role["dynamic"])
    problems += [f"outputs: {p}" for p in compare(outputs_by_file["model.onnx"], outputs_by_file[app],
                                                  TOLERANCE["fp32"])]
    if problems:
        raise BundleError(f"{app} (the tokenizer inside the graph) does not reproduce tokenizer.json + model.onnx "
                          f"on {len(problems)} check(s):\n" + "\n".join(f"  {p}" for p in problems)
                          + "\nSet export.tokenizer_in_graph: false to ship model.onnx with tokenizer.json only "
                            "(edgekit/runtime/app_graph.py lists the texts the extensions' BertTokenizer op tokenizes "
                            "differently).")
    diffs = {name: max(float(np.abs(got[name] - want[name]).max())
                       for got, want in zip(outputs_by_file[app], outputs_by_file["model.onnx"]))
             for name in outputs_by_file["model.onnx"][0]}
    real = {t for batch in texts[:-1] for t in batch}
    return {"texts": len(real), "probe_texts": len(PROBE_TEXTS),
            "token_ids": "identical to tokenizer.json's (ids, mask, padding)",
            "outputs": {"against": "model.onnx", "max_abs_diff": diffs, "tolerance": TOLERANCE["fp32"]}}


def _measured_path(row: dict, recipe) -> dict:
    """The manifest's record that model.app.onnx is the path the pick's end-to-end latency was measured on."""
    p = recipe.budget.percentile
    return {"scope": "end-to-end", "path": "app graph", "percentile": p, "ms": row["latency_app_ms"][p],
            "tokenizer_json_ms": (row.get("latency_e2e_ms") or {}).get(p),
            "statement": (f"The budget (budget.scope: end-to-end) was met through model.app.onnx, the tokenizer "
                          f"inside: {p} {row['latency_app_ms'][p]:.3g} ms text in -> outputs out, the figure the "
                          "pick was judged on; model.onnx with tokenizer.json measured "
                          + (f"{row['latency_e2e_ms'][p]:.3g} ms" if row.get("latency_e2e_ms") else "no figure")
                          + ". It ships for that reason, whatever export.tokenizer_in_graph says.")}


def _app_latency(run: Path, folder: Path, recipe, row: dict) -> dict | None:
    """The app graph's latency, text in -> outputs out, beside the two-step path's timed the same way, on the
    tasks' test texts with the session options the shipped file was timed with: the time stage's figures of this
    file (report.json latency_app_ms, latency_e2e_ms) where it timed both, else timed here."""
    from edgekit.data.tasks import load_task_data
    from edgekit.runtime.app_graph import app_graph_latency

    if row.get("latency_app_ms") and row.get("latency_e2e_ms") and (row.get("app_graph") or {}).get("bench"):
        return _measured_app_latency(run, row)
    recorded = timing_record(run, row)["config"]
    texts = [t for spec in recipe.tasks for t in load_task_data(spec).texts("test")]
    if not texts:
        return None
    return app_graph_latency(folder, recorded, texts, recipe.teacher.max_length,
                             recorded.get("batch") or recipe.budget.batch)


def _measured_app_latency(run: Path, row: dict) -> dict:
    """_app_latency's record from the time stage's two end-to-end timings of the row's file (the same texts, rounds
    and settings; the bundle's model.app.onnx is the same graph with the bundle's metadata_props)."""
    inside(run, row["app_graph"]["bench"], "report.json names as the app graph's timing record", RUN_FIX)
    raw = timing_record(run, {"bench": row["app_graph"]["bench"]})
    two_step = timing_record(run, {"bench": str(Path(row["bench"]).with_suffix("").with_suffix(".e2e.bench.json"))})
    keys = ("p50", "p95", "p99", "mean", "ci95")
    inputs = raw["inputs"] if isinstance(raw["inputs"], dict) else {}
    return {"app": {k: row["latency_app_ms"][k] for k in keys}, "two_step": {k: row["latency_e2e_ms"][k] for k in keys},
            "two_step_tokenizer": (two_step["inputs"] if isinstance(two_step["inputs"], dict) else {}).get("tokenizer"),
            "provider": raw["session"].get("provider"), "threads": raw["config"].get("threads"),
            "batch": inputs.get("batch"), "texts": inputs.get("texts"), "runs": row["latency_app_ms"]["runs"],
            "cpu": (raw.get("cpu") or {}).get("name"), "moved": None, "why_moved": None,
            "timed_in": "the run's time stage, both paths in the same interleaved rounds"}


def _app_clients(run: Path, folder: Path, recipe, data: dict, labels: dict, tolerance: dict, provider: str,
                 texts: list[str]) -> dict:
    """reference.json and the record of the tokenization apps are told to use (edgekit.stages.app_clients): the shipped
    tokenizer.json, and the JavaScript snippets' cut, checked on the reference texts and PROBE_TEXTS against the
    ids edgekit measured with. reference.json's outputs come from the runtime the file was picked on: native
    ONNX Runtime's CPU provider, or onnxruntime-web for a web provider (int8 kernels differ between the two)."""
    import onnxruntime as ort

    from edgekit.runtime.app_graph import PROBE_TEXTS
    from edgekit.runtime.providers import SessionSettings, create_session
    from edgekit.runtime.web_runtime import is_web
    from edgekit.stages.app_clients import (
        APP_REFERENCE,
        MAX_APP_TEXTS,
        NPM,
        PIP,
        app_reference,
        check_tokenization,
        token_contract,
    )

    max_length = recipe.teacher.max_length
    texts = texts[:MAX_APP_TEXTS]
    checked = texts + [t for t in PROBE_TEXTS if t not in texts]
    measured = load_tokenizer(run / "tokenizer")(checked, truncation=True, max_length=max_length)["input_ids"]
    contract = token_contract(folder, max_length)
    tokenization = check_tokenization(folder, contract, checked, [list(ids) for ids in measured])
    tasks = {t["name"]: {"kind": t["kind"], "output": t["output"]} for t in data["tasks"]}
    if is_web(provider):
        session, record = create_session(folder / "model.onnx", SessionSettings(provider=provider, threads=1))
        runtime = f"{record['runtime']}, 1 thread"
    else:
        session, runtime = reference_session(folder / "model.onnx"), f"onnxruntime {ort.__version__}, CPU provider, 1 thread"
    reference = app_reference(session, folder, texts, tasks, labels, tolerance, runtime)
    (folder / APP_REFERENCE).write_text(json.dumps(reference) + "\n", encoding="utf-8")
    return {"reference": {"file": APP_REFERENCE, "texts": len(texts), "computed_with": reference["computed_with"]},
            "tokenization": tokenization, "contract": contract, "pip": list(PIP), "npm": NPM}


def _layouts(folder: Path, recipe, row: dict, asked: list[str] | None, texts: list[str]) -> dict:
    """The layouts other tools load (edgekit.stages.layouts), written into the bundle and checked against model.onnx on
    the run's reference texts: `asked` (`edgekit bundle --layout`), else the recipe's export.layouts."""
    from edgekit.stages.layouts import resolve_layouts, write_layouts

    static = "static" in (row.get("architecture") or {})
    names = resolve_layouts(asked if asked is not None else recipe.export.layouts, static=static,
                            embedding=recipe.teacher.kind == "sentence-encoder")
    texts = texts[:16] if names else []
    # The bundle's own tokenizer files (cut where edgekit measured), not the run's copy.
    return write_layouts(folder, folder / "model.onnx", folder, texts, wanted=names, variant=row["variant"],
                         config=folder / "config.json" if (folder / "config.json").is_file() else None,
                         static=static, pooling=recipe.teacher.pooling, normalize=recipe.teacher.normalize,
                         max_length=recipe.teacher.max_length)


def _web_record(run: Path, data: dict, row: dict) -> dict | None:
    """This file's row on a web provider (edgekit.runtime.web_runtime), when the run measured it there: the runtime, its
    metrics and latency in the browser, and its agreement with the native file's outputs."""
    from edgekit.runtime.web_runtime import is_web

    web = next((r for r in data["files"] if r["name"] == row["name"] and is_web(r["provider"])), None)
    if web is None:
        return None
    session = timing_record(run, web)["session"]
    return {"provider": web["provider"], "runtime": session.get("runtime", f"onnxruntime-web ({web['provider']})"),
            "metrics": web["metrics"], "latency_ms": {q: web["latency_ms"][q] for q in ("p50", "p95", "p99")},
            "threads": session.get("threads"), "agreement": web.get("agreement")}

