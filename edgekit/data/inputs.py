"""Model inputs for training and batch inference: texts tokenized once, padded per batch.

Padding each batch to its own longest text (not to max_length) keeps short-text
batches cheap; `run_model` also sorts by length so batches hold similar lengths.
"""

from __future__ import annotations

import numpy as np
import torch


class TextInputs:
    def __init__(self, tokenizer, texts: list[str], max_length: int):
        self.texts = list(texts)
        self.ids = tokenizer(self.texts, truncation=True, max_length=max_length)["input_ids"] if self.texts else []
        self.pad_id = tokenizer.pad_token_id or 0

    def select(self, indices) -> TextInputs:
        """The inputs at `indices`, without tokenizing again."""
        chosen = TextInputs.__new__(TextInputs)
        chosen.texts = [self.texts[i] for i in indices]
        chosen.ids = [self.ids[i] for i in indices]
        chosen.pad_id = self.pad_id
        return chosen

    def __len__(self) -> int:
        return len(self.ids)

    def lengths(self) -> np.ndarray:
        return np.array([len(ids) for ids in self.ids])

    def batch(self, indices) -> dict[str, torch.Tensor]:
        rows = [self.ids[i] for i in indices]
        width = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            input_ids[i, :len(row)] = torch.tensor(row)
            mask[i, :len(row)] = 1
        # Single texts: every token is segment 0.
        return {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(input_ids)}


class ImageInputs:
    def __init__(self, images: np.ndarray):
        self.images = np.ascontiguousarray(images, dtype=np.float32)  # (N, C, H, W)

    def __len__(self) -> int:
        return len(self.images)

    def lengths(self) -> np.ndarray:
        return np.zeros(len(self.images))

    def batch(self, indices) -> dict[str, torch.Tensor]:
        return {"pixel_values": torch.from_numpy(self.images[np.asarray(indices)])}


def run_model(model, inputs, batch_size: int = 64) -> dict:
    """PyTorch outputs for every input, in input order: {"embedding": (N, dim) if the
    model has one, "logits": {task: (N, classes)}} as float32 numpy arrays."""
    order = np.argsort(inputs.lengths(), kind="stable")
    embeddings, logits = [], {}
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            out = model.internals(**inputs.batch(order[start:start + batch_size]))
            if "embedding" in out:
                embeddings.append(out["embedding"].float().numpy())
            for task, value in out["logits"].items():
                logits.setdefault(task, []).append(value.float().numpy())
    restore = np.argsort(order, kind="stable")
    result = {"logits": {task: np.concatenate(parts)[restore] for task, parts in logits.items()}}
    if embeddings:
        result["embedding"] = np.concatenate(embeddings)[restore]
    return result
