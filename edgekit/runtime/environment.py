"""What a measurement ran on: the CPU (name, instruction sets) and package versions.

Latency figures are only comparable on the same CPU and runtime, and quantization
presets depend on VNNI/AMX (x86) or dot-product/i8mm (arm64), so every
measurement and export records this next to its numbers.
"""

from __future__ import annotations

import os
import platform
from functools import lru_cache
from importlib import metadata

# /proc/cpuinfo flag -> the name we report. x86 flags come from the "flags" line,
# arm64 ones from "Features".
_X86_FLAGS = {
    "avx2": "avx2",
    "fma": "fma",
    "avx512f": "avx512f",
    "avx512bw": "avx512bw",
    "avx512_vnni": "avx512_vnni",
    "avx_vnni": "avx_vnni",
    "avx512_bf16": "avx512_bf16",
    "avx512_fp16": "avx512_fp16",
    "amx_tile": "amx_tile",
    "amx_int8": "amx_int8",
    "amx_bf16": "amx_bf16",
}
_ARM_FLAGS = {"asimd": "neon", "asimddp": "dotprod", "i8mm": "i8mm", "sve": "sve", "fphp": "fp16", "bf16": "bf16"}


def _parse_cpuinfo(text: str) -> tuple[str, set[str]]:
    name, flags = "", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "hardware", "cpu model") and not name:
            name = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = set(value.split())
    return name, flags


@lru_cache(maxsize=1)
def cpu_info() -> dict:
    """{"name", "arch", "logical_cores", "instruction_sets": {name: bool}}."""
    arch = platform.machine().lower()
    name, flags = "", set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            name, flags = _parse_cpuinfo(f.read())
    except OSError:  # macOS, Windows: no /proc; report what platform knows
        pass
    table = _ARM_FLAGS if arch in ("aarch64", "arm64") else _X86_FLAGS
    return {
        "name": name or platform.processor() or "unknown",
        "arch": arch,
        "logical_cores": os.cpu_count(),
        "instruction_sets": {ours: flag in flags for flag, ours in table.items()},
    }


def cpu_fingerprint() -> str:
    """What a cached timing or int8 score is only valid on: the CPU's name, architecture, core count and
    instruction sets. The name alone is not enough: "AMD EPYC" covers Zen 3 (AVX2 only) and Zen 4
    (AVX512-VNNI), whose int8 kernels differ in speed (1.55x vs 2.3x over fp32) and in results."""
    info = cpu_info()
    sets = ",".join(sorted(name for name, present in info["instruction_sets"].items() if present))
    return f"{info['name']}|{info['arch']}|{info['logical_cores']}|{sets}"


def cpu_slug() -> str:
    """A short file-name-safe CPU label, e.g. 'amd-epyc-9r14'."""
    words = [w for w in cpu_info()["name"].lower().replace("(r)", "").replace("(tm)", "").split()
             if w not in ("processor", "cpu", "@", "with", "core")]
    slug = "-".join(words[:3]) or cpu_info()["arch"]
    return "".join(c if c.isalnum() or c == "-" else "-" for c in slug)


TRACKED_PACKAGES = ("edgekit", "torch", "transformers", "sentence-transformers", "huggingface-hub", "optimum",
                    "optimum-onnx", "onnx", "onnxscript", "onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino",
                    "numpy")
# Whole onnxruntime builds installed in place of the `onnxruntime` package (the same `onnxruntime` module).
RUNTIME_BUILDS = ("onnxruntime-gpu", "onnxruntime-openvino")


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that decide export and latency results. Where a whole onnxruntime
    build replaces the `onnxruntime` package, "onnxruntime" names that build ("1.24.1 (onnxruntime-openvino)"):
    results are cached per runtime, and two builds of one version are two runtimes."""
    found = {}
    for name in TRACKED_PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    if "onnxruntime" not in found:
        build = next((name for name in RUNTIME_BUILDS if name in found), None)
        if build:
            found["onnxruntime"] = f"{found[build]} ({build})"
    return found
