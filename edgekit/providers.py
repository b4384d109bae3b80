"""ONNX Runtime sessions on a named execution provider, and nothing else.

One place creates every session (benchmarks now, accuracy evaluation later), so
a file is always timed and scored with the options it ships with, and a session
that silently fell back to another provider is an error, not a footnote.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from edgekit.errors import ExtensionsMissing, InvalidModelFile, ModelNotFound, ProviderUnavailable
from edgekit.paths import external_data_inside

PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "nnapi": "NnapiExecutionProvider",
    "xnnpack": "XnnpackExecutionProvider",
    "qnn": "QNNExecutionProvider",
    "dml": "DmlExecutionProvider",
    "rocm": "ROCMExecutionProvider",
    "migraphx": "MIGraphXExecutionProvider",
}
_INSTALL_HINT = {
    "CUDAExecutionProvider": "pip install 'edgekit[gpu]' (onnxruntime-gpu, in place of onnxruntime) "
                             "on a machine with a CUDA GPU",
    "TensorrtExecutionProvider": "pip install 'edgekit[gpu]' and TensorRT's libraries on a machine with a CUDA GPU",
}


def provider_name(name: str) -> str:
    """'cuda' -> 'CUDAExecutionProvider'; full ORT names pass through."""
    if name.lower() in PROVIDERS:
        return PROVIDERS[name.lower()]
    if name in PROVIDERS.values():
        return name
    raise ProviderUnavailable(f"unknown execution provider '{name}'. Use one of: {', '.join(PROVIDERS)} "
                              "(or a full ONNX Runtime name such as CUDAExecutionProvider).")


def require_provider(name: str) -> str:
    """The full ORT name of an installed provider, or ProviderUnavailable naming the fix."""
    import onnxruntime as ort

    wanted = provider_name(name)
    available = ort.get_available_providers()
    if wanted not in available:
        hint = _INSTALL_HINT.get(wanted, f"install an onnxruntime build with {wanted}")
        raise ProviderUnavailable(f"{wanted} is not available in this onnxruntime "
                                  f"({ort.__version__}); available here: {', '.join(available)}. Fix: {hint}, "
                                  "or pick an available provider (--provider, or budget.providers in a recipe).")
    return wanted


# onnxruntime-extensions' operator domain: a graph with the tokenizer inside (edgekit/app_graph.py) uses it.
CONTRIB_DOMAIN = "ai.onnx.contrib"
EXTENSIONS_FIX = "pip install 'edgekit[app]' (onnxruntime-extensions)"


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if byte < 0x80:
            return value, pos


def opset_domains(path: Path) -> set[str]:
    """The operator domains an .onnx file imports (ModelProto.opset_import, field 8), read from the protobuf
    wire format without parsing the graph: the graph is most of the bytes, and every session would pay
    for parsing it. Empty for anything that does not parse as a ModelProto (an .ort file, a damaged one):
    ONNX Runtime then says what is wrong with it."""
    domains = set()
    try:
        with open(path, "rb") as f:
            while True:
                head = f.read(10)
                if not head:
                    return domains
                key, used = _varint(head, 0)
                field, wire = key >> 3, key & 7
                f.seek(used - len(head), 1)
                if wire == 0:
                    value_bytes = f.read(10)
                    _, used = _varint(value_bytes, 0)
                    f.seek(used - len(value_bytes), 1)
                elif wire in (1, 5):
                    f.seek(8 if wire == 1 else 4, 1)
                elif wire == 2:
                    size_bytes = f.read(10)
                    size, used = _varint(size_bytes, 0)
                    f.seek(used - len(size_bytes), 1)
                    if field != 8:
                        f.seek(size, 1)
                        continue
                    entry, pos = f.read(size), 0  # OperatorSetIdProto: domain (1, string), version (2)
                    while pos < len(entry):
                        key, pos = _varint(entry, pos)
                        if key & 7 == 2:
                            length, pos = _varint(entry, pos)
                            if key >> 3 == 1:
                                domains.add(entry[pos:pos + length].decode("utf-8"))
                            pos += length
                        else:
                            _, pos = _varint(entry, pos)
                else:
                    return set()
    except (OSError, ValueError, UnicodeDecodeError):
        return set()


def extensions_library() -> str | None:
    """The path of onnxruntime-extensions' custom-op library (what its get_library_path() returns), or None
    when the package is not installed. Found without importing the package: its __init__ imports
    transformers, 5 s in a fresh process, for a file name."""
    import importlib.machinery
    import importlib.util

    try:
        spec = importlib.util.find_spec("onnxruntime_extensions")
    except (ImportError, ValueError):  # ValueError: sys.modules holds None for it (import blocked)
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            path = Path(folder) / f"_extensions_pydll{suffix}"
            if path.is_file():
                return str(path)
    return None


def _register_custom_ops(options, path: Path) -> None:
    """Register onnxruntime-extensions' custom-op library when the model uses its domain; a model that
    needs it and an environment without it is an ExtensionsMissing naming the package."""
    if path.suffix == ".ort" or CONTRIB_DOMAIN not in opset_domains(path):
        return
    library = extensions_library()
    if library is None:
        raise ExtensionsMissing(f"'{path}' uses onnxruntime-extensions' custom operators (domain {CONTRIB_DOMAIN}: "
                                f"a tokenizer inside the graph), which are not installed here. Fix: {EXTENSIONS_FIX}"
                                ", or run the file without the tokenizer (model.onnx and tokenizer.json).")
    options.register_custom_ops_library(library)


@dataclass(frozen=True)
class SessionSettings:
    """The session options a file is measured with (and should ship with)."""

    provider: str = "cpu"
    threads: int = 1
    # ORT's worker threads spin between runs by default, burning the other cores;
    # None keeps ORT's default, True/False set `session.intra_op.allow_spinning`.
    allow_spinning: bool | None = None
    graph_optimization: str = "all"  # disable | basic | extended | all


def create_session(path: str | Path, settings: SessionSettings = SessionSettings()):
    """An InferenceSession on exactly the requested provider, or a clear error.

    Returns (session, record) where record lists what was asked and what ORT used.
    """
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise ModelNotFound(f"ONNX file '{path}' does not exist. Export one with `edgekit export`.")
    # Weights kept as external data may sit beside the file, never elsewhere: refused before ORT reads them.
    external_data_inside(path, fix="keep an ONNX file's external data in its own folder (onnx.save_model(..., "
                                   "save_as_external_data=True, location=a file name beside it))")
    wanted = require_provider(settings.provider)
    available = ort.get_available_providers()
    options = ort.SessionOptions()
    options.intra_op_num_threads = settings.threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[settings.graph_optimization]
    if settings.allow_spinning is not None:
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if settings.allow_spinning else "0")
    _register_custom_ops(options, path)
    # Accelerator providers leave unsupported nodes to the CPU provider, as ORT intends.
    chain = [wanted]
    if wanted == "TensorrtExecutionProvider" and "CUDAExecutionProvider" in available:
        chain.append("CUDAExecutionProvider")
    if wanted != "CPUExecutionProvider":
        chain.append("CPUExecutionProvider")
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=chain)
    except Exception as e:  # noqa: BLE001 - ORT raises its own pybind exception types
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if wanted != "CPUExecutionProvider" and "protobuf" not in message.lower():
            raise ProviderUnavailable(f"{wanted} failed to start a session for '{path}': {message}. Check "
                                      "the GPU driver and CUDA/TensorRT libraries, or use --provider cpu.") from None
        raise InvalidModelFile(f"'{path}' is not a loadable ONNX model: {message}. The file may be truncated "
                               "or corrupt: re-export it with `edgekit export`.") from None
    used = session.get_providers()
    if wanted not in used:
        raise ProviderUnavailable(f"asked for {wanted} but ONNX Runtime fell back to {', '.join(used)} "
                                  "(its libraries failed to load; see ORT's warning above). Fix the "
                                  "provider's installation, or measure on the provider you got with --provider.")
    record = {**asdict(settings), "provider": wanted, "session_providers": used, "inter_op_threads": 1,
              "execution_mode": "sequential"}
    return session, record
