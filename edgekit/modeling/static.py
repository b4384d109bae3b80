"""Static-embedding students (model2vec-style, then distilled): a table of token vectors made from the teacher.

A static student's embedding of a text is the masked mean of one table row per token, projected back to
the teacher's width (networks.StaticModel). Its table starts where model2vec 0.10 starts
(model2vec.distill.distill_from_model):
  1. every kept token run through the teacher on its own, `[CLS] token [SEP]` (the tokenizer's own
     special tokens), pooled over those positions as the teacher pools (mean, cls, lasttoken, ...);
  2. PCA of those vectors to `dim` dimensions (covariance eigenvectors, signs fixed as model2vec does);
  3. each row scaled by its SIF weight, sif / (sif + p(token)), so frequent tokens count for less, with
     model2vec's p: Zipf's law over the vocabulary order (token ids).
The PCA components, transposed, initialize the projection: the untrained student's embeddings have
exactly the cosine similarities of the model2vec model, and distillation starts from there.

The vocabulary is the tokenizer's whole vocabulary without its `[unusedN]` placeholders (`students.static_vocab:
full`, the default: a token the distillation texts never use keeps the row the teacher made for it, where `data`
would send it to the [UNK] row, which the mean leaves out) or the tokens the distillation texts use (`data`: a
smaller table). Either way the graph takes
the tokenizer's ids: `remap` (an int32 table, one Gather) maps each id to its row, ids outside the kept
vocabulary to the [UNK] row. Special tokens are always kept; their rows start at zero ([CLS]/[SEP] are
in every text, and model2vec drops special tokens and [UNK] when it encodes: zero rows leave the
direction of the mean as model2vec's).

The teacher pass (the only costly step: ~20 s for MiniLM's 30k tokens on 2 CPU cores) is memoized per
token in the cache, keyed by the teacher's encoder weights, so PCA widths, vocabularies and reruns reuse it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

from edgekit.errors import RecipeError
from edgekit.trust.cache import Cache, cache_key, rows_problem

if TYPE_CHECKING:
    import numpy as np

SIF = 1e-4  # model2vec's default SIF coefficient
UNUSED = re.compile(r"\[unused\d+\]")  # BERT's placeholder tokens: model2vec's default token_remove_pattern
TOKEN_BATCH = 512  # token sequences per teacher batch (each is 3 positions long)


@dataclass(frozen=True)
class Vocabulary:
    """Which of the tokenizer's ids keep a row: `kept` (sorted ids, one row each, row i for kept[i]) and
    `remap` (tokenizer id -> row, int32, `size` entries)."""

    kept: np.ndarray  # (rows,) int64
    remap: np.ndarray  # (size,) int32
    special: np.ndarray  # (specials,) int64: ids whose rows start at zero
    unk_row: int

    @property
    def rows(self) -> int:
        return len(self.kept)

    @property
    def size(self) -> int:
        return len(self.remap)


def id_counts(token_ids: list[list[int]], size: int) -> np.ndarray:
    """Occurrences of each id (0..size-1) in tokenized texts."""
    import numpy as np

    if not token_ids:
        return np.zeros(size, dtype=np.int64)
    flat = np.concatenate([np.asarray(ids, dtype=np.int64) for ids in token_ids])
    return np.bincount(flat, minlength=size)[:size]


def vocabulary(tokenizer, size: int, mode: str, token_ids: list[list[int]] | None = None) -> Vocabulary:
    """The kept vocabulary of a static student over `size` token ids (the teacher's embedding rows).

    mode "data": the ids in `token_ids` (the tokenized distillation texts) and the special tokens;
    "full": every id but BERT's [unusedN] placeholders. Ids not kept map to the [UNK] row (the pad row
    for a tokenizer without [UNK]: both start at zero)."""
    import numpy as np

    special = np.array(sorted(i for i in tokenizer.all_special_ids if 0 <= i < size), dtype=np.int64)
    if mode == "data":
        if token_ids is None:
            raise ValueError("students.static_vocab: data needs the distillation texts' token ids")
        keep = id_counts(token_ids, size) > 0
    else:
        tokens = tokenizer.convert_ids_to_tokens(list(range(size)))
        keep = np.array([token is not None and not UNUSED.fullmatch(str(token)) for token in tokens])
    keep[special] = True
    kept = np.flatnonzero(keep).astype(np.int64)
    fallback = tokenizer.unk_token_id if tokenizer.unk_token_id is not None else (tokenizer.pad_token_id or 0)
    row_of = np.full(size, -1, dtype=np.int64)
    row_of[kept] = np.arange(len(kept))
    unk_row = int(row_of[fallback]) if 0 <= fallback < size and row_of[fallback] >= 0 else 0
    remap = np.where(row_of >= 0, row_of, unk_row).astype(np.int32)
    return Vocabulary(kept, remap, special, unk_row)


def zipf_probability(n: int) -> np.ndarray:
    """model2vec's token probabilities: Zipf's law over the vocabulary order (rank r gets 1/(r+1), normalized)."""
    import numpy as np

    inverse = 1 / np.arange(2, n + 2)
    return inverse / inverse.sum()


def sif_weights(probability: np.ndarray, sif: float = SIF) -> np.ndarray:
    """sif / (sif + p): ~1 for rare tokens, small for frequent ones (Arora et al.'s SIF, as model2vec)."""
    return sif / (sif + probability)


def pca(vectors: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(scores (n, dim), components (dim, width), mean (width,)): the top `dim` principal components,
    each signed so that its largest-magnitude score is positive (model2vec's _pca_fit_transform)."""
    import numpy as np

    x = vectors.astype(np.float64)
    mean = x.mean(axis=0)
    centered = x - mean
    _, vecs = np.linalg.eigh(centered.T @ centered / max(len(x) - 1, 1))  # ascending eigenvalues
    components = vecs[:, ::-1][:, :dim].T  # (dim, width)
    scores = centered @ components.T
    signs = np.sign(scores[np.abs(scores).argmax(axis=0), np.arange(dim)])
    signs[signs == 0] = 1
    return (scores * signs), components * signs[:, None], mean


def _template(tokenizer) -> tuple[list[int], list[int]]:
    """The special ids a single-text input puts before and after its tokens ([CLS] ... [SEP] for BERT; none, or
    an end token, for many decoders): read off a tokenized text's special-tokens mask, which every tokenizer
    gives (transformers 5 dropped build_inputs_with_special_tokens)."""
    encoded = tokenizer("a", return_special_tokens_mask=True)
    ids, special = list(encoded["input_ids"]), list(encoded["special_tokens_mask"])
    words = [i for i, flag in enumerate(special) if not flag]
    if not words:
        return [], []
    return ids[:words[0]], ids[words[-1] + 1:]


def token_vectors(teacher_model, tokenizer, ids: np.ndarray, encoder_digest: str, cache: Cache | None) -> np.ndarray:
    """(len(ids), teacher width) float32: each token run through the teacher's encoder on its own, as
    `[CLS] token [SEP]`, pooled over those positions as the teacher pools (mean: model2vec's default).
    Memoized per token under the encoder's weights when `cache` is given."""
    import numpy as np
    import torch

    from edgekit.modeling.networks import pool_tokens

    prefix, suffix = _template(tokenizer)
    pooling = getattr(teacher_model, "pooling", "mean")
    key = cache_key("static-tokens", encoder_digest, prefix, suffix, pooling)
    stored = cache.load_arrays("static-tokens", key, partial(rows_problem, "ids", "vectors")) if cache else None
    known = {int(i): row for row, i in enumerate(stored["ids"])} if stored else {}
    missing = np.array([i for i in ids.tolist() if i not in known], dtype=np.int64)
    if len(missing):
        backbone = teacher_model.backbone.eval()
        sequences = torch.tensor([[*prefix, int(i), *suffix] for i in missing], dtype=torch.long)  # (n, 3)
        parts = []
        with torch.inference_mode():
            for start in range(0, len(sequences), TOKEN_BATCH):
                chunk = sequences[start:start + TOKEN_BATCH]
                mask = torch.ones_like(chunk)
                hidden = backbone(input_ids=chunk, attention_mask=mask).last_hidden_state
                parts.append(pool_tokens(hidden, mask, pooling).float().numpy())
        computed = np.nan_to_num(np.concatenate(parts))
        stored = {"ids": missing, "vectors": computed} if not stored else {
            "ids": np.concatenate([stored["ids"], missing]), "vectors": np.concatenate([stored["vectors"], computed])}
        if cache is not None:
            cache.save_arrays("static-tokens", key, stored)
        known = {int(i): row for row, i in enumerate(stored["ids"])}
    return stored["vectors"][[known[int(i)] for i in ids]].astype(np.float32)


def initial_weights(teacher_model, tokenizer, vocab: Vocabulary, dim: int, encoder_digest: str,
                    cache: Cache | None) -> dict:
    """{"table": (rows, dim), "projection": (width, dim), "explained": the share of the token vectors'
    variance the PCA keeps}: a static student's starting weights (see the module docstring)."""
    import numpy as np

    words = np.flatnonzero(~np.isin(vocab.kept, vocab.special))  # rows of non-special tokens
    if len(words) <= dim:
        raise RecipeError(f"students.static: {dim} dimensions need more than {dim} distinct tokens, and the "
                          f"vocabulary keeps {len(words)}: pick a smaller dimension, or set students.static_vocab: "
                          "full (or add distillation texts: distill.unlabeled)")
    vectors = token_vectors(teacher_model, tokenizer, vocab.kept[words], encoder_digest, cache)
    scores, components, _ = pca(vectors, dim)
    total = ((vectors - vectors.mean(0)) ** 2).sum()
    # model2vec's Zipf-over-id-order probabilities, not the distillation texts' token frequencies: on the demo
    # recipe (S256, data vocabulary, default settings) the frequencies start better on Lee (spearman 0.450 vs
    # 0.348 untrained) and worse on sentiment (0.684 vs 0.716), and train to no better (0.733 / 0.526 vs
    # 0.737 / 0.533): the table is trained either way, and this start is model2vec's own.
    probability = zipf_probability(vocab.size)[vocab.kept[words]]
    table = np.zeros((vocab.rows, dim), dtype=np.float32)
    table[words] = scores * sif_weights(probability)[:, None]
    return {"table": table, "projection": components.T.astype(np.float32),
            "explained": float((scores ** 2).sum() / total) if total > 0 else 1.0}
