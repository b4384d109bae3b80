"""Where a run's independent units of work execute: in this process (the default), or as Ray tasks.

The pipeline hands an executor plain calls (a stage function with its inputs bound) of two kinds:
- compute: teacher outputs, distilling a student, exporting and scoring it. On Ray these run anywhere in
  the cluster, each on `cpus_per_task` CPUs (torch computes on that many threads, so a task computes as
  an in-process run on a machine of that size would).
- timing: anything that times a file (the teacher's files, the probes, the students' rounds, the
  accuracy-aware int8 search). A latency measured while other work shares the cores is wrong, so on Ray
  these run only on the node carrying the resource `edgekit-target:<name>`, reserving every CPU of that
  node: one timing task at a time there, and nothing else beside it. Every timing of a run happens on
  that one node, so the files of a comparison are never timed on different machines.

Either way the calls return what the stage function returns, exceptions included, and the driver writes
the run folder as it always does: the run is the same whichever executor ran it. Ray needs the run folder
and the cache on storage every node reads and writes (a shared path), and edgekit installed on every node.
A worker lost mid-task is retried (Ray's max_retries); a task that raises is not (the error is the run's).
Each call's span (what, kind, node, process, start, end) is recorded: report.json `executor` holds them.

ray is imported only here and only when asked for (`edgekit[ray]`): importing edgekit stays light.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from edgekit.errors import ExecutorError

RESOURCE_PREFIX = "edgekit-target:"
RAY_FIX = "pip install 'edgekit[ray]'"
MAX_RETRIES = 3  # Ray's default for tasks, spelled out: a worker that dies is retried this often


def target_resource(target: str | None) -> str:
    """The custom Ray resource a node that times for `target` (a profile name; None: the recipe names none)
    carries: `ray start --resources '{"edgekit-target:x86-server": 1}'`."""
    return RESOURCE_PREFIX + (target or "default")


def _traced(what: str, kind: str, threads: int | None, call: Callable):
    """Run `call` and return (its result, its span); on a Ray worker, first give torch the task's CPUs."""
    if threads:
        import torch

        torch.set_num_threads(threads)
    start = time.time()
    result = call()
    return result, {"what": what, "kind": kind, "node": platform.node(), "pid": os.getpid(), "start": start,
                    "end": time.time()}


@dataclass
class InProcess:
    """Every call in this process, one after the other: edgekit's default."""

    name: str = "in-process"
    spans: list[dict] = field(default_factory=list)

    def compute(self, calls: list[tuple[str, Callable]]) -> list:
        return [self._one(what, "compute", call) for what, call in calls]

    here = compute

    def timing(self, calls: list[tuple[str, Callable]]) -> list:
        return [self._one(what, "timing", call) for what, call in calls]

    def _one(self, what: str, kind: str, call: Callable):
        result, span = _traced(what, kind, None, call)
        self.spans.append(span)
        return result

    def record(self) -> dict:
        return {"name": self.name, "tasks": self.spans}

    def close(self) -> None:
        pass


class RayExecutor:
    """Calls as Ray tasks on a cluster (`address`) or on a local Ray instance started here (address None),
    which then carries the target resource itself: this machine times, as in process."""

    name = "ray"

    def __init__(self, resource: str, address: str | None = None, cpus_per_task: int | None = None):
        try:
            import ray
        except ImportError:
            raise ExecutorError(f"--executor ray needs Ray, which is not installed here. Fix: {RAY_FIX}, or run "
                                "without --executor (in process).") from None
        self.ray, self.resource, self.address, self.spans = ray, resource, address, []
        self.started = not ray.is_initialized()
        if self.started:
            try:
                if address is None:
                    ray.init(num_cpus=os.cpu_count() or 1, resources={resource: 1}, include_dashboard=False,
                             log_to_driver=True)
                else:
                    ray.init(address=address, log_to_driver=True)
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise ExecutorError(f"cannot connect to the Ray cluster at {address!r}: {e}. Fix: start it with "
                                    "`ray start --head` (or name its address with --address), or run without "
                                    "--executor.") from None
        nodes = [n for n in ray.nodes() if n.get("Alive") and n["Resources"].get(resource)]
        if not nodes:
            where = f"at {address}" if address else "this process is connected to"
            raise ExecutorError(
                f"no node of the Ray cluster {where} carries the resource '{resource}', and timing runs only there "
                f"(a latency measured beside other work is wrong). Fix: on the machine that is the target, run "
                f"`ray start --address {address or 'HEAD:6379'} --resources '{{\"{resource}\": 1}}'` (or "
                f"`--num-cpus N` too, to give it fewer cores), then rerun.")
        self.node = nodes[0]
        self.node_cpus = int(self.node["Resources"].get("CPU", 1))
        self.cpus_per_task = cpus_per_task or self.node_cpus

    def here(self, calls: list[tuple[str, Callable]]) -> list:
        """In the driver: work that schedules Ray work of its own (a DDP distillation's Ray Train workers), which
        a task holding CPUs could wait on for ever."""
        results = []
        for what, call in calls:
            result, span = _traced(what, "driver", None, call)
            results.append(result)
            self.spans.append(span)
        return results

    def _submit(self, what: str, kind: str, call: Callable, options: dict):
        threads = options["num_cpus"]
        # Timing and compute tasks run in worker processes of their own (Ray keeps a pool per runtime env): a
        # timing process never holds what a training left behind (its threads, its memory).
        remote = self.ray.remote(_traced).options(max_retries=MAX_RETRIES, retry_exceptions=False, name=what,
                                                  runtime_env={"env_vars": {"EDGEKIT_TASK_KIND": kind}}, **options)
        return remote.remote(what, kind, threads, call)

    def _gather(self, refs: list) -> list:
        results = []
        try:
            for result, span in self.ray.get(refs):
                results.append(result)
                self.spans.append(span)
        except self.ray.exceptions.RayTaskError as e:
            cause = getattr(e, "cause", None)
            if isinstance(cause, Exception):  # the stage's own error (an EdgekitError says what to fix)
                raise cause from None
            raise
        return results

    def compute(self, calls: list[tuple[str, Callable]]) -> list:
        return self._gather([self._submit(what, "compute", call, {"num_cpus": self.cpus_per_task})
                             for what, call in calls])

    def timing(self, calls: list[tuple[str, Callable]]) -> list:
        """Pinned to the target node, every CPU of it reserved and its one unit of the target resource held:
        nothing else runs beside it. They could only run one at a time anyway: submitted so, in order."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        pinned = {"num_cpus": self.node_cpus, "resources": {self.resource: 1},
                  "scheduling_strategy": NodeAffinitySchedulingStrategy(self.node["NodeID"], soft=False)}
        return [self._gather([self._submit(what, "timing", call, pinned)])[0] for what, call in calls]

    def record(self) -> dict:
        return {"name": self.name, "address": self.address, "resource": self.resource,
                "timing_node": {"host": self.node.get("NodeManagerHostname"), "id": self.node["NodeID"],
                                "cpus": self.node_cpus},
                "cpus_per_task": self.cpus_per_task, "max_retries": MAX_RETRIES, "tasks": self.spans}

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()


def executor_for(kind: str, target: str | None, address: str | None = None, cpus_per_task: int | None = None):
    """The executor a run asks for: "in-process" or "ray"."""
    if kind == "in-process":
        if address:
            raise ExecutorError("--address names a Ray cluster: add --executor ray (or drop --address).")
        return InProcess()
    if kind == "ray":
        return RayExecutor(target_resource(target), address, cpus_per_task)
    raise ExecutorError(f"unknown executor '{kind}': use in-process (the default) or ray.")
