"""What a sentence-transformers folder says about its model, read from its files alone (no code is run).

A sentence-transformers folder lists its modules in modules.json: a Transformer (the Hugging Face model, in
the folder itself or a subfolder), a Pooling module (1_Pooling/config.json), optionally Dense layers and a
Normalize module; modules.json types are read by their class name, Dropout (the identity at inference) skipped. Both formats are read: sentence-transformers <= 5 (`sentence_transformers.models.Pooling`,
`pooling_mode_mean_tokens: true`, `max_seq_length` in sentence_bert_config.json) and 6
(`sentence_transformers.sentence_transformer.modules.pooling.Pooling`, `pooling_mode: mean`, the length limit
in tokenizer_config.json's `model_max_length`). A recipe then need not restate pooling, normalization or the
token limit, and a teacher's Dense layers are part of the teacher edgekit distills and exports.

Every path a folder names stays inside it, and every module type is one edgekit knows how to run without
importing anything the folder names (a custom module's code is never imported): anything else is refused with
the file and the fix.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edgekit.errors import InvalidModelFile
from edgekit.names import POOLING_MODES
from edgekit.trust import reading

_LEGACY_POOLING = {"pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max",
                   "pooling_mode_mean_tokens": "mean", "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
                   "pooling_mode_weightedmean_tokens": "weightedmean", "pooling_mode_lasttoken": "lasttoken"}
# A Dense module's activation_function is a dotted class name; only these are run (never imported by name).
ACTIVATIONS = ("Identity", "Tanh", "ReLU", "GELU", "Sigmoid", "SiLU")
# modules.json types by their last dotted part; Dropout is the identity at inference.
_KNOWN_MODULES = ("Transformer", "Pooling", "Dense", "Normalize", "Dropout")
# A config file larger than this is not a config (and reading it whole would be unbounded).
MAX_CONFIG_BYTES = 16 << 20
# sentence-transformers writes a huge sentinel for "no limit" (transformers' VERY_LARGE_INTEGER).
_NO_LIMIT = 1_000_000


@dataclass(frozen=True)
class Dense:
    """One Dense module: y = activation(x W^T + b), weights in `weights` (a file inside the folder)."""

    weights: Path
    in_features: int
    out_features: int
    bias: bool
    activation: str  # one of ACTIVATIONS


@dataclass(frozen=True)
class SentenceConfig:
    transformer: str  # the Transformer module's path inside the folder ("" = the folder itself)
    pooling: str | None  # one of POOLING_MODES (None: the folder has no Pooling module)
    dense: tuple[Dense, ...]
    normalize: bool
    max_length: int | None  # the folder's token limit (None: it sets none)


def read_sentence_config(folder: Path, fetch: Callable[[str], Path | None] | None = None) -> SentenceConfig | None:
    """The sentence-transformers modules of `folder`, or None when it has no modules.json (a plain Hugging Face
    folder). `fetch` (relative path -> local file or None) reads a hub repository instead of a local folder.
    Raises InvalidModelFile naming the file and the fix for anything malformed, outside the folder or unknown."""
    fetch = fetch or _local(folder)
    modules_file = fetch("modules.json")
    if modules_file is None:
        return None
    modules = read_json(modules_file, list)
    kinds = []
    for i, module in enumerate(modules):
        if not isinstance(module, dict) or not isinstance(module.get("type"), str):
            raise InvalidModelFile(f"{modules_file}: entry {i} has no module type; re-save the model with "
                                   "sentence-transformers (model.save(folder)).")
        kind = module["type"].rsplit(".", 1)[-1]
        if kind not in _KNOWN_MODULES:
            raise InvalidModelFile(
                f"{modules_file}: module '{module['type']}' is not one edgekit runs (it runs "
                f"{', '.join(_KNOWN_MODULES[:4])}; custom module code is never imported). Fix: use a teacher "
                "built from these modules, or export the model's token embeddings as a plain Hugging Face folder.")
        if kind != "Dropout":
            kinds.append((kind, _inside(str(module.get("path") or ""), modules_file)))
    order = [kind for kind, _ in kinds]
    pooled = order[1:2] == ["Pooling"]
    if order[:1] != ["Transformer"] or "Normalize" in order[:-1] or any(
            kind not in ("Dense", "Normalize") for kind in order[1 + pooled:]):
        raise InvalidModelFile(f"{modules_file}: modules {order} are not a Transformer, a Pooling module, then any "
                               "Dense layers and an optional Normalize last, the pipeline edgekit reproduces in "
                               "ONNX. Fix: use a teacher of that shape.")
    transformer = kinds[0][1]
    pooling = _pooling(fetch, kinds[1][1]) if pooled else None
    dense = tuple(_dense(fetch, path) for kind, path in kinds if kind == "Dense")
    return SentenceConfig(transformer, pooling, dense, order[-1] == "Normalize", _max_length(fetch, transformer))


def _local(folder: Path) -> Callable[[str], Path | None]:
    root = folder.resolve()

    def fetch(relative: str) -> Path | None:
        path = (folder / relative).resolve()
        if not path.is_relative_to(root):  # a symlink leading out of the folder
            raise InvalidModelFile(f"'{folder / relative}' leads outside the model folder '{folder}' (to '{path}'); "
                                   "copy the file into the folder instead of linking to it.")
        if not os.path.lexists(path):
            return None
        # A FIFO or device in a config's place would block the read: refused, not taken for a missing file.
        return reading.regular_file(path, "model file", "replace it with the model's real file", InvalidModelFile)

    return fetch


def _inside(relative: str, named_in: Path) -> str:
    """A module path as modules.json gives it, refused when it names anything outside the folder."""
    parts = Path(relative).parts
    if Path(relative).is_absolute() or ".." in parts or "\\" in relative:
        raise InvalidModelFile(f"{named_in}: module path '{relative}' is outside the model folder; a "
                               "sentence-transformers folder keeps every module inside it (e.g. '1_Pooling'). "
                               "Fix the path, or copy that module into the folder.")
    return "/".join(parts)


def read_json(path: Path, kind: type = dict):
    """A model's JSON config file as `kind`, or InvalidModelFile naming it and the fix (not a regular file, too
    large, malformed, nested too deep, or of another JSON type)."""
    return reading.read_json(path, kind, fix="restore it from the model's original files", limit=MAX_CONFIG_BYTES)


def _joined(module: str, name: str) -> str:
    return f"{module}/{name}" if module else name


def _pooling(fetch, module: str) -> str:
    config_file = fetch(_joined(module, "config.json"))
    if config_file is None:
        return "mean"  # sentence-transformers' own default
    config = read_json(config_file, dict)
    mode = config.get("pooling_mode")
    if mode is None:  # sentence-transformers <= 5: one boolean per mode
        mode = [name for key, name in _LEGACY_POOLING.items() if config.get(key)] or ["mean"]
    modes = [mode] if isinstance(mode, str) else list(mode) if isinstance(mode, list) else [None]
    if len(modes) != 1 or modes[0] not in POOLING_MODES:
        raise InvalidModelFile(f"{config_file}: pooling {mode!r} is not one of {', '.join(POOLING_MODES)} (edgekit "
                               "reproduces one pooling mode, not a concatenation of several). Fix: use a teacher "
                               "with a single pooling mode.")
    return modes[0]


def _dense(fetch, module: str) -> Dense:
    config_file = fetch(_joined(module, "config.json"))
    if config_file is None:
        raise InvalidModelFile(f"Dense module '{module}' has no config.json; restore it from the model's files.")
    config = read_json(config_file, dict)
    activation = str(config.get("activation_function", "torch.nn.modules.linear.Identity")).rsplit(".", 1)[-1]
    weights = fetch(_joined(module, "model.safetensors")) or fetch(_joined(module, "pytorch_model.bin"))
    sizes = (config.get("in_features"), config.get("out_features"))
    if activation not in ACTIVATIONS or weights is None or not all(isinstance(n, int) and n > 0 for n in sizes):
        why = (f"activation {config.get('activation_function')!r} is not one of {', '.join(ACTIVATIONS)}"
               if activation not in ACTIVATIONS else "no model.safetensors or pytorch_model.bin beside it"
               if weights is None else f"in_features/out_features {sizes} are not positive integers")
        raise InvalidModelFile(f"{config_file}: {why}. Fix: restore the Dense module's files, or use a teacher "
                               "whose Dense layers use one of those activations.")
    return Dense(weights, sizes[0], sizes[1], bool(config.get("bias", True)), activation)


def _max_length(fetch, module: str) -> int | None:
    """sentence_bert_config.json's max_seq_length (sentence-transformers <= 5, still read by 6), else the
    tokenizer's model_max_length (where sentence-transformers 6 saves it)."""
    for name, key in (("sentence_bert_config.json", "max_seq_length"), ("tokenizer_config.json", "model_max_length")):
        path = fetch(_joined(module, name))
        value = read_json(path, dict).get(key) if path is not None else None
        if isinstance(value, int) and 0 < value < _NO_LIMIT:
            return value
    return None


def load_dense(dense: Dense):
    """The Dense module as torch layers: Linear (weights read as tensors only: safetensors, or torch's
    weights-only unpickler for pytorch_model.bin) and its activation."""
    import torch

    # The shapes config.json declares, compared with the file's before anything of that size is made.
    expected = {"weight": (dense.out_features, dense.in_features), **({"bias": (dense.out_features,)}
                                                                       if dense.bias else {})}
    if dense.weights.suffix == ".safetensors":
        from safetensors.torch import load_file

        from edgekit.trust.teacher_files import check_safetensors

        _check_shapes(dense.weights, {name: tuple(shape) for name, shape in check_safetensors(dense.weights).items()},
                      expected)
        load = load_file
    else:
        def load(path):
            return torch.load(path, map_location="cpu", weights_only=True)
    try:
        state = load(str(dense.weights))
    except Exception as e:  # noqa: BLE001 - safetensors and torch raise several types for damaged files
        raise InvalidModelFile(f"{dense.weights} cannot be read ({type(e).__name__}: {str(e)[:120]}); restore "
                               "it from the model's files.") from None
    if not isinstance(state, dict):
        raise InvalidModelFile(f"{dense.weights} holds a {type(state).__name__}, not a state dict; restore the "
                               "Dense module's files.")
    _check_shapes(dense.weights, {name: tuple(getattr(value, "shape", ())) for name, value in state.items()},
                  expected)
    linear = torch.nn.Linear(dense.in_features, dense.out_features, bias=dense.bias)  # sizes checked above
    linear.load_state_dict({name.removeprefix("linear."): value for name, value in state.items()})
    return torch.nn.Sequential(linear, getattr(torch.nn, dense.activation)())


def _check_shapes(weights: Path, found: dict, expected: dict) -> None:
    found = {str(name).removeprefix("linear."): shape for name, shape in found.items()}
    if found != expected:
        raise InvalidModelFile(f"{weights} holds {found}, not the {expected} its config.json declares; "
                               "restore the Dense module's files.")
