"""The files a user of Optimum makes: `main_export` (what `optimum-cli export onnx` runs) and, unless --export-only,
the int8 file Optimum's documentation shows (ORTQuantizer + AutoQuantizationConfig.<preset>, dynamic, per-tensor).

optimum-onnx's only release caps transformers below 4.58, so this runs in an environment that has it (the oldest
stack's venv, `make setup-oldest`), as its own process, and the benches time its files beside edgekit's:

    .venv-oldest/bin/python bench/optimum_files.py TEACHER OUT [--preset avx512_vnni] [--export-only]

Writes OUT/optimum-fp32/model.onnx, OUT/optimum-int8/model_quantized.onnx and OUT/optimum.json (how each was made,
the seconds the export took, the versions used). Imports nothing from edgekit: it runs beside any edgekit.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def make(teacher: str, out: Path, preset: str | None, export_only: bool = False) -> dict:
    from optimum.exporters.onnx import main_export

    fp32_dir, int8_dir = out / "optimum-fp32", out / "optimum-int8"
    start = time.perf_counter()
    main_export(teacher, fp32_dir, task="feature-extraction")
    record = {"fp32": str(fp32_dir / "model.onnx"), "export_s": time.perf_counter() - start,
              "export": "optimum.exporters.onnx.main_export(task='feature-extraction'), library auto-detected",
              "versions": {name: importlib.metadata.version(name)
                           for name in ("optimum", "optimum-onnx", "transformers", "torch", "onnx")}}
    if not export_only:
        from optimum.onnxruntime import ORTQuantizer
        from optimum.onnxruntime.configuration import AutoQuantizationConfig

        config = getattr(AutoQuantizationConfig, preset)(is_static=False, per_channel=False)
        ORTQuantizer.from_pretrained(fp32_dir, file_name="model.onnx").quantize(config, int8_dir)
        record |= {"int8": str(int8_dir / "model_quantized.onnx"),
                   "quantize": f"ORTQuantizer + AutoQuantizationConfig.{preset}(is_static=False, per_channel=False)",
                   "preset": preset, "weights": str(config.weights_dtype),
                   "activations": str(config.activations_dtype), "per_channel": config.per_channel}
    (out / "optimum.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return record


def optimum_python() -> str | None:
    """An interpreter that has Optimum's exporter: this one, $EDGEKIT_OPTIMUM_PYTHON, or the oldest stack's venv."""
    import importlib.util

    if importlib.util.find_spec("optimum") is not None and importlib.util.find_spec("optimum.exporters.onnx"):
        return sys.executable
    for candidate in (os.environ.get("EDGEKIT_OPTIMUM_PYTHON"), str(ROOT / ".venv-oldest" / "bin" / "python")):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def run(teacher: str, out: Path, preset: str | None, export_only: bool = False) -> dict:
    """make() in the interpreter optimum_python() finds, as its own process; RuntimeError saying how to get one."""
    python = optimum_python()
    if python is None:
        raise RuntimeError("Optimum's files need optimum-onnx, which requires transformers < 4.58: run "
                           "`make setup-oldest` (the oldest stack's venv), or set EDGEKIT_OPTIMUM_PYTHON to a Python "
                           "that has optimum-onnx.")
    out.mkdir(parents=True, exist_ok=True)
    command = [python, str(Path(__file__).resolve()), teacher, str(out), *(["--preset", preset] if preset else []),
               *(["--export-only"] if export_only else [])]
    # HF_HUB_OFFLINE: a local folder or an installed package's folder needs no network.
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
                          check=False)
    if done.returncode != 0:
        raise RuntimeError(f"Optimum's files ({python}) failed:\n{done.stderr[-3000:]}")
    return json.loads((out / "optimum.json").read_text(encoding="utf-8"))


def _folder(spec: str) -> str:
    """A `package/sub/folder` of an installed package (the offline teacher) as a path; anything else as given."""
    import importlib.util

    top, _, rest = spec.partition("/")
    found = importlib.util.find_spec(top) if rest and top.isidentifier() else None
    if found is not None and found.submodule_search_locations:
        return str(Path(found.submodule_search_locations[0]) / rest)
    return spec


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("teacher")
    parser.add_argument("out", type=Path)
    parser.add_argument("--preset", default="avx2", help="AutoQuantizationConfig preset [default: %(default)s]")
    parser.add_argument("--export-only", action="store_true")
    args = parser.parse_args(argv)
    make(_folder(args.teacher), args.out, args.preset, args.export_only)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
