# Two commands for a fresh machine (see README): `make book` and `make test`.
# Both create and fill .venv from requirements.txt first; that step is skipped when nothing changed.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
EXECUTE ?= 0
JOBS ?= 2

.PHONY: book test test-fast execute setup figures data browser-check screenshots bench clean help
help:
	@echo "make book      build the HTML book into _build/html (EXECUTE=1 re-runs the notebooks first)"
	@echo "make test      unit tests + every notebook in _toc.yml under nbval"
	@echo "make test-fast the unit tests not marked slow (the edit loop: about a minute on 2 cores)"
	@echo "make execute   re-run the notebooks in place so their stored outputs are current"
	@echo "make figures   regenerate book/figures;  make data   regenerate data/shapes_coco"
	@echo "make screenshots  every page of the built book, light and dark theme, into _build/screenshots"

setup: $(STAMP)
$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "installing requirements into $(VENV) (log: $(VENV)/pip.log) ..."
	@$(PY) -m pip install -q -r requirements.txt > $(VENV)/pip.log 2>&1 || { cat $(VENV)/pip.log; exit 1; }
	@$(PY) -m pip install -q --no-deps -e . >> $(VENV)/pip.log 2>&1 || { cat $(VENV)/pip.log; exit 1; }
	@touch $(STAMP)

# Two xdist workers on two cores: one torch thread each (kernels inherit it), or OpenMP threads
# fight over the cores and tiny ops run 50-100x slower (measured on this machine).
test: setup
	OMP_NUM_THREADS=1 $(PY) -m pytest -n $(JOBS) --dist loadfile --nbval-lax tests $$($(PY) tests/notebook_tools.py list)

# The edit loop: no notebook, nothing marked slow (trainings, rescoring of committed records,
# subprocesses, Chromium); `make test` runs those too.
test-fast: setup
	OMP_NUM_THREADS=1 $(PY) -m pytest -m "not slow" -n $(JOBS) tests

execute: setup
	$(PY) tests/notebook_tools.py execute $(NB)

book: setup
	@if [ "$(EXECUTE)" = "1" ]; then $(MAKE) --no-print-directory execute; fi
	@# myst-nb renders a stored traceback like any output and -W never sees it: refuse first
	$(PY) tests/notebook_tools.py check
	@# --all: Sphinx's incremental build skips copying book/_static when no page changed (10-15 s)
	$(VENV)/bin/jupyter-book build . --builder html -W --keep-going --all
	@echo "The book: $(CURDIR)/_build/html/index.html"

browser-check: setup
	$(PY) tests/browser/check_pages.py _build/html

# every page of the built book in the light and the dark theme (1280 px wide), for a look
screenshots: setup
	$(PY) tests/browser/check_pages.py _build/html --screenshots _build/screenshots

figures: setup
	$(PY) -m lessons_pkg.figures book/figures

data: setup
	rm -rf data/shapes_coco
	$(PY) -m lessons_pkg.data export data/shapes_coco --split val --num-images 24

# Speed is measured by benchmarks, never by timed unit tests: the ops against torchvision, and
# training throughput with 1 and 2 processes (written beside the build, not over the committed record).
bench: setup
	$(PY) -m lessons_pkg.bench ops
	$(PY) -m lessons_pkg.train.throughput --out _build/bench/train_throughput.json --overwrite

clean:
	rm -rf _build .pytest_cache .hypothesis
