# `make demo` and `make test` create or refresh .venv themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# A local build of exactly these lies on this machine's disk; pin them first so
# nothing pulls a multi-GB torch from the network.
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.installed

.PHONY: venv demo test bench clean chromium

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

test: venv chromium
	$(BIN)/python -m pytest

# The report's browser test uses Debian's chromium + chromedriver (no browser downloads).
# Installed when missing and we are root; otherwise that test skips (or fails under
# HARNESS_REQUIRE_BROWSER=1, as CI sets).
chromium:
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian's chromium and chromium-driver"; \
	    apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive \
	      apt-get install -y -q chromium chromium-driver >/dev/null; \
	  else echo "chromium missing and not root: the report's browser test will skip"; fi; \
	fi

bench: venv
	$(BIN)/python benchmarks/bench_engine.py
	$(BIN)/python benchmarks/bench_train.py
	$(BIN)/python benchmarks/bench_landscape.py
	$(BIN)/python benchmarks/bench_hessian.py
	$(BIN)/python benchmarks/bench_corruptions.py
	$(BIN)/python benchmarks/bench_dispatch.py
	$(BIN)/python benchmarks/bench_scaling.py

clean:
	rm -rf $(VENV) results report .pytest_cache
