"""Names read from a manifest, a report or an ONNX file's external data stay inside their folder
(edgekit/trust/paths.py): `edgekit verify`, `edgekit bundle` and `edgekit bench` refuse anything else,
naming the entry, before the file it points to is read or copied.

Each tampered bundle is re-hashed (files' sha256 and manifest_sha256) where the trick needs it, and
the file outside is a faithful copy where that is possible: were it read, verify would succeed, so a
failure naming the entry is the path check and nothing else."""

import hashlib
import json
import shutil

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from bench import check_manifest
from edgekit.errors import OutsideFolder
from edgekit.stages.bundle import MANIFEST, _dump_manifest
from edgekit.trust.paths import external_data_inside, inside


def _record(path):
    return {"sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "bytes": path.stat().st_size}


def _manifest(folder):
    return json.loads((folder / MANIFEST).read_text())


def _rewrite(folder, manifest):
    """manifest.json with its own digest recomputed, so only the change under test remains."""
    manifest.pop("manifest_sha256", None)
    (folder / MANIFEST).write_bytes(_dump_manifest(manifest))


def _refused(result, *phrases):
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)  # an EdgekitError, printed
    for phrase in phrases:
        assert phrase in result.output, result.output


# ---------------------------------------------------------------------------- the helper

def test_inside_resolves_names_and_refuses_what_leads_out(tmp_path):
    # setup
    folder = tmp_path / "folder"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("a")
    (tmp_path / "secret.txt").write_text("s")
    (folder / "alias.txt").symlink_to(folder / "a.txt")  # a symlink that stays inside is fine
    (folder / "out.txt").symlink_to(tmp_path / "secret.txt")
    (folder / "loop").symlink_to(folder / "loop")
    # execute / assert: allowed
    assert inside(folder, "a.txt", "x lists") == (folder / "a.txt").resolve()
    assert inside(folder, "sub/../a.txt", "x lists") == (folder / "a.txt").resolve()
    assert inside(folder, "alias.txt", "x lists") == (folder / "a.txt").resolve()
    # refused, each with its reason
    cases = {"../secret.txt": "climbs out with '..'", str(tmp_path / "secret.txt"): "an absolute path",
             "out.txt": "through a symlink", "sub/../../secret.txt": "climbs out", ".": "itself", "": "not a file",
             "loop": "loop", None: "not a file name"}
    for name, reason in cases.items():
        with pytest.raises(OutsideFolder) as error:
            inside(folder, name, "manifest.json lists files:", "rebuild it")
        assert str(error.value).startswith("manifest.json lists files:") and reason in str(error.value)
        assert str(error.value).endswith("rebuild it.")


def _matmul_model(folder, location, *, size=4):
    """A one-MatMul ONNX file whose weight W lives in external data at `location` (relative to the
    file's folder, or anywhere: the proto is edited after saving), and the weights' file."""
    weight = numpy_helper.from_array(np.eye(size, dtype=np.float32), "W")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, size])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, size])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, str(folder / "model.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=0)
    _relocate(folder / "model.onnx", location)
    return folder / "model.onnx"


def _relocate(path, location):
    """Point every external-data location of the ONNX file `path` to `location`."""
    model = onnx.load(str(path), load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    onnx.save(model, str(path))


def test_external_data_beside_the_file_is_fine_elsewhere_is_refused_naming_the_tensor(tmp_path):
    # setup
    beside = _matmul_model(tmp_path / "ok", "weights.bin")
    escaping = _matmul_model(tmp_path / "bad", "../secret.bin")
    # execute / assert
    external_data_inside(beside)
    with pytest.raises(OutsideFolder) as error:
        external_data_inside(escaping)
    assert "'model.onnx' keeps tensor 'W' in '../secret.bin', which is outside" in str(error.value)


# ---------------------------------------------------------------------------- edgekit verify BUNDLE

def test_a_files_entry_climbing_out_with_dotdot_is_refused_unread(bundle, tmp_path, run_cli):
    # setup: a faithful file outside, listed with its true hash: were it read, every check would pass
    shutil.copy(bundle / "labels.json", tmp_path / "labels.json")
    manifest = _manifest(bundle)
    manifest["files"]["../labels.json"] = _record(tmp_path / "labels.json")
    _rewrite(bundle, manifest)
    # execute
    result = run_cli("verify", bundle)
    # assert: exactly the path problem, named
    _refused(result, "(1 problem(s); nothing it names was read)", "manifest.json lists files: '../labels.json', "
             "which is outside", "climbs out with '..'", "a bundle names only its own files", "edgekit bundle RUN NAME")
    assert "sha256" not in result.output


def test_an_absolute_files_entry_is_refused_unread(bundle, tmp_path, run_cli):
    # setup
    secret = tmp_path / "secret.txt"
    secret.write_text("not the bundle's")
    manifest = _manifest(bundle)
    manifest["files"][str(secret)] = _record(secret)
    _rewrite(bundle, manifest)
    # execute
    result = run_cli("verify", bundle)
    # assert
    _refused(result, f"manifest.json lists files: '{secret}', which is outside", "an absolute path")


def test_a_symlink_in_the_bundle_pointing_outside_is_refused(bundle, tmp_path, run_cli):
    # setup: labels.json replaced by a link to an identical copy outside: hashes and manifest unchanged
    outside = tmp_path / "elsewhere" / "labels.json"
    outside.parent.mkdir()
    shutil.move(bundle / "labels.json", outside)
    (bundle / "labels.json").symlink_to(outside)
    # execute
    result = run_cli("verify", bundle)
    # assert
    _refused(result, "(1 problem(s)", "manifest.json lists files: 'labels.json', which is outside",
             f"through a symlink it is {outside.resolve()}")


def test_reference_names_leading_outside_are_refused(bundle, tmp_path, run_cli):
    # setup: reference.npz, a model and the deployed file named through '..', faithful copies outside
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    shutil.copy(bundle / "reference.npz", outside / "reference.npz")
    shutil.copy(bundle / "model.onnx", outside / "model.onnx")
    manifest = _manifest(bundle)
    reference = manifest["reference"]
    reference["file"] = "../elsewhere/reference.npz"
    reference["models"]["../elsewhere/model.onnx"] = reference["models"]["model.onnx"]
    manifest["model"]["deploy"] = "../elsewhere/model.onnx"
    _rewrite(bundle, manifest)
    # execute
    result = run_cli("verify", bundle)
    # assert: each entry named
    _refused(result, "manifest.json lists reference.file: '../elsewhere/reference.npz', which is outside",
             "manifest.json lists reference.models: '../elsewhere/model.onnx', which is outside",
             "manifest.json lists model.deploy: '../elsewhere/model.onnx', which is outside")
    assert "ONNX Runtime cannot load" not in result.output


def test_an_onnx_file_whose_external_data_is_outside_is_refused_before_loading(bundle, tmp_path, run_cli):
    # setup: model.onnx re-saved with its weights in ../secret.bin, the manifest re-hashed to match
    model = onnx.load(str(bundle / "model.onnx"))
    onnx.save_model(model, str(bundle / "model.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=0)
    shutil.move(bundle / "weights.bin", tmp_path / "secret.bin")
    _relocate(bundle / "model.onnx", "../secret.bin")
    manifest = _manifest(bundle)
    manifest["files"]["model.onnx"] = _record(bundle / "model.onnx")
    _rewrite(bundle, manifest)
    tensor = next(t.name for t in onnx.load(str(bundle / "model.onnx"), load_external_data=False).graph.initializer
                  if t.external_data)
    # execute
    result = run_cli("verify", bundle)
    # assert: ours, before ONNX Runtime (or onnx) was asked to read it
    _refused(result, f"model.onnx (listed in manifest.json) keeps tensor '{tensor}' in '../secret.bin', "
             "which is outside", "a bundle names only its own files")
    assert "ONNX Runtime cannot load" not in result.output and "sha256" not in result.output


def test_the_manifest_checker_stops_at_a_name_outside_without_reading_it(bundle, tmp_path, capsys):
    # setup
    shutil.copy(bundle / "labels.json", tmp_path / "labels.json")
    manifest = _manifest(bundle)
    manifest["files"]["../labels.json"] = _record(tmp_path / "labels.json")
    _rewrite(bundle, manifest)
    # execute
    code = check_manifest.main([str(bundle)])
    checks = check_manifest.check_manifest(bundle)
    # assert: the path check fails, and no file section ran
    assert code == 1
    failed = [c for c in checks if c["ok"] is False]
    assert [c["check"] for c in failed] == ["paths: every file the bundle names, and its external data, is inside it"]
    assert "../labels.json: is" in failed[0]["recomputed"][0]
    assert not any(c["check"].startswith("files: ") for c in checks)
    assert "MISMATCH" in capsys.readouterr().out


def test_the_manifest_checker_passes_an_untouched_bundle_copy(bundle):
    # execute
    checks = check_manifest.check_manifest(bundle)
    # assert: the path checks ran and passed (no run beside this copy: only the bundle's)
    paths = [c for c in checks if c["check"].startswith("paths: ")]
    assert paths and all(c["ok"] for c in paths)


# ---------------------------------------------------------------------------- edgekit bundle RUN NAME

def _marker_outside(tmp_path):
    """A folder outside the run holding a faithful model and a config.json with a marker."""
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "config.json").write_text(json.dumps({"marker": "from outside the run"}))
    return outside


def _assert_marker_not_copied(tmp_path):
    """No file (links aside: the trick itself) outside tmp_path/elsewhere holds the marker."""
    copied = [p for p in tmp_path.rglob("*") if p.is_file() and not p.is_symlink()
              and not p.is_relative_to(tmp_path / "elsewhere") and b"from outside the run" in p.read_bytes()]
    assert copied == []


@pytest.mark.parametrize("how", ["dotdot", "absolute"])
def test_a_report_row_whose_onnx_is_outside_the_run_is_not_bundled(run_copy, tmp_path, run_cli, how):
    # setup: the row points to a faithful copy of its model, outside the run, beside the marker
    outside = _marker_outside(tmp_path)
    report = json.loads((run_copy / "report.json").read_text())
    row = next(r for r in report["files"] if r["name"] == "L1-fp32")
    shutil.copy(run_copy / row["onnx"], outside / "model.onnx")
    row["onnx"] = "../elsewhere/model.onnx" if how == "dotdot" else str(outside / "model.onnx")
    (run_copy / "report.json").write_text(json.dumps(report))
    # execute
    result = run_cli("bundle", run_copy, "L1-fp32")
    # assert
    _refused(result, f"report.json's row L1-fp32 on cpu names the ONNX file '{row['onnx']}', which is outside",
             "a bundle copies only those")
    assert not (run_copy / "bundles" / "L1-fp32").exists()
    _assert_marker_not_copied(tmp_path)


def test_a_tokenizer_file_linked_from_outside_the_run_is_not_copied(run_copy, tmp_path, run_cli):
    # setup
    outside = _marker_outside(tmp_path)
    (outside / "added_tokens.json").write_text(json.dumps({"from outside the run": 999}))
    (run_copy / "tokenizer" / "added_tokens.json").symlink_to(outside / "added_tokens.json")
    # execute
    result = run_cli("bundle", run_copy, "L1-fp32", "--out", tmp_path / "out")
    # assert
    _refused(result, "the run holds 'tokenizer/added_tokens.json', which is outside", "through a symlink")
    assert not (tmp_path / "out").exists()
    _assert_marker_not_copied(tmp_path)


def test_a_run_model_whose_external_data_is_outside_the_run_is_not_bundled(run_copy, tmp_path, run_cli):
    # setup: the row's model keeps its weights in a file outside the run
    report = json.loads((run_copy / "report.json").read_text())
    source = run_copy / next(r for r in report["files"] if r["name"] == "L1-fp32")["onnx"]
    onnx.save_model(onnx.load(str(source)), str(source), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=0)
    shutil.move(source.parent / "weights.bin", tmp_path / "weights.bin")
    _relocate(source, "../../../weights.bin")
    # execute
    result = run_cli("bundle", run_copy, "L1-fp32", "--out", tmp_path / "out")
    # assert
    _refused(result, "(named by report.json) keeps tensor", "in '../../../weights.bin', which is outside")
    assert not (tmp_path / "out").exists()


def test_an_untouched_run_still_bundles_and_verifies(run_copy, run_cli):
    # execute
    made = run_cli("bundle", run_copy, "L1-int8-dynamic")
    checked = run_cli("verify", run_copy / "bundles" / "L1-int8-dynamic")
    # assert
    assert made.exit_code == 0, made.output
    assert checked.exit_code == 0, checked.output


# ---------------------------------------------------------------------------- edgekit bench FILE

def test_bench_times_a_file_with_external_data_beside_it_and_refuses_one_outside(tmp_path, run_cli):
    # setup
    beside = _matmul_model(tmp_path / "ok", "weights.bin")
    escaping = _matmul_model(tmp_path / "bad", "weights.bin")
    shutil.move(tmp_path / "bad" / "weights.bin", tmp_path / "secret.bin")
    _relocate(escaping, "../secret.bin")
    # execute
    fine = run_cli("bench", beside, "--min-runs", 5, "--min-seconds", 0, "--warmup-runs", 1)
    refused = run_cli("bench", escaping, "--min-runs", 5, "--min-seconds", 0, "--warmup-runs", 1)
    # assert
    assert fine.exit_code == 0, fine.output
    _refused(refused, "'model.onnx' keeps tensor 'W' in '../secret.bin', which is outside",
             "keep an ONNX file's external data in its own folder")
