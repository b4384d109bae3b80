"""A model folder's files, checked before transformers, tokenizers, safetensors or torch opens any of them.

A teacher folder comes from someone else, and the loaders trust it: a truncated or deeply nested JSON file
surfaces as a raw JSONDecodeError or RecursionError, a FIFO named config.json blocks the read forever, a
symlink (or a shard name in an index) reads a file outside the folder, a safetensors header whose lengths lie
raises a raw SafetensorError, a config.json whose `vocab_size` the weights cannot back makes transformers
allocate what the machine does not have, and an `auto_map` makes transformers ask the user whether to run code
from the folder. So, before any loader runs:

- `check_folder` (cheap, no torch): every file a loader may read is a regular file inside the folder, every
  config is valid JSON of sane size and depth, no config asks for custom code or a PEFT base model, and every
  safetensors header is consistent with its file;
- `check_config_fits` (imports transformers): the config names an architecture transformers ships, and the
  parameters it implies (counted on the meta device: nothing allocated) are what the weights hold and what the
  machine can hold.

Both are memoized on the files' sizes and modification times: the teacher is checked by the recipe check, then
again by every loader.
"""

from __future__ import annotations

import math
import os
import struct
from pathlib import Path

from edgekit.errors import EdgekitError, InvalidModelFile, OutsideFolder
from edgekit.trust import reading
from edgekit.trust.paths import inside

FIX = "restore it from the model's original files"
# Files a loader may read from a model folder, by suffix: anything else there (a README, a training log) is
# never opened, so a broken one does no harm.
LOADED_SUFFIXES = (".json", ".txt", ".model", ".safetensors", ".bin", ".jinja", ".tiktoken", ".msgpack", ".h5",
                   ".pt", ".pth", ".vocab")
# JSON files transformers, tokenizers or sentence-transformers parse; the large ones (a vocabulary, an index of
# thousands of tensors) get the general limit, every other config the config one.
PARSED = ("config.json", "generation_config.json", "tokenizer_config.json", "special_tokens_map.json",
          "added_tokens.json", "preprocessor_config.json", "processor_config.json", "chat_template.json",
          "modules.json", "sentence_bert_config.json", "config_sentence_transformers.json", "adapter_config.json")
LARGE_JSON = ("tokenizer.json", "vocab.json")
CONFIG_BYTES = 16 << 20
# A tokenizer's vocabulary or merges file, or a sentencepiece model: the largest real ones are a few MB.
TOKENIZER_BYTES = reading.MAX_JSON_BYTES
# safetensors refuses headers larger than this itself (100 MB); a real one is a few hundred KB.
MAX_HEADER_BYTES = 100_000_000
# Bits per element of each safetensors dtype (F4/F6 pack several elements to a byte).
DTYPE_BITS = {"BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8, "I16": 16, "U16": 16,
              "F16": 16, "BF16": 16, "I32": 32, "U32": 32, "F32": 32, "F64": 64, "I64": 64, "U64": 64, "C64": 64,
              "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6}
# What the model a config implies may hold beyond its weight files: float32 from float16/bfloat16 files (x2),
# tied or newly initialized heads, position-id buffers. A config asking for more than this describes a model the
# weights cannot back.
WEIGHT_SLACK_FACTOR = 4
WEIGHT_SLACK_BYTES = 64 << 20
# No real model has more layers or experts than this; building a meta model of a million layers would itself
# take minutes and gigabytes of Python objects.
MAX_COUNT = 4096

_checked: dict = {}


def check_folder(folder: str | Path) -> None:
    """Refuse, naming the file, what is wrong and the fix, anything in `folder` a loader would trip on or be
    misled by (see the module's docstring). Reads only headers and configs; never imports torch."""
    folder = Path(folder)
    key = ("files", _signature(folder))
    if key in _checked:
        return
    for name in sorted(os.listdir(folder)):
        if name.endswith(LOADED_SUFFIXES):
            _check_file(folder, name)
    _checked[key] = weights(folder)


def weights(folder: Path) -> tuple[int, dict] | None:
    """(bytes of tensor data, {tensor: shape} where safetensors headers say) of the weight files transformers
    would load, after their headers and shard names are checked; None when the folder has no weights."""
    for name, read in (("model.safetensors", _safetensors), ("model.safetensors.index.json", _index),
                       ("pytorch_model.bin", _file), ("pytorch_model.bin.index.json", _index)):
        if os.path.lexists(folder / name):
            return read(folder, name)
    return None


def _check_file(folder: Path, name: str) -> None:
    path = _contained(folder, name, f"model folder {reading.shown(folder)} holds")
    reading.regular_file(path, "model file", "replace it with the model's real file", InvalidModelFile)
    if name in PARSED or name in LARGE_JSON or name.endswith(".index.json"):
        _check_json(folder, name)
    elif name.endswith(".safetensors"):
        _safetensors(folder, name)
    elif not name.endswith((".bin", ".h5", ".msgpack", ".pt", ".pth", ".json")):
        _check_size(folder / name, TOKENIZER_BYTES)  # tokenizer files, read whole by the tokenizer


def _check_json(folder: Path, name: str) -> None:
    limit = CONFIG_BYTES if name in PARSED else reading.MAX_JSON_BYTES
    value = reading.read_json(folder / name, None, fix=FIX, error=InvalidModelFile, limit=limit)
    if not isinstance(value, dict):
        return  # modules.json is a list (sentence_config reads it); the others are refused by their reader
    if "auto_map" in value:
        raise InvalidModelFile(
            f"{reading.shown(folder / name)}: has an \"auto_map\", i.e. it asks to run Python code from the model "
            "folder; custom code is never run: use a teacher whose architecture transformers ships (or remove "
            "\"auto_map\" if its model_type is one transformers knows).")
    if name == "adapter_config.json":
        raise InvalidModelFile(
            f"{reading.shown(folder / name)}: the folder is a PEFT adapter, which transformers loads on top of the "
            f"base model it names ({reading.shown(value.get('base_model_name_or_path'))}), outside this folder; "
            "merge the adapter into its base model (peft: model.merge_and_unload().save_pretrained(folder)) and "
            "point edgekit at that folder.")


def _check_size(path: Path, limit: int) -> None:
    size = path.stat().st_size
    if size > limit:
        raise InvalidModelFile(f"{reading.shown(path)}: is {size:,} bytes, more than the {limit:,} such a file can "
                               f"be; {FIX}.")


def _contained(folder: Path, name: str, what: str) -> Path:
    """folder/name resolved, refused (OutsideFolder) when it leads outside the folder: through '..', an absolute
    name or a symlink. A Hugging Face cache snapshot's files are symlinks into the cache's own blobs/ folder,
    which is the model's own storage and allowed."""
    try:
        return inside(folder, name, what, "copy the file into the model folder instead of linking to it")
    except OutsideFolder:
        blobs = _cache_blobs(folder)
        if blobs is None or "/" in name or ".." in name:
            raise
        target = (folder / name).resolve()
        if not target.is_relative_to(blobs):
            raise
        return target


def _cache_blobs(folder: Path) -> Path | None:
    """The blobs/ folder of the Hugging Face cache repository `folder` is a snapshot of, if it is one
    (models--owner--name/snapshots/<revision>)."""
    snapshots = folder.resolve().parent
    repo = snapshots.parent
    if snapshots.name == "snapshots" and repo.name.startswith("models--") and (repo / "blobs").is_dir():
        return (repo / "blobs").resolve()
    return None


def _file(folder: Path, name: str) -> tuple[int, dict]:
    path = _contained(folder, name, f"model folder {reading.shown(folder)} holds")
    return reading.regular_file(path, "weights file", FIX, InvalidModelFile).stat().st_size, {}


def _index(folder: Path, name: str) -> tuple[int, dict]:
    """The tensor bytes of every shard a sharded checkpoint's index names, each shard inside the folder."""
    index_file = folder / name
    index = reading.read_json(index_file, dict, fix=FIX, error=InvalidModelFile)
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map or not all(
            isinstance(shard, str) for shard in weight_map.values()):
        raise InvalidModelFile(f"{reading.shown(index_file)}: has no \"weight_map\" of tensor names to shard files; "
                               f"{FIX}.")
    total, shapes = 0, {}
    for shard in sorted(set(weight_map.values())):
        _contained(folder, shard, f"{reading.shown(index_file)}: weight_map names the shard")
        size, found = (_safetensors if shard.endswith(".safetensors") else _file)(folder, shard)
        total, shapes = total + size, shapes | found
    return total, shapes


def _safetensors(folder: Path, name: str) -> tuple[int, dict]:
    """The tensor bytes a .safetensors file holds, once its header is known to describe the file: an 8-byte
    little-endian length N, N bytes of JSON {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__":
    {...}}, then the data, every tensor's offsets inside it and as long as its shape and dtype say. Returns
    (bytes of tensor data, {tensor: shape})."""
    path = reading.regular_file(_contained(folder, name, f"model folder {reading.shown(folder)} holds"),
                                "weights file", FIX, InvalidModelFile)
    where = reading.shown(folder / name)
    size = path.stat().st_size
    with open(path, "rb") as f:
        start = f.read(8)
        if len(start) < 8:
            raise InvalidModelFile(f"{where}: is {size} bytes, too short for a safetensors file (truncated); {FIX}.")
        length = struct.unpack("<Q", start)[0]
        if length > min(size - 8, MAX_HEADER_BYTES):
            raise InvalidModelFile(f"{where}: its header claims {length:,} bytes, but the file holds {size - 8:,} "
                                   f"after the length (truncated or not a safetensors file); {FIX}.")
        header = reading.parse_json(f.read(length), f"{where}: its header", FIX, InvalidModelFile, dict)
    return _tensor_bytes(header, where, size - 8 - length), {
        tensor: tuple(entry["shape"]) for tensor, entry in header.items() if tensor != "__metadata__"}


def _tensor_bytes(header: dict, where: str, data_bytes: int) -> int:
    total = 0
    for tensor, entry in header.items():
        if tensor == "__metadata__":
            continue
        begin, end, expected = _entry(entry, f"{where}: tensor '{reading.shown(tensor)}'")
        if end > data_bytes:
            raise InvalidModelFile(f"{where}: tensor '{reading.shown(tensor)}' runs to byte {end:,} of the data, but "
                                   f"the file holds {data_bytes:,} (truncated, or the header lies); {FIX}.")
        if end - begin != expected:
            raise InvalidModelFile(f"{where}: tensor '{reading.shown(tensor)}' takes {end - begin:,} bytes, but its "
                                   f"shape and dtype need {expected:,}; {FIX}.")
        total += end - begin
    return total


def _entry(entry, what: str) -> tuple[int, int, int]:
    """(begin, end, bytes its shape and dtype need) of a header entry, or InvalidModelFile."""
    ok = isinstance(entry, dict) and entry.get("dtype") in DTYPE_BITS
    shape, offsets = (entry.get("shape"), entry.get("data_offsets")) if ok else (None, None)
    ok = ok and isinstance(shape, list) and all(type(n) is int and n >= 0 for n in shape)
    ok = ok and isinstance(offsets, list) and len(offsets) == 2 and all(type(n) is int for n in offsets)
    if not ok or not 0 <= offsets[0] <= offsets[1]:
        raise InvalidModelFile(f"{what} is not {{\"dtype\": one of {', '.join(DTYPE_BITS)}, \"shape\": [sizes], "
                               f"\"data_offsets\": [begin, end]}}; {FIX}.")
    return offsets[0], offsets[1], math.ceil(math.prod(shape) * DTYPE_BITS[entry["dtype"]] / 8)


def check_safetensors(path: Path) -> dict[str, list[int]]:
    """The tensor shapes a .safetensors file (a sentence-transformers Dense module's) declares, its header
    checked against the file first."""
    return _safetensors(path.parent, path.name)[1]


def check_config_fits(folder: str | Path, auto_class: str = "AutoModel") -> None:
    """Refuse a config.json transformers would not build from its own code, or whose model the weights (or the
    machine) cannot hold: counted on the meta device, so nothing is allocated. Runs check_folder first."""
    folder = Path(folder)
    check_folder(folder)
    key = ("fits", auto_class, _signature(folder))
    if key in _checked:
        return
    config_file = folder / "config.json"
    config = reading.read_json(config_file, dict, fix=FIX, error=InvalidModelFile, limit=CONFIG_BYTES)
    _check_model_type(config, config_file)
    _check_counts(config, config_file)
    model = _meta_model(folder, auto_class)
    if model is not None:
        held, shapes = _checked.get(("files", _signature(folder))) or (None, {})
        _check_model_size(model, held, reading.shown(config_file))
        _check_shapes(model, shapes, reading.shown(config_file))
    _checked[key] = True


def _check_model_type(config: dict, config_file: Path) -> None:
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    model_type = config.get("model_type")
    if model_type is not None and model_type not in CONFIG_MAPPING_NAMES:
        raise InvalidModelFile(
            f"{reading.shown(config_file)}: model_type '{reading.shown(model_type)}' is not an architecture this "
            "transformers ships, and custom code is never run; use a teacher transformers supports, or upgrade "
            "transformers if it is newer than this one.")


def _check_counts(config, config_file: Path) -> None:
    """Layer and expert counts no real model has (each is a module the size estimate would build)."""
    stack = [config]
    while stack:
        item = stack.pop()
        for key, value in item.items():
            if isinstance(value, dict):
                stack.append(value)
            elif type(value) is int and value > MAX_COUNT and ("layer" in key or "expert" in key):
                raise InvalidModelFile(f"{reading.shown(config_file)}: {reading.shown(key)} is {value:,}, more than "
                                       f"any real model's {MAX_COUNT:,}; {FIX}.")


def _check_model_size(model, held: int | None, where: str) -> None:
    """Refuse a model (parameters and buffers, each counted once) far larger than its weights, or than the
    machine's memory: the figure, before transformers allocates it."""
    tensors = {id(t): t for t in (*model.parameters(), *model.buffers())}
    implied = sum(t.numel() * t.element_size() for t in tensors.values())
    if held is not None and implied > WEIGHT_SLACK_FACTOR * held + WEIGHT_SLACK_BYTES:
        raise InvalidModelFile(
            f"{where}: describes a model of {reading.gigabytes(implied)} of parameters, but the folder's weights "
            f"hold {reading.gigabytes(held)} (a dimension such as vocab_size larger than the weights); restore "
            "config.json from the model's original files, or point edgekit at the folder its weights came from.")
    reading.check_allocation(implied, f"{where}: the model it describes", "use a smaller teacher, or a machine "
                             "with more memory", InvalidModelFile)


def _check_shapes(model, shapes: dict, where: str) -> None:
    """Refuse a config.json whose tensors differ in shape from the checkpoint's (transformers would fail after
    allocating, pointing at a report in its log). Checkpoint names may carry or lack the base model's prefix
    ('bert.'), as transformers allows."""
    declared = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    prefix = f"{getattr(model, 'base_model_prefix', '')}."
    for name, shape in shapes.items():
        for candidate in (name, name.removeprefix(prefix), prefix + name):
            if candidate in declared and declared[candidate] != shape:
                raise InvalidModelFile(
                    f"{where}: declares {reading.shown(candidate)} of shape {list(declared[candidate])}, but the "
                    f"weights hold it as {list(shape)} (a size in config.json that is not the weights'); restore "
                    "config.json from the model's original files.")


def _meta_model(folder: Path, auto_class: str):
    """The model config.json describes, built on the meta device (no memory behind any tensor), or None where
    the Auto class does not serve this architecture."""
    import torch
    import transformers

    try:
        config = transformers.AutoConfig.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
        with torch.device("meta"):
            model = getattr(transformers, auto_class).from_config(config, trust_remote_code=False)
    except EdgekitError:
        raise
    except ValueError as e:
        if "Unrecognized configuration class" in str(e):
            return None  # an Auto class this architecture lacks: load_hf says which --task it supports
        raise InvalidModelFile(f"{reading.shown(folder / 'config.json')}: describes a model transformers cannot "
                               f"build ({reading.shown(str(e)[:160])}); {FIX}.") from None
    except Exception as e:  # noqa: BLE001 - transformers raises many types for configs it cannot build
        raise InvalidModelFile(f"{reading.shown(folder / 'config.json')}: describes a model transformers cannot "
                               f"build ({type(e).__name__}: {reading.shown(str(e)[:160])}); {FIX}.") from None
    return model


def _signature(folder: Path) -> tuple:
    """What the checks depend on: every loaded file's identity, size, modification time and target."""
    entries = []
    for name in sorted(os.listdir(folder)):
        if not name.endswith(LOADED_SUFFIXES):
            continue
        path = folder / name
        try:
            stats = path.lstat(), path.stat()
        except OSError:
            entries.append((name, None))  # a dangling link: not memoized as checked, the check reports it
            continue
        entries.append((name, os.path.realpath(path), *((s.st_ino, s.st_size, s.st_mtime_ns) for s in stats)))
    return str(folder.resolve()), tuple(entries)
