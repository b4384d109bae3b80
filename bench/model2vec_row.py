"""The bench's model2vec row: a static embedding distilled from the same teacher, as a model2vec user makes one.

`model2vec.distill.distill(model_name=<the teacher folder>, pca_dims=N)` runs the teacher once over every token
of its vocabulary (no data, ~20 s for MiniLM), reduces the token vectors with PCA and weighs them (SIF); a text's
embedding is then the normalized mean of its tokens' vectors. model2vec is a bench-only tool (`make bench`
installs it with --no-deps: its metadata asks for huggingface-hub>=1.0, which the transformers we pin refuses,
and the distill path runs on the one we have), never an edgekit dependency.

Scored as the other rows are: a logistic-regression head per classification task fitted on its own embeddings of
the task's training split (`edgekit.teacher.fit_linear_head`, the head edgekit fits for the teacher and refits
for students), similarity by the cosine of its embeddings. Timed end to end as its user calls it:
`model.encode([text])`, then the head.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.names import logits_name

PCA_DIMS = (256, 64)  # model2vec's default, and a smaller one: the two ends a user would try
VERSION = "0.10.0"
INSTALL = f"pip install --no-deps model2vec=={VERSION} skeletoken==0.6.1"


def available() -> bool:
    """model2vec imports (installed, and its own imports there): an import, not a lookup, so a broken install
    counts as missing and gets the install line."""
    try:
        import model2vec  # noqa: F401
    except ImportError:
        return False
    return True


def entry_name(pca_dims: int) -> str:
    return f"model2vec pca {pca_dims}"


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


class Model2VecRunner:
    """A saved model2vec model: `text_outputs(text)` is what its user runs per request (`encode([text])`, then a
    head per classification task); `run(feed)` is the model alone on token ids (the Gather + mean + normalize
    its encode does after tokenizing), for the model-only shapes the ONNX files are timed at."""

    def __init__(self, folder: Path, tasks):
        from model2vec import StaticModel

        from edgekit.tasks import kind_of
        from edgekit.teacher import fit_linear_head

        self.model = StaticModel.from_pretrained(folder)
        self.vectors = np.asarray(self.model.embedding)  # (vocab, dim), float16 as distill saves it
        if self.model.weights is not None or self.model.token_mapping is not None:
            raise EdgekitError(f"{folder}: a vocabulary-quantized model2vec model; the bench distills plain ones")
        self.heads = {}  # task -> (weight (classes, dim), bias (classes,)), fitted on this model's embeddings
        for task in tasks:
            if kind_of(task.spec.kind).labelled:
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
