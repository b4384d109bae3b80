"""Distillation losses as plain functions looked up by name (TextBrewer's KD_LOSS_MAP).

Each takes the student's and the teacher's named outputs (see edgekit.modeling.networks),
the batch (labels per task, -1 where a text has none) and the loss spec, and returns
a scalar. Layer losses pair student layer j with the teacher layer it was initialized
from (`layer_map`), DistilBERT/TinyBERT style.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def kl(student: dict, teacher: dict, batch: dict, spec) -> torch.Tensor:
    """Soft targets: KL(teacher || student) of temperature-softened logits, times T^2
    so its gradient scale does not shrink with T (Hinton et al.)."""
    t = spec.temperature
    terms = [F.kl_div(F.log_softmax(student["logits"][task] / t, -1), F.softmax(logits / t, -1),
                      reduction="batchmean") * t * t
             for task, logits in teacher["logits"].items()]
    return torch.stack(terms).mean()


def ce(student: dict, teacher: dict, batch: dict, spec) -> torch.Tensor:
    """Hard labels of the examples that have one (label -1 = unlabeled text)."""
    terms = []
    for task, labels in batch["labels"].items():
        if (labels >= 0).any():
            terms.append(F.cross_entropy(student["logits"][task], labels, ignore_index=-1))
    return torch.stack(terms).mean() if terms else student["logits"][next(iter(student["logits"]))].sum() * 0


def mse(student: dict, teacher: dict, batch: dict, spec) -> torch.Tensor:
    """Embedding MSE, scaled by the embedding width so it does not vanish for unit vectors."""
    return F.mse_loss(student["embedding"], teacher["embedding"]) * teacher["embedding"].shape[-1]


def cosine(student: dict, teacher: dict, batch: dict, spec) -> torch.Tensor:
    return (1 - F.cosine_similarity(student["embedding"], teacher["embedding"], dim=-1)).mean()


def _paired(student_states: list, teacher_states: list, layer_map: dict[int, int]) -> list[tuple]:
    return [(student_states[j], teacher_states[i]) for j, i in layer_map.items()]


def hidden_mse(student: dict, teacher: dict, batch: dict, spec) -> torch.Tensor:
    """Hidden states after each student layer vs. after its mapped teacher layer,
    averaged over real tokens. Text hidden states list the embedding output first."""
    offset = 1 if "mask" in student else 0
    layer_map = {j + offset: i + offset for j, i in batch["layer_map"].items()}
    mask = student.get("mask")
    terms = []
    for s, t in _paired(student["hidden"], teacher["hidden"], layer_map):
        if s.shape != t.shape:
            raise ValueError(f"hidden_mse needs equal widths (student {tuple(s.shape)}, teacher {tuple(t.shape)})")
        if mask is not None:
            weights = mask.unsqueeze(-1).to(s.dtype)  # (batch, seq, 1)
            terms.append(((s - t) ** 2 * weights).sum() / (weights.sum() * s.shape[-1]))
        else:
            terms.append(F.mse_loss(s, t))
    return torch.stack(terms).mean()


def attention(student: dict, teacher: dict, batch: dict, spec) -> torch.Tensor:
    """Attention maps of each student layer vs. its mapped teacher layer (TinyBERT)."""
    terms = []
    for s, t in _paired(student["attention"], teacher["attention"], batch["layer_map"]):
        if s.shape != t.shape:
            raise ValueError(f"attention transfer needs equal head counts (student {tuple(s.shape)}, "
                             f"teacher {tuple(t.shape)})")
        terms.append(F.mse_loss(s, t))
    return torch.stack(terms).mean()


LOSSES = {"kl": kl, "ce": ce, "mse": mse, "cosine": cosine, "hidden_mse": hidden_mse, "attention": attention}
# Losses that need the teacher's per-token internals, which are too large to cache:
# the teacher runs alongside the student for them.
LIVE_TEACHER = {"hidden_mse": "hidden", "attention": "attention"}


def total_loss(specs, student: dict, teacher: dict, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
    parts = {spec.name: LOSSES[spec.name](student, teacher, batch, spec) * spec.weight for spec in specs}
    return sum(parts.values()), {name: float(value.detach()) for name, value in parts.items()}
