"""ONNX Runtime Mobile: fixed shapes, the .ort format, and how NNAPI/CoreML would run a file.

All three wrap ONNX Runtime's own tools (onnxruntime.tools), so what edgekit ships is what
ORT's converter and usability checker produce, not a re-implementation:
- `fix_shapes`: NNAPI needs fixed tensor shapes and CoreML runs far better with them;
- `to_ort`: the .ort flatbuffer ORT Mobile loads, plus `required_operators.config`, the
  operator list a reduced-size ORT build is made from;
- `mobile_usability`: the partitioning of the graph between NNAPI / CoreML and the CPU.
"""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
import tempfile
from pathlib import Path

from edgekit.errors import ExportFailed

ORT_PLATFORMS = {"generic": None, "amd64": "amd64", "arm": "arm"}  # ExportSpec.ort_platform -> converter argument
# What each mobile execution provider supports, as ORT's checker reads it (files in onnxruntime/tools/mobile_helpers).
MOBILE_PROVIDERS = {"NNAPI": None, "CoreML NeuralNetwork": "coreml_supported_neuralnetwork_ops.md",
                    "CoreML MLProgram": "coreml_supported_mlprogram_ops.md"}


@contextlib.contextmanager
def _quiet():
    """ORT's tools print progress and log at INFO, and its C++ logger warns that an amd64 .ort holds
    x86-only layouts (which is what ort_platform: amd64 asks for): keep the run's own output readable."""
    import onnxruntime as ort

    loggers = [logging.getLogger(name) for name in ("ort_format_model.utils", "usability_checker")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    ort.set_default_logger_severity(3)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        ort.set_default_logger_severity(2)  # ORT's default: warnings
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def fix_shapes(src: Path, dst: Path, batch: int, seq_len: int | None) -> dict[str, list[int]]:
    """Copy `src` to `dst` with every symbolic batch / sequence axis fixed; returns the input shapes."""
    import onnx
    from onnxruntime.tools.onnx_model_utils import fix_output_shapes, make_dim_param_fixed

    from edgekit.runtime.bench import dim_kind

    model = onnx.load(str(src))
    values = {"batch": batch, "seq": seq_len}
    for graph_input in model.graph.input:
        for dim in graph_input.type.tensor_type.shape.dim:
            if not dim.dim_param:
                continue
            value = values.get(dim_kind(dim.dim_param))
            if value is None:
                raise ExportFailed(f"{src.name}: input '{graph_input.name}' has an axis '{dim.dim_param}' that is "
                                   "neither batch nor sequence, so it cannot be fixed from the budget; "
                                   "set export.shapes: dynamic.")
            make_dim_param_fixed(model.graph, dim.dim_param, value)
    fix_output_shapes(model)
    onnx.save(model, str(dst))
    return {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input}


def to_ort(src: Path, folder: Path, platform: str) -> dict:
    """`folder/model.ort` and `folder/model.required_operators.config` from `src` with ORT's
    converter (fixed optimization style: the graph is optimized once, here, for any device of
    `platform`)."""
    from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort

    with tempfile.TemporaryDirectory(prefix="edgekit-ort-") as tmp:
        work = Path(tmp) / "model.onnx"  # the converter names its outputs after the input file
        shutil.copyfile(src, work)
        try:
            with _quiet():
                convert_onnx_models_to_ort(work, output_dir=Path(tmp) / "out",
                                           optimization_styles=[OptimizationStyle.Fixed],
                                           target_platform=ORT_PLATFORMS[platform])
        except Exception as e:  # noqa: BLE001 - ORT raises plain exceptions for unconvertible graphs
            raise ExportFailed(f"ONNX Runtime could not convert {src.name} to the .ort format "
                               f"({type(e).__name__}: {e}); set export.ort: false to ship ONNX only.") from None
        shutil.move(Path(tmp) / "out" / "model.ort", folder / "model.ort")
        config = folder / "model.required_operators.config"
        # The converter's header names the temporary file it read: the bundle names its own file instead.
        config.write_text(_named_after_bundle((Path(tmp) / "out" / config.name).read_text(), str(Path(tmp))),
                          encoding="utf-8")
    operators = [line for line in config.read_text().splitlines() if line and not line.startswith("#")]
    return {"file": "model.ort", "from": src.name, "platform": platform, "optimization": "fixed",
            "required_operators": config.name, "operator_sets": operators}


def _named_after_bundle(config: str, tmp: str) -> str:
    """The converter's operator config with the temporary folder it read from left out of its comments (a bundle
    carries no path of the machine that built it): '# - /tmp/edgekit-ort-x/out/model.ort' -> '# - model.ort'."""
    return "".join(line.replace(f"{tmp}/out/", "").replace(f"{tmp}/", "") if line.startswith("#") else line
                   for line in config.splitlines(keepends=True))


def mobile_usability(path: Path) -> dict:
    """How NNAPI and CoreML would partition `path`, as ONNX Runtime's usability checker sees it
    (after the basic optimizations ORT applies when it loads the file)."""
    from onnxruntime.tools.mobile_helpers import usability_checker as checker
    from onnxruntime.tools.onnx_model_utils import ModelProtoWithShapeInfo, optimize_model

    with tempfile.TemporaryDirectory(prefix="edgekit-mobile-") as tmp, _quiet():
        optimized = Path(tmp) / "model.onnx"
        optimize_model(Path(path), optimized, use_external_initializers=True)
        model = ModelProtoWithShapeInfo(optimized).model_with_shape_info
        dynamic_inputs, dynamic_values = checker.check_shapes(model.graph)
        providers = {}
        for name, ops in MOBILE_PROVIDERS.items():
            info = (checker.check_nnapi_partitions(model, True) if ops is None
                    else checker.check_coreml_partitions(model, True, ops))
            providers[name] = {
                "suitability": info.suitability().name.lower(),  # yes / maybe / no, ORT's verdict
                "partitions": info.num_partitions,
                "supported_nodes": info.num_supported_nodes,
                "nodes": info.num_nodes,
                "unsupported_ops": sorted(op.removeprefix("ai.onnx:") for op in info.unsupported_ops),
                "nodes_with_dynamic_shapes": info.nodes_unsupported_due_to_dynamic_input,
            }
    return {"file": Path(path).name, "dynamic_inputs": [i.name for i in dynamic_inputs],
            "dynamic_values": dynamic_values, "providers": providers}


def usability_text(result: dict) -> str:
    """One line per mobile provider, for the report and the bundle README."""
    lines = []
    for name, p in result["providers"].items():
        share = p["supported_nodes"] / max(p["nodes"], 1)
        lines.append(f"{name}: {p['suitability']} ({p['partitions']} partition(s) cover {p['supported_nodes']}/"
                     f"{p['nodes']} nodes, {share:.0%}; the rest runs on the CPU"
                     + (f"; unsupported: {', '.join(p['unsupported_ops'])}" if p["unsupported_ops"] else "") + ")")
    return "\n".join(lines)
