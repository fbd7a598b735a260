# studio-sep: `make demo` sets everything up and runs the demo; `make test` runs the tests.
# Both are idempotent: a second run reuses the system packages and the virtual environment.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.studio-sep-installed
# torch goes in first, at this exact version (pyproject.toml allows 2.13.x): a bare `torch`
# requirement resolved by pip pulls the multi-GB CUDA build.
TORCH_VERSION ?= 2.13.0

.PHONY: setup system-deps demo test clean-venv

setup: system-deps $(STAMP)

system-deps:
	@bash scripts/install-system-deps.sh

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check 'torch==$(TORCH_VERSION)'
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test,clap]'
	@touch $(STAMP)

demo: setup
	$(BIN)/studio-sep demo

test: setup
	$(BIN)/python -m pytest -q

clean-venv:
	rm -rf $(VENV)
