"""Recipes: what to distill, for which tasks, under which latency budget.

A recipe is a YAML file validated by the pydantic models below (unknown keys and
wrong types are rejected with the key's path and the fix). `Recipe.model_json_schema()`
is what `edgekit recipe schema` prints. Recipes can also be built in code:

    recipe = Recipe(name="demo", teacher=TeacherSpec(model="..."), tasks=[...], budget=Budget(ms=6))
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from edgekit.data.kinds import KINDS, TASK_KINDS, kind_of
from edgekit.names import IMAGE_ARRAY_SUFFIXES, LATENCY_FIELDS, LOSS_NAMES, METHODS, POOLING_MODES, TEACHER_KINDS

METRICS = {name: kind.metrics for name, kind in KINDS.items()}  # task kind -> its metrics, the default first


# Training defaults that depend on what is trained. The field defaults fine-tune and distill pretrained
# transformers gently; edgekit:cnn trains from scratch and every image student is a CNN learning the
# teacher's logits, which stay near chance at those rates (issue 15: 0.087 accuracy at lr 3e-5, students
# at 0.42 with lr 1e-4). Measured on scikit-learn's digits as uint8 .npz files (tests/test_images.py): the
# teacher reaches 0.983 (28x28) and 0.992 (8x8) at 3e-3 x 10 epochs; students w16-d2 / w16-d1 keep 99.2% /
# 97.2% (28x28) and 100% / 99.2% (8x8) at 3e-3 x 30 epochs of KL (10 epochs: 98.0% / 94.1% at 28x28).
CNN_TEACHER_DEFAULTS = {"lr": 3e-3, "epochs": 10}  # teacher.model edgekit:cnn
IMAGE_DISTILL_DEFAULTS = {"lr": 3e-3, "epochs": 30, "losses": [{"name": "kl"}]}  # teacher.kind image-classifier
# The distill keys a recipe leaves out, by teacher.kind, where the field defaults (mse on sentence embeddings,
# lr 1e-4, 3 epochs: a sentence encoder's) do not fit: a classifier teacher has only logits to learn from.
DISTILL_DEFAULTS = {"image-classifier": IMAGE_DISTILL_DEFAULTS,
                    "sequence-classifier": {"losses": [{"name": "kl"}, {"name": "ce", "weight": 0.5}]}}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TeacherSpec(_Strict):
    model: str = Field(description="hub id, local folder, `package/subfolder` of an installed package, a "
                                   "TorchScript file (a torch.save'd module with trust_pickle), or `edgekit:cnn` (a built-in CNN trained "
                                   "here)")
    kind: Literal[TEACHER_KINDS] = Field(
        "sentence-encoder", description="what the teacher computes")
    head: Literal["none", "linear", "finetune"] = Field(
        "none", description="`linear`: fit a linear head per classification task on frozen teacher embeddings "
                            "(sentence-encoder); `finetune`: train the whole teacher with its head on the "
                            "classification task (sequence-classifier, image-classifier); `none`: use as is")
    pooling: Literal[POOLING_MODES] | None = Field(
        None, description="sentence-encoder: how token vectors become one (default: the teacher's "
                          "sentence-transformers Pooling module; mean for a plain Hugging Face model)")
    normalize: bool | None = Field(None, description="sentence-encoder: L2-normalize the embedding (default: whether "
                                                     "the teacher's sentence-transformers folder has a Normalize "
                                                     "module; true for a plain Hugging Face model)")
    max_length: int | None = Field(None, ge=8, description="tokens per text, longer texts truncated (default: the "
                                                           "teacher's sentence-transformers max_seq_length or "
                                                           "tokenizer limit; 128 for a plain Hugging Face model)")
    epochs: int = Field(2, ge=1, description="head=finetune: training epochs (edgekit:cnn: 10 by default)")
    lr: float = Field(3e-5, gt=0, description="head=finetune: learning rate (edgekit:cnn: 3e-3 by default)")
    batch_size: int = Field(32, ge=1, description="head=finetune: batch size")
    allow_weak: bool = Field(False, description="distill even when the teacher is no better than a trivial predictor "
                                                "(the most frequent class, chance, no correlation) on some task; by "
                                                "default the run stops before training: a smoke test on a random "
                                                "model sets this. No file that is no better than that predictor "
                                                "ships either way")
    trust_pickle: bool = Field(False, description="a torch.save'd (pickled) module file: load it although unpickling "
                                                  "runs code from the file. Only for files you trust; TorchScript "
                                                  "archives and Hugging Face folders need no such permission")
    width: int = Field(32, ge=4, description="edgekit:cnn: channels of every convolution")
    depth: int = Field(3, ge=1, description="edgekit:cnn: convolution blocks")

    @property
    def images(self) -> bool:
        """Whether the teacher and every student read images (else text): the one place modality is decided."""
        return self.kind == "image-classifier"

    @model_validator(mode="before")
    @classmethod
    def _cnn_defaults(cls, data):
        """edgekit:cnn trains from scratch: the defaults above are for fine-tuning a pretrained transformer."""
        if isinstance(data, dict) and data.get("model") == "edgekit:cnn":
            data = {**CNN_TEACHER_DEFAULTS, **data}
        return data


# DataSpec keys by the data they apply to: a key of the other kind, given, is an error (not ignored).
_TEXT_KEYS = ("text", "text_a", "text_b", "score", "query", "document")
_IMAGE_KEYS = ("image", "layout", "normalize")


class DataSpec(_Strict):
    source: str = Field(description="a CSV/TSV/JSONL/Parquet file, an .npz file of images and labels "
                                    "(image-classification), `hf:NAME[:CONFIG]` (Hugging Face datasets, online), "
                                    "or a built-in: rotten_tomatoes, rotten_tomatoes_plots, lee, lee_background, "
                                    "digits")
    text: str = Field("text", description="classification: column of the texts")
    label: str = Field("label", description="classification: column of the labels; image-classification: the "
                                            ".npz array of the labels (left at `label`, an array named `labels` "
                                            "serves too)")
    text_a: str = Field("text_a", description="similarity: first text of a pair")
    text_b: str = Field("text_b", description="similarity: second text of a pair")
    score: str = Field("score", description="similarity: gold similarity score")
    query: str = Field("query", description="retrieval: column of the queries")
    document: str = Field("document", description="retrieval: column of the matching documents")
    image: str = Field("image", description="image-classification: the .npz array of the images, uint8 or float, "
                                            "(N, H, W), (N, H, W, C) or (N, C, H, W) (left at `image`, an array "
                                            "named `images` serves too)")
    layout: Literal["auto", "NCHW", "NHWC"] = Field(
        "auto", description="image-classification: the axes of 4-d images. auto: (N, H, W, C) when the last axis "
                            "has 1, 3 or 4 entries and the second has not, (N, C, H, W) when the second has and "
                            "the last has not; set NCHW or NHWC when both or neither have (a (N, 3, 32, 3) "
                            "array). 3-d images are (N, H, W), one channel")
    normalize: bool = Field(
        True, description="image-classification: after scaling (uint8 / 255, uint16 / 65535, floats as stored), "
                          "standardize each channel with the training split's mean and std. The numbers go to "
                          "the run's and the bundle's preprocessing.json and are applied to every split; the "
                          "model files take the standardized input. false: scaling only (a teacher of your "
                          "own that expects [0, 1] pixels)")
    labels: list[str] | None = Field(None, min_length=2, description="classification: the class names, in "
                                     "order (label i is labels[i]); a row with any other label is a bad row. "
                                     "image-classification: the name of each class number of the label array, "
                                     "one per class (class i is labels[i]; 10 classes 0..9 take 10 names). "
                                     "Default: every label in the data, sorted (image classes named by number)")
    bad_rows: Literal["skip", "error"] = Field(
        "skip", description="rows with an empty text, no label, an unknown label, a score that is not a "
                            "number or bytes that are not UTF-8: `skip` leaves them out and the run summary "
                            "counts them; `error` stops before any work and names them")

    @model_validator(mode="after")
    def _keys_fit_the_data(self):
        """A key that does not apply to the source's kind of data would be silently ignored: name it.
        A key counts as given when it differs from its default (a dumped and reloaded recipe sets every key)."""
        digits = self.source == "digits"
        image = digits or Path(self.source).suffix.lower() in IMAGE_ARRAY_SUFFIXES
        fields = type(self).model_fields
        given = [key for key in fields if key != "source" and getattr(self, key) != fields[key].default]
        if digits:
            wrong = [key for key in given if key in (*_TEXT_KEYS, "image", "label", "layout")]
            what, fits = "the digits built-in", "it takes normalize, labels and bad_rows; its arrays need no names"
        elif image:
            wrong = [key for key in given if key in _TEXT_KEYS]
            what, fits = "image data", "image data take image, label, layout, normalize, labels and bad_rows"
        else:
            wrong = [key for key in given if key in _IMAGE_KEYS]
            what, fits = "text data", "image, layout and normalize are keys of .npz image data"
        if wrong:
            one = len(wrong) == 1
            raise ValueError(f"{', '.join(wrong)} {'does' if one else 'do'} not apply to {what} ('{self.source}'): "
                             f"remove {'it' if one else 'them'} ({fits})")
        return self


class SplitSpec(_Strict):
    """How a task's examples become a training and a test side: a random share of data.source
    (test_fraction), a test file of the user's own (test_file), the named splits of an hf: data set
    (train_split/test_split), or evaluation only (eval_only). Keys of one way used with another are
    errors, not silently ignored: a recipe must not say one thing and run another."""

    # None rather than 0.2: a recipe that set it can be told apart from one that did not (and a dumped
    # recipe, which spells out every key, validates again).
    test_fraction: float | None = Field(None, gt=0, lt=1, description="share of the (deduplicated) examples of "
                                        "data.source held out for evaluation; default 0.2 (not with test_file, "
                                        "eval_only or hf: sources)")
    seed: int = Field(0, description="seed of the random split, and of the max_train/max_test samples")
    eval_only: bool = Field(False, description="use every example for evaluation, none for training (similarity and "
                                               "retrieval tasks; a classification task needs training rows to fit "
                                               "its head on)")
    test_file: str | None = Field(None, description="file sources: a file of the task's own test examples, with the "
                                                    "same columns as data.source (CSV/TSV/JSONL/Parquet; .npz for "
                                                    "images). data.source is then the training data, whole; an "
                                                    "example in both files is tested, not trained on")
    train_split: str | None = Field(None, description="hf: sources: name of the training split (e.g. train)")
    test_split: str | None = Field(None, description="hf: sources: name of the evaluation split (e.g. test)")
    max_train: int | None = Field(None, ge=1, description="subsample the training examples (quick runs)")
    max_test: int | None = Field(None, ge=1, description="subsample the evaluation examples (quick runs)")

    @property
    def fraction(self) -> float:
        """The share a random split holds out."""
        return 0.2 if self.test_fraction is None else self.test_fraction

    @model_validator(mode="after")
    def _one_way(self):
        if self.test_file is not None:
            if not self.test_file.strip():
                raise ValueError("split.test_file is empty: give the path of the test file, or leave the key out")
            if self.eval_only:
                raise ValueError("split.test_file and split.eval_only: true do not go together: with a test file, "
                                 "data.source is the training data; to evaluate on one file only, set data.source "
                                 "to it with eval_only: true and drop test_file")
            if self.test_fraction is not None:
                raise ValueError("split.test_fraction applies to a random split of data.source; with split.test_file "
                                 "the test examples are that file: remove test_fraction")
            if self.train_split is not None or self.test_split is not None:
                raise ValueError("split.train_split/test_split name the splits of an hf: data set; with "
                                 "split.test_file (a file of your own) data.source is the training data: remove "
                                 "train_split/test_split")
        if self.eval_only:
            for key, what in (("max_train", "there are no training examples to subsample"),
                              ("test_fraction", "every example is evaluated"),
                              ("train_split", "only the evaluation split is read")):
                if getattr(self, key) is not None:
                    raise ValueError(f"split.{key} does not apply with eval_only: true ({what}): remove it")
        return self


class TaskSpec(_Strict):
    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_]*$", description="identifier; names the task's ONNX output")
    kind: Literal[TASK_KINDS]
    data: DataSpec
    split: SplitSpec = Field(default_factory=SplitSpec)
    metric: str | None = Field(None, description="default: the first metric of the kind (accuracy, spearman, mrr)")

    @model_validator(mode="after")
    def _metric_fits_kind(self):
        allowed = METRICS[self.kind]
        if self.metric is None:
            self.metric = allowed[0]
        elif self.metric not in allowed:
            raise ValueError(f"metric '{self.metric}' does not apply to a {self.kind} task; "
                             f"choose one of: {', '.join(allowed)}")
        return self

    @field_validator("split")
    @classmethod
    def _split_fits_source(cls, split: SplitSpec, info):
        """Split keys that the kind of data.source would ignore are errors naming the key that applies (a field
        validator, after `data`, so that the error points at the split's line)."""
        data = info.data.get("data")
        if data is None:  # data did not validate: its own error says why
            return split
        if data.source.startswith("hf:"):
            if split.test_file is not None:
                raise ValueError(f"split.test_file takes a local file; {data.source} is a Hugging Face data set, "
                                 "whose evaluation split is named by split.test_split (e.g. test_split: validation)")
            if split.test_fraction is not None:
                raise ValueError(f"split.test_fraction does not apply to {data.source}: a Hugging Face data set "
                                 "brings its own splits (split.train_split, split.test_split): remove test_fraction")
        elif split.train_split is not None or split.test_split is not None:
            key = "train_split" if split.train_split is not None else "test_split"
            raise ValueError(f"split.{key} names a split of an hf: data set, and data.source '{data.source}' is "
                             "not one: for a test file of your own write split: {test_file: PATH} (data.source is "
                             "then the training file); otherwise remove it (test_fraction splits data.source)")
        return split


class StudentSpace(_Strict):
    layers: list[int] = Field([1, 2, 3, 4], description="text and ViT: teacher layers each student keeps ([]: none, "
                                                         "when students.static names the only students)")
    layer_choice: Literal["spread", "first", "last"] = Field(
        "spread", description="which teacher layers initialize a student: `spread` takes every other layer "
                              "(DistilBERT), `first`/`last` a contiguous block")
    hidden: list[int | None] = Field([None], description="text and ViT: hidden widths (null = the teacher's)")
    heads: list[int | None] = Field([None], description="text and ViT: attention heads (null = the teacher's)")
    ffn: list[int | None] = Field([None], description="text and ViT: feed-forward sizes (null = the teacher's)")
    widths: list[int] = Field([8, 16], min_length=1, description="CNN students: channels of each convolution")
    depths: list[int] = Field([1, 2], min_length=1, description="CNN students: convolution blocks")
    max_students: int = Field(2, ge=1, description="distill at most this many feasible transformer (and CNN) "
                                                   "candidates, largest first; every feasible static candidate "
                                                   "is distilled besides them (one trains in about a minute)")
    static: list[int] = Field(
        [], description="sentence-encoder teachers: static-embedding students, one per width (e.g. [256, 64], "
                        "named S256, S64): a table of token vectors made from the teacher as model2vec makes one "
                        "(each token through the teacher, PCA to this width, SIF weights by model2vec's Zipf "
                        "estimate), mean-pooled, projected to the teacher's width, then distilled with "
                        "distill.static_lr/static_epochs. No attention: tens of microseconds per text")
    # full by default: with `data`, 4.7% of the Lee test tokens fell to the [UNK] row (left out of the mean), and on
    # the demo recipe S256 scored Lee 0.531 with `data` and 0.559 with `full` (sentiment 0.737 and 0.738).
    static_vocab: Literal["data", "full"] = Field(
        "full", description="static students: `full` keeps a row for every token of the tokenizer (BERT's "
                            "[unusedN] placeholders excepted; a token the distillation texts never use keeps the "
                            "row the teacher made for it), `data` one for each token the distillation texts use "
                            "and the special tokens (any other id reads the [UNK] row, which the mean leaves "
                            "out): a smaller table. Either way the file takes the tokenizer's ids")

    @field_validator("static")
    @classmethod
    def _static_widths(cls, values):
        if any(dim < 2 for dim in values):
            raise ValueError(f"students.static lists embedding widths of at least 2 (got {values}), e.g. [256, 64]")
        return values


def budget_token(value) -> tuple[str, float]:
    """("ms", 4.5) for a budget in milliseconds (4.5 or "4.5"), ("speedup", 8.0) for one relative to the
    teacher ("x8"): how sweeps and the CLI's --budget(s) name budgets."""
    text = str(value).strip().lower()
    kind, number = ("speedup", text[1:]) if text.startswith("x") else ("ms", text.removesuffix("ms"))
    try:
        amount = float(number)
    except ValueError:
        raise ValueError(f"budget '{value}' is neither milliseconds (4.5) nor a speed-up over the teacher's fp32 "
                         "file (x8)") from None
    if not amount > 0:
        raise ValueError(f"budget '{value}' must be positive")
    return kind, amount


# Every recipe's quality floor unless it sets its own (`recipe init` writes it out): a file that keeps less of
# the teacher than this on some task does not ship, however fast it is.
DEFAULT_RETENTION = 95.0


class Budget(_Strict):
    percentile: Literal["p50", "p95", "p99"] = Field("p95", description="latency percentile the budget bounds")
    scope: Literal["model", "end-to-end"] = Field(
        "model", description="what the budget bounds: `model`, the ONNX file alone at batch x seq_len; `end-to-end`, "
                             "text in to outputs out on the real test texts of the tasks, what an app's request "
                             "costs, on the file's faster path: the bundle's tokenizer.json then the file, or (CPU "
                             "provider, WordPiece tokenizers) model.app.onnx with the tokenizer inside, which then "
                             "ships; the teacher's reference is its faster path too. Every text file is timed model "
                             "only and end to end; the report shows each figure and its path")
    ms: float | None = Field(None, gt=0, description="latency budget in milliseconds for one batch (or give "
                                                     "`speedup` instead: exactly one of the two)")
    speedup: float | None = Field(
        None, gt=0, description="latency budget relative to the teacher: a file fits when it is this many times "
                                "faster than the teacher's fp32 file at the budget's percentile, both measured in "
                                "the same run on this machine (and within `headroom` of that). Portable across "
                                "CPUs, where a number of milliseconds is not (exactly one of `ms` and `speedup`)")
    batch: int = Field(1, ge=1, description="batch size the budget is measured at")
    seq_len: int | Literal["task"] = Field(
        128, description="tokens per text, or `task` for the first text task's own length distribution")
    providers: list[str] = Field(
        ["cpu"], min_length=1, description="ONNX Runtime providers every file is measured on (cpu, cuda, tensorrt, "
                                           "...): one pick per provider; the first available one is the target "
                                           "the bundle is built for; unavailable ones are skipped with a note")
    threads: int = Field(1, ge=1, description="intra-op threads")
    provider_options: dict[str, dict[str, str | int | float | bool]] = Field(
        {}, description="each provider's own ONNX Runtime options, by provider name: e.g. {openvino: {device_type: "
                        "GPU}} (OpenVINO runs on device CPU unless told; edgekit sets its num_of_threads to "
                        "budget.threads, and TensorRT's engine cache to the run's cache folder). Every file on that "
                        "provider is scored and timed with them, and the bundle records them")
    require_full_placement: bool = Field(
        False, description="a file fits only where its provider runs every node itself: a provider hands what it has "
                           "no kernel for to the CPU provider, silently (the matrix's `placement` counts it). When "
                           "true, a file with any node fallen back is marked and not picked")
    size_mb: float | None = Field(None, gt=0, description="optional file size budget in MB")
    headroom: float = Field(0.1, ge=0, lt=1, description="a file must measure this fraction under the budget to "
                                                         "count as fitting: latency on a shared host drifts by ~7% "
                                                         "between runs, and the pick must still fit when re-timed")
    min_runs: int = Field(300, ge=20, description="timed runs per round (hundreds for a stable p95)")
    min_seconds: float = Field(1.0, ge=0, description="timed wall time per round")
    min_retention: float | dict[str, float] | None = Field(
        DEFAULT_RETENTION, description=f"quality floor: a file fits only if it keeps at least this % of the teacher's "
                                       f"fp32 metric on every task (a number; {DEFAULT_RETENTION:g} unless the recipe "
                                       "says), or on the tasks named ({task: %}, the others without a floor); null = "
                                       "no floor. A pick that fits the latency but lost too much is not shipped: the "
                                       "run says what would close the gap")
    tie_margin: float = Field(
        2.0, ge=0, le=100, description="equivalence margin of a tie, in % of the top-ranked file's metric: a faster file "
                                      "is tied with it (and ships instead) only when, on every task, the lower end "
                                      "of the paired 95% interval of their difference lies within this margin below "
                                      "zero; 0 = only files shown at least as good")
    rounds: int = Field(3, ge=1, description="timing rounds per file (fresh session each); the round with the "
                                             "median percentile counts, so one burst of host noise does not")
    sweep: list[float | str] = Field([], description="budgets for `edgekit sweep` (its --budgets overrides them): "
                                                     "milliseconds (4.5) or speed-ups over the teacher (\"x8\")")
    # Set by `resolved` on a copy, never by a recipe: the teacher's latency a `speedup` divides.
    _teacher_ms: float | None = PrivateAttr(None)

    @field_validator("ms", mode="before")
    @classmethod
    def _milliseconds(cls, value):
        """`ms: 4ms` or `ms: 0.004 s` is the commonest budget typo: say what number to write."""
        if not isinstance(value, str):
            return value
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(ms|s|sec|us|µs)\s*", value)
        if match:
            ms = float(match[1]) * {"ms": 1, "s": 1000, "sec": 1000, "us": 1e-3, "µs": 1e-3}[match[2]]
            raise ValueError(f"'{value}' has a unit, and budget.ms is a plain number of milliseconds: write ms: {ms:g}")
        if re.fullmatch(r"\s*x\s*[0-9.]+\s*", value):
            raise ValueError(f"'{value}' is a speed-up: write it as speedup: {value.strip()[1:].strip()} instead of ms")
        return value

    @field_validator("provider_options")
    @classmethod
    def _known_providers(cls, value):
        from edgekit.errors import EdgekitError
        from edgekit.runtime.providers import provider_name

        for name in value:
            try:
                provider_name(name)
            except EdgekitError as e:  # its message lists the names there are
                raise ValueError(str(e)) from None
        # ORT takes every provider option as a string ("True", "1", "GPU").
        return {name: {key: str(v) for key, v in options.items()} for name, options in value.items()}

    def options_for(self, provider: str) -> dict[str, str]:
        """The recipe's ONNX Runtime options for `provider` (by its short or its full name)."""
        return self.measurement.options_for(provider)

    @field_validator("sweep")
    @classmethod
    def _sweep_tokens(cls, values):
        for value in values:
            budget_token(value)  # raises the message that names the bad entry
        return values

    @model_validator(mode="after")
    def _one_limit(self):
        if (self.ms is None) == (self.speedup is None):
            raise ValueError("give exactly one of budget.ms (milliseconds, e.g. ms: 4.5) and budget.speedup (times "
                             "faster than the teacher's fp32 file measured in the same run, e.g. speedup: 8)"
                             + ("" if self.ms is None else ", not both"))
        return self

    @field_validator("min_retention")
    @classmethod
    def _percentages(cls, value):
        floors = value.values() if isinstance(value, dict) else [] if value is None else [value]
        if any(not 0 < floor <= 1000 for floor in floors):
            raise ValueError(f"min_retention is a percentage of the teacher's metric, e.g. 97 (got {value})")
        return value

    @property
    def latency_key(self) -> str:
        """The row field holding the latency this budget bounds."""
        return LATENCY_FIELDS[self.scope]

    def floor(self, task: str) -> float | None:
        """The least % of the teacher's metric `task` must keep, or None."""
        if isinstance(self.min_retention, dict):
            return self.min_retention.get(task)
        return self.min_retention

    @property
    def teacher_ms(self) -> float | None:
        return self._teacher_ms

    def at(self, token) -> Budget:
        """This budget with its limit replaced by a sweep entry or a --budget value (4.5 or "x8"), unresolved."""
        kind, amount = budget_token(token)
        return self.model_copy(update={"ms": amount, "speedup": None} if kind == "ms"
                               else {"ms": None, "speedup": amount})

    def resolved(self, teacher_ms: float) -> Budget:
        """A copy whose `ms` is set: for a relative budget, the teacher fp32 file's measured latency at the
        budget's percentile divided by `speedup`; an absolute budget is returned as it is."""
        if self.speedup is None:
            return self
        copy = self.model_copy(update={"ms": teacher_ms / self.speedup})
        copy._teacher_ms = teacher_ms
        return copy

    def label(self) -> str:
        """How the budget was asked for: '4.5 ms' or 'x8'."""
        return f"{self.ms:g} ms" if self.speedup is None else f"x{self.speedup:g}"

    @property
    def measurement(self) -> Measurement:
        """How files are timed and scored under this budget, apart from its limit: what every measurement of a run
        shares, whichever budget of a sweep judges it."""
        return Measurement(
            batch=self.batch, seq_len=self.seq_len, threads=self.threads, min_runs=self.min_runs,
            min_seconds=self.min_seconds, rounds=self.rounds, percentile=self.percentile, scope=self.scope,
            provider_options=tuple((name, tuple(sorted(options.items())))
                                   for name, options in sorted(self.provider_options.items())))


@dataclass(frozen=True)
class Measurement:
    """The measurement half of a budget (the other is the limit: ms or speedup, headroom, retention floors, ties):
    the shape a file is timed at, the session it runs in and how many runs and rounds a figure takes. A recipe
    writes both halves under `budget:`; a stage that measures receives only this one (measure.Timing,
    measure.Scoring), a stage that judges receives the Budget."""

    batch: int
    seq_len: int | str  # tokens per text, or "task": the tasks' own lengths
    threads: int
    min_runs: int
    min_seconds: float
    rounds: int
    percentile: str  # the round with the median of this percentile is kept
    scope: str  # "model" or "end-to-end": which pass re-times the teacher's file (the one the limit bounds)
    provider_options: tuple = ()  # ((provider, ((key, value), ...)), ...): frozen, hashable

    def options_for(self, provider: str) -> dict[str, str]:
        """The recipe's ONNX Runtime options for `provider` (by its short or its full name)."""
        from edgekit.runtime.providers import provider_name

        wanted = provider_name(provider)
        return next((dict(options) for name, options in self.provider_options if provider_name(name) == wanted), {})


class QuantizeSpec(_Strict):
    variants: list[Literal[METHODS]] = Field(
        ["int8-dynamic"], description="quantized copies of every exported file, each scored and timed like the fp32 "
                                      "one: int8-dynamic (signed per-channel weights), int8-dynamic-per-tensor, "
                                      "int8-static-minmax|entropy|percentile (QDQ, calibrated on task data), fp16 "
                                      "(measured on GPU providers only), int4-weight|int8-weight (block-wise "
                                      "weight-only MatMulNBits, activations float: for OpenVINO and GPU providers; "
                                      "on the CPU provider int8-dynamic is about twice as fast). [] = fp32 only")
    calibration_samples: int = Field(128, ge=1, description="static int8: inputs drawn from the tasks' training data")
    teacher: bool = Field(True, description="quantize the teacher too: the file a user would ship without edgekit")
    max_drop: float | None = Field(
        1.0, ge=0, description="int8-dynamic: the most any task may lose, in % of the fp32 file's metric; when the "
                               "all-int8 file loses more, the most quantization-sensitive MatMuls (a per-node "
                               "pass) stay fp32 until every task is within it, and each kept node's latency cost "
                               "is measured. null = keep the all-int8 file as it is")
    reduce_range: Literal["auto"] | bool = Field(
        "auto", description="int8 methods: 7-bit weights (true) or full 8 bits (false). x86 CPUs without VNNI "
                            "multiply int8 with vpmaddubsw, whose 16-bit sums can saturate with 8-bit weights; "
                            "VNNI/AMX accumulate in 32 bits and arm64's dot products are signed, so they keep 8 "
                            "bits. auto = decide by the CPU the run is on; pin it when the file will run on "
                            "another kind of CPU than the one that builds it, or for results that must not "
                            "depend on the host")
    block_size: Literal[16, 32, 64, 128, 256] = Field(
        32, description="int4-weight/int8-weight: weights sharing one scale, along a MatMul's input dimension. "
                        "Smaller blocks keep more accuracy (a MiniLM student's embedding cosine to fp32 with int4: "
                        "0.966 at 16, 0.959 at 32, 0.935 at 128), larger ones make a slightly smaller file")
    accuracy_level: Literal[0, 1, 2, 3, 4] = Field(
        4, description="int4-weight/int8-weight: what the CPU provider computes MatMulNBits in: 4 = int8 "
                       "(activations quantized per block at run time: int8-weight 7.5 ms against 13.5 ms in "
                       "float32 on a MiniLM student, for a cosine to fp32 of 0.9996 against 0.9998), 1 = float32 "
                       "(the weights' own rounding only), 2/3 = float16/bfloat16 where the CPU has them, 0 = leave "
                       "the attribute out (for runtimes that reject it). OpenVINO and GPU providers ignore it")


class ExportSpec(_Strict):
    opset: int = Field(17, ge=14, le=20, description="ONNX opset of every exported file")
    shapes: Literal["dynamic", "fixed"] = Field(
        "dynamic", description="fixed: the bundle also holds model.fixed.onnx with batch and sequence fixed at "
                               "budget.batch x budget.seq_len (NNAPI and CoreML need fixed shapes)")
    ort: bool = Field(False, description="the bundle also holds model.ort (ONNX Runtime Mobile format) and the "
                                         "required_operators config a reduced ORT build is made from (the phone "
                                         "profile sets it; a bundle ships one model file unless asked for more)")
    ort_platform: Literal["generic", "amd64", "arm"] = Field(
        "generic", description="what the .ort file's saved optimizations may assume: amd64 keeps x86-only layouts "
                               "(NCHWc), arm lets QDQ groups run as int8 kernels, generic runs anywhere")
    mobile_check: bool = Field(False, description="report how NNAPI and CoreML would partition the bundled "
                                                  "model (ONNX Runtime's mobile usability check)")
    tokenizer_in_graph: bool = Field(
        False, description="the bundle also holds model.app.onnx: model.onnx with its tokenizer inside the graph "
                           "(onnxruntime-extensions' BertTokenizer op), so an app feeds a string tensor of texts "
                           "and reads the same outputs; WordPiece (BERT-style) tokenizers only, checked token for "
                           "token against tokenizer.json; needs `pip install 'edgekit[app]'` (without it, or for "
                           "another tokenizer, the bundle says why it has no app graph)")
    layouts: list[Literal["hf", "model2vec", "static-npy"]] | Literal["auto"] = Field(
        "auto", description="which extra layouts a bundle holds beside model.onnx + tokenizer.json, each checked "
                            "against model.onnx (edgekit/stages/layouts.py): hf (transformers.js and sentence-transformers' "
                            "ONNX backend; a sentence-encoder transformer student), model2vec (model2vec's "
                            "StaticModel folder) and static-npy (tokenizer.json + embeddings.npy, the full "
                            "vocabulary; both static students). auto: [model2vec] for a static student, [] for a "
                            "transformer (hf/ copies the model file, so it is on request). A name that does not "
                            "apply to the bundled student is refused when the bundle is written; `edgekit bundle "
                            "RUN NAME --layout NAME` overrides this for one bundle")


class LossSpec(_Strict):
    name: Literal[LOSS_NAMES] = Field(
        description="kl: soft targets with temperature; ce: hard labels; mse/cosine: embeddings; "
                    "hidden_mse: hidden states of mapped layers; attention: attention maps of mapped layers")
    weight: float = Field(1.0, gt=0)
    temperature: float = Field(2.0, gt=0, description="kl only")


class DistillSpec(_Strict):
    losses: list[LossSpec] = Field(default_factory=lambda: [LossSpec(name="mse")], min_length=1,
                                   description="image-classifier teachers: [kl] by default; sequence-classifier "
                                               "teachers: [kl, ce (weight 0.5)]")
    epochs: int = Field(3, ge=1, description="image-classifier teachers: 30 by default")
    batch_size: int = Field(32, ge=1)
    lr: float = Field(1e-4, gt=0, description="image-classifier teachers: 3e-3 by default")
    seed: int = Field(0)
    freeze_embeddings: bool = Field(True, description="text students keep the teacher's word embeddings "
                                                      "frozen (when widths match): 2/3 of a small student's "
                                                      "weights, and most of the optimizer's work")
    checkpoint_every: int = Field(200, ge=1, description="optimizer steps between checkpoints (resume points)")
    unlabeled: list[DataSpec] = Field(default_factory=list, description="extra texts/images to distill on")
    max_texts: int | None = Field(None, ge=1, description="subsample the distillation set (quick runs)")
    refit_heads: bool = Field(True, description="sentence encoders with linear heads: after distillation, refit "
                                                "each classification head on the student's own embeddings of the "
                                                "task's training split, as the teacher's was fit on the teacher's")
    # Static tables learn from a far higher rate than pretrained transformers. On the demo recipe's 10.5k texts
    # (mse loss) S256 at AdamW 2e-3, batch 64, 6 epochs (~12 s on 2 idle cores) keeps 98.0% of the teacher on
    # sentiment and 105.7% on Lee (its model2vec start: 95.3% / 69%); 10 epochs or lr 5e-3 do no better (97.5%,
    # 97.4% sentiment). A ce loss on the labels (weight 0.5) lifts it to 100.5% sentiment, 106.4% Lee.
    static_lr: float = Field(2e-3, gt=0, description="static-embedding students (students.static): learning rate "
                                                     "(distill.lr is the transformers')")
    static_epochs: int = Field(6, ge=1, description="static-embedding students: epochs (distill.epochs is the "
                                                    "transformers')")
    static_batch_size: int = Field(64, ge=1, description="static-embedding students: batch size")
    workers: int = Field(1, ge=1, description="train each student data-parallel (DDP) on this many Ray Train "
                                              "workers, one CPU each; each takes its slice of every batch "
                                              "(batch_size stays the global batch). Above 1 needs "
                                              "`pip install 'edgekit[ray]'` and, on a cluster, the cache on "
                                              "storage every node sees")


class SigningSpec(_Strict):
    key: str = Field(description="PEM file of the elliptic-curve private key (P-256/384/521; `edgekit keygen` "
                                 "makes a pair) that signs the bundle as the last step of the run, into "
                                 "bundle/model.sig (`edgekit verify bundle --key public.pem` checks it). A relative "
                                 "path is from the folder edgekit runs in, as data sources are. Needs the "
                                 "`signing` extra: pip install 'edgekit[signing]'")


class ExecutorSpec(_Strict):
    kind: Literal["in-process", "ray"] = Field(
        "in-process", description="where the run's units of work execute: in this process, or as Ray tasks (teacher "
                                  "outputs, probes, each student's distillation and evaluation; timing only on the "
                                  "node carrying the resource edgekit-target:<target>, its CPUs reserved). The CLI's "
                                  "--executor overrides it")
    address: str | None = Field(None, description="the Ray cluster's address (ray start --head prints it; --address "
                                                  "overrides it); null: a Ray instance on this machine, which times")
    cpus_per_task: int | None = Field(None, ge=1, description="CPUs each compute task reserves, and torch's threads "
                                                              "there; null: as many as the timing node has")


class Recipe(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="names the default run folder")
    target: str | None = Field(
        None, description="deployment profile: a name in export/ (x86-server, arm64-phone, cuda-gpu) or a YAML "
                          "path; it sets budget.providers, budget.threads, quantize.variants and export, and "
                          "the recipe's own keys override it")
    teacher: TeacherSpec
    tasks: list[TaskSpec] = Field(min_length=1)
    students: StudentSpace = Field(default_factory=StudentSpace)
    budget: Budget
    distill: DistillSpec = Field(default_factory=DistillSpec)
    quantize: QuantizeSpec = Field(default_factory=QuantizeSpec)
    export: ExportSpec = Field(default_factory=ExportSpec)
    executor: ExecutorSpec = Field(default_factory=ExecutorSpec)
    signing: SigningSpec | None = Field(None, description="sign the bundle with a private key (authenticity, "
                                                          "not only integrity); default: unsigned")
    _profile_file: str | None = PrivateAttr(None)  # the file `target` resolved to, where the recipe was loaded
    _source: tuple[str, str | None] = PrivateAttr(("recipe", None))  # (file name, YAML text) it was read from

    @model_validator(mode="before")
    @classmethod
    def _distill_defaults(cls, data):
        """The distill keys a recipe leaves out take its teacher kind's DISTILL_DEFAULTS (image students are
        CNNs trained from the teacher's logits; a sequence classifier's students learn its logits and the
        labels), not the sentence-encoder field defaults."""
        if not isinstance(data, dict):
            return data
        teacher, distill = data.get("teacher"), data.get("distill", {})
        kind = teacher.get("kind") if isinstance(teacher, dict) else getattr(teacher, "kind", None)
        if not isinstance(kind, str) or kind not in DISTILL_DEFAULTS:  # a wrong type: validation says so
            return data
        if isinstance(distill, DistillSpec):  # built in code: what it was given is its model_fields_set
            distill = distill.model_dump(include=distill.model_fields_set)
        if isinstance(distill, dict):
            data = {**data, "distill": {**DISTILL_DEFAULTS[kind], **distill}}
        return data

    @property
    def profile_file(self) -> str | None:
        return self._profile_file

    def where(self, key: str) -> str:
        """`file:line` of a key path such as `tasks[0].data.source` in the YAML this recipe came from."""
        return _locate(*self._source, key)

    @model_validator(mode="after")
    def _parts_fit(self):
        names = [t.name for t in self.tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"task names must be unique (got {names})")
        image = self.teacher.images
        for task in self.tasks:
            if kind_of(task.kind).images != image:
                raise ValueError(f"task '{task.name}' ({task.kind}) cannot be served by a {self.teacher.kind} "
                                 "teacher: image tasks need kind image-classifier, text tasks a text teacher")
        classification = [t for t in self.tasks if kind_of(t.kind).labelled]
        if self.teacher.kind != "sentence-encoder":
            if len(self.tasks) != 1 or not classification:
                raise ValueError(f"a {self.teacher.kind} teacher serves exactly one classification task; "
                                 "use kind sentence-encoder for several tasks")
            if self.teacher.head == "linear":
                raise ValueError("head: linear fits heads on sentence-encoder embeddings; "
                                 f"a {self.teacher.kind} teacher takes head: finetune or none")
        elif self.teacher.head == "finetune":
            raise ValueError("a sentence-encoder teacher takes head: linear (or none); "
                             "for full fine-tuning use kind sequence-classifier")
        if self.teacher.kind == "sentence-encoder" and classification and self.teacher.head == "none":
            raise ValueError(f"classification task '{classification[0].name}' needs a head on the encoder: "
                             "set teacher.head: linear")
        if self.students.static and self.teacher.kind != "sentence-encoder":
            raise ValueError(f"students.static: static-embedding students learn a sentence encoder's embeddings, and "
                             f"this teacher is a {self.teacher.kind}: remove students.static")
        layer_losses = [loss.name for loss in self.distill.losses if loss.name in ("hidden_mse", "attention")]
        if self.students.static and layer_losses:
            raise ValueError(f"distill.losses {', '.join(layer_losses)} compare the layers of a transformer, and the "
                             "static-embedding students of students.static have none: drop those losses or "
                             "students.static")
        if self.teacher.model == "edgekit:cnn" and self.teacher.head != "finetune":
            raise ValueError("teacher edgekit:cnn starts untrained: set teacher.head: finetune")
        if self.budget.scope == "end-to-end" and image:
            raise ValueError("budget.scope: end-to-end times text in to outputs out, and this recipe's teacher reads "
                             "images: use scope: model")
        if self.budget.seq_len == "task" and image:
            raise ValueError("budget.seq_len: task applies to text tasks; leave it out for images")
        if self.export.shapes == "fixed" and self.budget.seq_len == "task":
            raise ValueError("export.shapes: fixed fixes the sequence length at budget.seq_len, which is `task`: "
                             "set budget.seq_len to a number of tokens (e.g. 128)")
        if isinstance(self.budget.min_retention, dict) and set(self.budget.min_retention) - set(names):
            raise ValueError(f"budget.min_retention names task(s) {sorted(set(self.budget.min_retention) - set(names))} "
                             f"that the recipe does not have (tasks: {', '.join(names)})")
        if self.teacher.kind != "sentence-encoder" and any(loss.name in ("mse", "cosine") for loss in self.distill.losses):
            raise ValueError(f"distill.losses mse and cosine compare sentence embeddings, which a {self.teacher.kind} "
                             "teacher does not produce (only class logits): use kl (soft targets) and ce (labels), "
                             "e.g. losses: [{name: kl}, {name: ce, weight: 0.5}]")
        if any(loss.name in ("kl", "ce") for loss in self.distill.losses) and not classification:
            raise ValueError("losses kl and ce compare class logits, and no task is a classification task: "
                             "use mse or cosine on the embeddings")
        return self

    def sha256(self) -> str:
        """sha256 of the validated recipe as canonical JSON (sorted keys): what a bundle's provenance records."""
        return hashlib.sha256(json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()

    def digest(self) -> str:
        """A short hash of the validated recipe (cache keys)."""
        return self.sha256()[:16]


# A recipe or target profile is a page of settings; these limits are far above any real one and far below what
# would take a parser, pydantic or a cache key minutes or gigabytes.
MAX_YAML_BYTES = 1 << 20
MAX_YAML_VALUES = 100_000  # scalars, lists and mappings, each alias counted as the values it repeats
MAX_YAML_DEPTH = 100  # lists and mappings inside each other (edgekit.trust.reading.MAX_DEPTH)


def read_config_text(path: Path, what: str, fix: str, error: type | None = None) -> str:
    """The UTF-8 text of a recipe or profile file, refused before it is read when it is not a regular file
    (a FIFO would block the read forever, /dev/zero never end) or larger than MAX_YAML_BYTES."""
    from edgekit.errors import RecipeError
    from edgekit.trust.reading import read_text

    return read_text(path, MAX_YAML_BYTES, what, fix, error or RecipeError)


def yaml_shape_problem(text: str) -> str | None:
    """Why the YAML `text` must not be built into Python values, or None: nested more than MAX_YAML_DEPTH deep
    (the constructor and everything after it recurse), an alias inside its own anchor (a value containing
    itself), or more than MAX_YAML_VALUES values once aliases are expanded ("billion laughs": PyYAML builds the
    shared references cheaply, but validation, json.dumps and the cache key walk every repetition).
    Walks the parser's events only, without recursion; a syntax error is raised as the YAMLError it is."""
    import yaml

    count, depth = 0, 0
    frames = []  # open lists/mappings: [anchor, values before it, its depth, the deepest depth inside it]
    anchors: dict[str, tuple[int, int]] = {}  # anchor -> (values it holds, depth it adds)
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.AliasEvent):
            if event.anchor not in anchors:
                if any(frame[0] == event.anchor for frame in frames):
                    return f"line {event.start_mark.line + 1}: holds alias *{event.anchor} inside its own " \
                           "anchor, a value that contains itself"
                continue  # an undefined alias: loading says so, at its line
            values, adds = anchors[event.anchor]
            count += values
            if frames:
                frames[-1][3] = max(frames[-1][3], depth + adds)
            if depth + adds > MAX_YAML_DEPTH:
                return f"line {event.start_mark.line + 1}: nests lists or mappings more than " \
                       f"{MAX_YAML_DEPTH} deep through alias *{event.anchor}"
        elif isinstance(event, yaml.ScalarEvent):
            count += 1
            if event.anchor is not None:
                anchors[event.anchor] = (1, 0)
        elif isinstance(event, yaml.CollectionStartEvent):
            count += 1
            depth += 1
            if depth > MAX_YAML_DEPTH:
                return f"line {event.start_mark.line + 1}: nests lists or mappings more than {MAX_YAML_DEPTH} deep"
            frames.append([event.anchor, count - 1, depth, depth])
        elif isinstance(event, yaml.CollectionEndEvent):
            anchor, before, level, deepest = frames.pop()
            depth -= 1
            if frames:
                frames[-1][3] = max(frames[-1][3], deepest)
            if anchor is not None:
                anchors[anchor] = (count - before, deepest - level + 1)
        if count > MAX_YAML_VALUES:
            return (f"line {event.start_mark.line + 1}: expands to more than {MAX_YAML_VALUES:,} values through "
                    "its aliases (*name), an alias bomb" if anchors else f"holds more than {MAX_YAML_VALUES:,} values")
    return None


def load_yaml(text: str, where: str, what: str, error: type | None = None):
    """The YAML `text` (of the file `where`) as Python values (safe_load: plain types only), or `error`:
    "where[:line]: what is wrong; fix"."""
    import yaml

    from edgekit.errors import RecipeError

    error = error or RecipeError
    try:
        problem = yaml_shape_problem(text)
        if problem:
            line, _, why = problem.partition(": ") if problem.startswith("line ") else ("", "", problem)
            at = f"{where}:{line.removeprefix('line ')}" if line else where
            raise error(f"{at}: the {what} {why}; no {what} needs that: write its values out plainly.")
        return yaml.safe_load(text)
    except yaml.reader.ReaderError as e:  # a control character: binary data, or UTF-16 text
        raise error(f"{where}: holds the control character U+{e.character:04X} (character {e.position}), which "
                    f"YAML text cannot; it is not a text file: re-save the {what} as UTF-8 text.") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f"{where}:{mark.line + 1}" if mark else where
        problem = str(getattr(e, "problem", None) or e)
        if isinstance(e, yaml.constructor.ConstructorError) and "constructor for the tag" in problem:
            raise error(f"{at}: not valid YAML ({problem}): a {what} holds plain values only, and edgekit never "
                        "builds Python objects from a file; remove the tag.") from None
        raise error(f"{at}: not valid YAML ({problem}); fix the syntax there.") from None


@functools.lru_cache(maxsize=4)
def _composed(text: str):
    """The YAML node tree of `text` (once per text: a recipe with many problems locates each in it), or None."""
    import yaml

    try:
        return yaml.compose(text)
    except (yaml.YAMLError, RecursionError):
        return None


def _line_of(text: str, location: tuple) -> int | None:
    """The YAML line (1-based) of the key at `location` (a pydantic error path), when found."""
    import yaml

    node = _composed(text)
    if node is None:
        return None
    line = None
    for key in location:
        if isinstance(node, yaml.MappingNode):
            match = next(((k, v) for k, v in node.value if k.value == key), None)
            if match is None:
                break
            line, node = match[0].start_mark.line + 1, match[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
            line = node.start_mark.line + 1
        else:
            break
    return line


def _locate(where: str, text: str | None, key: str) -> str:
    """`where:line` of a key path (`tasks[0].data.source` or `tasks.0.data.source`) in the YAML `text`."""
    location = tuple(int(part) if part.isdigit() else part for part in re.split(r"[.\[\]]+", key) if part)
    line = _line_of(text, location) if text else None
    return f"{where}:{line}" if line else where


def _fix(err: dict) -> str:
    kind, msg = err["type"], err["msg"].removeprefix("Value error, ")
    if kind == "extra_forbidden":
        return "unknown key: remove it or check its spelling (`edgekit recipe schema` lists every key)"
    if kind == "missing":
        return "required key is missing: add it"
    return msg


def validation_problems(e: ValidationError, where: str, text: str | None) -> list[str]:
    """One line per problem of a pydantic error: `where[:line]: key.path: the fix`."""
    problems = []
    for err in e.errors():
        # Drop pydantic's union/literal tags ("int", "literal['task']") from the path.
        loc = tuple(p for p in err["loc"] if isinstance(p, int) or not (p.startswith(("literal[", "function-"))
                                                                        or p in ("int", "str", "float")))
        path = ".".join(str(p) for p in loc) or "(top level)"
        line = _line_of(text, loc) if text and loc else None
        at = f"{where}:{line}" if line else where
        problems.append(f"  {at}: {path}: {_fix(err)}")
    return list(dict.fromkeys(problems))
