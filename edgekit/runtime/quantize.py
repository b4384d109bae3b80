"""Quantized copies of an ONNX file with ONNX Runtime's tools: int8 dynamic, int8 static QDQ, fp16, and
int4/int8 weight-only (MatMulNBits).

What each choice is for, measured on all-MiniLM-L6-v2 (see FIELD-NOTES):
- int8-dynamic: signed int8 weights per channel, activations quantized at run time.
  The CPU default: 0.42x of fp32 latency at cosine 0.993, no calibration data needed.
  Unsigned weights are 1.7x slower; per-tensor scales (int8-dynamic-per-tensor) lose
  fidelity (cosine 0.963) and are there for runtimes without per-channel support.
- int8-static-*: QDQ graph with activation ranges fixed by calibration data, which is
  what NPUs/DSPs and mobile runtimes consume. Only MatMul is quantized: ORT's default op
  types collapse a transformer (cosine 0.38); MatMul-only reaches ~0.935. A static-embedding
  student's table (a Gather) is quantized too: it is nearly all of that file (static_op_types).
- fp16: half the size for GPU providers; keeps float32 inputs/outputs so callers need no change.
- int4-weight / int8-weight: block-wise weights (one scale per `block_size` weights along a MatMul's input
  dimension) in ORT's MatMulNBits op (com.microsoft); activations stay float. This is the format LLM runtimes
  and OpenVINO consume. Measured on a 3-layer MiniLM student at seq 128, 1 thread, AMD EPYC with AVX-512 VNNI:
  on the CPU provider int4 is no faster than fp32 (7.9-8.5 ms against 8.5), int8-weight is 13.5 ms with
  float compute and 7.5 ms with accuracy_level 4 (int8 compute), while int8-dynamic is 4.0 ms; on OpenVINO
  both run in ~4.4 ms (fp32 8.0). Embedding cosine to fp32: int4 0.959 at block 32 (0.966 at 16, 0.935 at 128),
  int8-weight 0.9996-0.9998. The embedding Gathers and the Gemm heads stay float, so the file shrinks less than the
  bits suggest (69 -> 51 MB for that student: the word embeddings are most of it).

Each method is a small frozen config (Int8Dynamic, Int8Static, Fp16, WeightOnly: torchao's
`quantize_(model, config)` style) that says what it is (`int8`, `needs_calibration`, `gpu_only`,
`graph`, `weight_type`); CONFIGS maps the names a recipe or `--method` uses (edgekit.names.METHODS) to them.

onnxruntime, onnx and numpy are imported inside the functions: importing edgekit must stay
cheap and work where only part of the stack is installed.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import tempfile
import time
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal, get_args

from edgekit.errors import DataError, ModelNotFound, QuantizationFailed
from edgekit.names import METHODS, STATIC_METHODS, TEXT_INPUTS
from edgekit.runtime.providers import SessionSettings, create_session, write_readable

if TYPE_CHECKING:
    import numpy as np

__all__ = ["ACCURACY_LEVELS", "BLOCK_SIZES", "CONFIGS", "METHODS", "PERCENTILE", "STATIC_METHODS", "Fp16", "Int8Dynamic",
           "Int8Static", "QuantConfig", "WeightOnly", "image_calibration", "quant_config", "quantize_file",
           "quantized_matmuls", "reduce_range_choice", "resolve_reduce_range", "static_op_types", "text_calibration"]

# ORT's own default for percentile calibration, recorded so a report can say what clipped the ranges.
PERCENTILE = 99.999
# Histogram calibrators keep every calibrated tensor of every sample in memory until they bin it
# (~30 MB per MiniLM sample at 128 tokens): binning every 16 samples bounds that to ~1 GB.
_CALIBRATION_CHUNK = 16
_STATIC_OP_TYPES = ["MatMul"]
_VNNI = ("avx512_vnni", "avx_vnni", "amx_int8")
# Weight-only block sizes: the powers of two ORT's block quantizer (MLAS) takes; it fails deep inside on others.
BLOCK_SIZES = (16, 32, 64, 128, 256)
# MatMulNBits' accuracy_level: the type the CPU provider computes in (the weights are dequantized to it, or,
# at 4, the activations are quantized block-wise to int8). Other providers ignore it (OpenVINO, CUDA).
# 2 and 3 take effect only on CPUs with those instructions (float32 otherwise).
ACCURACY_LEVELS = {0: "float32 (the attribute left out)", 1: "float32", 2: "float16", 3: "bfloat16",
                   4: "int8 (activations quantized per block at run time)"}


# ---------------------------------------------------------------------------- configs

Calibrate = Literal["minmax", "entropy", "percentile"]


class QuantConfig:
    """What a quantized variant is (torchao's AOBaseConfig): one frozen dataclass per method.

    name: the name a recipe's quantize.variants and `--method` use (edgekit.names.METHODS);
    int8: made by ORT's int8 quantizers (int8 weights and int8 activations: where reduce_range applies and
    int8's CPU speed-up comes from; weight-only variants are not); weight_type: what the weights are stored as;
    needs_calibration: static int8, activation ranges fixed on calibration data;
    gpu_only: made and measured for GPU providers only; graph: the graph the variant runs, shared by
    variants that differ only in their calibration ranges (every static one: "int8-static").
    """

    int8: ClassVar[bool] = True
    weight_type: ClassVar[str] = "int8"
    needs_calibration: ClassVar[bool] = False
    gpu_only: ClassVar[bool] = False
    per_channel: ClassVar[bool | None] = None  # what the record says: per-channel int8 weights, None for fp16 and
    # block-wise weights
    activation_type: ClassVar[str]  # what the record says of the activations
    fix: ClassVar[str]  # what to try when quantizing with this config fails

    @property
    def name(self) -> str:
        raise NotImplementedError

    @property
    def graph(self) -> str:
        return self.name

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class Int8Dynamic(QuantConfig):
    """Signed int8 weights, per output channel or one scale per tensor; activations quantized at run time."""

    per_channel: bool = True
    activation_type: ClassVar[str] = "dynamic"

    @property
    def name(self) -> str:
        return "int8-dynamic" if self.per_channel else "int8-dynamic-per-tensor"

    @property
    def fix(self) -> str:
        if self.per_channel:
            return "try --method int8-dynamic-per-tensor (per_channel=False), or check that the file loads in ONNX Runtime"
        return "check that the file loads in ONNX Runtime, or try --method fp16"


@dataclass(frozen=True)
class Int8Static(QuantConfig):
    """QDQ int8 of the MatMuls (signed per-channel weights, uint8 activations), the activation ranges
    fixed by `calibrate` on calibration data."""

    calibrate: Calibrate = "minmax"
    needs_calibration: ClassVar[bool] = True
    per_channel: ClassVar[bool] = True
    activation_type: ClassVar[str] = "uint8"
    fix: ClassVar[str] = ("check that the calibration data fits the model (same inputs, lengths within its limit) "
                          "and that the file loads in ONNX Runtime, or use --method int8-dynamic (no calibration "
                          "needed)")

    def __post_init__(self):
        if self.calibrate not in get_args(Calibrate):
            raise QuantizationFailed(f"Int8Static: unknown calibrate {self.calibrate!r}; choose one of: "
                                     f"{', '.join(get_args(Calibrate))}.")

    @property
    def name(self) -> str:
        return f"int8-static-{self.calibrate}"

    @property
    def graph(self) -> str:
        return "int8-static"  # only the ranges differ between calibrations: one graph, one latency

    @property
    def percentile(self) -> float | None:
        """The percentile the ranges are clipped at (percentile calibration only)."""
        return PERCENTILE if self.calibrate == "percentile" else None


@dataclass(frozen=True)
class Fp16(QuantConfig):
    """float16 weights and compute with float32 inputs and outputs: for GPU providers."""

    int8: ClassVar[bool] = False
    weight_type: ClassVar[str] = "fp16"
    gpu_only: ClassVar[bool] = True  # on CPU an fp16 file loads but is usually slower than fp32
    activation_type: ClassVar[str] = "fp16"
    fix: ClassVar[str] = ("the graph may use an op without a float16 kernel; use an int8 method on CPU, or check "
                          "that the file loads in ONNX Runtime")

    @property
    def name(self) -> str:
        return "fp16"


@dataclass(frozen=True)
class WeightOnly(QuantConfig):
    """Block-wise `bits`-bit weights of the MatMuls whose weight is a constant (ORT's MatMulNBits), one scale per
    `block_size` weights along the input dimension; activations stay float. Round to nearest, no calibration.

    accuracy_level (ACCURACY_LEVELS): what the CPU provider computes in. 4 (int8, the default) is what makes
    int8-weight worth having there (7.5 ms against 13.5 ms with float compute, see the module docstring) and
    costs int4 nothing measurable; 0 leaves the attribute out, for runtimes that reject it.
    symmetric: zero-centred blocks (no zero points); asymmetric ones fit skewed blocks a little better.
    """

    bits: int = 4
    block_size: int = 32
    accuracy_level: int = 4
    symmetric: bool = True
    int8: ClassVar[bool] = False  # not ORT's int8 path: reduce_range does not apply, nor precision.py's search
    activation_type: ClassVar[str] = "float"

    def __post_init__(self):
        if self.bits not in (4, 8) or isinstance(self.bits, bool):
            raise QuantizationFailed(f"WeightOnly: bits must be 4 or 8 (got {self.bits!r}); use --method int4-weight "
                                     "or int8-weight.")
        size = self.block_size
        if isinstance(size, bool) or not isinstance(size, int) or size not in BLOCK_SIZES:
            raise QuantizationFailed(f"{self.name}: block_size must be a power of two from 16 to 256 (got {size!r}); "
                                     "use 16, 32 (the default), 64, 128 or 256 (--block-size, or quantize.block_size "
                                     "in a recipe): smaller blocks keep more accuracy, larger ones make a smaller file.")
        if self.accuracy_level not in ACCURACY_LEVELS or isinstance(self.accuracy_level, bool):
            raise QuantizationFailed(f"{self.name}: accuracy_level must be one of 0-4 (got {self.accuracy_level!r}): "
                                     + ", ".join(f"{k} {v}" for k, v in ACCURACY_LEVELS.items()) + ".")

    @property
    def name(self) -> str:
        return f"int{self.bits}-weight"

    @property
    def weight_type(self) -> str:
        return f"int{self.bits}"

    @property
    def fix(self) -> str:
        return ("check that the file loads in ONNX Runtime and that onnx-ir is installed (pip install 'onnx-ir>=1.1'), "
                "or use --method int8-dynamic")


# The names a recipe's quantize.variants and `edgekit quantize --method` take, in edgekit.names.METHODS' order.
CONFIGS: dict[str, QuantConfig] = {config.name: config for config in (
    Int8Dynamic(per_channel=True), Int8Dynamic(per_channel=False), Int8Static("minmax"), Int8Static("entropy"),
    Int8Static("percentile"), Fp16(), WeightOnly(bits=4), WeightOnly(bits=8))}


def quant_config(method: str | QuantConfig, block_size: int | None = None,
                 accuracy_level: int | None = None) -> QuantConfig:
    """The config of `method`: a name of METHODS, or a config (returned as it is).

    block_size / accuracy_level (None: WeightOnly's defaults) set a weight-only name's settings, as a recipe's
    quantize.block_size / quantize.accuracy_level do; other methods have neither and ignore them.
    """
    if isinstance(method, QuantConfig):
        return method
    if isinstance(method, str) and method in CONFIGS:
        config = CONFIGS[method]
        if isinstance(config, WeightOnly):
            settings = {"block_size": block_size, "accuracy_level": accuracy_level}
            config = replace(config, **{k: v for k, v in settings.items() if v is not None})
        return config
    raise QuantizationFailed(f"unknown quantization method '{method}'; choose one of: {', '.join(METHODS)}.")


def reduce_range_choice(info: dict | None = None) -> tuple[bool, str]:
    """(reduce_range, why) for the CPU in `info` (default: this machine's cpu_info()): the "auto" choice.

    x86 without VNNI multiplies int8 pairs with vpmaddubsw, whose 16-bit sums can
    saturate with full 8-bit weights; 7-bit weights avoid that. VNNI (and AMX)
    accumulate in 32 bits, and arm64's dot products are signed: both keep 8 bits.
    """
    if info is None:
        from edgekit.runtime.environment import cpu_info  # reads importlib.metadata: not at import time

        info = cpu_info()
    if info["arch"] in ("aarch64", "arm64"):
        return False, "arm64: signed int8 dot products do not saturate, full 8-bit weights kept"
    found = [name for name in _VNNI if info["instruction_sets"].get(name)]
    if found:
        return False, f"CPU has {found[0]}: int8 products accumulate in 32 bits, full 8-bit weights kept"
    return True, ("no VNNI detected on this CPU: AVX2/AVX-512 int8 multiply-add can saturate 16-bit sums, "
                  "so weights use 7 bits (reduce_range)")


def resolve_reduce_range(setting: bool | Literal["auto"] | None = None,
                         info: dict | None = None) -> tuple[bool | Literal["auto"], bool, str]:
    """(the setting asked: "auto"/True/False, the reduce_range used, why) for `setting`.

    None and "auto" pick per CPU (reduce_range_choice on `info`, default this machine); True/False
    pin it, so a file (or a test) comes out the same on every host. A pinned setting's why also says
    what auto would have picked here, so a record shows when a pin does not suit the host it ran on.
    """
    if setting is None or setting == "auto":
        used, why = reduce_range_choice(info)
        return "auto", used, why
    if not isinstance(setting, bool):
        raise QuantizationFailed(f"reduce_range must be 'auto', True or False (got {setting!r}).")
    auto, auto_why = reduce_range_choice(info)
    bits = "7-bit weights" if setting else "full 8-bit weights"
    return setting, setting, (f"pinned to {setting} ({bits}); auto would pick {auto} here ({auto_why})")


@contextmanager
def _scratch_dir(beside: Path):
    """A temporary folder beside `beside`, also the working directory while it is open.

    ORT's quantization tools drop temp files (`*.data`, augmented models) in the
    working directory; running there keeps the user's cwd clean. Being on dst's
    file system, the result can be moved into place atomically. Changing the cwd
    is process-wide: do not quantize from several threads at once.
    """
    _clear_dead_scratch(beside)
    tmp = Path(tempfile.mkdtemp(prefix=f".{beside.name}.quant-{os.getpid()}-", dir=beside.parent))
    cwd = os.getcwd()
    os.chdir(tmp)
    try:
        yield tmp
    finally:
        os.chdir(cwd)
        shutil.rmtree(tmp, ignore_errors=True)


def _clear_dead_scratch(beside: Path) -> None:
    """Scratch folders a killed quantization (SIGKILL, power loss) left in `beside`'s folder, of any output file:
    those whose process is gone. A live one belongs to a quantization running now and is left to it."""
    for leftover in beside.parent.glob(".*.quant-*"):
        pid = leftover.name.rpartition(".quant-")[2].split("-")[0]
        if leftover.is_dir() and (not pid.isdigit() or not _alive(int(pid))):
            shutil.rmtree(leftover, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


# ---------------------------------------------------------------------------- calibration feeds


def text_calibration(tokenizer, texts: list[str], samples: int, max_length: int, seed: int = 0) -> list[dict]:
    """Calibration feeds from texts: a seeded sample of `samples` texts (all if fewer), one per batch.

    Every batch is padded to ONE length, the longest in the sample (capped by max_length):
    histogram calibrators stack the batches' activations and fail on ragged shapes, and
    padding to a fixed 512 would spend the ranges (and time) on padding tokens.
    """
    import numpy as np

    if samples < 1:
        raise DataError(f"calibration needs at least 1 sample (got {samples}); pass --samples N with N >= 1.")
    if not texts:
        raise DataError("no calibration texts: pass a data source with at least one non-empty text.")
    if len(texts) > samples:
        picked = np.random.default_rng(seed).choice(len(texts), size=samples, replace=False)
        texts = [texts[i] for i in sorted(picked)]
    encoded = tokenizer(list(texts), truncation=True, max_length=max_length)
    length = max(len(ids) for ids in encoded["input_ids"])
    pad_id = tokenizer.pad_token_id or 0
    feeds = []
    for i, ids in enumerate(encoded["input_ids"]):
        row = {"input_ids": np.full((1, length), pad_id, dtype=np.int64),
               "attention_mask": np.zeros((1, length), dtype=np.int64),
               "token_type_ids": np.zeros((1, length), dtype=np.int64)}
        row["input_ids"][0, :len(ids)] = ids
        row["attention_mask"][0, :len(ids)] = 1
        if "token_type_ids" in encoded:
            row["token_type_ids"][0, :len(ids)] = encoded["token_type_ids"][i]
        feeds.append(row)
    return feeds


def image_calibration(images: np.ndarray, samples: int, seed: int = 0) -> list[dict]:
    """Calibration feeds from (N, C, H, W) images: a seeded sample of `samples` (all if fewer), one per batch."""
    import numpy as np

    images = np.asarray(images)
    if images.ndim != 4 or len(images) == 0:
        raise DataError(f"calibration images have shape {images.shape}; expected a non-empty (N, C, H, W) array.")
    if samples < 1:
        raise DataError(f"calibration needs at least 1 sample (got {samples}); pass --samples N with N >= 1.")
    index = np.arange(len(images))
    if len(images) > samples:
        index = np.sort(np.random.default_rng(seed).choice(len(images), size=samples, replace=False))
    return [{"pixel_values": images[i:i + 1].astype(np.float32)} for i in index]


def _graph_inputs(path: Path) -> dict:
    """Input name -> numpy dtype, for the real inputs of the graph (initializers listed as inputs excluded)."""
    import onnx
    from onnx.helper import tensor_dtype_to_np_dtype

    model = onnx.load(str(path), load_external_data=False)
    constants = {init.name for init in model.graph.initializer}
    return {i.name: tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type)
            for i in model.graph.input if i.name not in constants}


def _prepare_feeds(calibration: list[dict], inputs: dict, method: str) -> list[dict]:
    """The feeds the graph declares, in its dtypes, text inputs padded with zeros to one length.

    Callers should already pad (text_calibration does); padding again here keeps a hand-made
    list with ragged lengths from failing deep inside ORT's histogram code ("inhomogeneous shape").
    """
    import numpy as np

    missing = sorted(name for name in inputs if any(name not in feed for feed in calibration))
    if missing:
        have = sorted(set().union(*calibration))
        raise QuantizationFailed(f"{method}: calibration batches lack input(s) {', '.join(missing)} that the model "
                                 f"declares (they have: {', '.join(have) or 'none'}). Fix: pass calibration data of "
                                 "the model's kind (texts for a text model, images for an image model).")

    def padded(name: str, value) -> bool:
        return name in TEXT_INPUTS and value.ndim == 2 and np.issubdtype(value.dtype, np.integer)

    feeds = [{name: np.asarray(feed[name]) for name in inputs} for feed in calibration]
    longest = max((value.shape[1] for feed in feeds for name, value in feed.items() if padded(name, value)),
                  default=0)
    for feed in feeds:
        for name, value in feed.items():
            if padded(name, value) and value.shape[1] < longest:
                value = np.pad(value, ((0, 0), (0, longest - value.shape[1])))
            feed[name] = value.astype(inputs[name], copy=False)
    return feeds


def _chunk_size(feeds: list[dict]) -> int:
    """Samples per calibration pass: the largest divisor of len(feeds) up to _CALIBRATION_CHUNK.

    ORT requires the count to divide evenly. Batches of differing shapes (e.g. several batch
    sizes) cannot be stacked in one pass at all: they go one per pass.
    """
    shapes = {tuple((name, value.shape) for name, value in sorted(feed.items())) for feed in feeds}
    if len(shapes) > 1:
        return 1
    return max(d for d in range(1, min(_CALIBRATION_CHUNK, len(feeds)) + 1) if len(feeds) % d == 0)


class _Reader:
    """ORT CalibrationDataReader (duck-typed: ORT checks for get_next) over prepared feeds.

    set_range/__len__ let quantize_static calibrate chunk by chunk (CalibStridedMinMax).
    """

    def __init__(self, feeds: list[dict]):
        self.feeds = feeds
        self.set_range(0, len(feeds))

    def __len__(self) -> int:
        return len(self.feeds)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._rows = iter(self.feeds[start_index:end_index])

    def get_next(self) -> dict | None:
        return next(self._rows, None)


# ---------------------------------------------------------------------------- quantizers


def _preprocess(src: Path, tmp: Path) -> Path:
    from onnxruntime.quantization import quant_pre_process

    pre = tmp / "preprocessed.onnx"
    # Symbolic shape inference fails on exported transformer graphs; ONNX's own
    # shape inference and ORT's basic optimizations are what the quantizer needs.
    quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
    return pre


def _dynamic(src: Path, out: Path, tmp: Path, per_channel: bool, reduce_range: bool,
             keep_fp32: list[str], only: list[str] | None = None) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # DefaultTensorType: fused graphs (ORT O2) hide some weights' types from the
    # quantizer ("Unable to find data type for weight_name"); they are all float.
    quantize_dynamic(_preprocess(src, tmp), out, per_channel=per_channel, reduce_range=reduce_range,
                     weight_type=QuantType.QInt8, nodes_to_exclude=keep_fp32, nodes_to_quantize=only,
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})


def static_op_types(path: Path) -> list[str]:
    """The op types static int8 quantizes in the file: MatMul (see the module docstring), and Gather too in a
    static-embedding student's graph (networks.StaticModel: no attention, its largest weight a table read by
    a Gather). That table is nearly all of its bytes: left float, the int8 file would be no smaller."""
    import math

    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    if any(node.op_type == "Softmax" for node in graph.node):  # attention: a transformer keeps MatMul only
        return list(_STATIC_OP_TYPES)
    sizes = {w.name: math.prod(w.dims) for w in graph.initializer if w.data_type == onnx.TensorProto.FLOAT}
    largest = max(sizes, key=sizes.get, default=None)
    if any(node.op_type == "Gather" and node.input[0] == largest for node in graph.node):
        return [*_STATIC_OP_TYPES, "Gather"]
    return list(_STATIC_OP_TYPES)


def _static(src: Path, out: Path, tmp: Path, config: Int8Static, reduce_range: bool, calibration: list[dict],
            keep_fp32: list[str], op_types: list[str]) -> int:
    """QDQ int8 of `src` calibrated on `calibration`; returns the number of calibration batches."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    pre = _preprocess(src, tmp)
    feeds = _prepare_feeds(calibration, _graph_inputs(pre), config.name)
    calibrate = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                 "percentile": CalibrationMethod.Percentile}[config.calibrate]
    extra = {"DefaultTensorType": onnx.TensorProto.FLOAT, "CalibStridedMinMax": _chunk_size(feeds)}
    if config.percentile is not None:
        extra["CalibPercentile"] = config.percentile
    # Unsigned activations with signed weights (U8S8) is ORT's fast CPU path; reduce_range
    # keeps it from saturating on x86 without VNNI, as for dynamic.
    quantize_static(pre, out, _Reader(feeds), quant_format=QuantFormat.QDQ, op_types_to_quantize=op_types,
                    per_channel=True, reduce_range=reduce_range, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, calibrate_method=calibrate, nodes_to_exclude=keep_fp32,
                    extra_options=extra)
    return len(feeds)


def _fp16(src: Path, out: Path) -> None:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    # keep_io_types: inputs and outputs stay float32/int64, so tokenizers, feeds and parity checks are unchanged.
    onnx.save(convert_float_to_float16(onnx.load(str(src)), keep_io_types=True), str(out))


@contextmanager
def _quiet_nbits():
    """ORT's MatMulNBits quantizer module, imported and run without its logging side effects.

    Importing it calls logging.basicConfig(level=INFO): the root logger would gain a stderr handler and print
    every library's INFO lines for the rest of the process (the CLI's and the pipeline's output). The root
    logger is put back as it was, and the quantizer's own per-node INFO lines are held back while it runs.
    """
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        from onnxruntime.quantization import matmul_nbits_quantizer
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    logger = logging.getLogger(matmul_nbits_quantizer.__name__)
    was = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield matmul_nbits_quantizer.MatMulNBitsQuantizer
    finally:
        logger.setLevel(was)


def _weight_only(src: Path, out: Path, config: WeightOnly, keep_fp32: list[str]) -> None:
    import onnx

    with _quiet_nbits() as quantizer:
        # The quantizer edits the proto it is given: a fresh load per call. MatMul only (its default): the
        # embedding Gathers and Gemm heads stay float (the record's float_weights).
        q = quantizer(onnx.load(str(src)), bits=config.bits, block_size=config.block_size,
                      is_symmetric=config.symmetric, accuracy_level=config.accuracy_level or None,
                      nodes_to_exclude=keep_fp32, op_types_to_quantize=("MatMul",))
        q.process()
        q.model.save_model_to_file(str(out), use_external_data_format=False)


def _weight_only_facts(path: Path) -> dict:
    """What a weight-only file holds: MatMulNBits nodes, MatMuls left float (activation x activation, such as
    attention scores, or kept_fp32), and per op type the nodes still reading a float weight (rank >= 2)."""
    from collections import Counter

    import onnx

    graph = onnx.load(str(path)).graph
    weights = {w.name for w in graph.initializer if w.data_type == onnx.TensorProto.FLOAT and len(w.dims) >= 2}
    ops = Counter(node.op_type for node in graph.node)
    float_weights = Counter(node.op_type for node in graph.node if node.op_type != "MatMulNBits"  # its scales
                            and any(name in weights for name in node.input))
    return {"matmuls_quantized": ops["MatMulNBits"], "float_matmuls": ops["MatMul"],
            "float_weights": dict(sorted(float_weights.items()))}


def _failure(config: QuantConfig, src: Path, error: Exception) -> QuantizationFailed:
    message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return QuantizationFailed(f"{config.name} quantization of '{src}' failed: {type(error).__name__}: {message}. "
                              f"Fix: {config.fix}; if it does and this persists, report this message with the file "
                              "and your onnxruntime version.")


def quantize_file(src: Path, dst: Path, method: str | QuantConfig,
                  calibration: list[dict[str, np.ndarray]] | None = None, keep_fp32: list[str] = (),
                  only: list[str] | None = None, reduce_range: bool | Literal["auto"] | None = None) -> dict:
    """Write a `method` copy (a name of METHODS, or its config: see CONFIGS) of the ONNX file `src` to
    `dst`; returns what was done (JSON-able), the same record for a name and for its config.

    int8-static-* methods need `calibration`: feeds (input name -> array) such as text_calibration
    or image_calibration make. `keep_fp32` names nodes (of the graph after ORT's basic optimizations:
    see quantized_matmuls; weight-only methods: of `src` itself) left in fp32; `only` (int8-dynamic
    methods) quantizes just these nodes. Weight-only methods (WeightOnly: int4-weight, int8-weight; pass
    a config for another block_size) record their bits, block_size, accuracy_level, symmetric, how many
    MatMuls became MatMulNBits, how many stayed float, and which op types still read float weights.
    `reduce_range` (int8 methods): True = 7-bit weights, False = full 8 bits, None/"auto" = per CPU
    (reduce_range_choice): the one choice of this module that depends on the host, so the record
    says what was asked ("reduce_range_setting"), what was used ("reduce_range") and why ("why").
    Everything else (signed int8 weights, uint8 static activations, per-channel, the op types) is
    the same on every host; which int8 kernel ORT then runs (U8S8, U8U8, VNNI or not) is its own
    choice at session time and cannot be pinned here.
    dst appears complete or not at all, loads in ORT's CPU provider, and nothing else is left beside
    it or in the cwd.
    """
    src, dst = Path(src).resolve(), Path(dst).resolve()
    config = quant_config(method)
    method = config.name
    if not src.is_file():
        raise ModelNotFound(f"ONNX file '{src}' does not exist. Export one with `edgekit export`.")
    static = config.needs_calibration
    if static and not calibration:
        raise QuantizationFailed(f"{method} needs calibration data to fix activation ranges, and none was given. "
                                 "Fix: pass calibration data (`--calibration DATA` on the CLI: texts or images "
                                 "like the model's inputs), or use --method int8-dynamic, which needs none.")
    started = time.perf_counter()
    setting, reduce_range, why = resolve_reduce_range(reduce_range)
    # The key order is the record's (quantization.json, report.json): keep it. fp16 and weight-only:
    # reduce_range_setting stays as asked (a recipe's setting applies to all its variants); it has no effect there.
    weight_only = isinstance(config, WeightOnly)
    if config.int8:
        note = why
    elif weight_only:
        note = (f"block-wise int{config.bits} weights (one {'symmetric' if config.symmetric else 'asymmetric'} "
                f"scale per {config.block_size} weights) in MatMulNBits, activations float; accuracy_level "
                f"{config.accuracy_level}: the CPU provider computes in {ACCURACY_LEVELS[config.accuracy_level]}")
    else:
        note = "fp16 halves the file for GPU providers; on CPU it loads but is usually slower than fp32"
    record = {"method": method, "weight_type": config.weight_type,
              "activation_type": config.activation_type, "per_channel": config.per_channel,
              "reduce_range_setting": setting, "reduce_range": reduce_range if config.int8 else None,
              "why": note, "op_types": static_op_types(src) if static else ["MatMul"] if weight_only else None,
              "calibration": None}
    if weight_only:
        record |= {"bits": config.bits, "block_size": config.block_size, "accuracy_level": config.accuracy_level,
                   "symmetric": config.symmetric}
    if keep_fp32:
        record["kept_fp32"] = list(keep_fp32)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with _scratch_dir(dst) as tmp:
        out = tmp / "quantized.onnx"
        try:
            # ORT's calibrators print progress to stdout, which is the CLI's result channel.
            with redirect_stdout(io.StringIO()):
                if isinstance(config, Fp16):
                    _fp16(src, out)
                elif weight_only:
                    _weight_only(src, out, config, list(keep_fp32))
                elif isinstance(config, Int8Static):
                    batches = _static(src, out, tmp, config, reduce_range, calibration, list(keep_fp32),
                                      record["op_types"])
                    record["calibration"] = {"method": config.calibrate, "batches": batches,
                                             **({} if config.percentile is None else
                                                {"percentile": config.percentile})}
                else:
                    _dynamic(src, out, tmp, config.per_channel, reduce_range, list(keep_fp32), only)
            import onnxruntime as ort

            write_readable(out)  # ORT's quantizers may stamp onnx's newest IR version: the one this runtime reads
            ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])  # a file that does not load is a failure
        except QuantizationFailed:
            raise
        except Exception as e:  # ORT and onnx raise many types; each is a failed quantization
            create_session(src, SessionSettings())  # a source that does not load is named as truncated or corrupt
            raise _failure(config, src, e) from e
        if weight_only:
            record |= _weight_only_facts(out)
            if not record["matmuls_quantized"]:  # e.g. a static-embedding student: a Gather and a Gemm
                record["why"] += ("; no MatMul here has a constant weight, so nothing was quantized and the file "
                                  "computes as its float source")
        os.replace(out, dst)
    record["size_bytes"] = dst.stat().st_size
    record["seconds"] = round(time.perf_counter() - started, 3)
    return record



def quantized_matmuls(path: Path) -> list[str]:
    """Names of the MatMul nodes an int8-dynamic or weight-only file quantized (graph order): what keep_fp32
    can name.

    ORT's int8 quantizers name the int8 node after the original one (`<name>_quant`), its MatMulNBits
    quantizer `<name>_Q4` / `<name>_Q8`; activation x activation MatMuls (attention scores) stay float and
    are not listed.
    """
    import re

    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    names = []
    for node in graph.node:
        if node.op_type in ("MatMulInteger", "QLinearMatMul", "MatMulIntegerToFloat") and node.name.endswith("_quant"):
            names.append(node.name[:-len("_quant")])
        elif node.op_type == "MatMulNBits":
            names.append(re.sub(r"_Q[48]$", "", node.name))
    return names
