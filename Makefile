# dq: `make run` starts the dashboard and the demo consumers; `make test` runs every check.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

# The tested matrix beside the default environment (Python 3.11, Django 5.2
# LTS): Python 3.12 and 3.13 with Django 6.1, from pyenv's interpreters.
PYENV_ROOT ?= $(shell pyenv root 2>/dev/null || echo $$HOME/.pyenv)
MATRIX     ?= 3.12.1 3.13.0
MATRIX_DJANGO ?= django~=6.1.0

.PHONY: setup run test test-wheel test-matrix lint stress bench clean

# Create the virtual environment and install the project with its dev group.
# Re-runs only when pyproject.toml changes.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

setup: $(STAMP)
	$(PY) manage.py migrate --noinput -v 0
	$(PY) manage.py dqcreateadmin

run: setup
	$(PY) manage.py dqrun

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

test: $(STAMP) lint
	$(VENV)/bin/pytest -q -p no:cacheprovider

# Build the wheel from the sdist, install it into a fresh virtual environment
# and use it from a `django-admin startproject` site (tests/packaging).
test-wheel: $(STAMP)
	DQ_PACKAGING=1 $(VENV)/bin/pytest -q -p no:cacheprovider -m packaging tests/packaging

# The suite on each interpreter of MATRIX, in its own .venv-<version>.
test-matrix:
	@for v in $(MATRIX); do \
	  py=$(PYENV_ROOT)/versions/$$v/bin/python$${v%.*}; \
	  venv=.venv-$$v; \
	  echo "== Python $$v with $(MATRIX_DJANGO) ($$venv)"; \
	  test -x $$py || { echo "no interpreter at $$py (pyenv install $$v)"; exit 1; }; \
	  if [ ! -f $$venv/.installed-stamp ] || [ pyproject.toml -nt $$venv/.installed-stamp ]; then \
	    rm -rf $$venv && $$py -m venv $$venv && \
	    $$venv/bin/python -m pip install -q --upgrade pip && \
	    $$venv/bin/python -m pip install -q -e '.[dev]' '$(MATRIX_DJANGO)' && \
	    touch $$venv/.installed-stamp || exit 1; \
	  fi; \
	  $$venv/bin/python -c 'import django, sys; print("Django", django.get_version(), "on Python", sys.version.split()[0])'; \
	  $$venv/bin/pytest -q -p no:cacheprovider || exit 1; \
	done

stress: $(STAMP)
	DQ_STRESS=1 $(VENV)/bin/pytest -q -s -m stress -p no:cacheprovider

bench: $(STAMP)
	$(PY) bench/run.py
	$(PY) bench/tasks.py

clean:
	rm -rf $(VENV) .venv-* var .pytest_cache .mypy_cache .ruff_cache dist build
