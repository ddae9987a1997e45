# Two commands on a fresh machine: `make serve` and `make test`. Each creates .venv when missing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: serve test lint bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	@touch $(STAMP)

serve: $(STAMP)
	$(BIN)/conveyor serve

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python bench/run.py --readme README.md
	$(BIN)/python bench/bench_engine.py
	$(BIN)/python bench/bench_processors.py
	$(BIN)/python bench/bench_sse.py
	$(BIN)/python bench/bench_tus.py

clean:
	rm -rf $(VENV) conveyor-data .pytest_cache .mypy_cache .ruff_cache
