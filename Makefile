# The README's two commands: `make demo` and `make test`. Everything they need is installed
# here, from the package registries, into ignored folders (.venv, .runstream).
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
export RUNSTREAM_HOME := $(CURDIR)/.runstream

.PHONY: demo test lint unit install up down status clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[server,dev]"
	touch $@

install: $(BIN)/.installed
	$(BIN)/runstream install

demo: install
	$(BIN)/runstream up
	$(BIN)/python -m runstream.demo

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

test: install lint
	$(BIN)/python -m pytest

up: install
	$(BIN)/runstream up

down:
	$(BIN)/runstream down

status:
	$(BIN)/runstream status

clean: down
	rm -rf .runstream/stack .runstream/test-stacks .runstream/clickhouse
