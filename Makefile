# colorfilter: `make install` sets up .venv, `make test` runs the CPU test suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU build of torch unless a GPU is present (a CUDA build is several GB); override with TORCH=...
TORCH ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo torch || echo torch==2.13.0)
PYTEST_ARGS ?=

.PHONY: install test test-slow lint demo bench test-vllm clean

# install also puts the trainers' readers (megatron-core, ai2-olmo-core) into .venv, for
# tests/export only, with --no-deps (tests/export/requirements-readers.txt says why).
install:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	$(BIN)/python -m pip install -q --no-deps -r tests/export/requirements-readers.txt
	@$(BIN)/colorfilter --help >/dev/null && echo "installed: $$($(BIN)/python -c 'import torch, transformers, ray; print("torch", torch.__version__, "transformers", transformers.__version__, "ray", ray.__version__)')"

# pytest exits 5 when it collects no test; that is not a failure of the code under test.
# `test` is the default suite; `test-slow` the slower scenario tests (marked `slow`), which CI
# runs after it.
test:
	$(BIN)/python -m pytest -m "not gpu and not slow" -q $(PYTEST_ARGS); rc=$$?; if [ $$rc -eq 5 ]; then exit 0; fi; exit $$rc

test-slow:
	$(BIN)/python -m pytest -m "slow and not gpu" -q $(PYTEST_ARGS); rc=$$?; if [ $$rc -eq 5 ]; then exit 0; fi; exit $$rc

lint:
	$(BIN)/ruff check colorfilter pipelines scripts tests

demo:
	$(BIN)/colorfilter run configs/demo.yaml

test-vllm:
	bash scripts/setup_vllm_cpu.sh
	.venv-vllm/bin/python -m pytest -m vllm -q tests/scoring

clean:
	rm -rf outputs .pytest_cache
