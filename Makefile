# The README's two commands: `make demo` and `make test`. Everything they need is installed
# here, from the package registries, into ignored folders (.venv, .runstream).
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
export RUNSTREAM_HOME := $(CURDIR)/.runstream

.PHONY: demo test lint install chromium up down status clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[server,dev]"
	touch $@

UI_SRC := $(wildcard query_api/ui/web/src/*) query_api/ui/web/build.mjs query_api/ui/web/package-lock.json
UI_BUILD := query_api/ui/static/BUILD.json

# The web UI: uPlot from the npm registry, copied beside our plain ES modules (no CDN).
$(UI_BUILD): $(UI_SRC)
	cd query_api/ui/web && npm ci --no-audit --no-fund --loglevel=error && node build.mjs

# Debian's Chromium for the browser tests (Playwright drives it; it never downloads a browser).
chromium:
	@command -v chromium >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium >/dev/null; }

install: $(BIN)/.installed $(UI_BUILD)
	$(BIN)/runstream install

demo: install
	$(BIN)/runstream up
	$(BIN)/python -m runstream.demo

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

test: install chromium lint
	$(BIN)/python -m pytest

up: install
	$(BIN)/runstream up

down:
	$(BIN)/runstream down

status:
	$(BIN)/runstream status

clean: down
	rm -rf .runstream/stack .runstream/test-stacks .runstream/clickhouse
