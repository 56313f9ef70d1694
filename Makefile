# The two commands a new machine needs: `make up` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: up test lint fmt bench chaos redis-server chromium wrk clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

# Integration tests need real redis-server and redis-sentinel binaries (the failover tests);
# install Debian's when missing.
redis-server:
	@command -v redis-server >/dev/null 2>&1 && command -v redis-sentinel >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing redis-server and redis-sentinel (apt-get)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server redis-sentinel >/dev/null; \
	  else \
	    echo "redis-server or redis-sentinel is not installed: install them (e.g. apt-get install redis-server redis-sentinel)" >&2; exit 1; \
	  fi; }

# The console's browser tests drive Debian's chromium (Playwright never downloads one).
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium (apt-get)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "chromium is not installed: the console's browser tests will be skipped" >&2; \
	  fi; }

wrk:
	@command -v wrk >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; \
	  else echo "wrk is not installed (apt-get install wrk)" >&2; exit 1; fi; }

up: $(STAMP)
	$(BIN)/configbus up

lint: $(STAMP)
	$(BIN)/ruff check configbus proxy admin tests bench
	$(BIN)/ruff format --check configbus proxy admin tests bench
	$(BIN)/mypy

fmt: $(STAMP)
	$(BIN)/ruff format configbus proxy admin tests bench
	$(BIN)/ruff check --fix configbus proxy admin tests bench

test: $(STAMP) redis-server chromium lint
	$(BIN)/python -m pytest

bench: $(STAMP) redis-server wrk
	$(BIN)/python bench/propagation.py
	@if [ -f bench/proxy_overhead.py ]; then $(BIN)/python bench/proxy_overhead.py; fi

chaos: $(STAMP) redis-server
	$(BIN)/python -m bench.chaos --minutes 10

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
