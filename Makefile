# The two commands of the README: `make demo` (the main job) and `make test` (the test suite).
# Both set up what they need first (idempotent): a virtual environment in .venv and the system pieces.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test lint bench venv

venv:
	bash scripts/bootstrap.sh

demo: venv
	bash scripts/components.sh bwrap lm-corpus agent-clis
	$(PY) -m framework.demo $(DEMO_ARGS)

test: venv
	$(VENV)/bin/ruff check framework experiments tests
	$(VENV)/bin/ruff format --check framework experiments tests
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check framework experiments tests
	$(VENV)/bin/mypy

bench: venv
	$(VENV)/bin/python -m tests.bench $(BENCH_ARGS)
