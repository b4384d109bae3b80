"""Stage 4: distill a student against the teacher's cached outputs.

The distillation set is every task's training inputs plus the unlabeled corpora (never an
evaluation input); the student trains on the recipe's losses (losses.py) in trainer.py's
resumable loop, then its classification heads are refit on its own embeddings. What the
student scored before training is recorded too: what distillation bought is the difference.
Static-embedding students train on the same losses with their own settings (distill.static_lr,
static_epochs, static_batch_size): a table of free rows needs a far higher rate than a pretrained
transformer. With distill.workers > 1 each student trains data-parallel on that many Ray Train workers
(ddp.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from edgekit.errors import RecipeError
from edgekit.recipe import DistillSpec, Recipe
from edgekit.stages.measure import Lab, score, without_predictions
from edgekit.stages.students import Candidate, is_static
from edgekit.trust.cache import Cache, cache_key, digest_texts

STATIC_SETTINGS = ("static_lr", "static_epochs", "static_batch_size")  # distill keys of static students only


@dataclass(frozen=True)
class Distillation:
    """What every student learns from: the teacher, the texts (or images) it ran on (distillation_set's inputs and
    their digest), its outputs on them and the tasks' labels where an input has one (-1 elsewhere)."""

    teacher: object
    inputs: object  # inputs.TextInputs or an image batch source
    labels: dict
    digest: str
    teacher_out: dict


def distillation_set(recipe: Recipe, tasks, teacher):
    """(inputs, {classification task: labels}, inputs digest): what the student learns from: every task's
    training inputs plus the unlabeled corpora, deduplicated; labels per classification task (-1 where an
    input has none)."""
    import numpy as np

    from edgekit.data.inputs import ImageInputs, TextInputs
    from edgekit.data.tasks import load_unlabeled

    if recipe.teacher.images:
        task = tasks[0]
        return ImageInputs(task.train["image"]), {task.name: task.train["label"]}, \
            cache_key("images", task.digest)
    texts = []
    for task in tasks:
        texts.extend(task.train_inputs())
    for spec in recipe.distill.unlabeled:
        texts.extend(load_unlabeled(spec))
    # Evaluation inputs never become distillation inputs, even unlabeled: the student
    # would otherwise have matched the teacher on the very texts it is scored on.
    held_out = {t for task in tasks for t in task.texts("test")}
    texts = [t for t in dict.fromkeys(texts) if t not in held_out]
    if recipe.distill.max_texts and len(texts) > recipe.distill.max_texts:
        keep = np.sort(np.random.default_rng(recipe.distill.seed).permutation(len(texts))[:recipe.distill.max_texts])
        texts = [texts[i] for i in keep]
    if not texts:
        raise RecipeError("there is nothing to distill on: every task is eval_only and distill.unlabeled is "
                          "empty. Name an unlabeled corpus in distill.unlabeled, or give a task a training split.")
    position = {text: i for i, text in enumerate(texts)}
    labels = {}
    for task in tasks:
        if task.kind.labelled:
            column = np.full(len(texts), -1, dtype=np.int64)
            for text, label in zip(task.train["text"], task.train["label"]):
                if text in position:
                    column[position[text]] = label
            labels[task.name] = column
    return TextInputs(teacher.tokenizer, texts, teacher.max_length), labels, digest_texts(texts)


def refit_heads(student, recipe: Recipe, tasks, teacher) -> dict[str, int]:
    """Refit each classification task's linear head on the student's own embeddings of the task's training
    split, as the teacher's head was fit on the teacher's: a distilled student's embeddings are close to the
    teacher's (0.80-0.85 cosine, FIELD-NOTES) but not the same, and the teacher's head reads them off-axis
    (distilled L1 students with the teacher's head kept 95.7% of sentiment accuracy after 3 and after 6
    epochs). Returns {task: training examples}; {} when the recipe keeps the teacher's heads."""
    from edgekit.data.inputs import TextInputs, run_model
    from edgekit.stages.teacher import fit_linear_head

    spec = recipe.teacher
    if not (recipe.distill.refit_heads and spec.kind == "sentence-encoder" and spec.head == "linear"):
        return {}
    refit = {}
    for task in tasks:
        if task.kind.labelled:
            inputs = TextInputs(teacher.tokenizer, task.train["text"], teacher.max_length)
            embeddings = run_model(student, inputs)["embedding"]
            student.heads[task.name] = fit_linear_head(embeddings, task.train["label"], len(task.labels))
            refit[task.name] = len(inputs)
    return refit


def undistilled(student, init_digest: str, recipe: Recipe, teacher, lab: Lab) -> dict:
    """Per-task metrics of the student as initialized from the teacher, before any training (its heads refit
    like the distilled student's, when the recipe refits them): what distillation bought is the difference."""
    import copy
    import tempfile

    from edgekit.runtime.export import export_network

    tasks, cache = list(lab.tasks), lab.cache
    key = cache_key("undistilled", init_digest, [(t.name, t.digest) for t in tasks], teacher.max_length,
                    recipe.distill.refit_heads)
    # The report reads each task's metric and value: an entry without them is recomputed, not a traceback later.
    metrics = cache.load_json("undistilled", key, lambda found: None if all(
        isinstance(m, dict) and "metric" in m and isinstance(m.get("value"), (int, float, type(None)))
        for m in found.values()) else "does not hold a metric and value for each task")
    if metrics is None:
        student = copy.deepcopy(student)
        refit_heads(student, recipe, tasks, teacher)
        with tempfile.TemporaryDirectory(prefix="edgekit-undistilled-") as tmp:
            path = Path(tmp) / "model.onnx"
            export_network(student, path, lab.exporting.parity)
            metrics = without_predictions(score(path, "cpu", lab.scoring, cache))
        cache.save_json("undistilled", key, metrics)
    return metrics


def distill(student, init: dict, candidate: Candidate, spec: DistillSpec, distillation: Distillation, cache: Cache,
            echo: Callable[[str], None], stop_after: int | None = None) -> dict:
    """Train the candidate's student (untrained: its weights are part of the key) in place against the teacher;
    resumes from the cache's checkpoint. Returns the training history distillation.json keeps. `stop_after`: see
    trainer.train (tests interrupt)."""
    import torch

    from edgekit.modeling.networks import state_digest
    from edgekit.stages.distill.losses import LIVE_TEACHER, total_loss
    from edgekit.stages.distill.trainer import TrainSettings, train

    init_digest = state_digest(student)
    teacher, inputs, teacher_out = distillation.teacher, distillation.inputs, distillation.teacher_out
    live = {LIVE_TEACHER[loss.name] for loss in spec.losses if loss.name in LIVE_TEACHER}
    layer_map = dict(enumerate(candidate.arch.get("keep") or range(candidate.arch.get("depth", 0))))
    cached = {"logits": {t: torch.from_numpy(v) for t, v in teacher_out["logits"].items()}}
    if "embedding" in teacher_out:
        cached["embedding"] = torch.from_numpy(teacher_out["embedding"])
    label_tensors = {task: torch.from_numpy(column) for task, column in distillation.labels.items()}
    # Only losses on the teacher's internals run it: otherwise the step (pickled to Ray workers when
    # distill.workers > 1) does not carry it.
    teacher_model = teacher.model if live else None

    def step_loss(model, indices):
        batch = inputs.batch(indices)
        index = torch.from_numpy(indices)
        student_out = model.internals(**batch, hidden="hidden" in live, attention="attention" in live)
        teacher_side = {"logits": {t: v[index] for t, v in cached["logits"].items()}}
        if "embedding" in cached:
            teacher_side["embedding"] = cached["embedding"][index]
        if live:
            with torch.no_grad():
                teacher_side.update({k: v for k, v in teacher_model.internals(
                    **batch, hidden="hidden" in live, attention="attention" in live).items() if k in live})
        extras = {"labels": {t: v[index] for t, v in label_tensors.items()}, "layer_map": layer_map}
        return total_loss(spec.losses, student_out, teacher_side, extras)

    static = is_static(candidate)
    if spec.freeze_embeddings and hasattr(student, "backbone") and not static:  # a static table IS the student
        words = student.backbone.get_input_embeddings()
        if words.weight.shape == teacher.model.backbone.get_input_embeddings().weight.shape:
            words.weight.requires_grad_(False)
    if static:
        # No weight decay on the table: AdamW's decay shrinks every row every step, gradient or not, so it
        # would erode the teacher-made rows of tokens a batch rarely holds while buying nothing (the
        # embedding is normalized: a uniform shrink of the table does not regularize what it outputs).
        settings = TrainSettings(epochs=spec.static_epochs, batch_size=spec.static_batch_size, lr=spec.static_lr,
                                 seed=spec.seed, checkpoint_every=spec.checkpoint_every,
                                 no_decay=("backbone.table.",))
    else:
        settings = TrainSettings(epochs=spec.epochs, batch_size=spec.batch_size, lr=spec.lr, seed=spec.seed,
                                 checkpoint_every=spec.checkpoint_every)
    # refit_heads acts after training: the trained weights do not depend on it. Each kind of student's key holds
    # the settings it trains with only (a transformer's, as before static students existed).
    unused = {"lr", "epochs", "batch_size", "freeze_embeddings"} if static else set(STATIC_SETTINGS)
    # Workers join the key only above 1: data-parallel weights differ from one process's in the last bits (the
    # order of float sums, padding per slice, each rank's own dropout masks, per-slice means of token- or
    # label-weighted losses), and one process keeps the keys every earlier cache entry has.
    if spec.workers == 1:
        unused.add("workers")
    key = cache_key("student", teacher.digest, candidate.arch, spec.model_dump(exclude={"refit_heads", *unused}),
                    distillation.digest, init_digest)
    started = time.perf_counter()
    folder, desc = cache.folder("students", key), f"distilling {candidate.name}"
    if spec.workers > 1:
        from edgekit.stages.distill.ddp import train_parallel

        # use_gpu False: edgekit trains on CPU (no recipe key asks for CUDA training), so the workers use gloo.
        history = train_parallel(student, len(inputs), step_loss, settings, folder, desc, spec.workers, echo,
                                 stop_after=stop_after, lengths=inputs.lengths())
    else:
        history = train(student, len(inputs), step_loss, settings, folder, desc, echo, stop_after=stop_after,
                        lengths=inputs.lengths())
    history["seconds"] = round(time.perf_counter() - started, 1)
    history["initialized_from_teacher"] = {"copied_tensors": init["copied"], "random_tensors": len(init["random"]),
                                           # static students: the share of variance their PCA kept
                                           **{k: init[k] for k in ("explained_variance",) if k in init}}
    return history


def row_details(candidate: Candidate, student, probed: dict, history: dict, before: dict) -> Callable[[str], dict]:
    """What each evaluation-matrix row of a distilled student's files says about the model, by variant:
    its architecture and size, its probe's latency, its metrics before training and its distillation."""
    from edgekit.modeling.networks import count_parameters
    from edgekit.stages.probe import probe_class

    params = count_parameters(student)

    def details(variant: str) -> dict:
        timed = probed["variants"].get(probe_class(variant))
        return {"architecture": candidate.arch, "params": params,
                "probe_latency_ms": timed["latency_ms"] if timed else None,
                "undistilled_metrics": before,
                "distillation": {k: history[k] for k in ("steps", "seconds", "initialized_from_teacher",
                                                         "heads_refit")}}

    return details


class Trained(NamedTuple):
    """A distilled student (distill_student): the model, its training history, its metrics before training."""

    student: object  # networks.TextModel / StaticModel / ImageModel, heads refit
    history: dict  # what distillation.json keeps
    before: dict  # task -> metric of the untrained student (its heads refit like the trained one's)


def distill_student(candidate: Candidate, recipe: Recipe, distillation: Distillation, lab: Lab) -> Trained:
    """The candidate's student built from the teacher, scored untrained, distilled, its heads refit:
    (student, its training history, its metrics before training)."""
    from edgekit.modeling.networks import state_digest
    from edgekit.stages.students import build

    if recipe.distill.workers > 1:  # before any work: a missing Ray is the recipe's problem, said at once
        from edgekit.stages.distill.ddp import require_ray

        require_ray(recipe.distill.workers)
    teacher, tasks = distillation.teacher, list(lab.tasks)
    student, init = build(candidate, recipe, teacher, tasks, distillation.inputs, lab.cache)
    before = undistilled(student, state_digest(student), recipe, teacher, lab)
    history = distill(student, init, candidate, recipe.distill, distillation, lab.cache, lab.echo)
    history["heads_refit"] = refit_heads(student, recipe, tasks, teacher)
    return Trained(student, history, before)

