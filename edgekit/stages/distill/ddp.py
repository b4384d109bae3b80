"""One student trained on several workers: trainer.py's loop, data-parallel (DDP), under Ray Train's TorchTrainer.

`distill.workers: N` starts N Ray Train workers (gloo on CPU, NCCL on GPU). Each takes its slice of every
global batch (distill.batch_size examples, the batches and order one process takes), DDP averages the
gradients, and rank 0 alone reads and writes the checkpoint and the final weights, in the folder a single
process uses: a killed run resumes from rank 0's checkpoint with the same batch order. So every worker
must see that folder: on a cluster the cache is on storage every node reads and writes (as the Ray
executor needs anyway). Rank 0 also sends the final weights back, and every rank's digest of them: ranks
that ended apart are a bug, and raise.

Ray is imported only inside functions, and only for workers > 1: `edgekit[ray]` is an optional extra.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from edgekit.errors import EdgekitError, ExecutorError
from edgekit.runtime.executor import RAY_FIX


def require_ray(workers: int):
    """The `ray` module, or an ExecutorError that says how to get it."""
    try:
        import ray
        import ray.train.torch  # ray without its `train` extra lacks TorchTrainer's dependencies
    except ImportError as e:
        raise ExecutorError(f"distill.workers: {workers} trains each student on {workers} Ray Train workers, and "
                            f"Ray Train cannot be imported here ({e}). Fix: {RAY_FIX}, or set distill.workers: 1 "
                            "to train in this process.") from None
    return ray


def _stderr(message: str) -> None:
    # Not print: Ray Train patches print in its workers to log as well as write, and each line came out twice.
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def _worker(config: dict) -> dict | None:
    """One rank: the loop of trainer.py on its slice of each batch. Rank 0 returns what the driver needs."""
    import ray
    import ray.train
    import ray.train.torch
    import torch.distributed as dist

    from edgekit.modeling.networks import state_digest
    from edgekit.stages.distill.trainer import Ranks, train

    job = ray.get(config["job"])
    context = ray.train.get_context()
    ranks = Ranks(context.get_world_rank(), context.get_world_size())
    model = job["model"]
    if config["use_gpu"]:
        model.to(ray.train.torch.get_device())
    history = train(model, job["n_examples"], job["step_loss"], job["settings"], Path(job["folder"]), job["desc"],
                    _stderr, stop_after=job["stop_after"], lengths=job["lengths"], ranks=ranks)
    digests = [None] * ranks.world
    dist.all_gather_object(digests, state_digest(model))
    if ranks.rank != 0:
        return None
    # numpy: Ray Train refuses to return torch tensors from a worker
    return {"history": history, "rank_digests": digests,
            "state": {name: tensor.detach().cpu().numpy() for name, tensor in model.state_dict().items()}}


def _failure(error: Exception) -> Exception:
    """The error to raise for a failed fit: a worker's own EdgekitError (its message names the fix), else Ray's."""
    failures = getattr(error, "worker_failures", None) or {}
    for rank in sorted(failures):
        cause = failures[rank]
        for _ in range(8):  # Ray's wrappers (RayTaskError keeps the original as .cause), then __cause__ chains
            if cause is None or (isinstance(cause, EdgekitError) and not hasattr(cause, "cause")):
                break
            cause = getattr(cause, "cause", None) or cause.__cause__
        if isinstance(cause, EdgekitError):
            return cause
    return error


def _check_capacity(ray, workers: int, use_gpu: bool) -> None:
    """Ray Train waits without end for workers a cluster can never hold: say so instead."""
    have = ray.cluster_resources()
    need, unit = ("GPU", "GPUs") if use_gpu else ("CPU", "CPUs")
    if have.get(need, 0) < workers:
        raise ExecutorError(f"distill.workers: {workers} needs {workers} {unit} for its Ray Train workers (one "
                            f"each), and the Ray cluster has {have.get(need, 0):g} in all. Fix: lower "
                            f"distill.workers, or add nodes to the cluster.")


def train_parallel(model, n_examples: int, step_loss: Callable, settings, folder: Path, desc: str, workers: int,
                   echo: Callable[[str], None], stop_after: int | None = None, lengths=None,
                   use_gpu: bool = False) -> dict:
    """trainer.train on `workers` Ray Train workers; `model` ends with the trained weights, as in process.

    On the Ray cluster this process is connected to (the Ray executor's, or any ray.init before), else on a
    local one started here and shut down after. Returns train()'s history plus "workers" and "rank_digests"
    (each rank's state_digest of its final weights, all equal). `use_gpu`: a GPU per worker and NCCL; the model
    moves to it, so `step_loss` must put its batch on the model's device (stage.distill's does not: edgekit
    trains on CPU, and no recipe key asks for CUDA training yet)."""
    from edgekit.stages.distill.trainer import FINAL, _load, _save, train

    ray = require_ray(workers)
    finished = _load(folder / FINAL, echo)
    if finished is not None:  # nothing to train: load it here, as one process would
        return train(model, n_examples, step_loss, settings, folder, desc, echo)
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    started = not ray.is_initialized()
    if started:
        # A local cluster as large as the machine, or as the workers (each holds one CPU, threads share cores).
        ray.init(num_cpus=max(workers, os.cpu_count() or 1), include_dashboard=False, log_to_driver=True)
    storage = tempfile.mkdtemp(prefix="edgekit-ray-train-")  # Ray Train's run records; checkpoints are ours
    try:
        _check_capacity(ray, workers, use_gpu)
        # The job goes through the object store once, not pickled into each worker's config.
        job = ray.put({"model": model, "n_examples": n_examples, "step_loss": step_loss, "settings": settings,
                       "folder": str(folder), "desc": desc, "stop_after": stop_after, "lengths": lengths})
        trainer = TorchTrainer(
            _worker, train_loop_config={"job": job, "use_gpu": use_gpu},
            scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu),
            torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
            # A failed worker fails the fit: rerunning resumes from rank 0's checkpoint, and a deterministic
            # error (a loss that cannot apply) would only repeat.
            run_config=RunConfig(name=f"edgekit-{folder.name[:16]}", storage_path=storage,
                                 failure_config=FailureConfig(max_failures=0)))
        try:
            result = trainer.fit()
        except Exception as e:  # Ray Train wraps a worker's exception: raise the worker's own
            raise _failure(e) from e
        if result.error is not None:
            raise _failure(result.error) from result.error
        out = result.return_value
    finally:
        shutil.rmtree(storage, ignore_errors=True)
        if started:
            ray.shutdown()
    if len(set(out["rank_digests"])) != 1:
        raise RuntimeError(f"data-parallel ranks ended with different weights ({out['rank_digests']}): a bug in "
                           "edgekit's DDP loop, not in the recipe")
    import torch

    model.load_state_dict({name: torch.from_numpy(array.copy()) for name, array in out["state"].items()})
    model.eval()
    history = out["history"]
    if history["steps"] >= settings.epochs * -(-n_examples // settings.batch_size) and not (folder / FINAL).exists():
        # Rank 0 ran on a machine that does not share this folder: keep the weights here all the same.
        echo(f"  {folder} is not shared with the Ray worker that trained {desc}: its checkpoints stayed there "
             "(a killed run would not resume). Put the cache on storage every node sees.")
        _save({"model": model.state_dict(), "steps": history["steps"], "loss_history": history["loss_history"]},
              folder / FINAL)
    return {**history, "workers": workers, "rank_digests": out["rank_digests"]}
