"""Names every stage agrees on: graph inputs and outputs, method and kind names, file names.

The bottom of edgekit's import graph: this module imports nothing, so any module can use
it without pulling in another (tests/test_layers.py keeps it that way).
"""

# Graph inputs of the models edgekit exports and feeds: a text model takes the first two or all three
# (batch, seq) int64 tensors; an image model one (batch, channels, height, width) float32 tensor.
TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
IMAGE_INPUT = "pixel_values"

# Graph outputs: a sentence encoder's pooled (batch, hidden) embedding, and each classification
# task's (batch, classes) logits.
EMBEDDING = "embedding"


def logits_name(task_name: str) -> str:
    return f"{task_name}_logits"


# Recipe vocabulary (task kinds: edgekit.data.kinds.KINDS).
TEACHER_KINDS = ("sentence-encoder", "sequence-classifier", "image-classifier")
# How a sentence encoder's token vectors become one: sentence-transformers' Pooling modes (networks.pool_tokens).
POOLING_MODES = ("mean", "cls", "max", "lasttoken", "mean_sqrt_len_tokens", "weightedmean")
LOSS_NAMES = ("kl", "ce", "mse", "cosine", "hidden_mse", "attention")  # edgekit.stages.distill.losses.LOSSES

# Quantized variants a recipe can ask for (edgekit.runtime.quantize.CONFIGS holds what each one means).
METHODS = ("int8-dynamic", "int8-dynamic-per-tensor", "int8-static-minmax", "int8-static-entropy",
           "int8-static-percentile", "fp16", "int4-weight", "int8-weight")
STATIC_METHODS = ("int8-static-minmax", "int8-static-entropy", "int8-static-percentile")

# Files that make a folder a tokenizer (any one of them).
# budget.scope -> the evaluation-matrix row field holding that latency (report.json `files[]`).
LATENCY_FIELDS = {"model": "latency_ms", "end-to-end": "latency_e2e_ms"}

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt")

# Image arrays: what `edgekit export --data` and `bench --data` read, and what a task's data.source may be.
IMAGE_ARRAY_SUFFIXES = (".npy", ".npz")
IMAGE_TASK_SUFFIXES = (".npz",)  # a task needs labels beside its images: an .npz's "label" array

# The tasks `edgekit export --task` takes (optimum's names; edgekit.runtime.export.adapters serves them).
EXPORT_TASKS = ("feature-extraction", "text-classification", "image-classification")
