"""Runs that are interrupted, run twice at once, or find their cache corrupted: the previous results and
the cache stay usable, nothing half-written appears, and a rerun ends where an uninterrupted run ends."""

import hashlib
import json
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest
import yaml

from edgekit.errors import OutputLocked
from edgekit.pipeline import distill_and_export
from edgekit.testing import tiny_recipe
from edgekit.trust.atomic import output_lock
from edgekit.trust.cache import Cache


def _command(recipe_path, out, cache):
    return [sys.executable, "-m", "edgekit.cli", "distill-and-export", str(recipe_path), "--out", str(out),
            "--cache-dir", str(cache), "--force"]


def _write_recipe(tmp_path, tiny_bert, **overrides):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe(tiny_bert, **overrides).model_dump(mode="json")))
    return path


def _digest(folder):
    """sha256 over every file of a folder (names and bytes): whether anything in it changed."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode() + path.read_bytes())
    return digest.hexdigest()


def test_corrupt_cache_entries_are_detected_and_recomputed(tiny_bert, warm_cache, tmp_path):
    # setup: a finished run (on a copy of the finished tiny run's cache, which holds every kind of entry), then
    # damage every kind of cache entry
    recipe = tiny_recipe(tiny_bert)
    cache = warm_cache("corrupt")
    first = distill_and_export(recipe, out=tmp_path / "first", cache_dir=cache, echo=print)
    arrays = next(cache.glob("teacher-embeddings/*/arrays.npz"))
    arrays.write_bytes(arrays.read_bytes()[:100])  # truncated
    probe = next(cache.glob("probes/*/entry.json"))
    entry = json.loads(probe.read_text())
    entry["params"] += 1  # still valid JSON: only the hash can tell
    probe.write_text(json.dumps(entry))
    final = next(cache.glob("students/*/final.pt"))
    data = bytearray(final.read_bytes())
    data[len(data) // 2] ^= 0xFF
    final.write_bytes(bytes(data))
    messages = []
    # execute
    second = distill_and_export(recipe, out=tmp_path / "second", cache_dir=cache, echo=messages.append)
    # assert: each damaged entry was reported and recomputed, and the run ends where the first did
    text = "\n".join(messages)
    assert f"cache entry {arrays} fails its sha256" in text and f"cache entry {probe} fails its sha256" in text
    assert f"{final} fails its sha256" in text and "distilling L1" in text
    # (the pick itself may differ: the tiny files tie on accuracy and then differ by timing noise)
    assert [r["metrics"] for r in second.files] == [r["metrics"] for r in first.files]
    assert Cache(cache).load_json("probes", probe.parent.name)["params"] == entry["params"] - 1


def test_a_second_run_on_the_same_folder_fails_clearly_and_harms_nothing(run_cli, tiny_bert, finished_run, tmp_path):
    # setup: a complete run (on a copy of the finished tiny run's cache), and a live holder of its folder's lock (as a
    # run in progress holds it)
    path = _write_recipe(tmp_path, tiny_bert)
    shutil.copytree(finished_run / "cache", tmp_path / "cache", symlinks=True)
    assert run_cli("distill-and-export", path, "--out", tmp_path / "run", "--cache-dir", tmp_path / "cache",
                   ).exit_code == 0
    before = _digest(tmp_path / "run")
    # execute
    with output_lock(tmp_path / "run"):
        second = run_cli("distill-and-export", path, "--out", tmp_path / "run", "--cache-dir", tmp_path / "cache",
                         "--force")
        with pytest.raises(OutputLocked), output_lock(tmp_path / "run"):
            pass
    # assert
    assert second.exit_code == 1 and "is being written by edgekit pid" in second.output
    assert "wait for that run to finish, or pass another --out" in second.output
    assert _digest(tmp_path / "run") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "run", "tiny.yaml"]  # lock file gone


def test_two_real_runs_at_once_one_fails_the_other_finishes(tiny_bert, tmp_path):
    # setup
    path = _write_recipe(tmp_path, tiny_bert)
    command = _command(path, tmp_path / "run", tmp_path / "cache")
    # execute: the second starts while the first holds the folder
    first = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (tmp_path / ".run.lock").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    second = subprocess.run(command, capture_output=True, text=True, check=False)
    first_err = first.communicate()[1]
    # assert
    assert second.returncode == 1 and "is being written by edgekit pid" in second.stderr
    assert first.returncode == 0, first_err
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["selected"] and (tmp_path / "run" / "bundle" / "manifest.json").is_file()


@pytest.mark.slow
def test_killed_at_any_stage_leaves_the_previous_run_and_resumes_to_the_same_pick(tiny_bert, tmp_path):
    # setup: a complete run in `run`, and a straight run in its own cache to compare with
    # fp32 files only: with int8 copies the tiny files tie on accuracy and the pick follows timing noise
    path = _write_recipe(tmp_path, tiny_bert, distill={"epochs": 4, "checkpoint_every": 5}, quantize={"variants": []})
    cache = tmp_path / "cache"
    subprocess.run(_command(path, tmp_path / "straight", tmp_path / "straight-cache"), capture_output=True,
                   check=True)
    straight = json.loads((tmp_path / "straight" / "report.json").read_text())
    subprocess.run(_command(path, tmp_path / "run", cache), capture_output=True, check=True)
    before = _digest(tmp_path / "run")
    # execute: a forced rerun into `run`, killed at a random moment (seeded) of each stage, by SIGTERM or SIGKILL
    stages = {"[3/7": signal.SIGTERM, "[4/7": signal.SIGKILL, "[5/7": signal.SIGTERM, "[6/7": signal.SIGKILL}
    delays = random.Random(0)
    for marker, how in stages.items():
        for entry in cache.glob("students/*"):  # so that distillation (stage 4) has work to be killed in
            for file in entry.glob("final.pt*"):
                file.unlink()
        process = subprocess.Popen(_command(path, tmp_path / "run", cache), stderr=subprocess.PIPE, text=True)
        for line in process.stderr:
            if line.startswith(marker):
                time.sleep(delays.uniform(0, 1.0))
                process.send_signal(how)
                break
        rest = process.communicate()[1]
        # assert: the previous run is untouched and no partial folder is visible
        assert process.returncode == (143 if how == signal.SIGTERM else -signal.SIGKILL), (marker, rest)
        assert how == signal.SIGKILL or "interrupted: the half-built folder was removed" in rest
        assert _digest(tmp_path / "run") == before, marker
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".run.")
                    and how == signal.SIGTERM], marker
    resumed = subprocess.run(_command(path, tmp_path / "run", cache), capture_output=True, text=True, check=False)
    # assert: the rerun finishes, clears what SIGKILL left, and picks what the straight run picked
    assert resumed.returncode == 0, resumed.stderr
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".run.")]
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["selected"]["name"] == straight["selected"]["name"]
    assert {r["name"]: r["metrics"] for r in report["files"]} == {r["name"]: r["metrics"] for r in straight["files"]}
