"""Bundles (edgekit/stages/bundle.py) and `edgekit verify` on a real tiny run for the arm64-phone profile."""

import hashlib
import json
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from edgekit.errors import BundleMismatch
from edgekit.stages.bundle import MANIFEST, _dump_manifest
from edgekit.trust.verify import verify_bundle


@pytest.fixture
def bundle_copy(phone_run, tmp_path):
    """A copy of the phone run's bundle that a test may damage."""
    return shutil.copytree(phone_run.path / "bundle", tmp_path / "bundle")


def _manifest(folder):
    return json.loads((folder / MANIFEST).read_text())


def test_phone_bundle_holds_what_an_app_needs_and_verifies(phone_run, run_cli):
    # setup
    bundle = phone_run.path / "bundle"
    # execute
    result = run_cli("verify", bundle)
    # assert
    assert result.exit_code == 0, result.output
    assert "model.onnx, model.fixed.onnx, model.ort reproduce the reference outputs" in result.output
    names = {p.name for p in bundle.iterdir()}
    assert {"model.onnx", "model.fixed.onnx", "model.ort", "model.required_operators.config", "labels.json",
            "README.md", "reference.npz", "manifest.json", "config.json", "tokenizer.json"} <= names
    fixed = onnx.load(str(bundle / "model.fixed.onnx"))
    assert [[d.dim_value for d in i.type.tensor_type.shape.dim] for i in fixed.graph.input] == [[1, 128]] * 3
    # the fixed-shape file is scored as it ships (every text padded to 128)
    assert set(phone_run.data["bundle"]["fixed_shape"]["metrics"]) == {"sentiment", "pairs"}
    readme = (bundle / "README.md").read_text()
    assert "| task | metric | model.onnx | of the teacher | model.fixed.onnx |" in readme
    assert "ort.InferenceSession(\"model.fixed.onnx\"" in readme and "| input | `input_ids` | int64 |" in readme
    # measured on this host: the README says it was not the phone's CPU, unless this host is itself arm64
    machine = _manifest(bundle)["machine"]
    on_arm = {"amd64": "x86_64", "aarch64": "arm64"}.get(machine["arch"], machine["arch"]) == "arm64"
    assert ("not on the arm64 device" in readme) is not on_arm


def test_flipping_one_byte_of_any_file_fails_verify_naming_that_file(phone_run, tmp_path):
    # setup
    source = phone_run.path / "bundle"
    for file in sorted(p.name for p in source.iterdir()):
        work = shutil.copytree(source, tmp_path / file)
        data = bytearray((work / file).read_bytes())
        data[len(data) // 2] ^= 0x01
        (work / file).write_bytes(bytes(data))
        # execute
        with pytest.raises(BundleMismatch) as error:
            verify_bundle(work)
        # assert
        assert f"  {file}: " in str(error.value) or (file == MANIFEST and f"{MANIFEST}: " in str(error.value)), file


def test_missing_extra_and_unreadable_files_are_named(bundle_copy, run_cli, tmp_path):
    # setup
    (bundle_copy / "labels.json").unlink()
    (bundle_copy / "notes.txt").write_text("added later")
    # execute
    result = run_cli("verify", bundle_copy)
    no_manifest = run_cli("verify", tmp_path)
    # assert
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "labels.json: missing" in result.output and "notes.txt: not in the manifest" in result.output
    assert no_manifest.exit_code == 1 and "manifest.json is missing" in no_manifest.output


def test_a_model_that_no_longer_reproduces_its_outputs_is_named(bundle_copy):
    # setup: a consistent manifest (hashes recomputed) over a model whose weights were changed
    model = onnx.load(str(bundle_copy / "model.onnx"))
    weights = [t for t in model.graph.initializer if len(t.dims) == 2]  # matrices: fp32, or int8 with their scales
    for weight in weights:  # reversed rows: a change no LayerNorm or normalization undoes
        values = np.flip(onnx.numpy_helper.to_array(weight), 0)
        weight.CopyFrom(onnx.numpy_helper.from_array(np.ascontiguousarray(values), weight.name))
    onnx.save(model, str(bundle_copy / "model.onnx"))
    manifest = _manifest(bundle_copy)
    record = manifest["files"]["model.onnx"]
    record["sha256"] = hashlib.sha256((bundle_copy / "model.onnx").read_bytes()).hexdigest()
    record["bytes"] = (bundle_copy / "model.onnx").stat().st_size
    manifest.pop("manifest_sha256")
    (bundle_copy / MANIFEST).write_bytes(_dump_manifest(manifest))
    # execute
    with pytest.raises(BundleMismatch) as error:
        verify_bundle(bundle_copy)
    # assert: only the changed file, through its outputs
    lines = str(error.value).splitlines()[1:]
    assert lines and all(line.strip().startswith("model.onnx: output '") for line in lines)


def test_ort_file_gives_the_onnx_outputs_on_real_texts(phone_run):
    # setup: real Rotten Tomatoes snippets, tokenized as the README says, at the fixed shape
    from transformers import AutoTokenizer

    from edgekit.data.builtin import rotten_tomatoes

    bundle = phone_run.path / "bundle"
    tokenizer = AutoTokenizer.from_pretrained(bundle)
    texts = [row["text"] for row in rotten_tomatoes()[:12]]
    onnx_session = ort.InferenceSession(str(bundle / "model.fixed.onnx"), providers=["CPUExecutionProvider"])
    ort_session = ort.InferenceSession(str(bundle / "model.ort"), providers=["CPUExecutionProvider"])
    # execute
    diffs = []
    for text in texts:
        encoded = tokenizer([text], padding="max_length", max_length=128, truncation=True, return_tensors="np")
        feed = {i.name: encoded[i.name].astype(np.int64) for i in onnx_session.get_inputs()}
        for a, b in zip(onnx_session.run(None, feed), ort_session.run(None, feed)):
            diffs.append(float(np.abs(a - b).max()))
    # assert
    assert len(diffs) == 2 * len(texts) and max(diffs) < 1e-5


def test_onnx_metadata_props_carry_recipe_metrics_budget_and_latency(phone_run):
    # setup
    data = phone_run.data
    selected = next(r for r in data["files"] if r["name"] == data["selected"]["name"] and r["provider"] == "cpu")
    # execute
    meta = ort.InferenceSession(str(phone_run.path / "bundle" / "model.onnx")).get_modelmeta().custom_metadata_map
    # assert
    manifest = json.loads((phone_run.path / "bundle" / MANIFEST).read_text())
    # the digest of the recipe as the bundle records it (paths made portable), and of the recipe as run
    assert meta["edgekit.recipe_sha256"] == hashlib.sha256(json.dumps(manifest["recipe"], sort_keys=True).encode()
                                                           ).hexdigest() == manifest["recipe_sha256"]
    assert manifest["run_recipe_sha256"] == hashlib.sha256(json.dumps(data["recipe"], sort_keys=True).encode()
                                                           ).hexdigest()
    assert not manifest["recipe"]["teacher"]["model"].startswith("/")
    assert json.loads(meta["edgekit.data.metrics"]) == {t: {"metric": m["metric"], "value": m["value"]}
                                                   for t, m in selected["metrics"].items()}
    assert json.loads(meta["edgekit.latency_ms"])["p95"] == selected["latency_ms"]["p95"]
    assert json.loads(meta["edgekit.budget"])["ms"] == 1000.0 and meta["edgekit.version"]


def test_mobile_check_is_in_the_report_and_the_manifest(phone_run):
    # setup
    data = phone_run.data
    # assert
    mobile = data["bundle"]["mobile"]
    assert mobile["file"] == "model.fixed.onnx" and mobile["dynamic_inputs"] == []
    assert set(mobile["providers"]) == {"NNAPI", "CoreML NeuralNetwork", "CoreML MLProgram"}
    for result in mobile["providers"].values():
        assert result["suitability"] in ("yes", "maybe", "no") and 0 < result["supported_nodes"] <= result["nodes"]
    assert _manifest(phone_run.path / "bundle")["mobile"] == mobile
    markdown = (phone_run.path / "report.md").read_text()
    assert "## Bundle" in markdown and "| NNAPI |" in markdown and "mobile usability check" in markdown


def test_any_candidate_can_be_bundled_after_the_run(phone_run, run_cli, tmp_path):
    # execute
    made = run_cli("bundle", phone_run.path, "teacher-int8-dynamic", "--out", tmp_path / "teacher")
    unknown = run_cli("bundle", phone_run.path, "L9-fp32", "--out", tmp_path / "nope")
    # assert
    assert made.exit_code == 0, made.output
    manifest = verify_bundle(tmp_path / "teacher")
    assert manifest["name"] == "teacher-int8-dynamic"
    assert unknown.exit_code == 1 and "choose one of: L1-fp32" in unknown.output
    assert not (tmp_path / "nope").exists()


def test_a_layout_asked_for_is_written_checked_listed_and_verified(finished_run, run_cli, tmp_path):
    # execute: the tiny run's transformer student with the hf/ layout (transformers.js, sentence-transformers),
    # and a layout that does not apply to it
    made = run_cli("bundle", finished_run / "run", "L1-fp32", "--out", tmp_path / "hf", "--layout", "hf")
    wrong = run_cli("bundle", finished_run / "run", "L1-fp32", "--out", tmp_path / "wrong", "--layout", "model2vec")
    # assert: the folder is in the bundle, every file of it in the manifest (and so checked by verify)
    assert made.exit_code == 0, made.output
    manifest = json.loads((tmp_path / "hf" / MANIFEST).read_text())
    written = manifest["layouts"]["written"]["hf"]
    assert written["checked"]["max_abs_diff"] <= written["checked"]["atol"]
    assert "hf/onnx/model.onnx" in manifest["files"] and "hf/modules.json" in manifest["files"]
    assert "## Other layouts in this folder" in (tmp_path / "hf" / "README.md").read_text()
    assert verify_bundle(tmp_path / "hf")["name"] == "L1-fp32"
    (tmp_path / "hf" / "hf" / "modules.json").write_text("[]")
    assert run_cli("verify", tmp_path / "hf").exit_code == 1
    assert wrong.exit_code == 1 and "model2vec" in wrong.output and not (tmp_path / "wrong").exists()


def test_retiming_over_the_budget_fails(bundle_copy, run_cli):
    # setup: the same bundle, re-signed with a budget no file meets
    manifest = _manifest(bundle_copy)
    manifest.pop("manifest_sha256")
    manifest["budget"]["ms"] = 1e-6
    (bundle_copy / MANIFEST).write_bytes(_dump_manifest(manifest))
    # execute
    result = run_cli("verify", bundle_copy, "--time")
    # assert
    assert result.exit_code == 1 and "is over the budget of 1e-06 ms" in result.output
    assert "model.fixed.onnx: p95" in result.output


def test_an_image_bundle_with_dynamic_batch_retimes(tmp_path):
    # setup: a tiny CNN run without a target (dynamic batch, no sequence axis); one epoch leaves the teacher at
    # chance, which is fine for what this tests (allow_weak)
    from edgekit.pipeline import distill_and_export
    from edgekit.stages.loading import recipe_from_dict

    recipe = recipe_from_dict({
        "name": "digits-tiny", "teacher": {"model": "edgekit:cnn", "kind": "image-classifier", "head": "finetune",
                                           "width": 8, "depth": 1, "epochs": 1, "allow_weak": True},
        "tasks": [{"name": "digits", "kind": "image-classification", "data": {"source": "digits"}}],
        "students": {"widths": [4], "depths": [1]}, "budget": {"ms": 1000, "min_runs": 50, "min_seconds": 0},
        "distill": {"losses": [{"name": "kl"}], "epochs": 1}, "quantize": {"variants": []}})
    distill_and_export(recipe, out=tmp_path / "run", cache_dir=tmp_path / "cache", echo=print)
    # execute
    result = verify_bundle(tmp_path / "run" / "bundle", time=True)
    # assert
    assert result["timing"]["file"] == "model.onnx" and not result["timing"]["over_budget"]


@pytest.mark.parametrize("path", ["app graph", "tokenizer.json"])
def test_a_pick_measured_through_its_app_graph_ships_it(finished_run, tmp_path, path):
    # setup: the finished run's report as if its budget bounded the end-to-end latency and its pick had been judged
    # on `path`; export.tokenizer_in_graph stays false
    import copy

    from edgekit.runtime.app_graph import APP_FILE
    from edgekit.stages.bundle import find_row, write_bundle
    from edgekit.trust.reading import read_json

    data = copy.deepcopy(read_json(finished_run / "run" / "report.json", dict))
    data["recipe"]["budget"]["scope"] = "end-to-end"
    assert data["recipe"]["export"]["tokenizer_in_graph"] is False
    row = find_row(data, data["selected"]["name"])
    assert row["latency_app_ms"]["p95"] > 0  # the time stage timed the pick's app graph
    row["end_to_end_path"] = path
    folder = tmp_path / "bundle"
    folder.mkdir()
    # execute
    summary = write_bundle(finished_run / "run", data, row, folder)
    # assert: the app graph ships exactly when it is the measured path, says so, and carries the time stage's figures
    manifest = json.loads((folder / MANIFEST).read_text())
    readme = (folder / "README.md").read_text()
    assert (folder / "model.onnx").is_file() and (folder / "tokenizer.json").is_file()
    if path == "tokenizer.json":
        assert not (folder / APP_FILE).exists() and manifest["app"] is None and summary["app"] is None
        return
    assert (folder / APP_FILE).is_file() and APP_FILE in manifest["files"]
    measured = manifest["app"]["measured_path"]
    assert measured["path"] == "app graph" and measured["ms"] == row["latency_app_ms"]["p95"]
    assert summary["app"]["measured_path"] == measured
    assert manifest["app"]["latency_ms"]["app"]["p95"] == row["latency_app_ms"]["p95"]
    assert manifest["app"]["latency_ms"]["two_step"]["p95"] == row["latency_e2e_ms"]["p95"]
    assert "**The measured path.** The budget (budget.scope: end-to-end) was met through model.app.onnx" in readme
    assert verify_bundle(folder) is not None
