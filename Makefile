# dq: `make run` starts the dashboard and the demo consumers; `make test` runs every check.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: setup run test test-fast lint stress bench clean

# Create the virtual environment and install the project with its dev group.
# Re-runs only when pyproject.toml changes.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

setup: $(STAMP)
	mkdir -p var
	$(PY) manage.py migrate --noinput -v 0
	$(PY) manage.py dqcreateadmin

run: setup
	$(PY) manage.py dqrun

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

test: $(STAMP) lint
	$(VENV)/bin/pytest -q -p no:cacheprovider

stress: $(STAMP)
	DQ_STRESS=1 $(VENV)/bin/pytest -q -s -m stress -p no:cacheprovider

bench: $(STAMP)
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
