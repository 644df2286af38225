# The README's two commands. Each creates .venv and installs what it needs by itself.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test gpu-check install install-dev lint clean docs docs-serve

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

$(VENV)/.installed-docs: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e '.[docs]'
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

# The documentation site (mkdocs.yml, docs/), built offline into site/; docs-serve serves it at http://127.0.0.1:8001/
docs: $(VENV)/.installed-docs
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

docs-serve: $(VENV)/.installed-docs
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve --dev-addr 127.0.0.1:8001

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) runs site
