"""Tiny real models for tests: seconds to build, export and run, same code paths as big ones.

Imports torch at module level (the CNN classes must be importable for torch.load);
only tests import this module.
"""

from __future__ import annotations

import string
from pathlib import Path

import torch
from torch import nn

# Characters and word pieces cover any ASCII word, so real sentences tokenize without [UNK] floods.
_WORDS = ("the a an and of to in is it that this film movie story one not but with as its for on be "  # noqa: SIM905
          "good bad best worst funny dull great boring love hate too more most very all by from at "
          "his her he she they you we an are was has have who what if so than about into just").split()
_VOCAB = (["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list(string.ascii_lowercase + string.digits)
          + [f"##{c}" for c in string.ascii_lowercase + string.digits] + list(string.punctuation) + _WORDS)


def tiny_text_model(folder: str | Path, task: str = "feature-extraction", seed: int = 0) -> Path:
    """A 2-layer, 32-wide BERT with its own word-piece tokenizer, saved as a HF folder."""
    from transformers import BertConfig, BertForSequenceClassification, BertModel, BertTokenizerFast

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab_file = folder / "vocab.txt"
    vocab_file.write_text("\n".join(dict.fromkeys(_VOCAB)) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast(vocab_file=str(vocab_file), do_lower_case=True, model_max_length=128)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128,
                        id2label={0: "rotten", 1: "fresh"}, label2id={"rotten": 0, "fresh": 1})
    torch.manual_seed(seed)
    model = (BertForSequenceClassification if task == "text-classification" else BertModel)(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def tiny_vit(folder: str | Path, seed: int = 0) -> Path:
    """A 1-layer ViT image classifier on 16x16 RGB inputs (10 classes), saved as a HF folder."""
    import json

    from transformers import ViTConfig, ViTForImageClassification

    folder = Path(folder)
    config = ViTConfig(image_size=16, patch_size=8, num_channels=3, hidden_size=32, num_hidden_layers=1,
                       num_attention_heads=2, intermediate_size=64, num_labels=10)
    torch.manual_seed(seed)
    ViTForImageClassification(config).save_pretrained(folder)
    processor = {"image_processor_type": "ViTImageProcessor", "size": {"height": 16, "width": 16},
                 "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "do_normalize": True}
    (folder / "preprocessor_config.json").write_text(json.dumps(processor), encoding="utf-8")
    return folder


class TinyCNN(nn.Module):
    """Digits classifier: (N, C, 8, 8) -> logits (N, 10)."""

    def __init__(self, in_channels: int = 1):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(in_channels, 8, 3, padding=1), nn.ReLU(),
                                      nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2))
        self.head = nn.Linear(64, 10)

    def forward(self, x):
        return self.head(torch.flatten(self.features(x), 1))


class TwoHeadCNN(TinyCNN):
    """Two outputs: class logits (N, 10) and an embedding (N, 4)."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(64, 4)

    def forward(self, x):
        h = torch.flatten(self.features(x), 1)
        return self.head(h), self.embed(h)


def tiny_cnn(path: str | Path, kind: str = "torchscript", two_heads: bool = False, in_channels: int = 1,
             seed: int = 0) -> Path:
    """Save a tiny digits CNN as a TorchScript archive or a pickled (torch.save) module."""
    torch.manual_seed(seed)
    model = (TwoHeadCNN() if two_heads else TinyCNN(in_channels)).eval()
    path = Path(path)
    if kind == "torchscript":
        torch.jit.save(torch.jit.script(model), str(path))
    else:
        torch.save(model, path)
    return path


def tiny_recipe(teacher_folder: str | Path, **overrides):
    """A recipe on a tiny teacher that runs the whole pipeline in seconds: a few hundred
    Rotten Tomatoes snippets, the Lee pairs, one 1-layer student, one epoch, a loose budget,
    a dynamic and a static int8 variant of every file."""
    from edgekit.recipe import recipe_from_dict

    data = {
        "name": "tiny",
        "teacher": {"model": str(teacher_folder), "kind": "sentence-encoder", "head": "linear", "max_length": 64},
        "tasks": [
            {"name": "sentiment", "kind": "classification", "data": {"source": "rotten_tomatoes"},
             "split": {"max_train": 300, "max_test": 120}},
            {"name": "lee", "kind": "similarity", "data": {"source": "lee"}, "split": {"eval_only": True}},
        ],
        "students": {"layers": [1], "max_students": 1},
        "budget": {"ms": 1000, "min_runs": 50, "min_seconds": 0},
        "distill": {"epochs": 1, "batch_size": 16, "lr": 1e-3, "checkpoint_every": 4},
        "quantize": {"variants": ["int8-dynamic", "int8-static-minmax"], "calibration_samples": 16},
    }
    for key, value in overrides.items():
        data[key] = {**data[key], **value} if isinstance(value, dict) else value
    if "speedup" in overrides.get("budget", {}):
        data["budget"].pop("ms")  # a relative budget replaces the milliseconds
    return recipe_from_dict(data)
