"""The teacher: loaded from the recipe, given its task heads, its outputs cached.

A sentence encoder gets a linear head per classification task, fit on its frozen
embeddings of the task's training split (logistic regression). A sequence or image
classifier can be fine-tuned whole on its task (`head: finetune`); `edgekit:cnn`
is a built-in CNN trained from scratch that way; an image teacher may also be a torch module
file or a Hugging Face ViT (students.IMAGE_FAMILIES). Head fitting and fine-tuning are
cached by teacher weights + data + settings, so a rerun does not repeat them.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING

from edgekit.data.tasks import TaskData
from edgekit.errors import DataError, ModelNotFound, TeacherError
from edgekit.recipe import Recipe
from edgekit.trust.cache import Cache, cache_key, digest_texts, rows_problem

if TYPE_CHECKING:  # measure imports this module's neighbours: its types only
    from edgekit.stages.measure import Lab


@dataclass
class Teacher:
    model: object  # networks.TextModel or networks.ImageModel
    tokenizer: object | None  # None for image teachers
    tokenizer_source: str | None  # folder or hub id the tokenizer files come from
    digest: str  # sha256 of the prepared weights (heads included)
    max_length: int
    prepared: dict = field(default_factory=dict)  # what head fitting / fine-tuning did

    encoder_digest: str = ""  # sentence encoders: the weights without heads (what embeddings depend on)

    @property
    def images(self) -> bool:
        """An image teacher (recipe.teacher.images): it has no tokenizer."""
        return self.tokenizer is None

    @property
    def token_limit(self) -> int | None:
        """The most tokens a text teacher takes (models.limit_of its tokenizer and loaded config), or None."""
        from edgekit.modeling.models import limit_of

        config = getattr(getattr(self.model, "backbone", None), "config", None)
        if self.tokenizer is None or config is None:
            return None
        return limit_of(self.tokenizer.model_max_length, config.to_dict())

    def outputs(self, inputs, inputs_digest: str, cache: Cache) -> dict:
        """{"embedding", "logits": {task: ...}} for every input, computed once per
        (teacher weights, inputs) and then read from the cache."""
        from edgekit.data.inputs import run_model

        if getattr(self.model, "kind", None) == "sentence-encoder":
            return self._encoder_outputs(inputs, cache)
        key = cache_key("teacher-outputs", self.digest, inputs_digest, self.max_length)
        stored = cache.load_arrays("teacher-outputs", key, partial(_logits_problem, len(inputs)))
        if stored is None:
            stored = {f"logits/{task}": value for task, value in run_model(self.model, inputs)["logits"].items()}
            for value in stored.values():
                _check_finite(value, inputs)
            cache.save_arrays("teacher-outputs", key, stored)
        return {"logits": {name.split("/", 1)[1]: value for name, value in stored.items()}}

    def _encoder_outputs(self, inputs, cache: Cache) -> dict:
        """Sentence embeddings memoized per text (keyed by the encoder's weights), so fitting
        heads on the training texts and distilling on them plus an unlabeled corpus run the
        teacher once per text; heads are applied to the embeddings afterwards."""
        import numpy as np
        import torch

        from edgekit.data.inputs import run_model

        key = cache_key("teacher-embeddings", self.encoder_digest, self.max_length)
        stored = cache.load_arrays("teacher-embeddings", key, partial(rows_problem, "keys", "embedding"))
        keys = [digest_texts([text])[:24] for text in inputs.texts]
        row = {k: i for i, k in enumerate(stored["keys"].tolist())} if stored else {}
        first = {}
        for i, k in enumerate(keys):
            if k not in row:
                first.setdefault(k, i)
        if first:
            computed = run_model(self.model, inputs.select(list(first.values())))["embedding"]
            _check_finite(computed, inputs, list(first.values()))
            new_keys = np.array(list(first), dtype="<U24")
            stored = {"keys": new_keys, "embedding": computed} if not stored else {
                "keys": np.concatenate([stored["keys"], new_keys]),
                "embedding": np.concatenate([stored["embedding"], computed])}
            cache.save_arrays("teacher-embeddings", key, stored)
            row = {k: i for i, k in enumerate(stored["keys"].tolist())}
        embedding = stored["embedding"][[row[k] for k in keys]]
        with torch.no_grad():
            logits = {name: head(torch.from_numpy(embedding)).numpy() for name, head in self.model.heads.items()}
        return {"embedding": embedding, "logits": logits}


def _logits_problem(count: int, arrays: dict) -> str | None:
    """What a cached teacher-outputs entry lacks (one float logits/<task> array of `count` rows per task), or None."""
    for name, value in arrays.items():
        if not name.startswith("logits/") or value.dtype.kind != "f" or value.ndim != 2 or len(value) != count:
            return f"does not hold {count} rows of float logits per task"
    return None if arrays else "holds no logits"


def _check_finite(values, inputs, rows: list[int] | None = None) -> None:
    """Teacher outputs with NaN or inf would turn every loss into NaN and every student into noise:
    stop before caching or distilling, naming the first input that produced one."""
    import numpy as np

    bad = np.flatnonzero(~np.isfinite(values.reshape(len(values), -1)).all(axis=1))
    if not len(bad):
        return
    index = bad[0] if rows is None else rows[bad[0]]
    example = f" ({inputs.texts[index][:80]!r})" if hasattr(inputs, "texts") else ""
    raise TeacherError(f"the teacher's outputs hold NaN or inf for {len(bad)} of {len(values)} inputs, the first "
                       f"being input #{index}{example}. edgekit will not distill towards them: check the teacher's "
                       "weights (a corrupt or badly converted checkpoint; fp16 weights overflowing) and run it "
                       "on that input in PyTorch.")


def _echo(message: str) -> None:
    print(message, file=sys.stderr)


def fit_linear_head(embeddings, labels, num_classes: int):
    """A logistic-regression head on fixed embeddings, as an nn.Linear producing logits."""
    import numpy as np
    import torch
    from sklearn.linear_model import LogisticRegression

    classifier = LogisticRegression(max_iter=2000).fit(embeddings, labels)
    coef, intercept = classifier.coef_, classifier.intercept_
    if coef.shape[0] == 1:  # binary: one score w.x+b; as two logits (-s/2, s/2) softmax gives the same odds
        coef, intercept = np.vstack([-coef / 2, coef / 2]), np.array([-intercept[0] / 2, intercept[0] / 2])
    weight = np.zeros((num_classes, embeddings.shape[1]), dtype=np.float32)
    bias = np.full(num_classes, -1e4, dtype=np.float32)  # classes absent from training are never predicted
    weight[classifier.classes_] = coef
    bias[classifier.classes_] = intercept
    head = torch.nn.Linear(embeddings.shape[1], num_classes)
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(weight))
        head.bias.copy_(torch.from_numpy(bias))
    return head


def _classification_tasks(tasks: list[TaskData]) -> list[TaskData]:

    return [t for t in tasks if t.kind.labelled]


def _finetune(model, inputs, labels, recipe: Recipe, task: TaskData, cache: Cache, base_digest: str,
              echo: Callable[[str], None]) -> dict:
    """Train the whole teacher with cross-entropy on the task's training split."""
    import torch
    from torch.nn import functional as F

    from edgekit.stages.distill.trainer import TrainSettings, train

    spec = recipe.teacher
    settings = TrainSettings(epochs=spec.epochs, batch_size=spec.batch_size, lr=spec.lr, seed=recipe.distill.seed)
    label_tensor = torch.from_numpy(labels)

    def step_loss(net, indices):
        logits = net.internals(**inputs.batch(indices))["logits"][task.name]
        loss = F.cross_entropy(logits, label_tensor[indices])
        return loss, {"ce": float(loss.detach())}

    key = cache_key("teacher-finetune", base_digest, task.digest, settings.__dict__, spec.max_length)
    echo(f"fine-tuning the teacher on {task.name} ({len(inputs)} examples, {spec.epochs} epochs)")
    return train(model, len(inputs), step_loss, settings, cache.folder("teacher-finetune", key),
                 "teacher fine-tuning", echo)


def _text_teacher(recipe: Recipe, tasks: list[TaskData], cache: Cache, echo, attention: bool) -> Teacher:
    from edgekit.data.inputs import TextInputs
    from edgekit.modeling.models import load_hf, load_tokenizer, teacher_source
    from edgekit.modeling.networks import TextModel, state_digest

    spec = recipe.teacher
    source = teacher_source(spec)
    tokenizer = load_tokenizer(source.location)
    extra = {"attn_implementation": "eager"} if attention else {}
    prepared: dict = {}
    if spec.kind == "sentence-encoder":
        model = TextModel(load_hf(source, "AutoModel", **extra), spec.kind, {}, spec.pooling, spec.normalize,
                          dense=_dense_layers(source))
        teacher = Teacher(model, tokenizer, source.location, "", spec.max_length, prepared,
                          encoder_digest=state_digest(model))
        _check_length(teacher, recipe)
        heads = {}
        for task in _classification_tasks(tasks) if spec.head == "linear" else []:
            inputs = TextInputs(tokenizer, task.train["text"], spec.max_length)
            embeddings = teacher.outputs(inputs, "", cache)["embedding"]
            heads[task.name] = fit_linear_head(embeddings, task.train["label"], len(task.labels))
            prepared[task.name] = {"head": "linear (logistic regression on frozen teacher embeddings)",
                                   "train_examples": len(inputs)}
        model.heads.update(heads)
        teacher.digest = state_digest(model.eval())
        return teacher
    task = tasks[0]
    backbone = _hf_classifier(source, "AutoModelForSequenceClassification", spec, task, recipe.distill.seed, extra)
    model = TextModel(backbone, spec.kind, classifier_task=task.name)
    _check_length(Teacher(model, tokenizer, source.location, "", spec.max_length), recipe)
    if spec.head == "finetune":
        inputs = TextInputs(tokenizer, task.train["text"], spec.max_length)
        prepared[task.name] = {"head": "finetune", **_finetune(model, inputs, task.train["label"], recipe, task,
                                                               cache, state_digest(model), echo)}
    return Teacher(model.eval(), tokenizer, source.location, state_digest(model), spec.max_length, prepared)


def _check_length(teacher: Teacher, recipe: Recipe) -> None:
    """Refuse, before the teacher reads any data, a teacher.max_length it cannot take: the recipe check reads a local
    folder's limit from its files, a hub id's is known only now; and one input of max_length tokens is run, so a
    position table edgekit misreads stops here with the fix, not mid-run with a raw shape error."""
    import torch

    from edgekit.data.inputs import TextInputs
    from edgekit.modeling.models import too_long

    spec, where = recipe.teacher, recipe.where("teacher.max_length")
    if problem := too_long(spec.max_length, teacher.token_limit, spec.model):
        raise TeacherError(f"{where}: {problem}")
    longest = TextInputs(teacher.tokenizer, [" ".join(["a"] * spec.max_length)], spec.max_length)
    try:
        with torch.inference_mode():
            teacher.model.internals(**longest.batch([0]))
    except (RuntimeError, IndexError, ValueError) as e:
        raise TeacherError(f"{where}: teacher '{spec.model}' fails on an input of {len(longest.ids[0])} tokens "
                           f"(teacher.max_length {spec.max_length}): {type(e).__name__}: {str(e).splitlines()[0][:200]}"
                           ". Fix: set teacher.max_length to the length of its position table (config.json's "
                           "max_position_embeddings; RoBERTa-like models take 2 fewer) or less.") from None


def _dense_layers(source):
    """The teacher's sentence-transformers Dense modules, in order (None when it has none)."""
    import torch

    from edgekit.modeling.models import sentence_config
    from edgekit.modeling.sentence_config import load_dense

    config = sentence_config(source)
    if config is None or not config.dense:
        return None
    return torch.nn.Sequential(*(load_dense(dense) for dense in config.dense))


def _image_teacher(recipe: Recipe, tasks: list[TaskData], cache: Cache, echo, attention: bool) -> Teacher:
    import torch

    from edgekit.data.inputs import ImageInputs
    from edgekit.modeling.models import load_torch_module, teacher_source
    from edgekit.modeling.networks import ConvNet, ImageModel, state_digest

    spec, task = recipe.teacher, tasks[0]
    images = task.train["image"] if len(task.train["image"]) else task.test["image"]
    source = None if spec.model == "edgekit:cnn" else teacher_source(spec)
    if spec.model == "edgekit:cnn":
        torch.manual_seed(recipe.distill.seed)
        net = ConvNet(images.shape[1], spec.width, spec.depth, len(task.labels))
    elif source.kind == "hf":
        net = _hf_image_classifier(source, spec, task, images.shape[1:], recipe.distill.seed, attention)
    else:
        net = load_torch_module(source, trust_pickle=spec.trust_pickle)
        _check_takes(net, images, task.name, spec.model)
    if source is not None and (task.preprocessing or {}).get("fit_on"):
        # A model of the user's own was trained on inputs edgekit cannot know: say what it is fed now.
        echo(f"  teacher {spec.model} is fed images standardized with {task.name}'s training statistics "
             "(preprocessing.json); if it expects its own preprocessing, set data.normalize: false")
    model = ImageModel(net, task.name)
    prepared = {}
    if spec.head == "finetune":
        prepared[task.name] = {"head": "finetune", **_finetune(model, ImageInputs(task.train["image"]),
                                                               task.train["label"], recipe, task, cache,
                                                               state_digest(model), echo)}
    return Teacher(model.eval(), None, None, state_digest(model), spec.max_length, prepared)


def _check_takes(net, images, task: str, model: str) -> None:
    """A torch module file says what input it takes only when run: one of the task's images is run through it
    before any work, so images of another shape stop the run with both named, not with a raw shape error."""
    import torch

    try:
        with torch.inference_mode():
            net(torch.from_numpy(images[:1]))
    except (RuntimeError, IndexError, ValueError) as e:
        raise DataError(f"task '{task}' has images of shape (C, H, W) = {tuple(images.shape[1:])}, and teacher "
                        f"'{model}' fails on them ({type(e).__name__}: {str(e).splitlines()[0][:200]}). Fix: save the "
                        "task's images at the size and channel count the teacher was trained on, or pick a teacher "
                        "built for these images.") from None


def _hf_classifier(source, auto_class: str, spec, task: TaskData, seed: int, extra: dict):
    """A Hugging Face classifier for the task's classes: a new head under `head: finetune` (seeded, so the
    same on every rerun: cache keys), or the model's own, which must predict the task's number of classes."""
    import torch

    from edgekit.modeling.models import load_hf

    if spec.head == "finetune":
        torch.manual_seed(seed)
        return load_hf(source, auto_class, num_labels=len(task.labels), ignore_mismatched_sizes=True, **extra)
    model = load_hf(source, auto_class, **extra)
    if model.config.num_labels != len(task.labels):
        raise ModelNotFound(f"teacher '{spec.model}' predicts {model.config.num_labels} classes but task "
                            f"'{task.name}' has {len(task.labels)} ({', '.join(task.labels)}): set "
                            "teacher.head: finetune to train a new head.")
    return model


def _hf_image_classifier(source, spec, task: TaskData, image_shape: tuple, seed: int, attention: bool):
    """A Hugging Face image classifier (a ViT) for the task, with a new head under `head: finetune`.

    The task's images must already be the size the model was built for: its position embeddings are
    one per patch of config.image_size, and resizing inside edgekit would make the run's
    preprocessing.json, the bundle's README and every app that feeds the model resize too (and
    upsampling 8x8 digits to 224x224 only makes every file slower). So a mismatch is refused, naming
    both shapes, before any training."""

    from edgekit.modeling.families import image_family_problem, is_hf_image
    from edgekit.modeling.models import image_input, image_input_problem

    extra = {"attn_implementation": "eager"} if attention else {}  # attention maps come from eager alone
    net = _hf_classifier(source, "AutoModelForImageClassification", spec, task, seed, extra)
    if not is_hf_image(net):  # a hub id: its config was only known once loaded
        raise ModelNotFound(image_family_problem(net.config.model_type, f"'{spec.model}'"))
    # The recipe check compares a local folder's config.json with the task's file headers the same way.
    if problem := image_input_problem(task.name, tuple(image_shape), spec.model, image_input(net.config)):
        raise DataError(problem)
    return net


def prepare_teacher(recipe: Recipe, tasks: list[TaskData], cache: Cache, echo: Callable[[str], None] = _echo,
                    attention: bool = False) -> Teacher:
    """Load the recipe's teacher and give it its heads. `attention`: load with eager
    attention, which alone returns attention maps (for the attention loss)."""
    if recipe.teacher.images:
        return _image_teacher(recipe, tasks, cache, echo, attention)
    return _text_teacher(recipe, tasks, cache, echo, attention)


def check_skill(recipe: Recipe, tasks, teacher_metrics: dict, echo: Callable[[str], None] = _echo) -> None:
    """Stop before any student is trained when the teacher is no better than a trivial predictor on a task:
    its students, files and retentions would all be relative to a model that learnt nothing. Where it is
    better but the test set too small to show it with 95% confidence, say so and go on (edgekit.data.baselines)."""
    from edgekit.data.baselines import unproven_tasks, weak_tasks
    from edgekit.errors import TeacherTooWeak

    weak = weak_tasks(tasks, teacher_metrics)
    if weak and not recipe.teacher.allow_weak:
        raise TeacherTooWeak("the teacher is not worth distilling:\n" + "\n".join(f"  {line}" for line in weak)
                             + "\nNothing was distilled or written. Fix: check the task's labels and inputs "
                             "(data columns, image scaling), train the teacher longer or at another learning rate "
                             "(teacher.epochs, teacher.lr for head: finetune and edgekit:cnn), or use a teacher that "
                             "knows the task; teacher.allow_weak: true runs anyway (a smoke test on a random model: "
                             "no file that is no better than the trivial answer ships, whatever it says).")
    for line in weak:
        echo(f"  warning (teacher.allow_weak): {line}; no file ships unless it clears that score")
    for line in unproven_tasks(tasks, teacher_metrics):
        echo(f"  warning: {line}")


def teacher_rows(teacher: Teacher, recipe: Recipe, lab: Lab):
    """The teacher's files made (fp32, and the quantized variants when quantize.teacher), scored and timed on
    every provider: the reference every retention is relative to, and the latency a relative budget divides.
    Stops the run (TeacherTooWeak) when the teacher's fp32 file is no better than a trivial predictor."""
    from edgekit.modeling.networks import count_parameters
    from edgekit.stages.measure import Exported, Scored, export_files, score_rows, time_rows

    # No accuracy-aware step for the teacher: its int8 file is the baseline as ONNX Runtime makes it.
    files = export_files(teacher.model, lab.run / "teacher", lab, None if recipe.quantize.teacher else []).files
    params = count_parameters(teacher.model)

    def details(variant):
        return {"architecture": None, "params": params}

    reference = score_rows("teacher", Exported({"fp32": files.pop("fp32")}, {}), lab, None, details)
    metrics = reference.rows[0]["metrics"]
    check_skill(recipe, list(lab.tasks), metrics, lab.echo)
    rest = score_rows("teacher", Exported(files, {}), lab, metrics, details)
    rows, _ = time_rows(reference.rows + rest.rows, lab)
    return Scored(rows, reference.predictions | rest.predictions, reference.failures | rest.failures)

