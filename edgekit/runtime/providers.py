"""ONNX Runtime sessions on a named execution provider, and nothing else.

One place creates every session (benchmarks now, accuracy evaluation later), so
a file is always timed and scored with the options it ships with, and a session
that silently fell back to another provider is an error, not a footnote.
"""

from __future__ import annotations

import functools
import os
import re
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from edgekit.errors import ExtensionsMissing, InvalidModelFile, ModelNotFound, ProviderUnavailable, UnreadableModel
from edgekit.trust.paths import external_data_inside
from edgekit.trust.reading import check_allocation, gigabytes, machine_memory, regular_file, shown

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
    "OpenVINOExecutionProvider": "set up an environment with onnxruntime-openvino in place of onnxruntime "
                                 "(`make setup-openvino`, or pip uninstall onnxruntime, then pip install "
                                 "'edgekit[openvino]'; docs/quantize-and-providers.md, OpenVINO)",
}


# onnxruntime-web in headless Chromium (edgekit/runtime/web_runtime.py): not ONNX Runtime execution providers, so named
# as they are, and dispatched to the web runtime by create_session.
WEB_PROVIDERS = ("wasm", "webgpu")


def provider_name(name: str) -> str:
    """'cuda' -> 'CUDAExecutionProvider'; full ORT names pass through; web providers keep their name ('wasm')."""
    if name.lower() in WEB_PROVIDERS:
        return name.lower()
    if name.lower() in PROVIDERS:
        return PROVIDERS[name.lower()]
    if name in PROVIDERS.values():
        return name
    raise ProviderUnavailable(f"unknown execution provider '{name}'. Use one of: "
                              f"{', '.join([*PROVIDERS, *WEB_PROVIDERS])} "
                              "(or a full ONNX Runtime name such as CUDAExecutionProvider).")


def require_provider(name: str) -> str:
    """The full ORT name of an installed provider, or ProviderUnavailable naming the fix."""
    import onnxruntime as ort

    wanted = provider_name(name)
    if wanted in WEB_PROVIDERS:
        from edgekit.runtime.web_runtime import check_available

        return check_available(wanted)
    available = ort.get_available_providers()
    if wanted not in available:
        hint = _INSTALL_HINT.get(wanted, f"install an onnxruntime build with {wanted}")
        raise ProviderUnavailable(f"{wanted} is not available in this onnxruntime "
                                  f"({ort.__version__}); available here: {', '.join(available)}. Fix: {hint}, "
                                  "or pick an available provider (--provider, or budget.providers in a recipe).")
    return wanted


# onnxruntime-extensions' operator domain: a graph with the tokenizer inside (edgekit/runtime/app_graph.py) uses it.
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


def model_header(path: Path) -> tuple[int | None, dict[str, int]]:
    """(ir_version, {operator domain: opset version}) of an .onnx file (ModelProto fields 1 and 8), read from the
    protobuf wire format without parsing the graph: the graph is most of the bytes, and every session would pay
    for parsing it. (None, {}) for anything that does not parse as a ModelProto (an .ort file, a damaged one):
    ONNX Runtime then says what is wrong with it."""
    ir_version, opsets = None, {}
    try:
        with open(path, "rb") as f:
            while True:
                head = f.read(10)
                if not head:
                    return ir_version, opsets
                key, used = _varint(head, 0)
                field, wire = key >> 3, key & 7
                f.seek(used - len(head), 1)
                if wire == 0:
                    value_bytes = f.read(10)
                    value, used = _varint(value_bytes, 0)
                    f.seek(used - len(value_bytes), 1)
                    if field == 1:
                        ir_version = value
                elif wire in (1, 5):
                    f.seek(8 if wire == 1 else 4, 1)
                elif wire == 2:
                    size_bytes = f.read(10)
                    size, used = _varint(size_bytes, 0)
                    f.seek(used - len(size_bytes), 1)
                    if field != 8:
                        f.seek(size, 1)
                        continue
                    entry, pos = f.read(size), 0  # OperatorSetIdProto: domain (1, string), version (2, varint)
                    domain, version = "", None
                    while pos < len(entry):
                        key, pos = _varint(entry, pos)
                        if key & 7 == 2:
                            length, pos = _varint(entry, pos)
                            if key >> 3 == 1:
                                domain = entry[pos:pos + length].decode("utf-8")
                            pos += length
                        else:
                            value, pos = _varint(entry, pos)
                            if key >> 3 == 2:
                                version = value
                    opsets[domain] = version
                else:
                    return None, {}
    except (OSError, ValueError, UnicodeDecodeError):
        return None, {}


def opset_domains(path: Path) -> set[str]:
    """The operator domains an .onnx file imports (empty for an .ort or damaged file)."""
    return set(model_header(path)[1])


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


def _register_custom_ops(options, path: Path, domains) -> None:
    """Register onnxruntime-extensions' custom-op library when the model uses its domain (`domains`: the operator
    domains it imports); a model that needs it and an environment without it is an ExtensionsMissing naming the
    package."""
    if path.suffix == ".ort" or CONTRIB_DOMAIN not in domains:
        return
    library = extensions_library()
    if library is None:
        raise ExtensionsMissing(f"'{path}' uses onnxruntime-extensions' custom operators (domain {CONTRIB_DOMAIN}: "
                                f"a tokenizer inside the graph), which are not installed here. Fix: {EXTENSIONS_FIX}"
                                ", or run the file without the tokenizer (model.onnx and tokenizer.json).")
    options.register_custom_ops_library(library)


# ---------------------------------------------------------------------------- what a runtime reads

_IR_LIMIT = re.compile(r"max supported IR version: (\d+)")


def _probe_model(ir_version: int, opset: int) -> bytes:
    """An Identity graph stamped with `ir_version` and opset `opset`: what a runtime's loader accepts or refuses."""
    from onnx import TensorProto, helper

    value = [helper.make_tensor_value_info(name, TensorProto.FLOAT, [1]) for name in ("x", "y")]
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe", value[:1], value[1:])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = ir_version
    return model.SerializeToString()


def _loads(model: bytes) -> bool:
    import onnxruntime as ort

    try:
        ort.InferenceSession(model, providers=["CPUExecutionProvider"])
        return True
    except Exception:  # noqa: BLE001 - ORT's loader refuses with its own exception types
        return False


@functools.cache
def runtime_limits() -> dict:
    """{"onnxruntime": version, "ir_version": the newest ONNX IR it reads, "opset": the newest default-domain opset
    it reads}, asked of the onnxruntime installed here (one build serves every provider of an environment: the
    onnxruntime-openvino build reads IR <= 13 where onnxruntime 1.32 reads 14). Found by loading tiny graphs, a
    few milliseconds: no table of versions to fall out of date."""
    import onnxruntime as ort

    try:
        ort.InferenceSession(_probe_model(1000, 17), providers=["CPUExecutionProvider"])
        ir_version = None
    except Exception as e:  # noqa: BLE001
        found = _IR_LIMIT.search(str(e))
        ir_version = int(found[1]) if found else None
    if ir_version is None:  # the message changed: search
        ir_version = next((v for v in range(20, 3, -1) if _loads(_probe_model(v, 17))), 3)
    opset = 17
    while opset < 100 and _loads(_probe_model(min(ir_version, 10), opset + 1)):
        opset += 1
    return {"onnxruntime": ort.__version__, "ir_version": ir_version, "opset": opset}


def check_readable(path: Path, provider: str = "CPUExecutionProvider") -> dict[str, int]:
    """The file's {operator domain: opset}, or UnreadableModel, before any session, when its IR version or opset
    is newer than this onnxruntime reads (ORT's own refusal comes later and names neither the runtime nor the fix)."""
    ir_version, opsets = model_header(path)
    limits = runtime_limits()
    newer = []
    if ir_version is not None and ir_version > limits["ir_version"]:
        newer.append(f"ONNX IR version {ir_version} (it reads <= {limits['ir_version']})")
    if (opsets.get("") or 0) > limits["opset"]:
        newer.append(f"opset {opsets['']} (it reads <= {limits['opset']})")
    if newer:
        raise UnreadableModel(f"'{path}' is {' and '.join(newer)}: the onnxruntime {provider} runs in here "
                              f"({limits['onnxruntime']}) cannot read it. Fix: export it again in this environment "
                              "(edgekit writes the IR version its onnxruntime reads; `edgekit export --opset N` for "
                              "the opset), or run it with a newer onnxruntime.")
    return opsets


def write_readable(path: Path) -> int | None:
    """Lower the file's IR version in place to the newest this onnxruntime reads, when it is newer (onnx 1.23
    stamps IR 14; the onnxruntime-openvino build reads 13): every file edgekit writes is read by the runtime
    that measures it. The graph is unchanged; onnx's checker then confirms it is valid at that IR version.
    Returns the version written, or None when the file was left as it was."""
    import onnx

    ir_version, _ = model_header(path)
    wanted = runtime_limits()["ir_version"]
    if ir_version is None or ir_version <= wanted:
        return None
    model = onnx.load(str(path), load_external_data=False)
    model.ir_version = wanted
    onnx.checker.check_model(model)
    tmp = path.with_name(f".{path.name}.ir{wanted}")
    onnx.save(model, str(tmp))
    os.replace(tmp, path)
    return wanted


# ---------------------------------------------------------------------------- sessions

# Nodes whose output size comes from the values of an input (not from its shape): a graph that feeds them a
# constant asks for that much memory when it runs. {op type: (the input holding the output's shape or repeats)}.
_SIZED_BY_VALUE = {"ConstantOfShape": 0, "Expand": 1, "Tile": 1}


def refuse_huge_tensors(model, path: Path) -> None:
    """InvalidModelFile, before a session exists, when a node would make a tensor larger than the machine's
    memory from constant inputs (a ConstantOfShape fed [1e6, 1e6]: ORT would try to allocate terabytes when it
    runs, or be killed for it). Sizes fed at run time are unknown here; ORT's own failure covers those."""
    import numpy as np
    from onnx import numpy_helper

    constants = {t.name: t for t in model.graph.initializer if _small(t)}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            tensor = node.attribute[0].t
            if _small(tensor):
                constants[node.output[0]] = tensor
    for node in model.graph.node:
        index = _SIZED_BY_VALUE.get(node.op_type)
        if index is None or len(node.input) <= index or node.input[index] not in constants:
            continue
        values = numpy_helper.to_array(constants[node.input[index]]).astype(np.float64).ravel()
        elements = float(np.prod(np.abs(values))) if values.size else 1.0
        what = f"node '{shown(node.name)}', a {node.op_type}" if node.name else f"a {node.op_type} node"
        check_allocation(elements, f"'{shown(path)}': {what} of {[int(v) for v in values[:8]]}",
                         "the file is malformed or hostile: re-export it with `edgekit export`", InvalidModelFile)


class RunChecked:
    """An InferenceSession whose run() failures are InvalidModelFile naming the file: a graph that asks for more
    memory than there is at run time (sizes computed from the inputs), or whose kernels reject what its own
    nodes compute, fails inside ONNX Runtime with a message that names neither the file nor a fix."""

    def __init__(self, session, path: Path):
        import onnxruntime as ort

        self._session, self._path = session, path
        self._quiet = ort.RunOptions()
        self._quiet.log_severity_level = 4  # a failure reaches the user as one line (below), not ORT's log as well

    def __getattr__(self, name):
        return getattr(self._session, name)

    def run(self, output_names, input_feed, run_options=None):
        try:
            return self._session.run(output_names, input_feed, run_options or self._quiet)
        except Exception as e:
            if not type(e).__module__.startswith("onnxruntime"):
                raise
            raise InvalidModelFile(_run_failure(self._path, e)) from None


def _run_failure(path: Path, error: Exception) -> str:
    """ONNX Runtime's run-time failure as one line naming the file and the fix (its own text names a source file
    of ORT's and a status code)."""
    message = (str(error).strip().splitlines() or [type(error).__name__])[0]
    node = re.search(r"running (\w+) node", message)
    where = f" (a {node.group(1)} node)" if node else ""
    size = re.search(r"buffer of size (\d+)", message)
    if size:
        memory = machine_memory()
        has = f" ({gigabytes(memory)})" if memory else ""
        return (f"'{shown(path)}' asks ONNX Runtime for {gigabytes(int(size.group(1)))} of memory at run time"
                f"{where}, more than this machine{has} can give: the file is malformed or hostile, or the inputs "
                "are too large for it; re-export it with `edgekit export`.")
    detail = message.split("Status Message: ")[-1].split("] : ")[-1]
    return (f"'{shown(path)}' failed in ONNX Runtime{where}: {shown(detail[:300])}. The file is malformed, or does "
            "not take these inputs: re-export it with `edgekit export`, or check its inputs with `edgekit bench`.")


def _small(tensor) -> bool:
    """A tensor small enough to read as a shape (a handful of int64s), with its data in the file."""
    count = 1
    for dim in tensor.dims:
        count *= dim
    return count <= 16 and not tensor.external_data



@dataclass(frozen=True)
class SessionSettings:
    """The session options a file is measured with (and should ship with)."""

    provider: str = "cpu"
    threads: int = 1
    # ORT's worker threads spin between runs by default, burning the other cores;
    # None keeps ORT's default, True/False set `session.intra_op.allow_spinning`.
    allow_spinning: bool | None = None
    graph_optimization: str = "all"  # disable | basic | extended | all
    # The provider's own options (recipe budget.provider_options, `edgekit bench --provider-option`), as
    # sorted (key, value) pairs: e.g. OpenVINO's (("device_type", "GPU"),).
    options: tuple[tuple[str, str], ...] = ()
    # Where TensorRT keeps the engines it builds, so a file's engine is built once, not per session.
    engine_cache: str | None = None


# OpenVINO's device when the recipe names none: the CPU it shares with the CPU provider.
OPENVINO_DEVICE = "CPU"


def provider_options(wanted: str, settings: SessionSettings) -> dict[str, str]:
    """The options ORT gets for `wanted`: the user's, over what edgekit sets so a provider is measured like the
    others (OpenVINO on the settings' thread count and device CPU; TensorRT with its engine cache)."""
    options = {}
    if wanted == "OpenVINOExecutionProvider":
        # OpenVINO runs its own thread pool, blind to intra_op_num_threads: 1 thread means 1 here too.
        options = {"device_type": OPENVINO_DEVICE, "num_of_threads": str(settings.threads)}
    elif wanted == "TensorrtExecutionProvider" and settings.engine_cache:
        options = {"trt_engine_cache_enable": "True", "trt_engine_cache_path": settings.engine_cache,
                   "trt_timing_cache_enable": "True", "trt_timing_cache_path": settings.engine_cache}
    return options | dict(settings.options)


def _check_device(wanted: str, options: dict) -> None:
    """An OpenVINO device that is not here is a ProviderUnavailable listing the devices there are."""
    if wanted != "OpenVINOExecutionProvider":
        return
    from onnxruntime.capi import _pybind_state

    devices = getattr(_pybind_state, "get_available_openvino_device_ids", lambda: None)()
    asked = options.get("device_type", OPENVINO_DEVICE)
    if devices is not None and asked.split(".")[0].split(":")[0] not in {d.split(".")[0] for d in devices}:
        raise ProviderUnavailable(f"OpenVINO device '{asked}' is not present here (OpenVINO sees: "
                                  f"{', '.join(devices) or 'none'}). Fix: set budget.provider_options.openvino."
                                  f"device_type to one of them, or measure where that device is.")


def placement(session, wanted: str) -> dict:
    """How ORT placed the graph's nodes: {"recorded", "provider", "nodes", "on_provider", "fallback" {provider:
    nodes}, "fallback_op_types" {op: nodes}, "op_types" {op: nodes on the provider}, "full"}. A provider hands
    the CPU provider what it has no kernel for, silently: this is the record that says so. Counted over the
    graph ORT runs (after its optimizations, so fused ops count once). ORT before 1.24 cannot report it:
    {"recorded": False, "why"}."""
    import onnxruntime as ort

    assigned = getattr(session, "get_provider_graph_assignment_info", None)
    if assigned is None:
        return {"recorded": False, "provider": wanted,
                "why": f"onnxruntime {ort.__version__} cannot report node placement (1.24 and newer can)"}
    nodes: dict[str, Counter] = {}
    for subgraph in assigned():
        nodes.setdefault(subgraph.ep_name, Counter()).update(node.op_type for node in subgraph.get_nodes())
    mine = nodes.pop(wanted, Counter())
    fallback_ops = sum(nodes.values(), Counter())
    return {"recorded": True, "provider": wanted, "nodes": sum(mine.values()) + sum(fallback_ops.values()),
            "on_provider": sum(mine.values()), "fallback": {ep: sum(ops.values()) for ep, ops in nodes.items()},
            "fallback_op_types": dict(fallback_ops.most_common()), "op_types": dict(mine.most_common()),
            "full": not fallback_ops}


def placement_text(record: dict | None) -> str:
    """'all 186 nodes on OpenVINOExecutionProvider', '180 of 186 nodes (6 fell back to CPU: MatMulNBits 6)'."""
    if not record:
        return "placement not recorded"
    if not record.get("recorded"):
        return f"placement unknown: {record['why']}"
    if record["full"]:
        return f"all {record['nodes']} nodes on {record['provider']}"
    ops = ", ".join(f"{op} {n}" for op, n in record["fallback_op_types"].items())
    fell = sum(record["fallback"].values())
    where = ", ".join(ep.removesuffix("ExecutionProvider") for ep in record["fallback"])
    return (f"{record['on_provider']} of {record['nodes']} nodes on {record['provider']} "
            f"({fell} fell back to {where}: {ops})")


_FAILED_HINT = {
    "OpenVINOExecutionProvider": "OpenVINO could not compile it (an operator or a dynamic shape it does not take: "
                                 "see its message); measure this file on the CPU provider",
    "CPUExecutionProvider": "",
}


def create_session(path: str | Path, settings: SessionSettings = SessionSettings()):
    """An InferenceSession on exactly the requested provider, or a clear error.

    Returns (session, record) where record lists what was asked, what ORT used and where it placed the nodes.
    """
    import onnxruntime as ort

    path = Path(path)
    if not path.exists():
        raise ModelNotFound(f"ONNX file '{shown(path)}' does not exist. Export one with `edgekit export`.")
    regular_file(path, "ONNX file", "pass the .onnx file itself", InvalidModelFile)  # a FIFO would hang the load
    if provider_name(settings.provider) in WEB_PROVIDERS:  # onnxruntime-web in headless Chromium
        from edgekit.runtime.web_runtime import create_web_session

        external_data_inside(path, fix="keep an ONNX file's external data in its own folder")
        return create_web_session(path, settings)
    check_allocation(path.stat().st_size * 2, f"loading '{shown(path)}' ({gigabytes(path.stat().st_size)})",
                     "run it on a machine with more memory", InvalidModelFile)
    # Weights kept as external data may sit beside the file, never elsewhere: refused before ORT reads them.
    graph = external_data_inside(path, fix="keep an ONNX file's external data in its own folder (onnx.save_model("
                                           "..., save_as_external_data=True, location=a file name beside it))")
    if graph is not None:
        refuse_huge_tensors(graph, path)
    wanted = require_provider(settings.provider)
    domains = check_readable(path, wanted)
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
    options.add_session_config_entry("session.record_ep_graph_assignment_info", "1")  # for placement()
    _register_custom_ops(options, path, domains)
    ep_options = provider_options(wanted, settings)
    _check_device(wanted, ep_options)
    # Accelerator providers leave unsupported nodes to the CPU provider, as ORT intends; placement() counts them.
    chain = [(wanted, ep_options)]
    if wanted == "TensorrtExecutionProvider" and "CUDAExecutionProvider" in available:
        chain.append(("CUDAExecutionProvider", {}))
    if wanted != "CPUExecutionProvider":
        chain.append(("CPUExecutionProvider", {}))
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=[name for name, _ in chain],
                                       provider_options=[opts for _, opts in chain])
    except Exception as e:  # noqa: BLE001 - ORT raises its own pybind exception types
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if wanted != "CPUExecutionProvider" and "protobuf" not in message.lower():
            hint = _FAILED_HINT.get(wanted, "check the GPU driver and CUDA/TensorRT libraries, or use --provider cpu")
            raise ProviderUnavailable(f"{wanted} failed to start a session for '{path}': {message}. "
                                      f"Fix: {hint}.") from None
        raise InvalidModelFile(f"'{path}' is not a loadable ONNX model: {message}. The file may be truncated "
                               "or corrupt: re-export it with `edgekit export`.") from None
    session = RunChecked(session, path)
    used = session.get_providers()
    if wanted not in used:
        raise ProviderUnavailable(f"asked for {wanted} but ONNX Runtime fell back to {', '.join(used)} "
                                  "(its libraries failed to load; see ORT's warning above). Fix the "
                                  "provider's installation, or measure on the provider you got with --provider.")
    record = {**asdict(settings), "options": ep_options, "provider": wanted, "session_providers": used,
              "inter_op_threads": 1, "execution_mode": "sequential", "placement": placement(session, wanted)}
    return session, record
