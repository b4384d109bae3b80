"""PyTorch -> ONNX: torch.export's exporter first, TorchScript tracing where it cannot serve.

Why torch.export (`torch.onnx.export(dynamo=True)`) by default: it is torch.onnx's own default since PyTorch 2.9,
which calls the TorchScript-based exporter legacy and warns on every use; it passes transformers 5's models by
keyword (transformers 5 changed BertModel's positional order) and records data-dependent control flow as an error
instead of silently tracing one branch. The TorchScript exporter stays for what torch.export cannot take (a
TorchScript archive's ScriptModule, a module with data-dependent control flow): the caller keeps the first file that
passes onnx.checker and parity on real inputs (edgekit.runtime.export), so a wrong trace never ships.

One pitfall of the TorchScript exporter that the parity check depends on: it puts the module in eval mode while
tracing and then restores the mode the module had, so a wrapper built in training mode (an nn.Module's default)
comes back training, dropout on, and PyTorch's own outputs are then the wrong reference (off by up to 2 on
all-MiniLM-L6-v2's real tokens while the file was right). Every module edgekit exports is put in eval mode first.

Five things make the torch.export file a file edgekit wants to ship (`make bench-export` measures them):
- transformers models are traced with eager attention: torch.export writes sdpa as a longer chain (slices,
  IsNaN, Where) that ran ~5% slower under onnxruntime than the eager MatMul/Softmax/MatMul (MiniLM, seq 128);
- GELU is written in the order onnxruntime fuses (with the bias Add before it) into one BiasGelu:
  x * (1 + erf(x / sqrt 2)) * 0.5; torch.export's own order, x * (0.5 * (1 + erf(...))), is left as five ops;
- nodes are named after the module that made them (`/backbone/encoder/layer/0/output/dense/MatMul`, as the
  TorchScript exporter named them), so a report's fp32-kept MatMuls and ORT's profiles say where they are;
- its outputs get the caller's names; torch.export names values after the ops that made them, so an output
  called "embedding" would collide with the embedding lookup's value of that name, and is renamed first;
- intermediate shape annotations (value_info) are dropped, as the TorchScript exporter left none: with them,
  onnxruntime (1.32) fuses each bias + residual Add and LayerNormalization into SkipLayerNormalization, whose
  CPU kernel ran 5x slower than the three ops it replaces (0.26 vs 0.05 ms at 128 x 384 on an AMD EPYC Zen 4),
  which made the exported MiniLM ~8% slower than the TorchScript export.

The exporter's own opset floor is 18; an older opset asked for (recipes default to 17) is written with ONNX's
version converter, and the file's real opset is what the export record reports.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import logging
import warnings
from pathlib import Path

from edgekit.errors import ExportFailed

DYNAMO = "torch.export"
TORCHSCRIPT = "torchscript"
TORCH_EXPORT_MIN_OPSET = 18


def exporters_for(module) -> tuple[str, ...]:
    """The exporters to try on `module`, in order: a ScriptModule (a TorchScript archive) has no Python
    code for torch.export to trace."""
    import torch

    if isinstance(module, torch.jit.ScriptModule):
        return (TORCHSCRIPT,)
    return (DYNAMO, TORCHSCRIPT)


def export_torch(module, example: dict, input_axes: dict, output_names: list[str], path: Path, opset: int,
                 exporter: str, reuse: bool = True) -> bool:
    """Write `module` run on `example` ({input name: numpy array}, in forward's order) to `path` with `exporter`.
    `input_axes` ({name: {axis: label}}, {} = static shapes) are the dynamic axes; every output's first axis
    follows the batch when there are any. Returns whether torch.export's trace of an earlier module of the same
    structure was reused (`reuse`: allowed). Raises ExportFailed with the exporter's reason."""
    import torch

    tensors = {name: torch.from_numpy(value) for name, value in example.items()}
    try:
        if exporter == DYNAMO:
            return _torch_export(module, tensors, input_axes, output_names, path, opset, reuse)
        axes = {**input_axes, **{name: {0: "batch_size"} for name in output_names}} if input_axes else {}
        with _quiet():
            torch.onnx.export(module, tuple(tensors.values()), str(path), input_names=list(example),
                              output_names=output_names, dynamic_axes=axes, opset_version=opset,
                              do_constant_folding=True, dynamo=False)
        return False
    except ExportFailed:
        raise
    except Exception as e:  # noqa: BLE001 - the exporters raise many types; all mean "this exporter failed"
        first = (str(e).strip().splitlines() or [""])[0][:300]
        raise ExportFailed(f"{exporter}: {type(e).__name__}: {first}") from None


def _torch_export(module, inputs: dict, input_axes: dict, output_names: list[str], path: Path, opset: int,
                  reuse: bool = True) -> bool:
    """torch.export's file of `module`; True when it came from a graph traced earlier in this process for a module
    of the same structure (see _traced), with this module's weights."""
    import onnx
    import onnx_ir as ir
    from onnxscript import optimizer

    model, reused = _traced(module, inputs, input_axes, opset, reuse)
    optimizer.optimize_ir(model)  # constant folding and cleanup, as torch.onnx.export(optimize=True) runs it
    graph = model.graph
    _name_nodes(graph)
    if len(graph.outputs) != len(output_names):
        raise ExportFailed(f"{DYNAMO}: the graph has {len(graph.outputs)} outputs, the module names "
                           f"{len(output_names)} ({', '.join(output_names)})")
    wanted = set(output_names)
    for value in _values(graph):  # free the names the outputs take (see the module docstring)
        if value.name in wanted and value not in graph.outputs:
            value.name = f"{value.name}_inner"
    for value, name in zip(graph.outputs, output_names):
        value.name = name
    proto = ir.to_proto(model)
    if opset < TORCH_EXPORT_MIN_OPSET:
        proto = _older_opset(proto, opset)
    del proto.graph.value_info[:]  # last (the version converter infers shapes): see the module docstring
    onnx.save(proto, str(path))
    return reused


# torch.export's graphs before optimization, by module structure (_structure_key), newest last: tracing takes
# seconds (3-4 s for a 2-layer BERT, most of it torch.onnx's decompositions), rebinding weights milliseconds, and a
# run exports each student's structure several times (the untrained probe, the undistilled reference, the trained
# student). Bounded in count and bytes: each holds a copy of its model's weights.
_TRACED: dict[str, bytes] = {}
MAX_TRACED = 4
MAX_TRACED_BYTES = 1 << 30


def _traced(module, inputs: dict, input_axes: dict, opset: int, reuse: bool):
    """(the unoptimized ir.Model of `module`, whether it was reused): a graph traced for a module of the same
    structure gets this module's parameters and buffers in place of its initializers of those names (torch.export
    names them after the module's own), else torch.export traces `module`. A reused graph is checked for parity like
    any other; edgekit.runtime.export retraces (reuse=False) when it differs."""
    import onnx_ir as ir

    key = _structure_key(module, inputs, input_axes, opset)
    if reuse and key in _TRACED:
        model = ir.from_proto(_proto_of(_TRACED[key]))
        weights = {**dict(module.named_parameters()), **dict(module.named_buffers())}
        for name, value in model.graph.initializers.items():
            if name in weights:
                value.const_value = ir.tensor(weights[name].detach().cpu().contiguous().numpy())
        return model, True
    model = _trace(module, inputs, input_axes, opset)
    _TRACED.pop(key, None)
    _TRACED[key] = ir.to_proto(model).SerializeToString()
    while _TRACED and (len(_TRACED) > MAX_TRACED or sum(map(len, _TRACED.values())) > MAX_TRACED_BYTES):
        _TRACED.pop(next(iter(_TRACED)))  # the oldest
    return model, False


def _proto_of(data: bytes):
    import onnx

    proto = onnx.ModelProto()
    proto.ParseFromString(data)
    return proto


# Hugging Face model attributes and config entries that say where a model came from, not what it computes.
_NOT_STRUCTURE = ("name_or_path", "_name_or_path", "_commit_hash", "transformers_version")


def _structure_key(module, inputs: dict, input_axes: dict, opset: int) -> str:
    """Everything a trace depends on but the weights' values: the module tree (classes, the plain attributes of
    every submodule, Hugging Face configs), every parameter's and buffer's name, shape and dtype, the inputs' names,
    dtypes and ranks, their dynamic axes, the opset."""
    import hashlib
    import json

    parts = []
    for name, sub in module.named_modules():
        plain = {k: repr(v) for k, v in vars(sub).items()
                 if isinstance(v, (str, int, float, bool, tuple, type(None))) and k not in _NOT_STRUCTURE}
        config = getattr(sub, "config", None)
        if hasattr(config, "to_dict"):  # a Hugging Face config, less where it was loaded from
            config = {k: v for k, v in config.to_dict().items() if k not in _NOT_STRUCTURE}
        parts.append([name, type(sub).__qualname__, plain, config])
    weights = {**dict(module.named_parameters()), **dict(module.named_buffers())}
    parts.append({name: [list(value.shape), str(value.dtype)] for name, value in weights.items()})
    parts.append({name: [str(value.dtype), value.ndim] for name, value in inputs.items()})
    parts.append([repr(input_axes), opset])
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=repr).encode()).hexdigest()


def _trace(module, inputs: dict, input_axes: dict, opset: int):
    """torch.onnx.export(dynamo=True) of `module`, unoptimized (see _traced): an ir.Model."""
    import torch

    # Inputs go in by keyword where forward names them (transformers 5 reordered BertModel's positional arguments),
    # else in order (a user's `forward(self, x)`), renamed to the caller's names; torch.onnx names each dynamic
    # axis after its label.
    by_name = set(inputs) <= set(inspect.signature(module.forward).parameters)
    args, kwargs = ((), inputs) if by_name else (tuple(inputs.values()), None)
    dynamic = [input_axes.get(name) for name in inputs] if input_axes else None
    if dynamic is not None:
        dynamic = dict(zip(inputs, dynamic)) if by_name else tuple(dynamic)
    # From opset 20 ONNX has a Gelu operator of its own, which onnxruntime fuses as it is.
    translations = {torch.ops.aten.gelu.default: _fusable_gelu} if opset < 20 else None
    with _quiet(), _eager_attention(module):
        program = torch.onnx.export(module, args, kwargs=kwargs, input_names=None if by_name else list(inputs),
                                    dynamic_shapes=dynamic, opset_version=max(opset, TORCH_EXPORT_MIN_OPSET),
                                    dynamo=True, optimize=False, custom_translation_table=translations,
                                    verbose=False, report=False)
    return program.model


# Reduce ops that took `noop_with_empty_axes` only from opset 18 on (ReduceSum has had it since 13).
_NOOP_AXES_FROM_18 = {"ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean",
                      "ReduceMin", "ReduceProd", "ReduceSumSquare"}


def _older_opset(proto, opset: int):
    """`proto` at an opset below the exporter's floor, by ONNX's version converter. The converter (onnx 1.23)
    moves Reduce* axes from input to attribute but keeps `noop_with_empty_axes`, an attribute these ops do not
    have before opset 18: its default (0) is dropped; a graph that relies on 1 cannot be written at `opset`."""
    import onnx

    def fail(why: str) -> ExportFailed:
        return ExportFailed(f"{DYNAMO}: opset {opset} cannot be written ({why}); opset {TORCH_EXPORT_MIN_OPSET} "
                            "or newer can")

    try:
        proto = onnx.version_converter.convert_version(proto, opset)
    except Exception as e:  # noqa: BLE001 - the converter raises RuntimeError and others
        raise fail(f"{type(e).__name__}: {e}") from None
    for node in proto.graph.node:
        if node.op_type not in _NOOP_AXES_FROM_18 or node.domain not in ("", "ai.onnx"):
            continue
        kept = [a for a in node.attribute if a.name != "noop_with_empty_axes"]
        if any(a.name == "noop_with_empty_axes" and a.i for a in node.attribute):
            raise fail(f"{node.op_type} with noop_with_empty_axes=1")
        del node.attribute[:]
        node.attribute.extend(kept)
    return proto


def _fusable_gelu(self, approximate: str = "none"):
    """aten.gelu as onnxruntime's GeluFusion matches it (its "pattern 2": Div, Erf, Add, Mul by x, Mul by 0.5); the
    tanh approximation as GPT-2's gelu_new writes it, which onnxruntime fuses into FastGelu."""
    import math

    from onnxscript import opset18 as op

    def constant(value: float):
        return op.CastLike(op.Constant(value_float=value), self)

    if approximate == "tanh":
        cube = op.Mul(op.Mul(self, self), self)
        inner = op.Mul(constant(math.sqrt(2 / math.pi)), op.Add(self, op.Mul(constant(0.044715), cube)))
        return op.Mul(op.Mul(constant(0.5), self), op.Add(constant(1.0), op.Tanh(inner)))
    erf = op.Erf(op.Div(self, constant(math.sqrt(2.0))))
    return op.Mul(op.Mul(self, op.Add(erf, constant(1.0))), constant(0.5))


@contextlib.contextmanager
def _eager_attention(module):
    """Every transformers model inside `module` switched to eager attention while it is traced (see the module
    docstring), and back afterwards. A release whose attention layers are fixed when built (transformers 4.x
    BERT) keeps them: that only costs the speed."""
    switched = []
    for model in module.modules():
        config = getattr(model, "config", None)
        if getattr(config, "_attn_implementation", None) == "sdpa" and hasattr(model, "set_attn_implementation"):
            try:
                model.set_attn_implementation("eager")
                switched.append(model)
            except (ValueError, ImportError):  # a model without an eager path keeps its own
                pass
    try:
        yield
    finally:
        for model in switched:
            model.set_attn_implementation("sdpa")


def _name_nodes(graph) -> None:
    """Each node named after the module that made it and its op, from the scopes torch.onnx records; unique."""
    import ast

    taken: dict[str, int] = {}
    for node in graph:
        scopes = node.metadata_props.get("pkg.torch.onnx.name_scopes")
        try:
            path = ast.literal_eval(scopes)[-2] if scopes else ""
        except (ValueError, SyntaxError, IndexError):
            path = ""
        name = f"/{path.replace('.', '/')}/{node.op_type}" if path else f"/{node.op_type}"
        taken[name] = taken.get(name, 0) + 1
        node.name = name if taken[name] == 1 else f"{name}_{taken[name] - 1}"


def _values(graph):
    """Every value a node of `graph` produces (the graph's inputs and initializers are named by the caller)."""
    for node in graph:
        yield from node.outputs


@contextlib.contextmanager
def _quiet():
    """The exporters print progress, warnings and tracer notes meant for someone debugging an export; a run
    reports failures itself (ExportFailed with the reason), so they are kept out of the user's terminal."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
