# servelab: `make demo` runs the main job, `make test` runs the whole test suite.
# Both create .venv, install servelab and build the llama.cpp engine first; `demo` pulls the
# default model, `test` every model in tests/models.txt (the one list the test fixtures read),
# installs the vLLM venv and converts $(HF_MODEL) to an HF directory for the vLLM tests.
# `test` also installs the `ray` extra (the distributed tests start Ray clusters on 127.0.0.1).
# Everything is cached, so a second run starts in seconds.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SERVELAB := $(VENV)/bin/servelab
STAMP := $(VENV)/.servelab-installed
RAY_STAMP := $(VENV)/.servelab-ray-installed
MODEL ?= smollm2-135m-instruct
TEST_MODELS := $(shell sed -e 's/\#.*//' tests/models.txt)
HF_MODEL ?= smollm2-135m-instruct

.PHONY: setup ray engine vllm model test-models hf-model demo test lint typecheck bench-client clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "servelab needs Python >= 3.11"'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	@touch $(STAMP)

ray: $(RAY_STAMP)

$(RAY_STAMP): $(STAMP)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[dev,ray]"
	@touch $(RAY_STAMP)

engine: setup
	$(SERVELAB) engines install llamacpp

vllm: setup
	$(SERVELAB) engines install vllm

model: setup
	$(SERVELAB) models pull $(MODEL)

test-models: setup
	$(foreach name,$(TEST_MODELS),$(SERVELAB) models pull $(name) &&) true

hf-model: vllm test-models
	$(SERVELAB) models convert $(HF_MODEL) --to hf

demo: engine model
	$(SERVELAB) run examples/demo.yaml

test: ray engine test-models vllm hf-model
	$(PY) -m pytest

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

typecheck: setup
	$(VENV)/bin/mypy

bench-client: engine model
	$(PY) benchmarks/client_accuracy.py
	$(PY) benchmarks/client_overhead.py

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
