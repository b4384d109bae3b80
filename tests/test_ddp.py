"""distill.workers > 1: one student trained data-parallel on Ray Train workers, against a real local Ray cluster.

The student is the tiny recipe's 1-layer student of a 2-layer, 32-wide teacher whose config has no dropout:
then 2 workers and one process compute the same gradients (each rank the mean of its half of every global
batch of 16, DDP the average of the two) up to the order of float sums, so their losses and weights can be
held to 1e-4 (they differ by ~1e-7 relative after 38 steps; the weights move by ~1e-2).
Each Ray Train fit starts its worker group afresh (~15 s on 2 loaded cores) and the file runs three: ~75 s with
the cluster's start, so the tests that need Ray are marked `ray` (`pytest -m ray tests/test_ddp.py`).
"""

import json
import sys

import numpy as np
import pytest
import torch

from edgekit.errors import ExecutorError
from edgekit.modeling.networks import state_digest
from edgekit.stages.distill.stage import Distillation, distill, distillation_set
from edgekit.stages.distill.trainer import CHECKPOINT, FINAL, Ranks, _reseed, _shard
from edgekit.stages.loading import load_tasks
from edgekit.stages.students import build, candidates
from edgekit.stages.teacher import prepare_teacher
from edgekit.testing import tiny_recipe, tiny_text_model
from edgekit.trust.cache import Cache

STEPS = 2 * 19  # 2 epochs of the tiny recipe's 300 texts in batches of 16


@pytest.fixture(scope="module")
def cluster():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def problem(tmp_path_factory):
    """(run, root): run(cache, stop_after=None, **distill keys) builds the tiny student afresh and distills it,
    returning (student, history, its untrained state)."""
    root = tmp_path_factory.mktemp("ddp")
    folder = tiny_text_model(root / "teacher")
    config = json.loads((folder / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)  # see the module docstring
    (folder / "config.json").write_text(json.dumps(config))
    shared = Cache(root / "shared")
    recipe = tiny_recipe(folder, distill={"epochs": 2})
    tasks = load_tasks(recipe)
    teacher = prepare_teacher(recipe, tasks, shared)
    inputs, labels, digest = distillation_set(recipe, tasks, teacher)
    teacher_out = teacher.outputs(inputs, digest, shared)
    candidate = candidates(recipe, teacher, inputs)[0]

    def run(cache: Cache, stop_after=None, **distill_keys):
        recipe = tiny_recipe(folder, distill={"epochs": 2, **distill_keys})
        student, init = build(candidate, recipe, teacher, tasks, inputs, shared)
        untrained = {name: tensor.clone() for name, tensor in student.state_dict().items()}
        history = distill(student, init, candidate, recipe.distill,
                          Distillation(teacher, inputs, labels, digest, teacher_out), cache, print, stop_after=stop_after)
        return student, history, untrained

    return run, root


@pytest.fixture(scope="module")
def both(problem, cluster):
    """The same student distilled in one process and on 2 workers, in one cache."""
    run, root = problem
    cache = Cache(root / "both")
    return run(cache), run(cache, workers=2), cache


@pytest.mark.ray
def test_two_workers_end_with_identical_weights_close_to_one_process(both):
    # setup / execute: the fixture
    (single, one, untrained), (student, two, _), cache = both
    # assert: each rank's weights, digested on the rank, are the same, and are what the driver's student holds
    assert two["workers"] == 2 and len(two["rank_digests"]) == 2
    assert len(set(two["rank_digests"])) == 1 and two["rank_digests"][0] == state_digest(student)
    assert two["steps"] == one["steps"] == STEPS  # the global batch is distill.batch_size, as in one process
    # assert: every epoch's loss and every weight are one process's within 1e-4 (see the module docstring), and
    # the weights moved from where they started by far more than that
    for a, b in zip(one["loss_history"], two["loss_history"], strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4) and b["mse"] == pytest.approx(a["mse"], rel=1e-4)
    moved = 0.0
    for name, weight in student.state_dict().items():
        assert torch.allclose(weight, single.state_dict()[name], rtol=0, atol=1e-4), name
        moved = max(moved, float((weight - untrained[name]).abs().max()))
    assert moved > 1e-2
    # assert: 2 workers are their own cache entry, rank 0 wrote its final weights there and left no checkpoint
    folders = list((cache.root / "students").iterdir())
    assert len(folders) == 2 and all((f / FINAL).exists() and not (f / CHECKPOINT).exists() for f in folders)


@pytest.mark.ray
def test_a_killed_two_worker_run_resumes_to_the_same_weights(problem, both):
    # setup: a 2-worker run stopped after step 10 (its last checkpoint is step 8: tiny_recipe checkpoints every 4)
    run, root = problem
    cache = Cache(root / "killed")
    _, first, _ = run(cache, stop_after=10, workers=2)
    (folder,) = (cache.root / "students").iterdir()
    stopped = {path.name for path in folder.iterdir()}
    # execute
    resumed, second, _ = run(cache, workers=2)
    # assert: it redid steps 9 and 10 from rank 0's checkpoint, with the same batches, to the same weights
    _, straight, _ = both[1]
    assert first["steps"] == 10 and CHECKPOINT in stopped and FINAL not in stopped
    assert second["resumed_from"] == 8 and second["steps"] == STEPS
    assert state_digest(resumed) == straight["rank_digests"][0] == second["rank_digests"][0]
    assert second["loss_history"] == straight["loss_history"]


@pytest.mark.ray
def test_more_workers_than_the_cluster_holds_is_an_error_not_a_wait(problem, cluster, tmp_path):
    # setup
    run, _ = problem
    # execute / assert: Ray Train would wait forever for a third CPU on this 2-CPU cluster
    with pytest.raises(ExecutorError, match="needs 3 CPUs .* has 2 in all. Fix: lower distill.workers"):
        run(Cache(tmp_path), workers=3)


def test_workers_without_ray_name_the_extra(problem, monkeypatch, tmp_path):
    # setup: `import ray` fails, as where the extra is not installed
    run, _ = problem
    monkeypatch.setitem(sys.modules, "ray", None)
    # execute / assert
    with pytest.raises(ExecutorError, match=r"distill.workers: 2 .* Fix: pip install 'edgekit\[ray\]', or set "
                                            r"distill.workers: 1"):
        run(Cache(tmp_path), workers=2)


def test_ranks_split_each_batch_in_order_and_a_rank_left_empty_adds_nothing():
    # setup
    batch = np.array([7, 3, 9, 1, 4])
    # execute
    halves = [_shard(batch, Ranks(rank, 2)) for rank in range(2)]
    thin = [_shard(batch[:1], Ranks(rank, 2)) for rank in range(2)]
    # assert: the slices rebuild the batch, shares weigh each rank by its examples; a rank with none still
    # runs one example (every rank joins every all-reduce) at share 0
    assert np.array_equal(np.concatenate([part for part, _ in halves]), batch)
    assert [share for _, share in halves] == [3 / 5, 2 / 5]
    assert [share for _, share in thin] == [1.0, 0.0] and list(thin[1][0]) == [7]


def test_rank_zero_keeps_the_single_process_dropout_and_other_ranks_draw_their_own():
    # execute
    draws = {}
    for rank in (0, 1):
        _reseed(5, 12, rank)
        draws[rank] = torch.rand(4)
    torch.manual_seed(5 * 1_000_003 + 12)  # the seed one process always used at step 12 (earlier caches resume)
    # assert
    assert torch.equal(draws[0], torch.rand(4)) and not torch.equal(draws[0], draws[1])
