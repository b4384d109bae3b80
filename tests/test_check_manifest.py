"""bench/check_manifest.py recomputes a real bundle's manifest without edgekit, and catches a changed file."""

import ast
import json
import shutil
from pathlib import Path

import pytest

import bench.check_manifest as check_manifest_module
from bench.check_manifest import check_manifest, main


@pytest.fixture
def tiny_bundle(phone_run):
    """A run (with report.json) whose bundle has every optional part: fixed shapes, .ort, mobile check."""
    return phone_run.path / "bundle"


def test_the_checker_imports_nothing_from_edgekit():
    # setup
    tree = ast.parse(Path(check_manifest_module.__file__).read_text(encoding="utf-8"))
    # execute
    modules = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    modules |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    # assert: independence is the point of the recomputation
    assert not any(m.split(".")[0] in ("edgekit", "bench") for m in modules)


def test_every_claim_of_a_fresh_bundle_recomputes(tiny_bundle):
    # setup
    manifest = json.loads((tiny_bundle / "manifest.json").read_text())
    # execute
    checks = check_manifest(tiny_bundle)
    # assert: nothing mismatches; only what needs the training itself is not recomputable
    failed = [c for c in checks if c["ok"] is False]
    assert not failed, failed
    skipped = {c["check"] for c in checks if c["ok"] is None}
    assert skipped <= {"teacher: prepared_weights_sha256", "ort: platform / optimization",
                       "data: sentiment: examples_sha256", "data: pairs: examples_sha256"}
    # every file, teacher file, data file and package version is covered, and the recomputations ran
    names = {c["check"] for c in checks}
    assert {f"files: {name} sha256" for name in manifest["files"]} <= names
    assert {f"teacher: {name}" for name in manifest["teacher"]["files"]} <= names
    assert {f"versions: {name}" for name in manifest["versions"]} <= names
    assert sum(c["check"].startswith("data: ") for c in checks) >= 3
    assert {"manifest_sha256", "latency: p95 of samples_ms (to 0.001 ms)", "ort: model.ort reproduces model.fixed.onnx",
            "metadata_props: model.onnx (onnxruntime)", "metadata_props: edgekit.data.metrics", "mobile: NNAPI",
            "run: metrics"} <= names
    tolerance = manifest["reference"]["tolerance"]  # fp32 or quantized, by the file the tiny run picked
    assert {f"reference: {file} outputs rerun (atol {tolerance['atol']:g}, rtol {tolerance['rtol']:g})"
            for file in ("model.onnx", "model.fixed.onnx", "model.ort")} <= names
    assert len(checks) >= 100


def test_a_changed_file_is_a_mismatch_and_exits_1(tiny_bundle, tmp_path, capsys):
    # setup: a copy of the run (so the run-level checks still apply) with one byte added to labels.json
    run = tmp_path / "run"
    shutil.copytree(tiny_bundle.parent, run, ignore=shutil.ignore_patterns("cache"))
    with open(run / "bundle" / "labels.json", "ab") as f:
        f.write(b" ")
    # execute
    checks = {c["check"]: c for c in check_manifest(run / "bundle")}
    code = main([str(run / "bundle"), "--json", str(tmp_path / "checks.json")])
    # assert: that file's hash and size mismatch, the other files still match
    assert checks["files: labels.json sha256"]["ok"] is False
    size = checks["files: labels.json bytes"]
    assert size["ok"] is False and size["recomputed"] == size["manifest"] + 1
    assert checks["files: tokenizer.json sha256"]["ok"] is True and checks["manifest_sha256"]["ok"] is True
    assert code == 1 and "MISMATCH  files: labels.json sha256" in capsys.readouterr().out
    written = json.loads((tmp_path / "checks.json").read_text())
    assert any(c["check"] == "files: labels.json sha256" and c["ok"] is False for c in written["checks"])
