"""Bundles and run folders someone else made, malformed or hostile (issue 27): `edgekit verify BUNDLE` and
`edgekit bundle RUN NAME` answer every one with a clear error naming the file, what is wrong and the fix;
never a traceback, never a hang (a FIFO in a file's place), never raw terminal escapes (a file name
holding them), never an allocation sized by a forged header.

Each tampered bundle is re-hashed (the file's sha256 and manifest_sha256) where the trick needs it, so the
failure is the defence under test and not a hash mismatch."""

import hashlib
import io
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import onnx
import pytest
from numpy.lib import format as npy
from onnx import TensorProto, helper, numpy_helper

from bench import check_manifest
from edgekit.errors import BundleError, BundleMismatch
from edgekit.stages.bundle import MANIFEST, _dump_manifest
from edgekit.trust.arrays import load_npy, load_npz

ESCAPES = "\x1b[2J\x1b[31mevil"
# How long a command may take before a test calls it a hang (a real one never returns at all).
HANG_SECONDS = 180


# ---------------------------------------------------------------------------- helpers

def _manifest(folder):
    return json.loads((folder / MANIFEST).read_text())


def _rewrite(folder, manifest):
    """manifest.json with its own digest recomputed, so only the change under test remains."""
    manifest.pop("manifest_sha256", None)
    (folder / MANIFEST).write_bytes(_dump_manifest(manifest))


def _rehash(folder, name):
    """The manifest's record of `name` made to match the file as it now is."""
    manifest = _manifest(folder)
    data = (folder / name).read_bytes()
    manifest["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    _rewrite(folder, manifest)


def _refused(result, *phrases):
    """A one-line `error: ...` (an EdgekitError), exit 1, no traceback, no raw escape, every phrase in it."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "\x1b" not in result.output
    for phrase in phrases:
        assert phrase in result.output, result.output


def _cli_in_subprocess(*args):
    """The real CLI in a child process, killed after HANG_SECONDS: (returncode, stdout + stderr), or a failed test
    saying it hung."""
    command = [sys.executable, "-c", "from edgekit.cli import main; main()", *map(str, args)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=HANG_SECONDS,
                              env={**os.environ, "PYTHONIOENCODING": "utf-8"}, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail(f"`edgekit {' '.join(map(str, args))}` hung for {HANG_SECONDS} s")
    return done.returncode, done.stdout + done.stderr


def _npy_bytes(shape, descr="<f4", data=b""):
    """An .npy file's bytes: a version 1.0 header declaring `shape` of `descr`, then `data` (however little)."""
    buffer = io.BytesIO()
    npy.write_array_header_1_0(buffer, {"shape": shape, "fortran_order": False, "descr": descr})
    return buffer.getvalue() + data


# ---------------------------------------------------------------------------- 1. FIFOs: never a hang

@pytest.mark.parametrize("name", ["reference.npz", "model.onnx", MANIFEST])
def test_verify_refuses_a_fifo_in_place_of_a_bundle_file_and_returns(bundle, name):
    # setup: a named pipe nobody writes to; opening it for reading would block forever
    (bundle / name).unlink()
    os.mkfifo(bundle / name)
    # execute
    code, output = _cli_in_subprocess("verify", bundle)
    # assert: it answered, naming the file and what it is
    assert code == 1, output
    assert "Traceback" not in output
    assert name in output and "FIFO" in output and "not a regular file" in output, output


def test_verify_with_a_key_refuses_a_fifo_in_the_bundle_before_model_signing_reads_it(bundle, tmp_path):
    # setup: a signed-looking bundle with a FIFO beside its files; --key makes model-signing walk the folder
    pytest.importorskip("model_signing")
    from edgekit.trust.signing import generate_keys, sign_bundle

    private, public = generate_keys(tmp_path / "keys")
    sign_bundle(bundle, private)
    os.mkfifo(bundle / "pipe")
    # execute
    code, output = _cli_in_subprocess("verify", bundle, "--key", public)
    # assert
    assert code == 1, output
    assert "Traceback" not in output
    assert "pipe: is a FIFO" in output and "remove it" in output, output


# ---------------------------------------------------------------------------- 2. terminal escapes in names

def test_an_unlisted_file_named_with_terminal_escapes_is_reported_escaped(bundle, run_cli):
    # setup
    (bundle / ESCAPES).write_text("x")
    # execute
    result = run_cli("verify", bundle)
    # assert: named, as \x1b text, never as the escape itself
    _refused(result, "\\x1b[2J\\x1b[31mevil: not in the manifest")


def test_a_manifest_file_name_with_control_characters_is_reported_escaped(bundle, run_cli):
    # setup: the manifest lists a file whose name holds escapes and a newline, absent from the folder
    manifest = _manifest(bundle)
    manifest["files"][ESCAPES + "\nfake: ok"] = manifest["files"]["labels.json"]
    _rewrite(bundle, manifest)
    # execute
    result = run_cli("verify", bundle)
    # assert: one line, escaped (a newline in a name cannot forge a line of the report)
    _refused(result, "\\x1b[2J\\x1b[31mevil\\nfake: ok: missing")
    assert "\nfake: ok" not in result.output


def test_a_manifest_format_holding_escapes_is_reported_escaped(bundle, run_cli):
    # setup
    manifest = _manifest(bundle)
    manifest["format"] = ESCAPES
    _rewrite(bundle, manifest)
    # execute
    result = run_cli("verify", bundle)
    # assert
    _refused(result, "manifest.json: format \\x1b[2J", "is not edgekit.manifest/1")


# ---------------------------------------------------------------------------- 3. manifest.json itself

def test_a_files_entry_missing_its_bytes_names_the_field_not_a_keyerror(bundle, run_cli):
    # setup
    manifest = _manifest(bundle)
    del manifest["files"]["labels.json"]["bytes"]
    _rewrite(bundle, manifest)
    # execute
    result = run_cli("verify", bundle)
    # assert
    _refused(result, "manifest.json: field files['labels.json'].bytes is missing", "rebuild it with `edgekit bundle")
    assert "KeyError" not in result.output


@pytest.mark.parametrize("edit, field", [
    (lambda m: m["files"]["labels.json"].update(bytes="12"), "files['labels.json'].bytes is '12' (string)"),
    (lambda m: m["files"]["labels.json"].update(sha256=5), "files['labels.json'].sha256 is 5 (number)"),
    (lambda m: m.update(files=list(m["files"])), "field files is array"),
    (lambda m: m["reference"]["tolerance"].update(atol="x"), "reference.tolerance.atol is 'x'"),
    (lambda m: m["reference"].update(models=[]), "reference.models is array"),
    (lambda m: m["model"].update(deploy=7), "model.deploy is 7"),
    (lambda m: m.update(metadata_props={"edgekit.model": 1}), "metadata_props['edgekit.model'] is 1"),
    (lambda m: m.update(reference=None), "field reference is None (null)"),
])
def test_a_manifest_field_of_the_wrong_type_is_named_with_what_belongs_there(bundle, run_cli, edit, field):
    # setup
    manifest = _manifest(bundle)
    edit(manifest)
    _rewrite(bundle, manifest)
    # execute
    result = run_cli("verify", bundle)
    # assert
    _refused(result, "manifest.json: not a manifest edgekit wrote", field, ", not ", "rebuild it")


def test_verify_time_checks_the_fields_retiming_reads(bundle, run_cli):
    # setup
    manifest = _manifest(bundle)
    manifest["budget"]["percentile"] = "p42"
    del manifest["latency"]["config"]["seq_len"]
    _rewrite(bundle, manifest)
    # execute
    result = run_cli("verify", bundle, "--time")
    # assert
    _refused(result, "budget.percentile is 'p42'", "one of p50, p95, p99", "latency.config.seq_len is missing")


def test_a_truncated_manifest_is_not_json_and_says_so(bundle, run_cli):
    # setup
    raw = (bundle / MANIFEST).read_bytes()
    (bundle / MANIFEST).write_bytes(raw[:len(raw) // 2])
    # execute
    result = run_cli("verify", bundle)
    # assert
    _refused(result, "manifest.json: is not valid JSON", "rebuild it with `edgekit bundle RUN NAME`")


def test_a_manifest_nested_a_hundred_thousand_deep_is_refused_without_recursionerror(bundle, run_cli):
    # setup
    (bundle / MANIFEST).write_text("[" * 100_000 + "]" * 100_000)
    # execute
    result = run_cli("verify", bundle)
    # assert
    _refused(result, "manifest.json: nests lists or objects more than 100 deep", "rebuild it")
    assert "RecursionError" not in result.output


def test_a_manifest_of_gigabytes_is_refused_unread(bundle, run_cli):
    # setup: a sparse file of 8 GB (no disk used); reading it whole would take the memory
    with open(bundle / MANIFEST, "r+b") as f:
        f.truncate(8 << 30)
    # execute
    result = run_cli("verify", bundle)
    # assert
    _refused(result, "manifest.json is 8,589,934,592 bytes, more than the", "rebuild it")


def test_a_manifest_holding_a_json_array_says_what_it_holds(bundle, run_cli):
    # setup
    (bundle / MANIFEST).write_text("[1, 2]")
    # execute
    result = run_cli("verify", bundle)
    # assert
    _refused(result, "manifest.json: format absent (it holds a JSON array)")


# ---------------------------------------------------------------------------- 5. reference.npz

def _replace_reference_member(bundle, member, data):
    """reference.npz with the array `member` replaced by the raw .npy bytes `data`, re-hashed in the manifest."""
    path = bundle / "reference.npz"
    with zipfile.ZipFile(path) as old:
        members = {info.filename: old.read(info) for info in old.infolist()}
    members[member] = data
    with zipfile.ZipFile(path, "w") as new:
        for name, content in members.items():
            new.writestr(name, content)
    _rehash(bundle, "reference.npz")


def test_a_reference_array_declaring_784_gb_is_refused_before_allocating(bundle, run_cli):
    # setup: the first output's header declares 784 GB of float32; the member holds 64 bytes
    with zipfile.ZipFile(bundle / "reference.npz") as archive:
        member = next(n for n in archive.namelist() if n.startswith("out/"))
    _replace_reference_member(bundle, member, _npy_bytes((196_000, 1_000_000), data=b"\0" * 64))
    # execute
    result = run_cli("verify", bundle)
    # assert
    _refused(result, "reference.npz, array 'out/", "784,000,000,000 bytes", "but holds only 64 bytes",
             "rebuild it with `edgekit bundle RUN NAME`")


def test_an_object_array_in_reference_npz_is_refused_as_such(bundle, run_cli):
    # setup: a pickled object array (np.save with allow_pickle) in place of an input
    with zipfile.ZipFile(bundle / "reference.npz") as archive:
        member = next(n for n in archive.namelist() if n.startswith("in/"))
    buffer = io.BytesIO()
    np.save(buffer, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    _replace_reference_member(bundle, member, buffer.getvalue())
    # execute
    result = run_cli("verify", bundle)
    # assert
    _refused(result, "reference.npz, array 'in/", "holds Python objects", "never unpickles")


def test_a_reference_npz_that_is_not_a_zip_is_named(bundle, run_cli):
    # setup
    (bundle / "reference.npz").write_bytes(b"not a zip at all")
    _rehash(bundle, "reference.npz")
    # execute
    result = run_cli("verify", bundle)
    # assert
    _refused(result, "reference.npz: not a numpy .npz archive", "rebuild it")


def test_a_reference_array_of_strings_where_numbers_were_recorded_is_a_finding(bundle, run_cli):
    # setup: an output recorded as text of the right shape: np.allclose would raise on it
    with zipfile.ZipFile(bundle / "reference.npz") as archive:
        member = next(n for n in archive.namelist() if n.startswith("out/model.onnx/0/"))
        shape = np.load(io.BytesIO(archive.read(member))).shape
    buffer = io.BytesIO()
    np.save(buffer, np.full(shape, "x"))
    _replace_reference_member(bundle, member, buffer.getvalue())
    # execute
    result = run_cli("verify", bundle)
    # assert
    _refused(result, "model.onnx: output '", "cannot be compared")


# ---------------------------------------------------------------------------- 6. an ONNX file asking for terabytes

def test_a_model_asking_for_terabytes_at_run_time_is_a_mismatch_naming_the_file(bundle, run_cli):
    # setup: model.onnx replaced by a graph taking the same inputs whose ConstantOfShape asks for 4 TB
    inputs = onnx.load(str(bundle / "model.onnx"), load_external_data=False).graph.input
    shape = numpy_helper.from_array(np.array([2**30, 2**10], dtype=np.int64), "shape")
    nodes = [helper.make_node("ConstantOfShape", ["shape"], ["big"]),
             helper.make_node("ReduceSum", ["big"], ["total"], keepdims=0),
             helper.make_node("Cast", [inputs[0].name], ["first"], to=TensorProto.FLOAT),
             helper.make_node("Add", ["first", "total"], ["y"])]
    graph = helper.make_graph(nodes, "hostile", list(inputs),
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [shape])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(bundle / "model.onnx"))
    _rehash(bundle, "model.onnx")
    # execute
    result = run_cli("verify", bundle)
    # assert: whatever refuses it (a pre-session check, or ORT's allocator), it is this file's problem
    _refused(result, "model.onnx: ", "rebuild it")
    assert "model.onnx: ONNX Runtime cannot load or run it" in result.output or "model.onnx" in result.output


# ---------------------------------------------------------------------------- 4. run folders: edgekit bundle

def _report(run):
    return json.loads((run / "report.json").read_text())


def _first_row(run):
    data = _report(run)
    return data, data["files"][0]


def test_bundle_from_a_report_cut_in_half_names_it_and_the_fix(run_copy, run_cli):
    # setup
    _data, row = _first_row(run_copy)
    raw = (run_copy / "report.json").read_text()
    (run_copy / "report.json").write_text(raw[:len(raw) // 2])
    # execute
    result = run_cli("bundle", run_copy, row["name"], "-o", run_copy / "out")
    # assert
    _refused(result, "report.json is not valid JSON", "rerun `edgekit distill-and-export`")


def test_bundle_from_a_report_nested_too_deep_is_refused(run_copy, run_cli):
    # setup
    (run_copy / "report.json").write_text('{"a":' * 50_000 + "1" + "}" * 50_000)
    # execute
    result = run_cli("bundle", run_copy, "x", "-o", run_copy / "out")
    # assert
    _refused(result, "report.json nests lists or objects more than 100 deep")


def test_bundle_from_a_report_missing_what_a_bundle_needs_names_each_field(run_copy, run_cli):
    # setup
    data, row = _first_row(run_copy)
    del data["budget"]["ms"]
    del data["files"][0]["bench"]
    data["files"][0]["latency_ms"] = "fast"
    (run_copy / "report.json").write_text(json.dumps(data))
    # execute
    result = run_cli("bundle", run_copy, row["name"], "-o", run_copy / "out")
    # assert: the report-wide field first (a bundle needs it whatever the row)
    _refused(result, "report.json: not a report a bundle can be made from", "budget.ms is missing",
             "rerun `edgekit distill-and-export`")
    # execute: once that is fixed, the row's fields
    data["budget"]["ms"] = 5.0
    (run_copy / "report.json").write_text(json.dumps(data))
    result = run_cli("bundle", run_copy, row["name"], "-o", run_copy / "out")
    # assert
    _refused(result, "bench is missing", "latency_ms is a string, not an object {p50, p95, p99}")


def test_bundle_from_a_row_whose_onnx_climbs_out_is_still_refused(run_copy, run_cli, tmp_path):
    # setup
    data, row = _first_row(run_copy)
    data["files"][0]["onnx"] = "../elsewhere.onnx"
    (run_copy / "report.json").write_text(json.dumps(data))
    # execute
    result = run_cli("bundle", run_copy, row["name"], "-o", tmp_path / "out")
    # assert
    _refused(result, "'../elsewhere.onnx', which is outside")


def test_bundle_with_a_malformed_timing_record_names_it(run_copy, run_cli, tmp_path):
    # setup
    _data, row = _first_row(run_copy)
    (run_copy / row["bench"]).write_text('{"samples_ms": [1, 2')
    # execute
    result = run_cli("bundle", run_copy, row["name"], "-o", tmp_path / "out")
    # assert
    _refused(result, f"timing record {run_copy / row['bench']} is not valid JSON", "rerun")


def test_bundle_with_a_timing_record_lacking_its_samples_names_the_field(run_copy, run_cli, tmp_path):
    # setup
    _data, row = _first_row(run_copy)
    record = json.loads((run_copy / row["bench"]).read_text())
    del record["samples_ms"]
    (run_copy / row["bench"]).write_text(json.dumps(record))
    # execute
    result = run_cli("bundle", run_copy, row["name"], "-o", tmp_path / "out")
    # assert
    _refused(result, "field(s) samples_ms missing", "rerun")


def test_bundle_with_malformed_or_huge_reference_texts_names_the_file(run_copy, run_cli, tmp_path):
    # setup
    _data, row = _first_row(run_copy)
    texts = run_copy / "reference" / "texts.json"
    texts.write_text('["a", "b"')
    # execute
    malformed = run_cli("bundle", run_copy, row["name"], "-o", tmp_path / "a")
    texts.write_text('["a", 3]')
    not_texts = run_cli("bundle", run_copy, row["name"], "-o", tmp_path / "b")
    with open(texts, "r+b") as f:
        f.truncate(1 << 30)  # sparse: 1 GB where a few kilobytes belong
    huge = run_cli("bundle", run_copy, row["name"], "-o", tmp_path / "c")
    # assert
    _refused(malformed, "texts.json is not valid JSON", "rerun")
    _refused(not_texts, "texts.json: item 1 is a JSON int, not a text")
    _refused(huge, "texts.json is 1,073,741,824 bytes, more than the")


@pytest.mark.parametrize("content, phrase", [
    (_npy_bytes((196_000, 1_000_000), data=b"\0" * 64), "declares a float32 array of shape (196000, 1000000)"),
    (None, "holds Python objects"),
    (b"\x93NUMPY\x01\x00\xff\xff", "a header length of 65,535 bytes"),
])
def test_bundle_with_hostile_reference_images_refuses_them_before_allocating(run_copy, run_cli, tmp_path, content,
                                                                              phrase):
    # setup: the run's reference inputs are images.npy (texts.json gone)
    _data, row = _first_row(run_copy)
    (run_copy / "reference" / "texts.json").unlink()
    if content is None:
        np.save(run_copy / "reference" / "images.npy", np.array([object()] * 2, dtype=object), allow_pickle=True)
    else:
        (run_copy / "reference" / "images.npy").write_bytes(content)
    # execute
    result = run_cli("bundle", run_copy, row["name"], "-o", tmp_path / "out")
    # assert
    _refused(result, "images.npy", phrase, "rerun")


def test_bundle_with_a_malformed_tokenizer_file_names_it(run_copy, run_cli, tmp_path):
    # setup
    _data, row = _first_row(run_copy)
    config = run_copy / "tokenizer" / "tokenizer_config.json"
    config.write_text('{"model_max_length": ')
    # execute
    result = run_cli("bundle", run_copy, row["name"], "-o", tmp_path / "out")
    # assert
    _refused(result, "tokenizer_config.json is not valid JSON", "rerun")


def test_bundle_with_a_fifo_in_the_run_returns_naming_it(run_copy, tmp_path):
    # setup: a FIFO in tokenizer/, which the bundle copies
    _data, row = _first_row(run_copy)
    os.mkfifo(run_copy / "tokenizer" / "vocab.extra")
    # execute
    code, output = _cli_in_subprocess("bundle", run_copy, row["name"], "-o", tmp_path / "out")
    # assert
    assert code == 1, output
    assert "Traceback" not in output
    assert "vocab.extra is a FIFO (named pipe), not a regular file" in output, output


def test_bundle_with_an_unreadable_source_onnx_names_it(run_copy, run_cli, tmp_path):
    # setup
    _data, row = _first_row(run_copy)
    (run_copy / row["onnx"]).write_bytes(b"\x08\xff\xff garbage")
    # execute
    result = run_cli("bundle", run_copy, row["name"], "-o", tmp_path / "out")
    # assert
    _refused(result, "not an ONNX file onnx can read", "rerun")


def test_bundle_with_a_file_name_holding_escapes_shows_it_escaped(run_copy, run_cli, tmp_path):
    # setup: the name asked for is unknown: the run's names are listed, escaped
    data, _row = _first_row(run_copy)
    data["files"][0]["name"] = ESCAPES
    (run_copy / "report.json").write_text(json.dumps(data))
    # execute
    result = run_cli("bundle", run_copy, "nope", "-o", tmp_path / "out")
    # assert
    _refused(result, "the run has no file 'nope'", "\\x1b[2J\\x1b[31mevil")


def test_a_malformed_preprocessing_record_names_the_file(tmp_path):
    # setup
    from edgekit.data.preprocessing import bundle_record

    (tmp_path / "preprocessing.json").write_text("[" * 500 + "]" * 500)
    # execute
    with pytest.raises(BundleError) as error:
        bundle_record(tmp_path / "preprocessing.json", {"name": "pixel_values", "dtype": "float32", "shape": [1]})
    # assert
    assert "preprocessing.json nests lists or mappings more than 100 deep" in str(error.value)
    assert str(error.value).endswith("rather than editing preprocessing.json.")


# ---------------------------------------------------------------------------- edgekit.trust.arrays

def test_load_npy_and_load_npz_round_trip_numbers_and_strings(tmp_path):
    # setup
    np.save(tmp_path / "a.npy", np.arange(6, dtype=np.int64).reshape(2, 3))
    np.savez(tmp_path / "b.npz", x=np.ones(3, np.float32), t=np.array(["a", "bc"]))
    # execute
    single = load_npy(tmp_path / "a.npy", "test array", "make it again", BundleError)
    many = load_npz(tmp_path / "b.npz", "test archive", "make it again", BundleError)
    # assert
    assert single.tolist() == [[0, 1, 2], [3, 4, 5]]
    assert sorted(many) == ["t", "x"] and many["t"].tolist() == ["a", "bc"]


@pytest.mark.parametrize("content, phrase", [
    (_npy_bytes((10**12,)), "declares a float32 array of shape (1000000000000,)"),
    (_npy_bytes((2, 3), "<i8", b"\0" * 40), "48 bytes, 0.0 MB) but holds only 40 bytes"),
    (b"PK\x03\x04 not numpy", "no .npy magic string"),
    (_npy_bytes((2,), "|O", b"\0" * 16), "holds Python objects"),
    (_npy_bytes((-5,)), "declares the shape (-5,)"),
])
def test_load_npy_refuses_forged_headers_before_allocating(tmp_path, content, phrase):
    # setup
    (tmp_path / "a.npy").write_bytes(content)
    # execute
    with pytest.raises(BundleMismatch) as error:
        load_npy(tmp_path / "a.npy", "the test array", "make it again", BundleMismatch)
    # assert: named, what is wrong, the fix
    assert str(error.value).startswith(f"the test array {tmp_path / 'a.npy'}"), str(error.value)
    assert phrase in str(error.value) and str(error.value).endswith("make it again."), str(error.value)


def test_load_npz_and_load_npy_refuse_a_fifo_without_blocking(tmp_path):
    # setup
    os.mkfifo(tmp_path / "a.npz")
    os.mkfifo(tmp_path / "a.npy")
    # execute / assert
    for load, name in ((load_npz, "a.npz"), (load_npy, "a.npy")):
        with pytest.raises(BundleMismatch, match="is a FIFO"):
            load(tmp_path / name, "the test file", "make it again", BundleMismatch)


# ---------------------------------------------------------------------------- bench/check_manifest.py

def test_check_manifest_answers_a_fifo_and_a_broken_manifest_without_hanging(bundle, capsys):
    # setup
    (bundle / "reference.npz").unlink()
    os.mkfifo(bundle / "reference.npz")
    # execute
    code = check_manifest.main([str(bundle)])
    output = capsys.readouterr().out
    # assert
    assert code == 1 and "reference.npz" in output and "FIFO" in output, output
    # setup: manifest.json truncated
    raw = (bundle / MANIFEST).read_bytes()
    (bundle / MANIFEST).write_bytes(raw[:len(raw) // 2])
    # execute
    code = check_manifest.main([str(bundle)])
    output = capsys.readouterr().out
    # assert
    assert code == 1 and "manifest.json" in output and "not valid JSON" in output, output


def test_check_manifest_prints_hostile_names_escaped(bundle, capsys):
    # setup: a listed name (in a check's title) and an unlisted file, both holding escapes
    manifest = _manifest(bundle)
    manifest["files"][ESCAPES + "-listed"] = manifest["files"]["labels.json"]
    _rewrite(bundle, manifest)
    (bundle / ESCAPES).write_text("x")
    # execute
    code = check_manifest.main([str(bundle)])
    output = capsys.readouterr().out
    # assert
    assert code == 1
    assert "\x1b" not in output and "\\x1b[2J\\x1b[31mevil-listed sha256" in output, output
