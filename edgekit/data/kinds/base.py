"""TaskKind: what one kind of recipe task means, in one place.

A kind says which columns its examples have, which metrics score it, which graph output it reads,
how an ONNX file is scored on it (edgekit.runtime.evaluate) and what the gap report (edgekit.stages.gap) compares.
Each kind is one module of this package; edgekit.data.kinds.KINDS lists them.

Nothing here imports numpy, onnxruntime or torch at import time (edgekit.recipe reads the kinds to
validate a recipe, and `edgekit --help` must stay fast): the methods that compute import what they
need. Nor does it import edgekit.recipe, edgekit.data or edgekit.runtime.evaluate, which import this.
"""

from __future__ import annotations

from typing import ClassVar


class TaskKind:
    """One kind of task. Subclasses set the class attributes and implement the methods; one instance
    of each is registered in edgekit.data.kinds.KINDS.

    `task` arguments are edgekit.data.tasks.TaskData (name, spec, train, test, labels); `columns` one
    side of one (train or test: {column: values}, see TaskData's docstring).
    """

    name: ClassVar[str]
    input_columns: ClassVar[tuple[str, ...]]  # what one example's input is made of (dedup keys)
    target_column: ClassVar[str]  # what each example says about its input: its label, score or document
    text_columns: ClassVar[tuple[str, ...]] = ()  # the columns of texts a model reads; () for images
    metrics: ClassVar[tuple[str, ...]]  # the metrics a recipe may choose; the first is the default
    what: ClassVar[tuple[str, str]]  # (one example's input, its target) in words, for messages
    description: ClassVar[str]  # one line, for messages that list the kinds
    labelled: ClassVar[bool] = False  # class labels, scored by a logits head
    images: ClassVar[bool] = False  # reads images (else texts)
    builtins: ClassVar[tuple[str, ...]] = ()  # offline built-in data sets (edgekit.data.builtin) of this kind

    # The gap report (edgekit.stages.gap).
    slice_metric: ClassVar[str]  # the metric of a slice (small slices: accuracy rather than macro F1)
    # Why slices use slice_metric where the task's metric is another: the report says so beside the slices.
    slice_metric_why: ClassVar[str] = ""
    prediction: ClassVar[str]  # the key of evaluate's predictions the gap report reads
    # Scored by a rank correlation over examples: no single example is right or wrong (a flip is a large
    # rank move), and a slice of a few examples has no meaningful correlation.
    correlation: ClassVar[bool] = False
    agreement_rule: ClassVar[str]  # what the agreement of student and teacher measures
    # The hardest slice: the test examples whose `hardness` is lowest. The rule must not select the teacher's
    # errors by construction (the teacher would score 0 there by definition and any student look better).
    hardest_rule: ClassVar[str]  # which test examples are the hardest, in words
    hardest_by: ClassVar[str]  # the same in a few words, for slice names: "lowest teacher margin"
    hardness_key: ClassVar[str]  # what the hardest examples record their hardness value as
    flip_rule: ClassVar[str] = ""  # when an example flips between two models (not for correlation kinds)
    # The cosine scale (edgekit.stages.score_scale): the predictions key holding each test pair's cosine, in
    # cosine_pairs's order, where evaluate records one (else the scale embeds the test pairs itself).
    pair_cosines: ClassVar[str | None] = None

    @property
    def columns(self) -> tuple[str, ...]:
        """Every column of the kind's examples, inputs first (TaskData's columns, and the split digest's order)."""
        return (*self.input_columns, self.target_column)

    def __repr__(self) -> str:
        return f"<task kind {self.name}>"

    def output(self, task_name: str) -> str:
        """The graph output a task of this kind reads (edgekit.names: its logits, or the embedding)."""
        raise NotImplementedError

    def cosine_pairs(self, columns: dict) -> tuple[list[str], list[str], bool] | None:
        """The pairs of texts whose embeddings' cosine an app would threshold ("similar when >= 0.5"), as
        (left, right, cross): cross False pairs left[i] with right[i], True every left with every right; None for
        kinds an app does not threshold a cosine on (a head's logits, images)."""
        return None

    def length_texts(self, columns: dict) -> list[str]:
        """The texts whose token lengths stand for the task's inputs (budget.seq_len: task); [] for images."""
        raise NotImplementedError

    def example_lengths(self, columns: dict, lengths):
        """Per example, its token length for the gap report's length slices (np.ndarray), from `lengths(texts)`
        (token counts); None for images."""
        raise NotImplementedError

    def evaluate(self, session, task, tokenizer, max_length: int, batch_size: int) -> tuple[dict, dict]:
        """(the arrays edgekit.data.metrics.score_with_ci takes for the task's metric, the predictions recorded per
        example) of an ONNX session on the task's test split."""
        raise NotImplementedError

    # --- the gap report: one model's outcome per example, and how outcomes are scored -----------------

    def gold(self, test: dict):
        """The gold answer per test example (np.ndarray), or None where the gold is implied (retrieval)."""
        raise NotImplementedError

    def outcome(self, values):
        """The `prediction` values of one model as the array the gap report scores."""
        raise NotImplementedError

    def score(self, metric: str, outcome, gold) -> float:
        """`metric` of one model's outcomes (may be NaN: a correlation of a constant side)."""
        raise NotImplementedError

    def hardness(self, test: dict, gold, teacher: dict):
        """Per test example, how hard it is: LOWER is harder (np.ndarray (n,)). From the test columns, the
        gold answers and the teacher's predictions; see hardest_rule."""
        raise NotImplementedError

    def agreement(self, outcome, teacher):
        """How much one model's outcomes agree with the teacher's (a number, may be NaN)."""
        raise NotImplementedError

    def right(self, outcome, gold):
        """Per example, whether the outcome is right (not for correlation kinds)."""
        raise NotImplementedError

    def differs(self, a, b):
        """Per example, whether two models' outcomes differ in a way that counts as a flip."""
        raise NotImplementedError

    def answer(self, value):
        """One outcome as a plain int or float (labelled kinds: the class index)."""
        raise NotImplementedError

    def gold_answer(self, gold, i: int):
        """Example i's gold answer as a plain int or float (labelled kinds: the class index)."""
        raise NotImplementedError
