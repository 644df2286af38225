# The README's two commands. Each creates .venv and installs what it needs by itself.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test gpu-check install install-dev lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

demo: $(VENV)/.installed
	$(BIN)/rce reproduce --preset demo --out runs/demo

# On a machine with one CUDA GPU: the device tests, the GPU benchmarks and a cut of paper-mnist, about 8 minutes,
# every figure in runs/gpu-check.json. `make gpu-check GPU_CHECK_ARGS="--device cpu --tiny"` runs it on a CPU.
GPU_CHECK_ARGS ?= --device cuda
gpu-check: $(VENV)/.installed-dev
	cd benchmarks && ../$(BIN)/python gpu_check.py $(GPU_CHECK_ARGS) --out ../runs/gpu-check.json

test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) runs
