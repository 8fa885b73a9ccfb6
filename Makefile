# Two entry points, each creating the environment it needs (.venv) on first use:
#   make demo   — the quickstart end to end on the built-in images (report in runs/quickstart/)
#   make test   — the test suite (make test-quick: without the slow pipeline/process tests)
# TORCH_SPEC picks the PyTorch build installed first. On a machine without an NVIDIA GPU, the CPU build
# avoids several GB of CUDA libraries:  make demo TORCH_INDEX=--index-url=https://download.pytorch.org/whl/cpu
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
BIN := $(VENV)/bin
STAMP := $(VENV)/.edgesr-installed

.PHONY: demo test test-quick env clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install --quiet "$(TORCH_SPEC)" $(TORCH_INDEX)
	$(BIN)/python -m pip install --quiet -e ".[train,rtx,openvino,video,gpu,dev]"
	touch $(STAMP)

env: $(STAMP)

demo: $(STAMP)
	$(BIN)/edgesr run --out runs/quickstart $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-quick: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) runs build *.egg-info
