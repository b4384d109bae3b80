"""ONNX export with a parity check on real task inputs.

Every model, Hugging Face or plain torch module, goes through torch.onnx (torch.export first, TorchScript
tracing where it cannot serve: torch_onnx.py); `edgekit export --exporter optimum` uses optimum-onnx's
per-architecture configs instead (an extra, for transformers 4.x). Either way the file is checked with
`onnx.checker` and compared with PyTorch on real inputs (a spread of the task's data, or the user's own file)
before it is moved into place; a mismatch raises one error listing every output that differs.

The tasks `edgekit export --task` takes live beside this: adapters.py (TASK_NAMES, get_task),
text.py (Hugging Face text encoders and classifiers) and image.py (image classifiers).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edgekit import __version__
from edgekit.errors import DataError, ExportFailed, ExportMismatch
from edgekit.modeling.models import ModelSource, load_tokenizer, resolve_model
from edgekit.runtime.environment import package_versions
from edgekit.runtime.export.adapters import (
    TASK_NAMES as TASK_NAMES,  # re-exported: `from edgekit.runtime.export import TASK_NAMES`
)
from edgekit.runtime.export.adapters import get_task
from edgekit.runtime.export.torch_onnx import export_torch, exporters_for
from edgekit.runtime.providers import SessionSettings, create_session, write_readable
from edgekit.trust.atomic import atomic_dir, unexpected_entries
from edgekit.trust.reading import read_json

ONNX_NAME = "model.onnx"
DEFAULT_OPSET = 17


class ExportConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    task: str = Field(description="feature-extraction, text-classification or image-classification")
    opset: int | None = Field(None, ge=11, description=f"ONNX opset (None: {DEFAULT_OPSET})")
    static_shapes: bool = Field(False, description="fix batch and sequence axes (mobile providers)")
    batch: int | None = Field(None, ge=1, description="batch size of a static-shape graph (default 1)")
    seq_len: int | None = Field(None, ge=1, description="sequence length of a static-shape text graph (default 128)")
    inputs: str | None = Field(None, description="parity data: a file or built-in data set name")
    text_column: str = Field("text", description="column/field of the texts in a CSV/JSONL file")
    samples: int = Field(64, ge=1, description="how many real inputs the parity check runs")
    atol: float = Field(1e-4, gt=0, description="max absolute difference allowed per output value")
    force: bool = Field(False, description="replace an existing output folder")
    trust_pickle: bool = Field(False, description="load a torch.save'd module file (unpickling runs its code)")
    exporter: Literal["torch", "optimum"] = Field(
        "torch", description="torch: torch.onnx (torch.export, TorchScript where it cannot serve); optimum: "
                             "optimum-onnx's exporter for Hugging Face models (the `optimum` extra, transformers 4.x)")

    @model_validator(mode="after")
    def _shapes_only_when_static(self):
        # A dynamic graph has no batch or length to fix: the values would be silently ignored.
        if not self.static_shapes and (self.batch is not None or self.seq_len is not None):
            raise ValueError("--batch and --seq-len fix the shape of a --static-shapes export: "
                             "add --static-shapes, or drop them for dynamic axes")
        return self

    @property
    def static_shape(self) -> tuple[int, int] | None:
        """(batch, seq_len) of a static-shape export, None for dynamic axes."""
        return (self.batch or 1, self.seq_len or 128) if self.static_shapes else None


@dataclass
class ExportResult:
    onnx_path: Path
    info: dict = field(default_factory=dict)  # what export.json holds


def _export_optimum(source: ModelSource, tmp: Path, config: ExportConfig) -> None:
    try:
        from optimum.exporters.onnx import main_export
    except ImportError:
        raise ExportFailed("--exporter optimum needs optimum-onnx, which is not installed: pip install "
                           "'edgekit[optimum]' (it requires transformers < 4.58), or use the default --exporter "
                           "torch.") from None
    static = config.static_shape
    shapes = {"batch_size": static[0], "sequence_length": static[1]} if static else {}
    try:
        # library_name="transformers": a sentence-transformers folder would otherwise be
        # exported with pooling inside and without token_type_ids (FIELD-NOTES).
        main_export(source.location, tmp, task=config.task, opset=config.opset, library_name="transformers",
                    do_validation=False, no_dynamic_axes=config.static_shapes,
                    local_files_only=source.local_files_only, trust_remote_code=False, **shapes)
    except Exception as e:  # noqa: BLE001 - optimum raises many types; all mean "export failed"
        raise ExportFailed(f"optimum could not export '{source.location}' for {config.task}: "
                           f"{type(e).__name__}: {e}. Check that the model supports this task, "
                           "or try another --opset.") from None


def _export_checked(module, example: dict, input_axes: dict, output_names: list[str], path: Path,
                    opset: int | None, parity) -> tuple[dict, str, object]:
    """Export `module` with each exporter it can take (torch_onnx.exporters_for) until one writes a file that
    passes onnx.checker and `parity` (a session -> parity record; raises ExportMismatch): (record, exporter,
    session).
    When none does, one error names what each exporter did, every mismatching output included."""
    failures: dict[str, Exception] = {}
    for exporter in exporters_for(module):
        for reuse in (True, False):  # a trace reused from a module of the same structure, else this one's own
            reused = False
            try:
                reused = export_torch(module, example, input_axes, output_names, path, opset or DEFAULT_OPSET,
                                      exporter, reuse)
                session = _checked_session(path)
                return parity(session), exporter, session
            except (ExportFailed, ExportMismatch) as e:
                failures[exporter] = e
                if not reused:
                    break
    mismatches = {name: diff for e in failures.values() for name, diff in getattr(e, "mismatches", {}).items()}
    listing = " | ".join(f"{exporter}: {e}" for exporter, e in failures.items())
    if mismatches:
        raise ExportMismatch(f"no exporter wrote a file that matches PyTorch. {listing}", mismatches)
    raise ExportFailed(f"torch.onnx could not export the model. {listing}. Try another --opset; for a plain torch "
                       "module, script it with torch.jit.script first.")


def _count(batches: list[dict]) -> int:
    return sum(len(next(iter(batch.values()))) for batch in batches)


def _signature(values) -> dict:
    return {v.name: {"shape": list(v.shape), "dtype": v.type} for v in values}


def check_parity(session, task, torch_model, batches: list[dict], atol: float) -> dict:
    """Run PyTorch and ONNX Runtime on the same real batches and compare every output.

    Returns {output: {"max_abs_diff", "mean_abs_diff"}}; raises ExportMismatch naming
    every output whose max |diff| exceeds `atol` (or whose shape differs, or that is NaN).
    """
    import numpy as np

    input_names = [i.name for i in session.get_inputs()]
    output_names = [o.name for o in session.get_outputs()]
    stats = {name: {"max_abs_diff": 0.0, "sum_abs_diff": 0.0, "count": 0} for name in output_names}
    problems: dict[str, str] = {}
    for feed in batches:
        feed = {k: v for k, v in feed.items() if k in input_names}  # e.g. no token_type_ids in DistilBERT
        onnx_out = dict(zip(output_names, session.run(None, feed)))
        torch_out = task.torch_outputs(torch_model, feed)
        for name in output_names:
            if name not in torch_out:
                problems[name] = f"not among PyTorch's outputs ({', '.join(torch_out)})"
                continue
            ours, ref = onnx_out[name], torch_out[name]
            if ours.shape != ref.shape:
                problems[name] = f"shape {list(ours.shape)} vs PyTorch {list(ref.shape)}"
                continue
            diff = np.abs(ours.astype(np.float64) - ref.astype(np.float64))
            keep = task.real_positions(feed, ref)
            if keep is not None:
                diff = diff[keep]
            if not np.isfinite(diff).all():
                problems[name] = "NaN or Inf where the other side has a number"
                continue
            s = stats[name]
            s["max_abs_diff"] = max(s["max_abs_diff"], float(diff.max()))
            s["sum_abs_diff"] += float(diff.sum())
            s["count"] += diff.size
    report = {name: {"max_abs_diff": s["max_abs_diff"], "mean_abs_diff": s["sum_abs_diff"] / max(s["count"], 1)}
              for name, s in stats.items()}
    # A shape, name or NaN problem has no meaningful max diff: those report NaN.
    mismatches = {name: float("nan") for name in problems}
    for name, s in report.items():
        if name not in problems and s["max_abs_diff"] > atol:
            problems[name] = f"max |diff| {s['max_abs_diff']:.3g} > atol {atol:g}"
            mismatches[name] = s["max_abs_diff"]
    if problems:
        listing = "; ".join(f"{name}: {why}" for name, why in problems.items())
        raise ExportMismatch(
            f"the ONNX export differs from PyTorch on {_count(batches)} real inputs: {listing}. "
            "The file was not saved. Fix: try another --opset or the other shape mode (--static-shapes "
            "or not); raise --atol only if the difference is expected (e.g. fp16).", mismatches)
    return report


def _checked_session(onnx_path: Path):
    """The IR version this onnxruntime reads, onnx.checker, then a CPU session on all cores (for the parity
    check). Every export passes here; the bundle and the app graph keep the IR version of the file they copy."""
    import onnx

    write_readable(onnx_path)
    try:
        onnx.checker.check_model(str(onnx_path))
    except Exception as e:  # noqa: BLE001 - checker raises ValidationError and others
        raise ExportFailed(f"the exported graph fails onnx.checker: {e}. Try another --opset.") from None
    return create_session(onnx_path, SessionSettings(threads=os.cpu_count() or 1))[0]


class _NetworkOutputs:
    """check_parity's view of an edgekit network: outputs by name, all pooled (no padding)."""

    @staticmethod
    def torch_outputs(model, feed: dict) -> dict:
        import torch

        from edgekit.modeling.networks import torch_feed

        with torch.inference_mode():
            outputs = model(**torch_feed(feed, model.input_names))
        return {name: value.numpy() for name, value in zip(model.output_names, outputs)}

    @staticmethod
    def real_positions(feed: dict, output):
        return None


def export_network(model, path: Path, batches: list[dict], atol: float = 1e-4, opset: int | None = None) -> dict:
    """Export an edgekit network (networks.TextModel / ImageModel) to `path` with dynamic
    batch (and sequence) axes, check it with onnx.checker and against PyTorch on the real
    `batches` (numpy feeds); returns the parity record. Raises ExportMismatch on a mismatch."""
    text = "input_ids" in model.input_names
    axes = {name: ({0: "batch_size", 1: "sequence_length"} if text else {0: "batch_size"})
            for name in model.input_names}
    example = {name: batches[0][name] for name in model.input_names}
    parity, exporter, _ = _export_checked(model.eval(), example, axes, model.output_names, path, opset,
                                       lambda session: check_parity(session, _NetworkOutputs(), model, batches, atol))
    return {"atol": atol, "samples": _count(batches), "batches": len(batches), "exporter": exporter,
            "outputs": parity}


def _module_outputs(task, module, batches: list[dict]) -> list[str]:
    """The output names of a plain torch module: what it returns on the first parity batch."""
    try:
        return list(task.torch_outputs(module, batches[0]))
    except Exception as e:  # noqa: BLE001 - the module rejected our real inputs
        shape = list(batches[0]["pixel_values"].shape)
        raise DataError(f"the module does not accept the parity inputs of shape {shape} "
                        f"({type(e).__name__}: {e}). Pass --inputs images.npy with real inputs "
                        "of the shape it expects, (N, C, H, W).") from None


def _save_preprocessing(source: ModelSource, model, folder: Path, images: bool) -> None:
    """What an app needs beside a Hugging Face model's file: its config, and its tokenizer or image processor
    settings (the files optimum's exporter writes too)."""
    import shutil

    model.config.save_pretrained(folder)
    if source.local and (Path(source.location) / "preprocessor_config.json").is_file():
        shutil.copyfile(Path(source.location) / "preprocessor_config.json", folder / "preprocessor_config.json")
    elif not images:
        load_tokenizer(source.location).save_pretrained(folder)


EXPORT_RECORD = "export.json"
# What an export folder written before export.json listed its files may hold: the model and what
# save_pretrained writes beside it.
_EXPORT_FILES = ("model.onnx", "model.onnx.data", "config.json", "preprocessor_config.json", "tokenizer.json",
                 "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "vocab.json", "merges.txt",
                 "added_tokens.json", "spiece.model", "sentencepiece.bpe.model", "chat_template.jinja")


def foreign_export_entries(folder: Path) -> list[str]:
    """The entries of an existing output folder that `edgekit export` did not write (all of them, unless its
    export.json is edgekit's): what keeps --force from replacing it."""
    try:
        info = read_json(folder / EXPORT_RECORD, dict, error=ExportFailed)
    except ExportFailed:
        info = {}
    if "edgekit_version" not in info:
        return [entry.name for entry in folder.iterdir()]
    files = info.get("files")
    return unexpected_entries(folder, {EXPORT_RECORD, *(files if isinstance(files, list) else _EXPORT_FILES)})


def export_model(model: str, out: str | Path, config: ExportConfig) -> ExportResult:
    """Export `model` for `config.task` into the folder `out` (model.onnx + tokenizer/config + export.json)."""
    import onnx

    task = get_task(config.task)
    source = resolve_model(model)
    task.check_source(source)
    out = Path(out)
    with atomic_dir(out, foreign_export_entries, replace=config.force) as tmp:
        # Data first: a wrong path or column is the commonest mistake and the cheapest to find.
        batches = task.parity_batches(source, config.inputs, config.samples, config.static_shape, config.text_column)
        torch_model = task.load_torch(source, trust_pickle=config.trust_pickle)
        onnx_path = tmp / ONNX_NAME

        def parity_of(session):
            return check_parity(session, task, torch_model, batches, config.atol)

        if config.exporter == "optimum":
            if source.kind != "hf":
                raise ExportFailed(f"--exporter optimum exports Hugging Face models, and '{model}' is a torch module "
                                   "file: use the default --exporter torch.")
            _export_optimum(source, tmp, config)
            session = _checked_session(onnx_path)
            parity, exporter = parity_of(session), "optimum"
        else:
            module = task.export_module(torch_model)
            example = {name: batches[0][name] for name in getattr(module, "input_names", batches[0])}
            output_names = list(getattr(module, "output_names", None) or _module_outputs(task, torch_model, batches))
            axes = {} if config.static_shapes else task.input_axes(example)
            parity, exporter, session = _export_checked(module, example, axes, output_names, onnx_path,
                                                        config.opset, parity_of)
            if source.kind == "hf":
                _save_preprocessing(source, torch_model, tmp, images=task.name == "image-classification")
        graph = onnx.load(str(onnx_path), load_external_data=False)
        info = {
            "edgekit_version": __version__,
            "model": model,
            "task": config.task,
            "opset": next(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")),
            "static_shape": config.static_shape,  # (batch, seq_len), or null for dynamic axes
            "inputs": _signature(session.get_inputs()),
            "outputs": _signature(session.get_outputs()),
            "exporter": exporter,
            "parity": {"data": config.inputs or task.default_data, "atol": config.atol,
                       "samples": _count(batches), "batches": len(batches), "outputs": parity},
            "versions": package_versions(),
            "files": sorted([entry.name for entry in tmp.iterdir()] + [EXPORT_RECORD]),  # what --force may replace
        }
        (tmp / EXPORT_RECORD).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return ExportResult(out / ONNX_NAME, info)
