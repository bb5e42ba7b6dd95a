# fwpolicy developer commands. `make run` and `make test` work as the first command on a
# fresh machine: each creates .venv, installs the project and fetches Delta's jars.
.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# The Spark 3.5 line (pyspark 3.5, delta-spark 3.3) in a venv of its own, for `make compat-test`.
COMPAT       := .venv-spark35
COMPAT_STAMP := $(COMPAT)/.installed

# bench sizes (events, approximate): override e.g. `make bench BENCH_ARGS="--sizes 2e6"`
BENCH_ARGS ?=
# extra pytest arguments for the test targets, e.g. `make test TEST_ARGS="--durations=15"`
TEST_ARGS ?=

.PHONY: help setup archive run test unit-test slow-test compat-test lint bench package clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[local,dev]'
	$(PY) -m fwpolicy.io.session
	touch $(STAMP)

setup: $(STAMP) ## create .venv, install fwpolicy with dev tools, fetch the Delta and Avro jars

# The embedded JVM's class archive (fwpolicy.io.class_archive): built once per Java and pyspark,
# for the commands whose start-up a user waits on; `make test` does without it.
archive: $(STAMP) ## build the JVM class archive that embedded sessions map (about a minute, once)
	$(PY) -m fwpolicy.io.class_archive

run: archive ## demo: generate data/ once, run the job on local[*], print a summary
	$(PY) -m fwpolicy demo

test: $(STAMP) ## tests/unit and tests/integration, on local Spark (the slow tier: make slow-test)
	$(PY) -m pytest -q -m "not slow" tests/unit tests/integration $(TEST_ARGS)

unit-test: $(STAMP) ## the fast tier: tests/unit, pure Python, no Spark session
	$(PY) -m pytest -q tests/unit $(TEST_ARGS)

lint: $(STAMP) ## ruff: lint and formatting
	$(PY) -m ruff check lib jobs tests bench
	$(PY) -m ruff format --check lib jobs tests bench

bench: archive ## build benchmark lakes and compare with DuckDB, a naive port and the floor
	$(PY) bench/run.py $(BENCH_ARGS)

package: $(STAMP) ## build the wheel for spark-submit --py-files into dist/
	rm -rf build  # setuptools reuses build/lib: a deleted module could linger in the wheel
	$(PY) -m build --wheel --outdir dist .

$(COMPAT_STAMP): pyproject.toml
	test -x $(COMPAT)/bin/python || $(PYTHON) -m venv $(COMPAT)
	$(COMPAT)/bin/python -m pip install -q --upgrade pip
	$(COMPAT)/bin/python -m pip install -q -e '.[spark35,dev]'
	$(COMPAT)/bin/python -m fwpolicy.io.session
	touch $(COMPAT_STAMP)

compat-test: $(COMPAT_STAMP) ## tests/integration on Spark 3.5 with delta-spark 3.3 (its own venv, .venv-spark35)
	$(COMPAT)/bin/python -m pytest -q -m "not slow" tests/integration $(TEST_ARGS)

slow-test: $(STAMP) ## the slow tier (-m slow): spark-submit, standalone cluster, crashes, Hive catalog, multi-run scenarios
	$(PY) -m pytest -q -m slow $(TEST_ARGS)

clean: ## remove generated data and build output (keeps .venv)
	rm -rf data out dist build spark-warehouse metastore_db derby.log bench/lake* bench/out* lib/*.egg-info
