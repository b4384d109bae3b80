"""The Ray executor against a REAL local Ray cluster (ray.init on this machine; Ray has no local mode any more):
the same run as in process, timing alone on its node, a killed worker retried, no target node an upfront error.

Marked `ray` (make test-ray installs edgekit[ray] and runs them); the in-process checks run everywhere."""

import os
import sys

import pytest

from edgekit.errors import ExecutorError
from edgekit.runtime.executor import InProcess, RayExecutor, executor_for, target_resource


def _overlaps(a: dict, b: dict) -> bool:
    return a["node"] == b["node"] and a["start"] < b["end"] and b["start"] < a["end"]


@pytest.fixture(scope="module")
def runs(tiny_bert, tmp_path_factory):
    """The tiny-teacher pipeline twice, on separate caches: in process, then on a local Ray cluster. Each Ray
    task computes on as many threads as this machine has cores, as the in-process run does: the trained weights
    then agree to the bit (on fewer threads, sums are added in another order, and an int8 file's rounding can
    tip: cpus_per_task 1 moved one int8 file's Lee Spearman by 2e-5 here)."""
    pytest.importorskip("ray")
    from edgekit.pipeline import distill_and_export
    from edgekit.testing import tiny_recipe

    recipe = tiny_recipe(tiny_bert, students={"layers": [1], "max_students": 1, "static": [16]})
    folder = tmp_path_factory.mktemp("executors")
    return {kind: distill_and_export(recipe, out=folder / kind, cache_dir=folder / f"cache-{kind}", executor=kind,
                                     echo=lambda message: None).data
            for kind in ("in-process", "ray")}


def _metrics(data: dict) -> dict:
    return {(f["name"], f["provider"]): {t: m["value"] for t, m in f["metrics"].items()} for f in data["files"]}


@pytest.mark.ray
def test_a_run_on_ray_picks_and_scores_as_the_same_run_in_process(runs):
    # assert: the same files, metrics and pick, whichever executor ran them
    local, distributed = runs["in-process"], runs["ray"]
    assert _metrics(distributed) == _metrics(local)
    # The pick: one that scores the same. The tiny teacher scores at chance, so several files keep the same share
    # of it on every task, and among those the measured latency decides: timing noise, in any two runs alike.
    kept = {(f["name"], f["provider"]): f["retention"] for f in local["files"]}
    assert kept[(distributed["selected"]["name"], "cpu")] == kept[(local["selected"]["name"], "cpu")]
    assert local["executor"]["name"] == "in-process" and distributed["executor"]["name"] == "ray"


@pytest.mark.ray
def test_ray_ran_the_work_in_worker_processes_and_timing_never_beside_other_work(runs):
    # setup
    record = runs["ray"]["executor"]
    tasks = record["tasks"]
    # assert: at least two worker processes, none of them the driver
    assert len({t["pid"] for t in tasks}) >= 2 and os.getpid() not in {t["pid"] for t in tasks}
    assert {t["kind"] for t in tasks} == {"compute", "timing"}
    assert {"teacher files", "time students", "distill L1", "distill S16"} <= {t["what"] for t in tasks}
    # assert: every timing task had its node to itself, from its start to its end
    for timed in (t for t in tasks if t["kind"] == "timing"):
        assert not [other["what"] for other in tasks if other is not timed and _overlaps(timed, other)]
    assert record["timing_node"]["cpus"] == os.cpu_count() and record["resource"] == "edgekit-target:default"


@pytest.mark.ray
def test_a_worker_killed_during_a_task_is_retried_and_the_result_is_unchanged(tmp_path):
    # setup: a task whose process dies the first time it runs, as a node lost mid-task does
    pytest.importorskip("ray")
    marker = tmp_path / "died"

    def dies_once():
        if not marker.exists():
            marker.write_text(str(os.getpid()))
            os._exit(1)
        return 6 * 7

    executor = RayExecutor(target_resource(None))
    try:
        # execute
        results = executor.compute([("dies once", dies_once)]) + executor.timing([("dies once", dies_once)])
    finally:
        executor.close()
    # assert: retried in another process, the same answer
    assert results == [42, 42]
    assert executor.spans[0]["pid"] != int(marker.read_text())


@pytest.mark.ray
def test_a_cluster_without_a_target_node_fails_up_front_saying_how_to_start_one():
    # setup: a Ray instance whose only node carries no edgekit-target resource
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=1, include_dashboard=False)
    try:
        # execute
        with pytest.raises(ExecutorError) as error:
            RayExecutor(target_resource("x86-server"))
    finally:
        ray.shutdown()
    # assert
    message = str(error.value)
    assert "carries the resource 'edgekit-target:x86-server'" in message
    assert """--resources '{"edgekit-target:x86-server": 1}'""" in message


def test_in_process_runs_the_calls_here_in_order_and_records_them():
    # execute
    executor = executor_for("in-process", None)
    results = executor.compute([("a", lambda: 1), ("b", lambda: 2)]) + executor.timing([("c", lambda: 3)])
    # assert
    assert isinstance(executor, InProcess) and results == [1, 2, 3]
    assert [(t["what"], t["kind"], t["pid"]) for t in executor.record()["tasks"]] == [
        ("a", "compute", os.getpid()), ("b", "compute", os.getpid()), ("c", "timing", os.getpid())]


def test_executor_mistakes_name_the_fix(monkeypatch):
    # execute / assert
    with pytest.raises(ExecutorError, match="add --executor ray"):
        executor_for("in-process", None, address="ray://head:10001")
    monkeypatch.setitem(sys.modules, "ray", None)  # Ray not installed
    with pytest.raises(ExecutorError, match=r"pip install 'edgekit\[ray\]'"):
        executor_for("ray", None)


@pytest.mark.ray
def test_a_run_whose_worker_is_killed_mid_task_finishes_with_the_same_metrics(runs, tiny_bert, tmp_path):
    # setup: a watcher that kills the worker process distilling L1 as soon as it appears (once)
    import signal
    import threading
    from pathlib import Path

    from edgekit.pipeline import distill_and_export
    from edgekit.testing import tiny_recipe

    killed = []

    def worker_of(title: str) -> int | None:
        """The process Ray titles `ray::<task name>` while it runs that task (its command line, in /proc)."""
        for proc in Path("/proc").glob("[0-9]*"):
            try:
                if (proc / "cmdline").read_bytes().startswith(title.encode()):
                    return int(proc.name)
            except OSError:
                continue
        return None

    def kill_once():
        for _ in range(2400):  # up to 2 min
            if (pid := worker_of("ray::distill L1")) is not None:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
            threading.Event().wait(0.05)

    watcher = threading.Thread(target=kill_once, daemon=True)
    watcher.start()
    recipe = tiny_recipe(tiny_bert, students={"layers": [1], "max_students": 1, "static": [16]})
    # execute
    data = distill_and_export(recipe, out=tmp_path / "run", cache_dir=tmp_path / "cache", executor="ray",
                              echo=lambda message: None).data
    watcher.join(timeout=1)
    # assert: the worker died mid-task, Ray ran the task again elsewhere, and nothing changed
    assert killed, "the distillation's worker was never seen, so nothing was killed"
    distill = [t for t in data["executor"]["tasks"] if t["what"] == "distill L1"]
    assert len(distill) == 1 and distill[0]["pid"] != killed[0]
    assert _metrics(data) == _metrics(runs["in-process"])
