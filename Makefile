# `make demo` and `make test` create or refresh .venv themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# A local build of exactly these lies on this machine's disk; pin them first so
# nothing pulls a multi-GB torch from the network.
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.installed

.PHONY: venv demo test bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip 2>&1 | grep -v 'is ignored' || true
	$(BIN)/python -m pip install -q $(TORCH_PINS) 2>&1 | grep -v 'is ignored' || true
	$(BIN)/python -m pip install -q -e '.[test]' $(TORCH_PINS) 2>&1 | grep -v 'is ignored' || true
	$(BIN)/python -c "import torch, torchvision, timm, ray, pyarrow, harness"
	touch $(STAMP)

demo: venv
	$(BIN)/harness demo

test: venv
	$(BIN)/python -m pytest

bench: venv
	$(BIN)/python benchmarks/bench_engine.py
	$(BIN)/python benchmarks/bench_train.py
	$(BIN)/python benchmarks/bench_landscape.py
	$(BIN)/python benchmarks/bench_hessian.py

clean:
	rm -rf $(VENV) results .pytest_cache
