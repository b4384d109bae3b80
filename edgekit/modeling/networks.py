"""The networks edgekit trains and exports, teacher and student alike.

One forward serves both ONNX export and training: `forward` returns a tuple in
`output_names` order (what the ONNX graph outputs), `internals` returns the small
dict of named tensors the distillation losses compare (TextBrewer's adaptor idea):
  embedding (batch, hidden), logits {task: (batch, classes)}, hidden [(batch, seq, hidden)],
  attention [(batch, heads, seq, seq)], mask (batch, seq).
"""

from __future__ import annotations

import inspect

import torch
from torch import nn

from edgekit.names import EMBEDDING, logits_name


class TextModel(nn.Module):
    """A Hugging Face encoder with pooling and task heads, or a sequence classifier.

    kind "sentence-encoder": backbone is an AutoModel; the embedding is the pooled last hidden state
    (`pooling`: one of names.POOLING_MODES, as sentence-transformers pools), optionally projected to the
    teacher's width (a narrower student keeps the teacher's embedding space), passed through the teacher's
    sentence-transformers Dense layers (`dense`) and L2-normalized; each classification task has a linear head on
    it, exported as `<task>_logits`.
    kind "sequence-classifier": backbone is an AutoModelForSequenceClassification whose
    logits are the one task's `<task>_logits`.
    """

    def __init__(self, backbone, kind: str, heads: dict[str, nn.Linear] | None = None, pooling: str = "mean",
                 normalize: bool = True, classifier_task: str | None = None, projection: nn.Linear | None = None,
                 dense: nn.Module | None = None):
        super().__init__()
        self.backbone = backbone
        self.kind = kind
        self.heads = nn.ModuleDict(heads or {})
        self.pooling = pooling
        self.normalize = normalize
        self.classifier_task = classifier_task
        self.projection = projection
        self.dense = dense
        # A family without token-type embeddings (DistilBERT, MPNet: not in forward; DeBERTa-v3:
        # type_vocab_size 0, so forward ignores them) has no such graph input: ONNX drops unused inputs.
        self.uses_token_type_ids = ("token_type_ids" in inspect.signature(backbone.forward).parameters
                                    and getattr(backbone.config, "type_vocab_size", 1) > 0)

    @property
    def output_names(self) -> list[str]:
        if self.kind == "sequence-classifier":
            return [logits_name(self.classifier_task)]
        return [EMBEDDING, *(logits_name(name) for name in self.heads)]

    @property
    def input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", *(["token_type_ids"] if self.uses_token_type_ids else [])]

    def _pool(self, last_hidden, mask):
        pooled = pool_tokens(last_hidden, mask, self.pooling)  # (batch, hidden)
        if self.projection is not None:
            pooled = self.projection(pooled)
        if self.dense is not None:
            pooled = self.dense(pooled)
        return nn.functional.normalize(pooled, dim=-1) if self.normalize else pooled

    def internals(self, input_ids, attention_mask, token_type_ids=None, hidden: bool = False,
                  attention: bool = False) -> dict:
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask,
                  "output_hidden_states": hidden, "output_attentions": attention}
        if self.uses_token_type_ids and token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        out = self.backbone(**kwargs)
        result = {"mask": attention_mask}
        if self.kind == "sequence-classifier":
            result["logits"] = {self.classifier_task: out.logits}
        else:
            embedding = self._pool(out.last_hidden_state, attention_mask)  # (batch, embedding_dim)
            result["embedding"] = embedding
            result["logits"] = {name: head(embedding) for name, head in self.heads.items()}
        if hidden:
            result["hidden"] = list(out.hidden_states)  # embeddings output, then one per layer
        if attention:
            result["attention"] = list(out.attentions)
        return result

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        out = self.internals(input_ids, attention_mask, token_type_ids)
        if self.kind == "sequence-classifier":
            return (out["logits"][self.classifier_task],)
        return (out["embedding"], *(out["logits"][name] for name in self.heads))


def pool_tokens(hidden, mask, mode: str):
    """(batch, seq, hidden) token vectors -> (batch, hidden), over the positions `mask` (batch, seq) marks, as
    sentence-transformers' Pooling computes each mode (names.POOLING_MODES); `cls` and `lasttoken`
    find the first and last real token whichever side the tokenizer pads."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)  # (batch, seq, 1)
    if mode in ("mean", "mean_sqrt_len_tokens"):
        count = weights.sum(1).clamp(min=1e-9)
        return (hidden * weights).sum(1) / (count if mode == "mean" else count.sqrt())
    if mode == "max":
        return hidden.masked_fill(weights == 0, float("-inf")).max(1).values
    if mode == "weightedmean":  # position 1, 2, ... of the real tokens, counted from the first of them
        positions = torch.arange(1, hidden.shape[1] + 1, dtype=hidden.dtype, device=hidden.device).view(1, -1, 1)
        weighted = weights * (positions - mask.to(torch.int32).argmax(1).view(-1, 1, 1).to(hidden.dtype))
        return (hidden * weighted).sum(1) / weighted.sum(1).clamp(min=1e-9)
    length = hidden.shape[1]
    if mode == "cls":
        index = mask.to(torch.int32).argmax(1)  # (batch,) the first real token
    elif mode == "lasttoken":
        index = length - 1 - mask.to(torch.int32).flip(1).argmax(1)  # the last real token
    else:
        raise ValueError(f"unknown pooling mode {mode!r}")
    return torch.gather(hidden, 1, index.view(-1, 1, 1).expand(-1, 1, hidden.shape[-1]).long()).squeeze(1)


class StaticConfig:
    """What a static student's config.json says (measure saves it beside the exported file, as a transformer's
    config): `vocab_size` is how many token ids the graph takes (benchmark feeds draw ids below it)."""

    model_type = "edgekit-static"

    def __init__(self, vocab_size: int, rows: int, dim: int, projection: int):
        self.vocab_size, self.rows, self.dim, self.projection = vocab_size, rows, dim, projection

    def to_dict(self) -> dict:
        return {"model_type": self.model_type, "vocab_size": self.vocab_size, "rows": self.rows, "dim": self.dim,
                "projection": self.projection}

    def save_pretrained(self, folder) -> None:
        import json
        from pathlib import Path

        (Path(folder) / "config.json").write_text(json.dumps(self.to_dict(), indent=1) + "\n", encoding="utf-8")


class StaticEmbedding(nn.Module):
    """Token ids -> rows of a table: `remap` (an int32 buffer, one Gather) maps each of the tokenizer's ids
    to its row of `table` (rows, dim), so a pruned table still takes the tokenizer's ids unchanged.

    `uncounted`: the ids the mean leaves out (the tokenizer's special tokens, [UNK] among them), as model2vec's
    encode drops them: the bundle's model2vec folder then gives exactly the graph's embeddings (edgekit.stages.layouts)."""

    def __init__(self, remap: torch.Tensor, rows: int, dim: int, projection: int, uncounted: tuple[int, ...] = ()):
        super().__init__()
        self.register_buffer("remap", remap.to(torch.int32))  # (vocab_size,)
        counted = torch.ones(len(remap), 1)
        counted[[i for i in uncounted if 0 <= i < len(remap)]] = 0.0
        # Not persistent: made from the tokenizer, so a student cached before it loads unchanged.
        self.register_buffer("counted", counted, persistent=False)  # (vocab_size, 1)
        self.table = nn.Embedding(rows, dim)
        self.config = StaticConfig(len(remap), rows, dim, projection)

    def counts(self, input_ids, attention_mask):
        """(batch, seq): 1 where a token counts in the mean (in the mask, not a special token), else 0."""
        return nn.functional.embedding(input_ids, self.counted).squeeze(-1) * attention_mask.to(self.counted.dtype)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.table

    def forward(self, input_ids):
        # An embedding lookup of the (vocab_size, 1) remap rather than `remap[input_ids]`: torch.export writes
        # indexing as Unsqueeze + GatherND, a lookup as one Gather (as the TorchScript exporter wrote both).
        rows = nn.functional.embedding(input_ids, self.remap.unsqueeze(-1)).squeeze(-1)  # (batch, seq)
        return self.table(rows)  # (batch, seq, dim)


class StaticModel(nn.Module):
    """A static-embedding sentence encoder (model2vec-like, distilled): the mean of one trained table row per
    token of the text (special tokens and [UNK] left out, as model2vec leaves them out), projected to the teacher's width (so the teacher's heads and the embedding losses apply)
    and L2-normalized when the teacher's embedding is. No attention, no layers: a Gather, a mean and a
    (dim x width) MatMul, whatever the text's length.

    The same interface as TextModel's kind "sentence-encoder" (`backbone` is the StaticEmbedding);
    edgekit.modeling.static makes its initial weights from the teacher."""

    kind = "sentence-encoder"
    pooling = "mean"  # of the token rows, whatever the teacher's pooling (the table was made with it)

    def __init__(self, remap: torch.Tensor, rows: int, dim: int, width: int, heads: dict[str, nn.Linear] | None = None,
                 normalize: bool = True, dense: nn.Module | None = None, uncounted: tuple[int, ...] = ()):
        super().__init__()
        self.backbone = StaticEmbedding(remap, rows, dim, width, uncounted)
        self.projection = nn.Linear(dim, width)
        self.heads = nn.ModuleDict(heads or {})
        self.normalize = normalize
        self.dense = dense  # the teacher's sentence-transformers Dense layers, after the projection

    @property
    def output_names(self) -> list[str]:
        return [EMBEDDING, *(logits_name(name) for name in self.heads)]

    @property
    def input_names(self) -> list[str]:
        return ["input_ids", "attention_mask"]

    def internals(self, input_ids, attention_mask, token_type_ids=None, hidden: bool = False,
                  attention: bool = False) -> dict:
        if hidden or attention:
            raise ValueError("a static-embedding student has no hidden states or attention maps to distill")
        vectors = self.backbone(input_ids)  # (batch, seq, dim)
        # Multiply and sum rather than a batched MatMul: ORT's dynamic int8 pass would quantize a MatMul of
        # two activations; a masked sum stays float like TextModel's pooling.
        weights = self.backbone.counts(input_ids, attention_mask).unsqueeze(-1).to(vectors.dtype)  # (batch, seq, 1)
        pooled = (vectors * weights).sum(1) / weights.sum(1).clamp(min=1e-9)  # (batch, dim)
        embedding = self.projection(pooled)  # (batch, width)
        if self.dense is not None:
            embedding = self.dense(embedding)
        if self.normalize:
            embedding = nn.functional.normalize(embedding, dim=-1)
        return {"embedding": embedding, "logits": {name: head(embedding) for name, head in self.heads.items()},
                "mask": attention_mask}

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        out = self.internals(input_ids, attention_mask)
        return (out["embedding"], *(out["logits"][name] for name in self.heads))


class ConvNet(nn.Module):
    """A small CNN for small images: `depth` blocks of 3x3 conv + ReLU at `width` channels,
    pooled to 4x4 and classified by one linear layer.

    Features are flattened channel-major, so a narrower student's classifier is the
    teacher's first `width * 16` input columns (see students.init_from_teacher)."""

    def __init__(self, in_channels: int, width: int, depth: int, num_classes: int):
        super().__init__()
        self.config = {"in_channels": in_channels, "width": width, "depth": depth, "num_classes": num_classes}
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Conv2d(in_channels if i == 0 else width, width, 3, padding=1), nn.ReLU())
            for i in range(depth))
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.classifier = nn.Linear(width * 16, num_classes)

    def features(self, x) -> list:
        hidden = []
        for block in self.blocks:
            x = block(x)  # (batch, width, h, w)
            hidden.append(x)
        return hidden

    def forward(self, x):
        return self.classifier(self.pool(self.features(x)[-1]).flatten(1))


class ImageModel(nn.Module):
    """An image classifier (edgekit's ConvNet, a Hugging Face ViT or a user's module) whose logits are
    `<task>_logits`."""

    input_names = ("pixel_values",)

    def __init__(self, net: nn.Module, task: str):
        super().__init__()
        self.net = net
        self.task = task

    @property
    def output_names(self) -> list[str]:
        return [logits_name(self.task)]

    def internals(self, pixel_values, hidden: bool = False, attention: bool = False) -> dict:
        if hidden and isinstance(self.net, ConvNet):
            states = self.net.features(pixel_values)
            logits = self.net.classifier(self.net.pool(states[-1]).flatten(1))
            return {"logits": {self.task: logits}, "hidden": states}
        if hasattr(self.net, "config") and hasattr(self.net.config, "model_type"):
            # A Hugging Face image classifier (a ViT) returns an output object. Its hidden states list the
            # embedding output first: dropped, so hidden[j] follows layer j as a ConvNet's does.
            out = self.net(pixel_values=pixel_values, output_hidden_states=hidden, output_attentions=attention)
            result = {"logits": {self.task: out.logits}}
            if hidden:
                result["hidden"] = list(out.hidden_states)[1:]  # (batch, patches + 1, hidden) per layer
            if attention:
                result["attention"] = list(out.attentions)  # (batch, heads, patches + 1, patches + 1)
            return result
        out = self.net(pixel_values)
        logits = out[0] if isinstance(out, (tuple, list)) else out
        return {"logits": {self.task: logits}}

    def forward(self, pixel_values):
        return (self.internals(pixel_values)["logits"][self.task],)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def state_digest(model: nn.Module) -> str:
    """sha256 of every parameter and buffer (names, shapes, values): identifies a
    model's weights wherever they came from (folder, hub, training)."""
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def torch_feed(feed: dict, names: list[str]) -> dict:
    """numpy inputs -> torch tensors, only those the network takes."""
    return {name: torch.from_numpy(feed[name]) for name in names if name in feed}
