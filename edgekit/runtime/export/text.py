"""Text tasks on Hugging Face encoders: feature extraction and sequence classification."""

from __future__ import annotations

from dataclasses import dataclass

from edgekit.data import load_texts
from edgekit.errors import DataError, UnknownTask
from edgekit.modeling.models import ModelSource, load_hf, load_tokenizer, max_text_length
from edgekit.runtime.export.wrappers import hf_module
from edgekit.runtime.feeds import batched, spread_sample

PARITY_BATCH = 8


@dataclass(frozen=True)
class TextTask:
    name: str
    auto_class: str  # the transformers Auto class that loads the PyTorch model
    output: str  # the model output the file gives (optimum's name for the task)
    default_data: str = "rotten_tomatoes"

    def check_source(self, source: ModelSource) -> None:
        if source.kind != "hf":
            raise UnknownTask(f"task '{self.name}' needs a Hugging Face model (folder or hub id); "
                              f"'{source.location}' is a plain torch module file.")

    def load_torch(self, source: ModelSource, trust_pickle: bool = False):
        return load_hf(source, self.auto_class)  # safetensors or weights-only loading: no pickle to trust

    def parity_batches(self, source: ModelSource, data: str | None, samples: int,
                       static_shape: tuple[int, int] | None = None, column: str = "text") -> list[dict]:
        """Real texts spread over the length range, tokenized as the model will see them.

        Dynamic graphs get batches padded to their longest text (several sequence
        lengths); static graphs get exactly (batch, seq_len) padded or truncated.
        """
        tokenizer = load_tokenizer(source.location)
        texts = spread_sample(load_texts(data or self.default_data, column), samples)
        max_length = max_text_length(tokenizer, source.location)
        if static_shape:
            batch_size, seq_len = static_shape
            if len(texts) < batch_size:
                raise DataError(f"only {len(texts)} texts for a static batch of {batch_size}: "
                                "give more texts or a smaller --batch.")
            kwargs = {"padding": "max_length", "max_length": seq_len}
        else:
            batch_size, kwargs = PARITY_BATCH, {"padding": "longest", "max_length": max_length}
        return [dict(tokenizer(chunk, truncation=True, return_tensors="np", **kwargs))
                for chunk in batched(texts, batch_size, exact=bool(static_shape))]

    def input_axes(self, names) -> dict:
        return {name: {0: "batch_size", 1: "sequence_length"} for name in names}

    def export_module(self, model):
        """The model as the exporter takes it: the tokenizer's inputs by name (those the model's forward takes),
        the task's output alone."""
        return hf_module(model, self.output, ("input_ids", "attention_mask", "token_type_ids"))

    def real_positions(self, feed: dict, output):
        """Token-level outputs (batch, seq, ...) are compared on real tokens only: padded
        positions are masked out downstream, and there PyTorch and ORT differ by float
        noise about 10x larger than on real tokens (all-MiniLM-L6-v2: 4e-5 vs 4e-6)."""
        mask = feed.get("attention_mask")
        if mask is None or output.ndim < 2 or output.shape[:2] != mask.shape:
            return None
        return mask.astype(bool)  # (batch, seq)

    def torch_outputs(self, model, feed: dict) -> dict:
        import torch

        with torch.inference_mode():
            out = model(**{k: torch.from_numpy(v) for k, v in feed.items()})
        return {k: v.numpy() for k, v in out.items() if isinstance(v, torch.Tensor)}
