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


def wordpiece_tokenizer(tokenizer_class, vocab_file: Path, **kwargs):
    """A word-piece tokenizer (BertTokenizerFast, MPNetTokenizerFast) over the tokens of `vocab_file`, one per line:
    transformers 5 takes the vocabulary itself (`vocab`), 4.x the file (`vocab_file`, which 5 ignores)."""
    import inspect

    if "vocab" in inspect.signature(tokenizer_class.__init__).parameters:
        tokens = Path(vocab_file).read_text(encoding="utf-8").splitlines()
        return tokenizer_class(vocab={token: i for i, token in enumerate(tokens)}, **kwargs)
    return tokenizer_class(vocab_file=str(vocab_file), **kwargs)


def tiny_text_model(folder: str | Path, task: str = "feature-extraction", seed: int = 0) -> Path:
    """A 2-layer, 32-wide BERT with its own word-piece tokenizer, saved as a HF folder."""
    from transformers import BertConfig, BertForSequenceClassification, BertModel, BertTokenizerFast

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab_file = folder / "vocab.txt"
    vocab_file.write_text("\n".join(dict.fromkeys(_VOCAB)) + "\n", encoding="utf-8")
    tokenizer = wordpiece_tokenizer(BertTokenizerFast, vocab_file, do_lower_case=True, model_max_length=128)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128,
                        id2label={0: "rotten", 1: "fresh"}, label2id={"rotten": 0, "fresh": 1})
    torch.manual_seed(seed)
    model = (BertForSequenceClassification if task == "text-classification" else BertModel)(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def tiny_vit(folder: str | Path, seed: int = 0, image_size: int = 16, patch_size: int = 8, channels: int = 3,
             layers: int = 1) -> Path:
    """A tiny random ViT image classifier (10 classes), saved as a HF folder: by default 1 layer on 16x16
    RGB inputs; `image_size=8, patch_size=4, channels=1, layers=4` takes the digits' 8x8 grey images."""
    import json

    from transformers import ViTConfig, ViTForImageClassification

    folder = Path(folder)
    config = ViTConfig(image_size=image_size, patch_size=patch_size, num_channels=channels, hidden_size=32,
                       num_hidden_layers=layers, num_attention_heads=2, intermediate_size=64, num_labels=10)
    torch.manual_seed(seed)
    ViTForImageClassification(config).save_pretrained(folder)
    processor = {"image_processor_type": "ViTImageProcessor", "size": {"height": image_size, "width": image_size},
                 "image_mean": [0.5] * channels, "image_std": [0.5] * channels, "do_normalize": True}
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


# Words whose presence decides a tiny sentiment text's label: whole tokens of the tiny vocabulary.
_POSITIVE, _NEGATIVE = ("good", "best", "funny", "great", "love"), ("bad", "worst", "dull", "boring", "hate")


def tiny_task_files(folder: str | Path) -> tuple[Path, Path]:
    """Two small tasks a tiny random encoder already knows something about, so its students, files and pick are
    judged against a teacher better than the trivial answer (a file no better than that never ships):
    sentiment.csv, 420 texts of the tiny vocabulary's whole words labelled by the sentiment words among them, one
    of them last (fresh / rotten, balanced), and pairs.csv, 300 pairs of 8-word texts scored by how many words they share.
    Deterministic: the same files on every call."""
    import csv
    import random

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    neutral = [w for w in _WORDS if w not in _POSITIVE + _NEGATIVE]
    sentiment, pairs = folder / "sentiment.csv", folder / "pairs.csv"
    with sentiment.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        for i in range(420):
            fresh = i % 2 == 0
            words = rng.sample(neutral, rng.randint(5, 9))
            words.insert(rng.randint(0, len(words)), rng.choice(_POSITIVE if fresh else _NEGATIVE))
            # and one last: a last-token pooled decoder (Qwen3-like) sees it whatever its attention does
            words.append(rng.choice(_POSITIVE if fresh else _NEGATIVE))
            writer.writerow([" ".join(words), "fresh" if fresh else "rotten"])
    with pairs.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text_a", "text_b", "score"])
        for _ in range(300):
            first = rng.sample(_WORDS, 8)
            second, changed = list(first), rng.randint(1, 8)  # no identical pair: cosines of exactly 1 tie
            for j in rng.sample(range(8), changed):
                second[j] = rng.choice(_WORDS)
            writer.writerow([" ".join(first), " ".join(second), 8 - changed])
    return sentiment, pairs


def tiny_recipe(teacher_folder: str | Path, **overrides):
    """A recipe on a tiny teacher that runs the whole pipeline in seconds: tiny_task_files' sentiment texts and
    scored pairs (written beside the teacher's folder), one 1-layer student, one epoch, a loose budget,
    a dynamic and a static int8 variant of every file."""
    from edgekit.stages.loading import recipe_from_dict

    teacher_folder = Path(teacher_folder)
    sentiment, pairs = tiny_task_files(teacher_folder.parent / f"{teacher_folder.name}-tasks")
    data = {
        "name": "tiny",
        "teacher": {"model": str(teacher_folder), "kind": "sentence-encoder", "head": "linear", "max_length": 64},
        "tasks": [
            {"name": "sentiment", "kind": "classification", "data": {"source": str(sentiment)},
             "split": {"max_train": 300, "max_test": 120}},
            {"name": "pairs", "kind": "similarity", "data": {"source": str(pairs)}, "split": {"eval_only": True}},
        ],
        "students": {"layers": [1], "max_students": 1},
        "budget": {"ms": 1000, "min_runs": 50, "min_seconds": 0},
        "distill": {"epochs": 1, "batch_size": 16, "lr": 1e-3, "checkpoint_every": 4},
        "quantize": {"variants": ["int8-dynamic", "int8-static-minmax"], "calibration_samples": 16},
    }
    for key, value in overrides.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    if "speedup" in overrides.get("budget", {}):
        data["budget"].pop("ms")  # a relative budget replaces the milliseconds
    return recipe_from_dict(data)


# The encoder families edgekit derives students from, as tiny configs of each family's own config class:
# 4 layers (so 1- and 2-layer students keep a spread), 32 wide, 2 heads. RoBERTa-like families number
# positions from padding_idx + 1, so their tables are 2 longer and their pad id is 1, as in the real models.
_PAD_ONE = ("roberta", "xlm-roberta", "camembert", "mpnet")
_FAMILY_CONFIGS = {
    "bert": ("BertConfig", {}),
    "distilbert": ("DistilBertConfig", {"dim": 32, "n_layers": 4, "n_heads": 2, "hidden_dim": 64}),
    "roberta": ("RobertaConfig", {"type_vocab_size": 1}),
    "xlm-roberta": ("XLMRobertaConfig", {"type_vocab_size": 1}),
    "camembert": ("CamembertConfig", {"type_vocab_size": 1}),
    "mpnet": ("MPNetConfig", {"relative_attention_num_buckets": 32}),
    "electra": ("ElectraConfig", {"embedding_size": 16}),  # ELECTRA-small: embeddings narrower than hidden
    "deberta": ("DebertaConfig", {"relative_attention": True, "max_relative_positions": 16,
                                  "pos_att_type": ["c2p", "p2c"], "position_biased_input": False,
                                  "type_vocab_size": 0}),
    # DeBERTa-v3 style: log-bucketed relative positions, normalized rel_embeddings, no token types;
    # the head size spelled out, as deberta-v2-xlarge's config does.
    "deberta-v2": ("DebertaV2Config", {"relative_attention": True, "position_buckets": 16, "attention_head_size": 16,
                                       "max_relative_positions": -1, "pos_att_type": ["p2c", "c2p"],
                                       "position_biased_input": False, "norm_rel_ebd": "layer_norm",
                                       "share_att_key": True, "type_vocab_size": 0}),
    # Alternating global and sliding-window attention (a window of 8 tokens), as ModernBERT's every third layer.
    "modernbert": ("ModernBertConfig", {"global_attn_every_n_layers": 2, "local_attention": 8}),
}
TINY_FAMILIES = tuple(_FAMILY_CONFIGS)


def tiny_family_model(folder: str | Path, family: str, task: str = "feature-extraction", layers: int = 4,
                      seed: int = 0) -> Path:
    """A tiny random encoder of `family` (a model_type in TINY_FAMILIES) with a word-piece tokenizer,
    saved as a HF folder: built locally from the family's config class, nothing downloaded.

    BERT's word-piece tokenizer stands in for families whose own tokenizer needs trained files
    (BPE merges, sentencepiece); its special tokens sit at the ids the family's config expects.
    MPNet gets its own (word-piece) tokenizer and a sentence-transformers modules.json, as
    a sentence-transformers MPNet folder has."""
    import json

    import transformers

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if family == "mpnet":
        specials = ["<s>", "<pad>", "</s>", "[UNK]", "<mask>"]  # MPNet's own ids: <s> 0, <pad> 1, </s> 2
    elif family in _PAD_ONE:
        specials = ["[CLS]", "[PAD]", "[SEP]", "[UNK]", "[MASK]"]
    else:
        specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab_file = folder / "vocab.txt"
    vocab_file.write_text("\n".join(dict.fromkeys(specials + _VOCAB[5:])) + "\n", encoding="utf-8")
    tokenizer_class = transformers.MPNetTokenizerFast if family == "mpnet" else transformers.BertTokenizerFast
    tokenizer = wordpiece_tokenizer(tokenizer_class, vocab_file, do_lower_case=True, model_max_length=128)
    config_class, extra = _FAMILY_CONFIGS[family]
    ids = {"pad_token_id": tokenizer.pad_token_id, "bos_token_id": tokenizer.cls_token_id,
           "eos_token_id": tokenizer.sep_token_id}
    widths = {"hidden_size": 32, "num_hidden_layers": layers, "num_attention_heads": 2, "intermediate_size": 64}
    if family == "distilbert":
        widths = {**extra, "n_layers": layers}
    config = getattr(transformers, config_class)(
        vocab_size=len(tokenizer), max_position_embeddings=130 if family in _PAD_ONE else 128,
        id2label={0: "rotten", 1: "fresh"}, label2id={"rotten": 0, "fresh": 1}, **ids, **{**extra, **widths})
    torch.manual_seed(seed)
    auto = transformers.AutoModelForSequenceClassification if task == "text-classification" else transformers.AutoModel
    auto.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    if family == "mpnet" and task == "feature-extraction":
        modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                   {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
        (folder / "modules.json").write_text(json.dumps(modules), encoding="utf-8")
        (folder / "1_Pooling").mkdir(exist_ok=True)
        (folder / "1_Pooling" / "config.json").write_text(
            json.dumps({"word_embedding_dimension": 32, "pooling_mode_mean_tokens": True}), encoding="utf-8")
    return folder


# Decoder-based embedders (Qwen3-Embedding, EmbeddingGemma): tiny configs of their own config classes. Students of
# such teachers are static-embedding ones (families.py): layer-dropping is for the encoder families.
_DECODER_CONFIGS = {
    "qwen3": ("Qwen3Config", {"num_key_value_heads": 1, "head_dim": 16}, "lasttoken"),
    # EmbeddingGemma: bidirectional attention, mean pooling, then two Dense layers (here 32 -> 48 -> 32)
    "gemma3_text": ("Gemma3TextConfig", {"num_key_value_heads": 1, "head_dim": 16, "sliding_window": 8,
                                         "use_bidirectional_attention": True}, "mean"),
}
TINY_DECODERS = tuple(_DECODER_CONFIGS)


def tiny_decoder_embedder(folder: str | Path, model_type: str, seed: int = 0) -> Path:
    """A tiny random decoder-based sentence embedder of `model_type` (TINY_DECODERS), saved as a
    sentence-transformers 6 folder (modules.json, Pooling, Dense for Gemma3, Normalize) with a word-piece tokenizer
    padding on the left, as Qwen3-Embedding's does: built locally, nothing downloaded."""
    import json

    import transformers

    folder = Path(tiny_text_model(folder, seed=seed))  # for its tokenizer files; the model is replaced below
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
    tokenizer.padding_side = "left"
    config_class, extra, pooling = _DECODER_CONFIGS[model_type]
    config = getattr(transformers, config_class)(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        max_position_embeddings=128, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id, **extra)
    torch.manual_seed(seed)
    for stale in folder.glob("*.safetensors"):
        stale.unlink()
    transformers.AutoModel.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    dense = [(32, 48), (48, 32)] if model_type == "gemma3_text" else []
    write_sentence_folder(folder, pooling, dense=dense, normalize=True)
    (folder / "config_sentence_transformers.json").write_text(json.dumps({"model_type": "SentenceTransformer"}))
    return folder


def write_sentence_folder(folder: Path, pooling: str, dense: list[tuple[int, int]] = (), normalize: bool = True,
                          activation: str = "torch.nn.modules.linear.Identity", seed: int = 0) -> Path:
    """Make `folder` (a Hugging Face model folder) a sentence-transformers 6 folder: modules.json naming the
    Transformer, a Pooling module of `pooling`, random Dense layers of the given (in, out) sizes and a Normalize
    module, in the format sentence-transformers 6.2 saves (module types, `pooling_mode`)."""
    import json

    from safetensors.torch import save_file

    width = json.loads((folder / "config.json").read_text())["hidden_size"]
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.base.modules.transformer.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling",
                "type": "sentence_transformers.sentence_transformer.modules.pooling.Pooling"}]
    (folder / "1_Pooling").mkdir(exist_ok=True)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(
        {"embedding_dimension": width, "pooling_mode": pooling, "include_prompt": True}))
    torch.manual_seed(seed)
    for size_in, size_out in dense:
        path = f"{len(modules)}_Dense"
        (folder / path).mkdir(exist_ok=True)
        (folder / path / "config.json").write_text(json.dumps(
            {"in_features": size_in, "out_features": size_out, "bias": True, "activation_function": activation}))
        linear = nn.Linear(size_in, size_out)
        save_file({f"linear.{name}": value.contiguous() for name, value in linear.state_dict().items()},
                  str(folder / path / "model.safetensors"))
        modules.append({"idx": len(modules), "name": str(len(modules)), "path": path,
                        "type": "sentence_transformers.base.modules.dense.Dense"})
    if normalize:
        path = f"{len(modules)}_Normalize"
        (folder / path).mkdir(exist_ok=True)
        modules.append({"idx": len(modules), "name": str(len(modules)), "path": path,
                        "type": "sentence_transformers.base.modules.normalize.Normalize"})
    (folder / "modules.json").write_text(json.dumps(modules, indent=2))
    return folder
