"""The bench's model2vec row: a static embedding distilled from the same teacher, as a model2vec user makes one.

`model2vec.distill.distill(model_name=<the teacher folder>, pca_dims=N)` runs the teacher once over every token
of its vocabulary (no data, ~20 s for MiniLM), reduces the token vectors with PCA and weighs them (SIF); a text's
embedding is then the normalized mean of its tokens' vectors. model2vec is a bench-only tool (`make bench`
installs it with --no-deps: its metadata asks for huggingface-hub>=1.0, which the transformers we pin refuses,
and the distill path runs on the one we have), never an edgekit dependency.

Scored as the other rows are: a logistic-regression head per classification task fitted on its own embeddings of
the task's training split (`edgekit.stages.teacher.fit_linear_head`, the head edgekit fits for the teacher and refits
for students), similarity by the cosine of its embeddings. Timed end to end as its user calls it:
`model.encode([text])`, then the head.

model2vec's trained models, its strongest answer where there is data (`model2vec.train`, which needs `datasets`):
  - fitted: `StaticModelForSimilarity.from_pretrained(path=<the distilled folder>, n_layers=0, normalize=False)`
    (the head one nn.Linear from the distilled width to the teacher's, kept below; model2vec's default head, a
    512-unit hidden layer, is an MLP that `to_static_model()` drops), `.fit(texts, teacher_vectors,
    device="cpu", max_epochs=6)` with model2vec's defaults otherwise (cosine loss, Adam at 1e-3, 10% held out,
    early stopping with patience 5, the best checkpoint restored; seed 42) on the texts edgekit distills its
    students on (the recipe's distillation set) and the teacher's embeddings of them. 6 epochs: the demo's Lee
    0.551; fit's default (max_epochs=-1, epochs until the held-out loss stops improving by 0.001) ran 27 epochs
    and overfit those texts, Lee 0.516. Then
    the linear head folded exactly into the token vectors (`fold_linear_head`: each token's row becomes
    `(w_t e_t) W^T + b`, so the mean of a text's rows is `head(mean)`, and the normalized StaticModel's `encode`
    is the fitted model's output, normalized, as the cosine loss compares it); teacher-wide (384 for MiniLM) and
    scored as the distilled row is. normalize=False (model2vec's default normalizes the mean before the head) is
    what makes the fold exact: a normalized mean then a bias is not a mean of per-token rows;
  - classifier, per classification task: `StaticModelForClassification.from_pretrained(path=<the distilled
    folder>)` (a 512-unit hidden layer, cross-entropy, early stopping on held-out accuracy), `.fit(train texts,
    train labels, device="cpu")`, then `.to_pipeline()` (model2vec's numpy inference pipeline, the one it saves
    and ships); scored on that task only with its own `predict_proba([text])`, timed the same way.
Both are trained once per (distilled model, configuration, data) and loaded from under the work folder on a
rerun.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from pathlib import Path

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.names import logits_name

PCA_DIMS = (256, 64)  # model2vec's default, and a smaller one: the two ends a user would try
VERSION = "0.10.0"
INSTALL = f"pip install --no-deps model2vec=={VERSION} skeletoken==0.6.1"
# model2vec.train imports `datasets` (model2vec's `train` extra asks >=4.0): 5.2.0 fits the stack as it is (its
# fsspec and huggingface-hub ranges take the pinned ones; 4.x caps both below them), with its missing requirements.
TRAIN_INSTALL = "pip install --no-deps datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 pandas==3.1.1 xxhash==4.1.0"


def available() -> bool:
    """model2vec imports (installed, and its own imports there): an import, not a lookup, so a broken install
    counts as missing and gets the install line."""
    try:
        import model2vec  # noqa: F401
    except ImportError:
        return False
    return True


def train_available() -> bool:
    """model2vec.train imports (model2vec and its `train` extra: torch, datasets)."""
    try:
        import model2vec.train  # noqa: F401
    except ImportError:
        return False
    return True


def entry_name(pca_dims: int) -> str:
    return f"model2vec pca {pca_dims}"


def fitted_name(pca_dims: int) -> str:
    return f"model2vec pca {pca_dims} fitted"


def classifier_name(pca_dims: int, task: str) -> str:
    return f"model2vec pca {pca_dims} classifier ({task})"


def _folder_digest(folder: Path) -> str:
    """sha256 over the teacher folder's file names and bytes: a retrained or replaced teacher redistills."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode() + b"\0")
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def distilled(teacher_folder: str | Path, pca_dims: int, work: Path, echo) -> Path:
    """The saved model2vec folder for (teacher, pca_dims), distilled once: a rerun loads it from under `work`.
    Written under a temporary name and renamed, so a killed distillation leaves nothing that looks finished."""
    if not available():
        raise EdgekitError(f"the bench's model2vec row needs model2vec: `{INSTALL}` (or pass --model2vec-dims none)")
    teacher_folder = Path(teacher_folder)
    if not (teacher_folder / "config.json").is_file():
        raise EdgekitError(f"model2vec distills from a local transformers folder; {teacher_folder} has no "
                           "config.json: point the recipe's teacher at the folder")
    import model2vec

    key = f"{_folder_digest(teacher_folder)}-pca{pca_dims}-m2v{model2vec.__version__}"
    out = work / "model2vec" / key
    if (out / "model.safetensors").is_file():
        echo(f"  model2vec pca_dims={pca_dims}: cached in {out}")
        return out
    from model2vec.distill import distill

    echo(f"  model2vec distill(model_name={teacher_folder}, pca_dims={pca_dims}) -> {out}")
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    # device="cpu": the bench compares CPU files, and the same vectors wherever it runs.
    distill(model_name=str(teacher_folder), pca_dims=pca_dims, device="cpu").save_pretrained(tmp)
    os.replace(tmp, out)
    return out


def _data_digest(texts: list[str], targets, config: str = "") -> str:
    """sha256 over the training configuration, the texts and their targets (vectors or labels): another
    configuration or other data trains again."""
    digest = hashlib.sha256(config.encode() + b"\0")
    for text in texts:
        digest.update(text.encode() + b"\0")
    digest.update(np.ascontiguousarray(targets).tobytes())
    return digest.hexdigest()[:16]


def _trained(folder: Path, kind: str, texts: list[str], targets, work: Path, echo, train, save,
             config: str = "") -> Path:
    """The saved result of `train()` (then `save(model, tmp)`) for (distilled folder, kind, configuration, data),
    trained once."""
    if not train_available():
        raise EdgekitError(f"the bench's trained model2vec rows need model2vec.train, which imports `datasets`: "
                           f"`{TRAIN_INSTALL}` (or pass --no-model2vec-train)")
    out = work / "model2vec" / f"{Path(folder).name}-{kind}-{_data_digest(texts, targets, config)}"
    if (out / "model.safetensors").is_file():
        echo(f"  model2vec {kind} of {Path(folder).name}: cached in {out}")
        return out
    started = time.perf_counter()
    model = train()
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    save(model, tmp)
    os.replace(tmp, out)
    echo(f"  model2vec {kind} of {Path(folder).name} on {len(texts)} texts: {time.perf_counter() - started:.0f} s "
         f"-> {out}")
    return out


# How the fitted row is made: in its cache key, so a fit made otherwise (the MLP head `to_static_model()` drops)
# is never loaded for this one.
FITTED_CONFIG = {"n_layers": 0, "normalize": False, "max_epochs": 6,
                 "saved": "linear head folded into the vectors, normalize=True"}


def fold_linear_head(model):
    """The StaticModel whose `encode` is `model.encode` normalized, for a fitted model2vec model whose head is
    affine (nn.Linear layers only, as `n_layers=0` makes) and that does not normalize before it.

    The fitted model embeds a text as `head(sum_t w_t e_t / n)` over its n token ids t (`_encode`: the rows
    `embeddings[token_mapping[t]]`, weighted by `w[t]` when it has weights, their sum over n; a plain mean when
    not). An affine head commutes with that mean: `head(mean_t (w_t e_t)) = mean_t head(w_t e_t)`, so each
    token's row `head(w_t e_t) = (w_t e_t) W^T + b` gives a StaticModel (one row per token id, no token mapping,
    no weights) whose mean is exactly the head's output, and with normalize=True its `encode` is that output
    normalized (the direction the cosine loss fitted). Same tokenizer, same max_length: the same token ids."""
    import torch
    from model2vec import StaticModel

    if model.normalize:
        raise EdgekitError("the fitted model normalizes its mean before its head: that is not a mean of per-token "
                           "rows, so its head does not fold into the vectors (fit it with normalize=False)")
    if not all(isinstance(layer, torch.nn.Linear) for layer in model.head):
        raise EdgekitError(f"the fitted model's head is not affine ({model.head}): fit it with n_layers=0")
    with torch.no_grad():
        ids = torch.arange(len(model.token_mapping))  # every token id of the tokenizer
        rows = model.embeddings.weight[model.token_mapping[ids]]  # (vocab, dim)
        if model.w is not None:
            rows = rows * model.w[ids][:, None]
        folded = model.head(rows).cpu().numpy().astype(np.float32)  # (vocab, out)
    return StaticModel(vectors=folded, tokenizer=model.tokenizer, normalize=True, weights=None, token_mapping=None,
                       max_length=model.max_length)


def fit_similarity(folder: Path, texts: list[str], teacher_vectors: np.ndarray):
    """The distilled model at `folder` fitted to the teacher's vectors of `texts`: `StaticModelForSimilarity`
    with a linear head (`n_layers=0`) on the unnormalized mean (`normalize=False`), for 6 epochs, model2vec's
    defaults otherwise (`fit`'s: cosine loss, Adam 1e-3, 10% held out, early stopping with patience 5, seed 42)."""
    from model2vec.train import StaticModelForSimilarity

    return StaticModelForSimilarity.from_pretrained(path=str(folder), n_layers=FITTED_CONFIG["n_layers"],
                                                    normalize=FITTED_CONFIG["normalize"]).fit(
        list(texts), np.asarray(teacher_vectors, dtype=np.float32), device="cpu",
        max_epochs=FITTED_CONFIG["max_epochs"])


def fitted(folder: Path, texts: list[str], teacher_vectors: np.ndarray, work: Path, echo) -> Path:
    """The distilled model at `folder` fitted to the teacher's vectors of `texts` (`fit_similarity`), saved as the
    StaticModel its linear head folds into (`fold_linear_head`): teacher-wide, what was fitted, nothing dropped."""
    def train():
        echo(f"  model2vec StaticModelForSimilarity.from_pretrained(path={folder}, n_layers=0, normalize=False)"
             f".fit({len(texts)} texts, teacher vectors {teacher_vectors.shape}, device='cpu', max_epochs=6), then "
             "its linear head folded into the vectors")
        return fit_similarity(folder, texts, teacher_vectors)

    return _trained(folder, "fitted", texts, np.asarray(teacher_vectors, dtype=np.float32), work, echo, train,
                    lambda model, tmp: fold_linear_head(model).save_pretrained(tmp),
                    config=repr(sorted(FITTED_CONFIG.items())))


def classifier(folder: Path, task, work: Path, echo) -> Path:
    """The distilled model at `folder` trained on a classification task's training split
    (`StaticModelForClassification`, model2vec's defaults), saved as the pipeline `to_pipeline()` makes of it."""
    texts = list(task.train["text"])
    labels = np.asarray(task.train["label"], dtype=np.int64)

    def train():
        from model2vec.train import StaticModelForClassification

        echo(f"  model2vec StaticModelForClassification.from_pretrained(path={folder}).fit({len(texts)} "
             f"{task.name} texts, labels, device='cpu')")
        return StaticModelForClassification.from_pretrained(path=str(folder)).fit(
            texts, [int(label) for label in labels], device="cpu")

    return _trained(folder, f"classifier-{task.name}", texts, labels, work, echo, train,
                    lambda model, tmp: model.to_pipeline().save_pretrained(str(tmp)))


class Model2VecRunner:
    """A saved model2vec model: `text_outputs(text)` is what its user runs per request (`encode([text])`, then a
    head per classification task); `run(feed)` is the model alone on token ids (the Gather + mean + normalize
    its encode does after tokenizing), for the model-only shapes the ONNX files are timed at."""

    def __init__(self, folder: Path, tasks):
        from model2vec import StaticModel

        from edgekit.stages.teacher import fit_linear_head

        self.model = StaticModel.from_pretrained(folder)
        self.vectors = np.asarray(self.model.embedding)  # (vocab, dim), float16 as distill saves it
        if self.model.weights is not None or self.model.token_mapping is not None:
            raise EdgekitError(f"{folder}: a vocabulary-quantized model2vec model; the bench distills plain ones")
        self.heads = {}  # task -> (weight (classes, dim), bias (classes,)), fitted on this model's embeddings
        for task in tasks:
            if task.kind.labelled:
                head = fit_linear_head(self.encode(list(task.train["text"])), task.train["label"], len(task.labels))
                self.heads[task.name] = (head.weight.detach().numpy(), head.bias.detach().numpy())

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def max_length(self) -> int | None:
        return self.model.max_length

    def encode(self, texts: list[str]) -> np.ndarray:
        return np.asarray(self.model.encode(texts), dtype=np.float32)  # (n, dim)

    def text_outputs(self, text: str) -> dict[str, np.ndarray]:
        embedding = self.encode([text])[0]  # (dim,)
        return {"embedding": embedding, **{logits_name(task): weight @ embedding + bias
                                           for task, (weight, bias) in self.heads.items()}}

    def run(self, feed: dict) -> np.ndarray:
        # The teacher's ids past model2vec's vocabulary (it drops [unusedN] tokens) wrap into it: the work is
        # the same Gather + mean over the same number of ids.
        ids = feed["input_ids"] % len(self.vectors)  # (1, seq)
        out = self.vectors[ids].mean(axis=1).astype(np.float32)  # (1, dim)
        return out / (np.linalg.norm(out, axis=1, keepdims=True) + 1e-32)


class Model2VecClassifierRunner:
    """A saved model2vec classification pipeline for one task: `text_outputs(text)` is its user's call,
    `predict_proba([text])` (its encode, then its MLP head in numpy), as `<task>_logits` (log-probabilities indexed
    by the task's label ids); `run(feed)` the model alone on token ids (Gather + mean + normalize + head)."""

    def __init__(self, folder: Path, task):
        from model2vec.inference import StaticModelPipeline

        self.pipeline = StaticModelPipeline.from_pretrained(folder)
        self.task, self.logits = task.name, logits_name(task.name)
        self.vectors = np.asarray(self.pipeline.model.embedding)  # (vocab, dim)
        if self.pipeline.model.weights is not None or self.pipeline.model.token_mapping is not None:
            raise EdgekitError(f"{folder}: a vocabulary-quantized model2vec model; the bench trains plain ones")
        # the pipeline's output columns -> the task's label ids (a label absent from training is never predicted)
        self.columns = np.asarray([int(c) for c in self.pipeline.classes_], dtype=np.int64)
        self.n_labels = len(task.labels)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def max_length(self) -> int | None:
        return self.pipeline.model.max_length

    def applies(self, task_name: str) -> bool:
        return task_name == self.task

    def text_outputs(self, text: str) -> dict[str, np.ndarray]:
        proba = self.pipeline.predict_proba([text])[0]  # (classes,)
        logits = np.full(self.n_labels, -np.inf)
        logits[self.columns] = np.log(np.maximum(proba, 1e-30))
        return {self.logits: logits}

    def run(self, feed: dict) -> np.ndarray:
        ids = feed["input_ids"] % len(self.vectors)  # (1, seq), as Model2VecRunner.run
        out = self.vectors[ids].mean(axis=1).astype(np.float32)  # (1, dim)
        out = out / (np.linalg.norm(out, axis=1, keepdims=True) + 1e-32)
        return self.pipeline.head.predict_proba(out)  # (1, classes)
