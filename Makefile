# Each target does its own set-up: a fresh machine runs `make test` or `make serve` and nothing else.
# torch is installed first, pinned to the CPU build on this machine's disk; an unpinned torch would
# pull a multi-GB CUDA build.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup test test-fast test-integration test-system serve bench bench-service loadtest lint audit clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev,train,bench,loadtest,audit]'
	touch $(STAMP)

setup: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

# The unit tests that start no process (tiny models, pure service parts): about a minute on two cores.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow" tests/unit

# Real processes talking to each other: redis-server, prometheus, `dynaqa serve`.
test-integration: $(STAMP)
	$(BIN)/python -m pytest -q tests/integration

# `dynaqa serve` end to end, the CLI, the shipped checkpoint, deploy and install checks, load.
test-system: $(STAMP)
	$(BIN)/python -m pytest -q tests/system

serve: $(STAMP)
	$(BIN)/dynaqa serve

# Every sub-network's latency; then the full model on each runtime (dynaqa, transformers, ONNX
# Runtime, OpenVINO), each in its own process, side by side.
bench: $(STAMP)
	OMP_WAIT_POLICY=ACTIVE $(BIN)/python benchmarks/model_latency.py
	$(BIN)/python -m benchmarks.runtimes

# Service start-up, per-request overhead, tight budgets; then 10x overload (real processes).
bench-service: $(STAMP)
	$(BIN)/python -m loadtest.service_bench
	$(BIN)/python -m loadtest.overload

# Adaptive vs pinned vs the transformers and ONNX Runtime peers, open loop (about 15 minutes).
loadtest: $(STAMP)
	$(BIN)/python -m loadtest.scenarios

# Needs the PyPI JSON API or OSV; from this sandbox only the package index is reachable.
audit: $(STAMP)
	$(BIN)/pip-audit --progress-spinner off --strict

lint: $(STAMP)
	$(BIN)/ruff check models service loadtest tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
