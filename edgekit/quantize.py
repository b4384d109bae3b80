"""Dynamic int8 quantization of an ONNX file with ONNX Runtime's quantizer.

Signed int8 weights, per channel by default: on the CPUs measured (see
FIELD-NOTES) that is 0.42x of fp32 latency at cosine 0.993, where unsigned
weights are 1.7x slower and per-tensor scales lose fidelity (cosine 0.963).
Activations are quantized at run time, so no calibration data is needed.

onnxruntime is imported inside the functions: importing edgekit must stay
cheap and work where only part of the stack is installed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from edgekit.environment import cpu_info
from edgekit.errors import ModelNotFound, QuantizationFailed

_VNNI = ("avx512_vnni", "avx_vnni", "amx_int8")


def reduce_range_choice(info: dict | None = None) -> tuple[bool, str]:
    """(reduce_range, why) for the CPU in `info` (default: this machine's cpu_info()).

    x86 without VNNI multiplies int8 pairs with vpmaddubsw, whose 16-bit sums can
    saturate with full 8-bit weights; 7-bit weights avoid that. VNNI (and AMX)
    accumulate in 32 bits, and arm64's dot products are signed: both keep 8 bits.
    """
    info = info or cpu_info()
    if info["arch"] in ("aarch64", "arm64"):
        return False, "arm64: signed int8 dot products do not saturate, full 8-bit weights kept"
    found = [name for name in _VNNI if info["instruction_sets"].get(name)]
    if found:
        return False, f"CPU has {found[0]}: int8 products accumulate in 32 bits, full 8-bit weights kept"
    return True, ("no VNNI detected on this CPU: AVX2/AVX-512 int8 multiply-add can saturate 16-bit sums, "
                  "so weights use 7 bits (reduce_range)")


@contextmanager
def _scratch_dir(beside: Path):
    """A temporary folder beside `beside`, also the working directory while it is open.

    ORT's quantization tools drop temp files (`*.data`, augmented models) in the
    working directory; running there keeps the user's cwd clean. Being on dst's
    file system, the result can be moved into place atomically. Changing the cwd
    is process-wide: do not quantize from several threads at once.
    """
    tmp = Path(tempfile.mkdtemp(prefix=f".{beside.name}.quant-", dir=beside.parent))
    cwd = os.getcwd()
    os.chdir(tmp)
    try:
        yield tmp
    finally:
        os.chdir(cwd)
        shutil.rmtree(tmp, ignore_errors=True)


def _quantize(src: Path, tmp: Path, per_channel: bool, reduce_range: bool) -> Path:
    """Pre-process then quantize `src` inside the folder `tmp`; the result must load in ORT."""
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quant_pre_process, quantize_dynamic

    pre, out = tmp / "preprocessed.onnx", tmp / "quantized.onnx"
    # Symbolic shape inference fails on exported transformer graphs; ONNX's own
    # shape inference and ORT's basic optimizations are what the quantizer needs.
    quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
    # DefaultTensorType: fused graphs (ORT O2) hide some weights' types from the
    # quantizer ("Unable to find data type for weight_name"); they are all float.
    quantize_dynamic(pre, out, per_channel=per_channel, reduce_range=reduce_range, weight_type=QuantType.QInt8,
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])  # a file that does not load is a failure
    return out


def quantize_dynamic_int8(src: Path, dst: Path, per_channel: bool = True) -> dict:
    """Write a dynamic int8 copy of the ONNX file `src` to `dst`; returns what was done.

    dst appears complete or not at all, and nothing else is left beside it or in the cwd.
    """
    src, dst = Path(src).resolve(), Path(dst).resolve()
    if not src.is_file():
        raise ModelNotFound(f"ONNX file '{src}' does not exist. Export one with `edgekit export`.")
    reduce_range, why = reduce_range_choice()
    dst.parent.mkdir(parents=True, exist_ok=True)
    with _scratch_dir(dst) as tmp:
        try:
            out = _quantize(src, tmp, per_channel, reduce_range)
        except Exception as e:  # ORT and onnx raise many types; each is a failed quantization
            message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            hint = "try per_channel=False, or " if per_channel else ""
            raise QuantizationFailed(f"dynamic int8 quantization of '{src}' failed: {type(e).__name__}: {message}. "
                                     f"Fix: {hint}check that the file loads in ONNX Runtime; if it does, report this "
                                     "message with the file and your onnxruntime version.") from e
        os.replace(out, dst)
    return {"method": "dynamic-int8", "weight_type": "int8", "per_channel": per_channel, "reduce_range": reduce_range,
            "why": why, "size_bytes": dst.stat().st_size}
