# Two commands on a fresh machine: `make demo` and `make test`. Each sets up what it needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test setup data browser bench clean

setup: $(STAMP)

# torch==2.13.0 first: that pin is the CPU build on disk; anything else pulls GBs of CUDA wheels.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test,ray,kornia]'
	rm -f $(VENV)/.installed-* && touch $@

# The default dataset: Debian's dataset-fashion-mnist, where apt is available.
data:
	@if [ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then :; \
	elif command -v apt-get >/dev/null 2>&1; then \
	  $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q dataset-fashion-mnist; \
	else echo "no apt-get: run '$(BIN)/unlearnable datasets' to see how to get Fashion-MNIST"; fi

# Headless Chromium for the report's browser test (Debian's package; nothing is downloaded by pip).
browser:
	@if command -v chromium >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1; then \
	  $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q chromium; \
	else echo "no apt-get: the browser test will be skipped"; fi

demo: setup data
	$(BIN)/unlearnable demo

# The layers contract first (import-linter, pyproject.toml): seconds, and a broken layer is a red CI.
test: setup data browser
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest -q

bench: setup data
	$(BIN)/python benchmarks/engine_vs_dataloader.py

clean:
	rm -rf $(VENV) runs .pytest_cache
