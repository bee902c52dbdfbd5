# Two commands on a fresh clone: `make demo` and `make test` (see README.md).
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed

.PHONY: setup system-deps demo test lint stack-up stack-down bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml operators/_native.c
	@echo "==> creating $(VENV) and installing the project (first run takes a minute)"
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --upgrade pip
	@$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)
	@echo "==> ready: $(BIN)/marketdata"

stack-up: setup
	@$(BIN)/marketdata stack up

stack-down: setup
	@$(BIN)/marketdata stack down

demo: setup
	@$(BIN)/marketdata demo

system-deps:
	@bash scripts/system-deps.sh

test: setup system-deps stack-up
	@$(BIN)/ruff check .
	@$(BIN)/mypy
	@$(BIN)/pytest

lint: setup
	@$(BIN)/ruff check .
	@$(BIN)/mypy

bench: setup stack-up
	@$(BIN)/marketdata bench

clean:
	rm -rf $(VENV) operators/_native.*.so .state .pytest_cache .ruff_cache .mypy_cache .hypothesis artifacts
