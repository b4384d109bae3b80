"""Faults on the output side and hostile files met by every command: --force never replaces a user's folder,
a killed quantization leaves nothing behind once rerun, a full or read-only disk is one message with the previous
run and the cache intact, an ONNX graph that asks for more memory than the machine has is refused with the
figure, and names from files reach the terminal escaped."""

import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager

import numpy as np
import onnx
import pytest
import yaml
from onnx import TensorProto, helper, numpy_helper

from edgekit.testing import tiny_recipe
from edgekit.trust.reading import machine_memory


def _digest(folder):
    """Every file under `folder` with its bytes: whether anything in it changed."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished(finished_run, tiny_bert):
    """The shared finished tiny run (ROOT/run, ROOT/cache) and ROOT/tiny.yaml, the recipe it ran: rerunning it
    against that cache redoes nothing."""
    recipe = finished_run / "tiny.yaml"
    if not recipe.exists():
        recipe.write_text(yaml.safe_dump(tiny_recipe(tiny_bert).model_dump(mode="json")))
    return finished_run


def _users_folder(tmp_path):
    folder = tmp_path / "project"
    (folder / "src").mkdir(parents=True)
    (folder / "notes.txt").write_text("my own notes")
    (folder / "src" / "app.py").write_text("print('mine')")
    return folder


def test_force_never_replaces_a_folder_edgekit_did_not_write(finished, run_cli, tiny_bert, tmp_path):
    # setup: a user's project folder, and one with an edgekit report.json copied into it beside their files
    project = _users_folder(tmp_path)
    mixed = _users_folder(tmp_path / "mixed")
    shutil.copy(finished / "run" / "report.json", mixed / "report.json")
    before = {folder: _digest(folder) for folder in (project, mixed)}
    # execute: each command that writes a folder, pointed at them with --force
    results = [run_cli("distill-and-export", finished / "tiny.yaml", "--out", project, "--cache-dir",
                       finished / "cache", "--force"),
               run_cli("distill-and-export", finished / "tiny.yaml", "--out", mixed, "--cache-dir",
                       finished / "cache", "--force"),
               run_cli("export", tiny_bert, "--task", "feature-extraction", "-o", project, "--force"),
               run_cli("bundle", finished / "run", "L1-fp32", "-o", project, "--force")]
    # assert: refused before any work, naming what is the user's; nothing of theirs touched
    for result in results:
        assert result.exit_code == 1 and "Traceback" not in result.output, result.output
        assert "did not write (notes.txt, src)" in result.output, result.output
        assert "--force replaces only a folder edgekit wrote" in result.output
    assert {folder: _digest(folder) for folder in (project, mixed)} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mixed", "project"]  # no temporary or lock left


def test_force_replaces_what_edgekit_wrote_and_refuses_it_once_a_user_adds_a_file(finished, run_cli, tmp_path):
    # setup: a copy of a finished run (its own folder), and the same with a user's file dropped in
    run = tmp_path / "run"
    shutil.copytree(finished / "run", run)
    cache = tmp_path / "cache"
    shutil.copytree(finished / "cache", cache)
    # execute / assert: the run's own folder is replaced
    again = run_cli("distill-and-export", finished / "tiny.yaml", "--out", run, "--cache-dir", cache, "--force")
    assert again.exit_code == 0, again.output
    # execute / assert: one file of the user's in it, and it is refused
    (run / "my-analysis.ipynb").write_text("{}")
    refused = run_cli("distill-and-export", finished / "tiny.yaml", "--out", run, "--cache-dir", cache, "--force")
    assert refused.exit_code == 1 and "did not write (my-analysis.ipynb)" in refused.output
    assert (run / "my-analysis.ipynb").read_text() == "{}" and (run / "report.json").is_file()


def test_force_never_replaces_a_file_named_as_the_output_folder(finished, run_cli, tmp_path):
    # setup
    target = tmp_path / "thesis.pdf"
    target.write_bytes(b"%PDF mine")
    # execute
    result = run_cli("distill-and-export", finished / "tiny.yaml", "--out", target, "--cache-dir", finished / "cache",
                     "--force")
    # assert
    assert result.exit_code == 1 and "is a file, not a folder edgekit wrote" in result.output
    assert target.read_bytes() == b"%PDF mine"


def _big_model(path, width=768, depth=12):
    """A chain of `depth` MatMuls by [width, width] (28 MB at the defaults): its quantization takes long enough
    to be killed in the middle."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((width, width)).astype(np.float32) / 30, f"w{k}")
             for k in range(depth)]
    nodes = [helper.make_node("MatMul", [f"h{k}", f"w{k}"], [f"h{k + 1}"]) for k in range(depth)]
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("h0", TensorProto.FLOAT, ["n", width])],
                              [helper.make_tensor_value_info(f"h{depth}", TensorProto.FLOAT, ["n", width])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_a_quantization_killed_mid_way_leaves_nothing_once_rerun(tmp_path, run_cli):
    # setup
    model = _big_model(tmp_path / "model.onnx")
    command = [sys.executable, "-m", "edgekit.cli", "quantize", str(model), "--method", "int8-dynamic"]
    # execute: SIGKILL once its scratch folder exists (mid-way: nothing has been moved into place yet)
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".*.quant-*")) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    left = sorted(p.name for p in tmp_path.iterdir())
    rerun = run_cli(*command[3:])
    # assert: the kill left its scratch folder and no output; the rerun removed it and wrote a complete file
    assert any(".quant-" in name for name in left) and "model.int8-dynamic.onnx" not in left, left
    assert rerun.exit_code == 0, rerun.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.int8-dynamic.onnx", "model.onnx"]
    onnx.checker.check_model(str(tmp_path / "model.int8-dynamic.onnx"))


@contextmanager
def _small_disk(folder, size):
    """A tmpfs of `size` bytes mounted at `folder` (root only): a real full disk, not a mocked write."""
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                             capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here to fill a disk for real ({mounted.stderr.strip()[:80]})")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def _size_of(folder):
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_a_disk_filling_up_mid_run_is_one_message_and_the_previous_run_survives(finished, run_cli, tmp_path):
    # setup: the previous complete run on a disk with room for it and a little more (not for a second copy)
    room = int(_size_of(finished / "run") * 1.3) + (64 << 10)
    with _small_disk(tmp_path / "disk", room) as disk:
        shutil.copytree(finished / "run", disk / "run")
        before = _digest(disk / "run")
        cache = tmp_path / "cache"
        shutil.copytree(finished / "cache", cache)
        # execute: the rerun builds its new folder beside the old one until the disk is full
        result = run_cli("distill-and-export", finished / "tiny.yaml", "--out", disk / "run", "--cache-dir", cache,
                         "--force")
        # assert: one message naming the cause and the fix; the previous run whole, nothing else left on the disk
        assert result.exit_code == 1 and "Traceback" not in result.output, result.output
        assert "error: no space left on device" in result.output and "free disk space" in result.output
        assert _digest(disk / "run") == before
        assert sorted(p.name for p in disk.iterdir()) == ["run"]
    # and the cache still serves a complete run elsewhere
    elsewhere = run_cli("distill-and-export", finished / "tiny.yaml", "--out", tmp_path / "again", "--cache-dir",
                        cache)
    assert elsewhere.exit_code == 0, elsewhere.output


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_a_cache_on_a_full_disk_is_one_message_and_leaves_no_temporary_file(finished, run_cli, tmp_path):
    # setup: a cache disk too small for the checkpoints and exports the run stores (torch.save's own writer
    # reports a full disk as a RuntimeError, not an OSError)
    with _small_disk(tmp_path / "disk", int(_size_of(finished / "cache") * 0.6)) as disk:
        # execute
        result = run_cli("distill-and-export", finished / "tiny.yaml", "--out", tmp_path / "run", "--cache-dir",
                         disk / "cache")
        # assert
        assert result.exit_code == 1 and "Traceback" not in result.output, result.output
        assert "error: no space left on device" in result.output or "a write failed" in result.output
        assert not (tmp_path / "run").exists()
        assert not [p for p in (disk / "cache").rglob("*") if ".tmp-" in p.name]


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_a_read_only_output_disk_is_one_message(finished, run_cli, tmp_path):
    # setup: a read-only file system (root ignores permission bits, not a read-only mount)
    with _small_disk(tmp_path / "disk", 1 << 20) as disk:
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        # execute
        result = run_cli("distill-and-export", finished / "tiny.yaml", "--out", disk / "run", "--cache-dir",
                         finished / "cache")
        # assert
        assert result.exit_code == 1 and "Traceback" not in result.output, result.output
        assert "error: read-only file system" in result.output and "writable --out" in result.output


def _graph(path, nodes, initializers, inputs):
    graph = helper.make_graph(nodes, "hostile", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def _zeros(shape_input):
    return helper.make_node("ConstantOfShape", [shape_input], ["big"],
                            value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.0]))


def test_a_graph_asking_for_more_memory_than_the_machine_has_is_refused_with_the_figure(tmp_path, run_cli):
    # setup: a constant shape of 10^12 elements; and one computed at run time from the input's shape
    ids = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "seq"]) for n in ("input_ids",
                                                                                          "attention_mask")]
    constant = _graph(tmp_path / "constant.onnx", [_zeros("shape"), helper.make_node("ReduceSum", ["big"], ["y"])],
                      [numpy_helper.from_array(np.array([10**6, 10**6], dtype=np.int64), "shape")], ids)
    computed = _graph(tmp_path / "computed.onnx",
                      [helper.make_node("Shape", ["input_ids"], ["s"]), helper.make_node("Mul", ["s", "k"], ["shape"]),
                       _zeros("shape"), helper.make_node("ReduceSum", ["big"], ["y"])],
                      [numpy_helper.from_array(np.array([10**5, 10**6], dtype=np.int64), "k")], ids)
    # execute
    results = {path.name: run_cli("bench", path, "--min-runs", 5) for path in (constant, computed)}
    # assert: one line each naming the file and the figure; the constant one before any session
    memory = machine_memory()
    for name, result in results.items():
        assert result.exit_code == 1 and "Traceback" not in result.output, result.output
        assert name in result.output and "more than this machine" in result.output
        assert "re-export it with `edgekit export`" in result.output
    assert "931.3 GB" in results["constant.onnx"].output and "ConstantOfShape node of [1000000, 1000000]" in \
        results["constant.onnx"].output
    assert memory is None or f"{memory / 2**30:,.1f} GB" in results["constant.onnx"].output
    assert "at run time (a ConstantOfShape node)" in results["computed.onnx"].output


def test_a_fifo_in_place_of_an_onnx_file_is_refused_without_waiting(tmp_path):
    # setup: a FIFO nobody writes to: opening it for reading would block forever
    fifo = tmp_path / "model.onnx"
    os.mkfifo(fifo)
    # execute: in a subprocess, so a hang fails the test instead of stalling the suite
    result = subprocess.run([sys.executable, "-m", "edgekit.cli", "bench", str(fifo)], capture_output=True,
                            text=True, timeout=120, check=False)
    # assert
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "is a FIFO (named pipe), not a regular file" in result.stderr and str(fifo) in result.stderr


def test_names_from_files_reach_the_terminal_escaped(tmp_path, run_cli):
    # setup: a name holding escape sequences that would clear and recolor the screen
    hostile = tmp_path / "\x1b[2J\x1b[31mmodel\r.onnx"
    hostile.write_bytes(b"not onnx")
    # execute
    result = run_cli("bench", hostile)
    # assert: refused, and printed as escapes
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "\x1b" not in result.output and "\r" not in result.output
    assert "\\x1b[2J\\x1b[31mmodel\\r.onnx" in result.output
